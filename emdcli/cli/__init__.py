"""The ``emd`` command line: parse, call the library, write. Nothing else.

:mod:`.root` holds the app and the entry point; :mod:`.compute` (``compute``, ``tree``),
:mod:`.spaces` (``ground learn``, ``tree build``),
:mod:`.studies` (``compare``), :mod:`.bench` (``bench``, ``warmup``) and :mod:`.report`
(``report``) register their commands on it. ``main`` imports the module of the command it
runs (all of them for help or a group); ``app`` here has every command. Heavy modules
(numpy, Numba, pyarrow) are imported inside the commands, so that ``emd --help`` stays fast.
"""

import sys

__all__ = ["app", "main", "version_line"]


def main():
    """Console-script entry point: kept help (:mod:`.helpcache`) when there is some, else
    :func:`.root.main` (which keeps a help request's output)."""
    from . import helpcache

    words = sys.argv[1:]
    if helpcache.serve(words):
        return
    from . import root

    helpcache.run_and_keep(words, root.main)


def __getattr__(name):
    if name == "app":
        from .root import app, register_all

        register_all()
        return app
    if name == "version_line":
        from .root import version_line

        return version_line
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

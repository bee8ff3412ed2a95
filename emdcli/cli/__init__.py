"""The ``emd`` command line: parse, call the library, write. Nothing else.

:mod:`.root` holds the app and the entry point; :mod:`.compute` (``compute``, ``tree``),
:mod:`.spaces` (``ground learn``, ``tree build``),
:mod:`.studies` (``compare``), :mod:`.bench` (``bench``, ``warmup``) and :mod:`.report`
(``report``) register their commands on it. ``main`` imports the module of the command it
runs (all of them for help or a group); ``app`` here has every command. Heavy modules
(numpy, Numba, pyarrow) are imported inside the commands, so that ``emd --help`` stays fast.
"""

from .root import main, version_line

__all__ = ["app", "main", "version_line"]


def __getattr__(name):
    if name == "app":
        from .root import app, register_all

        register_all()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

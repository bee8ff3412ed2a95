"""The ``emd`` command line: parse, call the library, write. Nothing else.

:mod:`.root` holds the app and the entry point; :mod:`.compute` (``compute``, ``tree``),
:mod:`.spaces` (``ground learn``, ``tree build``),
:mod:`.studies` (``compare``) and :mod:`.bench` (``bench``, ``warmup``) register their
commands on it. Heavy modules (numpy, Numba, pyarrow) are imported inside the commands,
so that ``emd --help`` stays fast.
"""

from . import compute, spaces, studies, bench  # noqa: F401,I001  (register, in help order)
from . import report  # noqa: F401,E402,I001  (emd report)
from .root import app, main, version_line

__all__ = ["app", "main", "version_line"]

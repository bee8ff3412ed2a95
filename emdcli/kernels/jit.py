"""Numba's first load, made lighter: imported by every CPU kernel module before any
kernel is compiled or loaded from the cache.

The first compile or cache load in a process imports ``numba.np.arraymath``, which sets
``_HAVE_BLAS`` by importing ``scipy.linalg`` (``numba.np.linalg.ensure_blas``), a fifth
of a second on the project's machine, a third of a warm ``emd compute``'s Numba start-up.
The kernels use no BLAS, so :func:`light_first_load` answers that probe from whether
SciPy is installed, without importing it; the real ``ensure_blas`` stays in place for
every function that does use BLAS (``np.dot`` in a jitted function still works, and
imports SciPy when it compiles). It does nothing once ``arraymath`` is imported, or when
a Numba release no longer has the probe.
"""

import importlib.util
import sys


def light_first_load():
    """Import ``numba.np.arraymath`` with its BLAS probe answered without SciPy."""
    if "numba.np.arraymath" in sys.modules:
        return
    try:
        from numba.np import linalg
    except ImportError:
        return
    real = getattr(linalg, "ensure_blas", None)
    if real is None:
        return
    scipy = importlib.util.find_spec("scipy") is not None

    def probe():
        if not scipy:
            real()  # raises numba's ImportError, as without the shortcut

    linalg.ensure_blas = probe
    try:
        from numba.np import arraymath
    finally:
        linalg.ensure_blas = real
    if getattr(arraymath, "ensure_blas", None) is probe:
        arraymath.ensure_blas = real


light_first_load()

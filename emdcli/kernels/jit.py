"""Numba's first load, made lighter: imported by every CPU kernel module before any
kernel is compiled or loaded from the cache.

- **Cache loads without the registries.** Numba refreshes its CPU target before every cache
  load: it imports the implementations of everything it can compile (``numba.np.linalg``,
  ``arraymath``, ``arrayobj``, random, typed containers, jitclass …), 0.1-0.2 s of a warm
  ``emd compute``, although a kernel loaded from the cache is machine code that needs
  none of them. :func:`light_cache_loads` loads emdcli's CPU kernels with only what they
  need at run time (Numba's runtime, ``rtsys.initialize``, which the refresh also does
  first); a compile still refreshes the target in full (Numba's pipeline does), and so
  does every other function's cache load.
- **No SciPy for the BLAS probe.** That refresh imports ``numba.np.arraymath``, which sets
  ``_HAVE_BLAS`` by importing ``scipy.linalg`` (``numba.np.linalg.ensure_blas``), a fifth
  of a second. The kernels use no BLAS, so :func:`light_first_load`, run just before the
  target's first refresh, answers that probe from whether SciPy is installed, without
  importing it; the real ``ensure_blas`` stays in place for every function that does use
  BLAS (``np.dot`` in a jitted function still works, and imports SciPy when it compiles).

Each does nothing when a Numba release no longer has what it replaces.
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


def _ours(cache):
    """Whether a Numba ``Cache`` belongs to one of emdcli's kernels."""
    module = getattr(getattr(cache, "_py_func", None), "__module__", None) or ""
    return module.startswith(__name__.split(".")[0] + ".")


def light_cache_loads():
    """Numba's ``Cache.load_overload`` for emdcli's CPU kernels: the runtime initialised,
    then the cached kernel loaded, without the target's refresh (see the module's
    docstring); every other load as Numba does it. And :func:`light_first_load` just
    before the CPU target's first refresh (a compile's)."""
    try:
        from numba.core import caching, cpu
        from numba.core.runtime import rtsys
    except ImportError:
        return
    real = getattr(caching.Cache, "load_overload", None)
    context = cpu.CPUContext
    registries = getattr(context, "load_additional_registries", None)
    if (real is None or registries is None or getattr(real, "light", False)
            or not all(hasattr(caching.Cache, a) for a in
                       ("_guard_against_spurious_io_errors", "_load_overload"))):
        return

    def load_overload(self, sig, target_context):
        if type(target_context) is not context or not _ours(self):
            return real(self, sig, target_context)
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    def load_additional_registries(self):
        light_first_load()
        return registries(self)

    load_overload.light = True
    caching.Cache.load_overload = load_overload
    context.load_additional_registries = load_additional_registries


light_cache_loads()

"""Reading Numba's on-disk cache without importing Numba: is a kernel compiled already?

Each ``@njit(cache=True)`` function has an index file
``<module>.<qualname>-<first line>.py<XY>.nbi`` in the first usable of
``$NUMBA_CACHE_DIR/<folder>_<sha1 of the folder's path>/``, the package's ``__pycache__``
and the user-wide cache; the index holds the Numba version, the SHA-256 of the module's
source and a map from keys (argument types, target, CPU) to data files. It is read with
an unpickler that builds no objects, only records the type names (see
:mod:`emdcli.warmup` for what this approximates).
"""

import builtins
import os
import pickle
import re
import sys

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")

def numba_config():
    """(cache dir, CPU name or None, disabled) as Numba sees them: from numba.config when
    Numba is already imported, else from the environment it reads them from."""
    config = getattr(sys.modules.get("numba"), "config", None)
    if config is not None:
        return config.CACHE_DIR, config.CPU_NAME, bool(config.DISABLE_JIT)
    disabled = os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0")
    return (os.environ.get("NUMBA_CACHE_DIR", ""), os.environ.get("NUMBA_CPU_NAME") or None,
            disabled)


def _usable(path):
    """Numba would use this folder: it exists and is writable, or it can be made."""
    probe = path
    while not os.path.isdir(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    return os.access(probe, os.W_OK | os.X_OK)


def _user_wide_cache():
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/numba")
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA")
        return os.path.join(base, "numba", "cache") if base else None
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "numba")


def cache_dir():
    """The folder where Numba keeps (or would keep) the compiled kernels of
    ``emdcli/kernels``, or None when none is writable (then every run compiles)."""
    import hashlib

    configured, _, _ = numba_config()
    folder = os.path.abspath(KERNELS)
    sub = "_".join([os.path.basename(folder), hashlib.sha1(folder.encode()).hexdigest()])
    candidates = []
    if configured:
        candidates.append(os.path.join(configured, sub))
    candidates.append(os.path.join(folder, "__pycache__"))
    wide = _user_wide_cache()
    if wide:
        candidates.append(os.path.join(wide, sub))
    for path in candidates:
        if _usable(path):
            return path
    return None


def _numba_version():
    numba = sys.modules.get("numba")
    if numba is not None and hasattr(numba, "__version__"):
        return numba.__version__
    import importlib.util

    spec = importlib.util.find_spec("numba")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        try:
            with open(os.path.join(folder, "_version.py"), encoding="utf-8") as f:
                m = re.search(r'"version":\s*"([^"]+)"', f.read())
        except OSError:
            continue
        if m:
            return m.group(1)
    from importlib import metadata

    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return None


_CPU = []


def _cpu_name():
    _, name, _ = numba_config()
    if name:
        return name
    if not _CPU:
        try:
            import llvmlite.binding as ll

            _CPU.append(ll.get_host_cpu_name())
        except Exception:  # noqa: BLE001 - without llvmlite, do not check the CPU
            _CPU.append(None)
    return _CPU[0]


class _Record:
    """What the index unpickler builds instead of any object: the arguments and state."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Record(*args)


class _TypeRecord:
    def __init__(self, state):
        self.name = state.get("name") if isinstance(state, dict) else None


def _type_reconstructor(reconstructor, args, state):
    return _TypeRecord(state)


class _IndexUnpickler(pickle.Unpickler):
    """Reads a Numba index without importing Numba or running anything: every global is
    replaced by an inert record (numba types keep only their ``name``)."""

    SAFE = {("builtins", n): getattr(builtins, n)
            for n in ("tuple", "list", "dict", "set", "frozenset", "bytes", "str", "int",
                      "float", "bool")}

    def find_class(self, module, name):
        if (module, name) == ("numba.core.types.abstract", "_type_reconstructor"):
            return _type_reconstructor
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        return type(name, (_Record,), {"where": (module, name)})


_SOURCE_HASHES = {}


def _source_hash(path):
    import hashlib

    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _SOURCE_HASHES:
        with open(path, "rb") as f:
            _SOURCE_HASHES[key] = hashlib.sha256(f.read()).digest()
    return _SOURCE_HASHES[key]


def _index_entries(folder, module, function):
    """Argument-type names and CPU names of the current entries of one entry point's
    index files (all line numbers: only an index of the current source passes the source
    hash, and its line number is then right): a list of (names, cpu)."""
    import glob
    import io

    source = os.path.join(KERNELS, module + ".py")
    suffix = f".py{sys.version_info[0]}{sys.version_info[1]}{getattr(sys, 'abiflags', '')}.nbi"
    found = []
    try:
        stamp = _source_hash(source)
    except OSError:
        return found
    version = _numba_version()
    for path in glob.glob(os.path.join(glob.escape(folder), f"{module}.{function}-*{suffix}")):
        try:
            with open(path, "rb") as f:
                if _IndexUnpickler(f).load() != version:
                    continue
                rest = f.read()
            index_stamp, overloads = _IndexUnpickler(io.BytesIO(rest)).load()
        except Exception:  # noqa: BLE001 - unreadable or unexpected: not cached
            continue
        if index_stamp != stamp or not isinstance(overloads, dict):
            continue
        for key in overloads:
            try:
                sig, magic = key[0], key[1]
                names = [getattr(t, "name", None) for t in sig]
                found.append((names, magic[1]))
            except (TypeError, IndexError):
                continue
    return found


def cached(folder, module, function, variant, dtypes, out=None):
    """Whether the index of one entry point holds a current entry compiled for this CPU
    whose rows (the first argument) are of one of ``dtypes`` (and, with ``variant``,
    pairs (i, prefix), whose argument i's type name starts with prefix for each pair: a
    Sinkhorn driver's Gibbs class, whether a lanes kernel takes the row sums or gives
    gradients; with ``out``, one of whose arguments has this type name: the exact EMD's
    values, in the result dtype)."""
    entries = _index_entries(folder, module, function)
    if not entries:
        return False
    cpu = _cpu_name()
    first = [f"array({dt}, 2d, C)" for dt in dtypes]  # also readonly, or in a tuple of rows
    for names, entry_cpu in entries:
        if cpu is not None and entry_cpu != cpu:
            continue
        if not names or not any(a in str(names[0]) for a in first):
            continue
        if variant is not None and not all(len(names) > i and str(names[i]).startswith(prefix)
                                           for i, prefix in variant):
            continue
        if out is not None and out not in names:
            continue
        return True
    return False



"""Rendered help, kept: ``emd --help`` and ``emd COMMAND --help`` print what Typer rendered
the last time for the same request, without importing Typer or Rich (about 0.15 s → 0.04 s
on a 2-core machine: importing Typer alone is 0.06 s, Rich's rendering as much again).

A request is a help request when its last word is ``--help`` or ``-h`` and every word
before it is a command's name. Its key hashes what the rendering reads: the words, this
emdcli's location, the Python and its module path, the environment variables Typer,
Click and Rich consult (``ENV``: colours, widths, terminal kinds), whether stdin, stdout
and stderr are terminals and their sizes, and stdout's encoding. An entry also lists every source file the rendering process had loaded
(emdcli, Typer, Rich, the standard library) with its modification time and size, which
Python's own bytecode cache trusts too: it is served only while all of them are unchanged,
so an upgrade or an edit renders afresh. Entries are written only after a help run that
exited 0, whole (a temporary file renamed), under ``$XDG_CACHE_HOME/emdcli/help``
(``~/.cache``), the :data:`KEEP` latest of them; ``EMD_NO_HELP_CACHE=1`` turns the cache
off, and a folder that cannot be written leaves every run rendering as before. Never
imports anything heavier than :mod:`hashlib` and :mod:`marshal`.
"""

import os
import sys

HELP = ("--help", "-h")
ENV = ("TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "PY_COLORS", "TTY_COMPATIBLE",
       "TTY_INTERACTIVE", "COLUMNS", "LINES", "JUPYTER_COLUMNS", "JUPYTER_LINES",
       "TERMINAL_WIDTH", "UNICODE_VERSION", "GITHUB_ACTIONS", "DATABRICKS_RUNTIME_VERSION",
       "TYPER_USE_RICH", "TYPER_RICH_MARKUP_MODE", "_TYPER_FORCE_DISABLE_TERMINAL",
       "_TYPER_STANDARD_TRACEBACK", "WT_SESSION", "PYTHONIOENCODING", "LANG", "LC_ALL",
       "LC_CTYPE")
COMPLETION = ("_EMD_COMPLETE", "_TYPER_COMPLETE", "COMP_WORDS", "COMP_CWORD")
FORMAT = 1  # of an entry: (FORMAT, ((path, mtime_ns, size), ...), text)
KEEP = 64  # entries kept (each terminal size has its own); older ones go as one is added


def _folder():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "emdcli", "help")


def _terminal(fd):
    try:
        size = tuple(os.get_terminal_size(fd))
    except (OSError, ValueError):
        size = None
    return os.isatty(fd), size


def key(words):
    """The cache key of ``emd WORDS`` (hex), or None when it is not a help request, the
    cache is off, or a shell's completion is asking."""
    if not words or words[-1] not in HELP or os.environ.get("EMD_NO_HELP_CACHE", "") not in ("", "0"):
        return None
    if any(w.startswith("-") or not w.replace("-", "").isalnum() for w in words[:-1]):
        return None
    if any(name.startswith(COMPLETION) for name in os.environ):
        return None
    stdout = sys.stdout
    if stdout is None:
        return None
    import hashlib

    what = (tuple(words), __file__, sys.executable, sys.version, tuple(sys.path),  # (what
            tuple(os.environ.get(v) for v in ENV),  # imports what, from where)
            tuple(_terminal(fd) for fd in (0, 1, 2)), getattr(stdout, "encoding", None),
            getattr(stdout, "errors", None))
    return hashlib.sha1(repr(what).encode("utf-8", "surrogatepass")).hexdigest()


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime_ns, st.st_size)


def serve(words):
    """Print the kept help of ``emd WORDS`` and return True, or return False (nothing
    printed) when there is none that is still valid."""
    k = key(words)
    if k is None:
        return False
    import marshal

    try:
        with open(os.path.join(_folder(), k), "rb") as f:
            fmt, files, text = marshal.loads(f.read())
        if fmt != FORMAT or not isinstance(text, str):
            return False
        for path, mtime, size in files:
            if _stat(path) != (path, mtime, size):
                return False
    except (OSError, EOFError, ValueError, TypeError):  # (a damaged entry: rendered afresh)
        return False
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # (| head): stop quietly with status 1, as Click does
        from .stdout import silence_stdout

        silence_stdout()
        raise SystemExit(1) from None
    except OSError:  # (a full disk, …): the rendering's own handling says so
        return False
    return True


class _Tee:
    """A text stream that writes through to ``stream`` and keeps what it took (``failed``
    once a write or flush met an OS error; Click probes with bytes, a TypeError, which does
    not count); every other attribute (isatty, fileno, encoding, …) is
    the stream's, so that what renders into it renders as into the stream."""

    def __init__(self, stream):
        self._stream, self.parts, self.failed = stream, [], False

    def write(self, s):
        try:
            n = self._stream.write(s)
        except OSError:
            self.failed = True
            raise
        self.parts.append(s)
        return n

    def flush(self):
        try:
            self._stream.flush()
        except OSError:
            self.failed = True
            raise

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _loaded_files():
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files.add(path)
    return tuple(s for s in map(_stat, sorted(files)) if s is not None)


def _store(k, text):
    import marshal
    import tempfile

    folder = _folder()
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((FORMAT, _loaded_files(), text)))
        os.replace(tmp, os.path.join(folder, k))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    _prune(folder)


def _prune(folder):
    """Remove all but the :data:`KEEP` most recently written entries."""
    try:
        kept = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")),
                      key=lambda e: e.stat().st_mtime_ns, reverse=True)
        for entry in kept[KEEP:]:
            os.unlink(entry.path)
    except OSError:
        pass


def run_and_keep(words, run):
    """``run()`` (the entry point, which exits); when ``emd WORDS`` is a help request that
    exits 0 having written nothing on stderr, what it printed on stdout is kept for
    :func:`serve`."""
    k = key(words)
    if k is None or sys.stderr is None:
        return run()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out), _Tee(err)
    tees, code = (sys.stdout, sys.stderr), 1
    try:
        run()
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
        raise
    finally:
        whole = sys.stdout is tees[0] and not tees[0].failed  # (not silenced after | head)
        if sys.stdout is tees[0]:
            sys.stdout = out
        if sys.stderr is tees[1]:
            sys.stderr = err
        if code == 0 and whole and not tees[1].parts:
            _store(k, "".join(tees[0].parts))

"""Files written under a temporary name and renamed into place only on success.

Every temporary path in use is kept in a registry, so whatever stops a run — an error,
a signal, a full disk — :func:`remove_all` leaves nothing behind. OS errors on output are
turned into one :class:`OutputError` line (``out.npy: disk full (wrote 1.2 GB of 1.5 GB)``).
"""

import errno
import os
import tempfile

from ..errors import EMDInputError

_LIVE = set()  # temporary paths not yet committed or removed

REASONS = {
    errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
    errno.EPERM: "permission denied", errno.EISDIR: "is a directory",
    errno.ENOENT: "folder does not exist", errno.ENOTDIR: "a parent is not a folder",
    errno.EFBIG: "file too large", errno.EIO: "input/output error",
}


class OutputError(EMDInputError):
    """An output that could not be written (exit 2, one line)."""


def size_text(n):
    """Bytes as ``1.2 GB``/``340 MB``/``12 kB``/``7 B`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def output_error(path, exc, written=None, total=None):
    """An :class:`OutputError` for the OSError ``exc`` met writing ``path``."""
    reason = REASONS.get(getattr(exc, "errno", None)) or (exc.strerror or str(exc)).lower()
    if written is not None:
        reason += f" (wrote {size_text(written)}" + (f" of {size_text(total)})" if total else ")")
    return OutputError(reason, source=path)


def check_folder(path, flag):
    """Refuse, before any work, a dataset folder that cannot be made or written: a file
    of that name, a missing or read-only parent folder (tried for real)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError("exists and is not a folder", source=path, hint=f"{flag} DIR/ names a folder")
    probe = os.path.join(path, "probe") if os.path.isdir(path) else os.path.normpath(path)
    check_writable(probe, flag)


def check_writable(path, flag):
    """Refuse, before any work, an output path that cannot be written: a directory, a
    missing or read-only folder (tried for real with a temporary file)."""
    if os.path.isdir(path):
        raise OutputError("is a directory", source=path, hint=f"{flag} names a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"folder {folder!r} does not exist", source=path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    except OSError as e:
        raise output_error(path, e) from None
    os.close(fd)
    os.unlink(tmp)


class AtomicPath:
    """A temporary path beside ``path`` (created now: an unwritable folder fails here);
    ``commit()`` renames it into place, ``abort()`` removes it."""

    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise OutputError("is a directory", source=path)
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
        except OSError as e:
            raise output_error(path, e) from None
        _LIVE.add(self.tmp)
        os.close(fd)
        umask = os.umask(0)  # mkstemp makes 0600 files; give the result the usual mode
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)

    def commit(self):
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise output_error(self.path, e) from None
        _LIVE.discard(self.tmp)

    def abort(self):
        _remove(self.tmp)


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (a temporary file renamed into place)."""
    tmp = AtomicPath(path)
    try:
        with open(tmp.tmp, "w", encoding="utf-8") as f:
            f.write(text)
        tmp.commit()
    except OSError as e:
        tmp.abort()
        raise output_error(path, e) from None
    except BaseException:
        tmp.abort()
        raise


def _remove(tmp):
    try:
        os.unlink(tmp)
    except OSError:
        pass
    _LIVE.discard(tmp)


def remove_all():
    """Remove every temporary file not yet committed (after an error or a signal)."""
    for tmp in list(_LIVE):
        _remove(tmp)

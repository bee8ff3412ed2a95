"""Sources of prediction and target rows: NPY files and streams, Parquet files.

A source knows its row count (and, when the file says, its width) and yields aligned
batches of numpy arrays, role → array, in bounded memory: NPY by plain reads into
reusable buffers (:mod:`.npy`), Parquet in record batches without pre-buffering whole row
groups (:mod:`.parquet`). ``-`` reads standard input (NPY or Parquet, told apart by their
magic bytes). Errors are :class:`EMDInputError` with ``source`` set to the file name.
"""

import io as _io
import os
import re
import sys

import numpy as np

from ..errors import EMDInputError, one_line
from .npy import NPY_MAGIC, NpyStream, open_npy
from .readahead import read_ahead

PARQUET_MAGIC = b"PAR1"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _fail(name, message, **kw):
    return EMDInputError(message, source=name, **kw)


class Prefixed:
    """A binary stream whose first bytes were already read (to tell the format)."""

    def __init__(self, head, raw):
        self.head, self.raw = head, raw

    def read(self, n=-1):
        if not self.head:
            return self.raw.read(n)
        if n is None or n < 0:
            data, self.head = self.head + self.raw.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data + (self.raw.read(n - len(data)) if len(data) < n else b"")

    def readinto(self, buf):
        if self.head:
            k = min(len(buf), len(self.head))
            buf[:k] = self.head[:k]
            self.head = self.head[k:]
            return k
        return self.raw.readinto(buf)

    def close(self):
        pass


def _stdin():
    """Standard input as an unbuffered binary stream: a buffered one would hold its lock
    while a read-ahead thread waits on a quiet pipe, and the interpreter's exit (after a
    signal) would then abort on that lock."""
    closed = _fail("<stdin>", "standard input is closed", hint="pipe an .npy or .parquet file in")
    if sys.stdin is None:
        raise closed
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, _io.UnsupportedOperation):  # an in-memory stdin
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            raise closed from None
        return buffer
    try:
        return open(fd, "rb", buffering=0, closefd=False)
    except OSError:
        raise closed from None


def _read_exactly(raw, n):
    """Up to ``n`` bytes: fewer only at the end of the stream (a pipe gives what it has)."""
    data = b""
    while len(data) < n:
        more = raw.read(n - len(data))
        if not more:
            break
        data += more
    return data


def is_uri(path):
    """``scheme://…``: a file that :mod:`pyarrow.fs` opens (file, s3, gs, hdfs …)."""
    return isinstance(path, str) and _URI.match(path) is not None


def _open_uri(uri):
    """A random-access file of ``uri`` through :mod:`pyarrow.fs`."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise _fail(uri, "no such file")
        if info.type == pafs.FileType.Directory:
            raise _fail(uri, "is a directory, not a file",
                        hint="datasets are read from local folders or globs")
        return fs.open_input_file(inner)
    except (pa.ArrowException, OSError) as e:
        raise _fail(uri, f"cannot open: {one_line(e)}") from None


def _open_stream(path):
    """Path or ``-`` → (display name, binary stream positioned at 0, kind "npy"|"parquet")."""
    if is_uri(path):
        name, stream = str(path), _open_uri(path)
        head = _read_exactly(stream, 8)
        stream.seek(0)
    elif path == "-":
        name, raw = "<stdin>", _stdin()
        head = _read_exactly(raw, 8)
        if not head:
            raise _fail(name, "standard input is empty", hint="pipe an .npy or .parquet file in")
        stream = Prefixed(head, raw)
    else:
        name = str(path)
        if not os.path.exists(name):
            raise _fail(name, "no such file")
        if os.path.isdir(name):
            raise _fail(name, "is a directory, not a file")
        try:
            stream = open(name, "rb", buffering=0)
            head = _read_exactly(stream, 8)
            stream.seek(0)
        except OSError as e:
            raise _fail(name, f"cannot read: {e.strerror}") from None
    if head.startswith(NPY_MAGIC):
        return name, stream, "npy"
    if head.startswith(PARQUET_MAGIC):
        return name, stream, "parquet"
    from .arrow import sniff

    kind = sniff(name, head)
    if kind:
        return name, stream, kind
    stream.close()
    ext = os.path.splitext(name)[1].lower()
    what = "empty" if not head else "not an NPY, Parquet, Arrow or CSV file"
    if ext in (".npy", ".parquet", ".pq", ".arrow", ".feather", ".arrows"):
        what = f"not a valid {ext} file (truncated or corrupt)"
    raise _fail(name, what, hint="inputs are .npy arrays, .parquet, .arrow or .csv tables")


class NpySource:
    """An NPY array as the source of one role: 2-D rows, or (targets) 1-D class indices.

    ``width`` is 0 for class indices. Rows are read in order, once.
    """

    def __init__(self, name, array, role):
        self.name, self.array = name, array
        shape = array.shape
        if len(shape) == 1 and role == "target":
            layout, self.width = "classes", 0
        elif len(shape) == 2:
            layout, self.width = "rows", shape[1]
        else:
            want = "2-D rows × bins" + (" or 1-D class indices" if role == "target" else "")
            raise _fail(name, f"array has shape {shape}, expected {want}")
        self.n_rows = shape[0]
        self.dtype = array.dtype.name  # as stored
        self.roles = {role: (layout, None)}
        self.bin_names = None
        self.row_bytes = max(array.dtype.itemsize * max(self.width, 1), 1)

    def has(self, role):
        return role in self.roles

    def window(self, start, stop):
        """Read only rows ``start`` to ``stop`` (a task's share of a large file)."""
        if isinstance(self.array, NpyStream):
            self.array.window(start, stop)
        else:
            self.array = self.array[start:stop]
        self.n_rows = stop - start

    def batches(self, size, roles, reuse=False, exact=True):
        """Yield dicts role → array of ``size`` rows (the last may be shorter; ``exact``
        is for the Parquet sources' signature: these batches always are). With
        ``reuse`` two buffers take turns and the next batch is read ahead: a batch's
        arrays are overwritten once the one after it is asked for."""
        starts = range(0, self.n_rows, size)
        if not isinstance(self.array, NpyStream):  # a memory map (Fortran order)
            batches = (np.ascontiguousarray(self.array[s:s + size]) for s in starts)
        else:
            batches = (self.array.read(size, reuse=reuse) for _ in starts)
        for a in (read_ahead(batches) if reuse else batches):
            yield {r: a for r in roles}

    def close(self):
        if isinstance(self.array, NpyStream):
            self.array.close()


def open_input(path, role, *, column=None, target_column=None, id_column=None,
               group_column=None):
    """Open ``path`` (``-`` = stdin) as the source of ``role`` ("pred" or "target").

    For the prediction file, ``target_column`` (or a column named ``target``) makes it
    carry the targets too, ``id_column`` names the row ids and ``group_column`` the
    groups of the summary (roles "id" and "group").
    """
    name, stream, kind = _open_stream(path)
    options = (column, target_column, {"id": id_column, "group": group_column})
    if kind == "parquet":
        from .parquet import open_parquet

        return open_parquet(name, stream, role, *options)
    if kind == "csv":
        from .arrow import open_csv

        return open_csv(name, stream, role, options)
    if kind != "npy":
        from .arrow import open_arrow

        return open_arrow(name, stream, kind, role, options)
    flags = (("--pred-column", column), ("--target-column", target_column),
             ("--id-column", id_column), ("--group-by", group_column))  # NPY from here on
    if role == "target":
        flags = (("--target-column", target_column or column),)
    for flag, value in flags:
        if value:
            stream.close()
            raise _fail(name, f"{flag} needs a Parquet, Arrow or CSV file; NPY files have no columns")
    try:
        return NpySource(name, open_npy(name, stream, owned=path != "-"), role)
    except BaseException:
        stream.close()
        raise


def read_positions(spec):
    """``--positions``: a ``.npy`` 1-D array, a text file (one number per line), or
    ``x1,x2,…``. Returns float64 (N,)."""
    if os.path.exists(spec):
        try:
            if spec.endswith(".npy"):
                x = np.load(spec, allow_pickle=False)
            else:
                with open(spec, encoding="utf-8") as f:
                    lines = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
                x = np.array([float(v) for v in lines])
        except Exception as e:  # noqa: BLE001 - numpy's header parser raises many kinds
            raise EMDInputError(f"cannot read positions: {one_line(e)}", source=spec) from None
        return np.asarray(x, dtype=np.float64).ravel() if x.ndim <= 1 else x
    try:
        return np.array([float(v) for v in spec.split(",")])
    except ValueError:
        raise EMDInputError(
            f"{spec!r} is neither a file nor a comma list of numbers", source="--positions"
        ) from None


def load_ground(path):
    """``--ground``: an N × N matrix from ``.npy`` or a CSV/TSV of numbers (an optional header
    line is skipped). Returns float64 (N, N); validation is ``spaces.Ground``'s."""
    name = str(path)
    if not os.path.exists(name):
        raise EMDInputError("no such ground-matrix file", source=name)
    try:
        if name.endswith(".npy"):
            return np.load(name, allow_pickle=False)
        delimiter = "\t" if name.endswith(".tsv") else ","
        with open(name, encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip()]
        try:
            float(lines[0].split(delimiter)[0])
        except (ValueError, IndexError):
            lines = lines[1:]  # a header
        return np.loadtxt(lines, delimiter=delimiter, ndmin=2)
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises many kinds
        raise EMDInputError(f"cannot read the ground matrix: {one_line(e)}", source=name) from None

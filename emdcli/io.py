"""Readers for predictions and targets: NPY (memory-mapped) and Parquet (record batches).

A :class:`Source` knows its row count and yields aligned batches of numpy arrays, so a
file larger than memory is processed in bounded memory. ``-`` reads standard input (NPY or
Parquet, told apart by their magic bytes). pyarrow is imported only when Parquet is read.
Errors are :class:`EMDInputError` with ``source`` set to the file name.
"""

import io as _io
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .errors import EMDInputError

NPY_MAGIC = b"\x93NUMPY"
PARQUET_MAGIC = b"PAR1"
DEFAULT_TARGET_COLUMN = "target"


def _fail(name, message, **kw):
    return EMDInputError(message, source=name, **kw)


def one_line(error):
    """An exception's text on one line, printable characters only."""
    text = " ".join(str(error).split())
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _open_bytes(path):
    """Path or ``-`` → (display name, path-or-BytesIO, kind "npy"|"parquet")."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
        if not data:
            raise _fail(name, "standard input is empty", hint="pipe an .npy or .parquet file in")
        head, handle = data[:8], _io.BytesIO(data)
    else:
        name = str(path)
        if not os.path.exists(name):
            raise _fail(name, "no such file")
        if os.path.isdir(name):
            raise _fail(name, "is a directory, not a file")
        try:
            with open(name, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise _fail(name, f"cannot read: {e.strerror}") from None
        handle = name
    if head.startswith(NPY_MAGIC):
        return name, handle, "npy"
    if head.startswith(PARQUET_MAGIC):
        return name, handle, "parquet"
    ext = os.path.splitext(name)[1].lower()
    what = "empty" if not head else "not an NPY or Parquet file"
    if ext in (".npy", ".parquet", ".pq"):
        what = f"not a valid {ext} file (truncated or corrupt)"
    raise _fail(name, what, hint="inputs are .npy arrays or .parquet tables")


@dataclass
class Source:
    """One input file: ``n_rows`` rows, ``width`` bins (0 for class indices).

    ``columns`` maps a role ("pred", "target", "id") to a reader ``(start, stop) → array``
    for NPY, or to a Parquet column spec. ``bin_names`` are Parquet column names when the
    bins are separate columns.
    """

    name: str
    n_rows: int
    roles: dict = field(default_factory=dict)
    width: int | None = None
    bin_names: list | None = None
    _parquet: object = None
    _array: object = None

    def has(self, role):
        return role in self.roles

    def order_bins(self, role, names):
        """Read the bin columns of ``role`` in the order of ``names`` (same set of names)."""
        layout, cols = self.roles[role]
        if set(cols) != set(names) or len(cols) != len(names):
            extra = sorted(set(cols) - set(names))[:3]
            missing = sorted(set(names) - set(cols))[:3]
            what = f"column {extra[0]!r} is not a bin" if extra else f"no column for bin {missing[0]!r}"
            raise _fail(self.name, what, hint="the bin columns must name the tree's bins")
        self.roles[role] = (layout, list(names))
        self.bin_names = list(names)

    def batches(self, batch_size, roles):
        """Yield dicts role → numpy array of ``batch_size`` rows (the last may be shorter)."""
        if self._array is not None:
            for start in range(0, self.n_rows, batch_size):
                stop = min(start + batch_size, self.n_rows)
                yield {r: np.asarray(self._array[start:stop]) for r in roles}
            return
        yield from _rechunk(self._parquet_batches(batch_size, roles), batch_size)

    def _parquet_batches(self, batch_size, roles):
        wanted = sorted({c for r in roles for c in self.roles[r][1]})
        offset = 0
        widths = {}
        try:
            for rb in self._parquet.iter_batches(batch_size=batch_size, columns=wanted):
                chunk = {r: _convert(self.name, rb, self.roles[r], offset) for r in roles}
                for r, a in chunk.items():
                    if a.ndim == 2 and widths.setdefault(r, a.shape[1]) != a.shape[1]:
                        raise _fail(
                            self.name, f"row has {a.shape[1]} values but earlier rows have "
                            f"{widths[r]}", row=offset, hint="every row needs the same number of bins",
                        )
                yield chunk
                offset += rb.num_rows
        except (OSError, ValueError) as e:
            if isinstance(e, EMDInputError):
                raise
            raise _fail(self.name, f"cannot read Parquet data: {one_line(e)}", row=offset) from None


def _rechunk(chunks, size):
    """Regroup a stream of dicts of equal-length arrays into chunks of exactly ``size``."""
    pending, have = [], 0
    for chunk in chunks:
        n = len(next(iter(chunk.values())))
        pending.append(chunk)
        have += n
        while have >= size:
            merged = {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}
            yield {k: v[:size] for k, v in merged.items()}
            rest = {k: v[size:] for k, v in merged.items()}
            have -= size
            pending = [rest] if have else []
    if have:
        yield {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}


def _open_npy(name, handle, role):
    """An NPY file as a Source for ``role`` ("pred" or "target"), memory-mapped."""
    try:
        if isinstance(handle, str):
            arr = np.load(handle, mmap_mode="r", allow_pickle=False)
        else:
            arr = np.load(handle, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _fail(
            name, f"cannot read NPY data: {one_line(e)}", hint="the file may be truncated"
        ) from None
    if arr.dtype.kind not in "fiub":
        raise _fail(name, f"holds {arr.dtype} values, expected numbers")
    if arr.ndim == 1 and role == "target":
        return Source(name, arr.shape[0], roles={role: ("classes", None)}, width=0, _array=arr)
    if arr.ndim != 2:
        want = "2-D rows × bins" + (" or 1-D class indices" if role == "target" else "")
        raise _fail(name, f"array has shape {arr.shape}, expected {want}")
    return Source(name, arr.shape[0], roles={role: ("rows", None)}, width=arr.shape[1], _array=arr)


def open_input(path, role, *, column=None, target_column=None, id_column=None):
    """Open ``path`` (``-`` = stdin) as the source of ``role`` ("pred" or "target").

    For the prediction file, ``target_column`` (or a column named ``target``) makes it
    carry the targets too, and ``id_column`` names the row ids.
    """
    name, handle, kind = _open_bytes(path)
    if kind == "parquet":
        return _open_parquet(name, handle, role, column, target_column, id_column)
    flags = (("--pred-column", column), ("--target-column", target_column),
             ("--id-column", id_column))
    if role == "target":
        flags = (("--target-column", target_column or column),)
    for flag, value in flags:
        if value:
            raise _fail(name, f"{flag} needs a Parquet file; NPY files have no columns")
    return _open_npy(name, handle, role)


def _open_parquet(name, handle, role, column, target_column, id_column):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError) as e:
        raise _fail(
            name, f"cannot read Parquet file: {one_line(e)}", hint="the file may be truncated"
        ) from None
    schema = pf.schema_arrow
    names = schema.names

    def need(col, flag):
        if col not in names:
            raise _fail(name, f"no column {col!r} (for {flag}); columns are: {', '.join(names)}")
        return col

    roles = {}
    used = set()
    if id_column and role == "pred":
        roles["id"] = ("id", [need(id_column, "--id-column")])
        used.add(id_column)
    if role == "pred":
        if target_column:
            tcol = need(target_column, "--target-column")
        else:
            tcol = DEFAULT_TARGET_COLUMN if DEFAULT_TARGET_COLUMN in names else None
        if tcol:
            roles["target"] = _target_spec(name, schema, tcol, pa)
            used.add(tcol)
        spec, bin_names = _rows_spec(name, schema, column, used, "--pred-column", pa)
    else:
        tcol = target_column or column
        if tcol or DEFAULT_TARGET_COLUMN in names:
            tcol = need(tcol, "--target-column") if tcol else DEFAULT_TARGET_COLUMN
            spec, bin_names = _target_spec(name, schema, tcol, pa), None
        else:
            spec, bin_names = _rows_spec(name, schema, None, used, "--target-column", pa)
    roles[role] = spec
    width = None
    if spec[0] == "columns":
        width = len(spec[1])
    elif spec[0] == "rows" and pa.types.is_fixed_size_list(schema.field(spec[1][0]).type):
        width = schema.field(spec[1][0]).type.list_size
    return Source(
        name, pf.metadata.num_rows, roles=roles, width=width, bin_names=bin_names, _parquet=pf
    )


def _is_list(t, pa):
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t, pa):
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _target_spec(name, schema, col, pa):
    t = schema.field(col).type
    if _is_list(t, pa):
        return ("rows", [col])
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return ("classes", [col])
    raise _fail(name, f"target column {col!r} has type {t}; expected a list of numbers or integers")


def _rows_spec(name, schema, column, used, flag, pa):
    """How the bins are stored: one list column, or many numeric columns."""
    if column:
        cols = [c.strip() for c in column.split(",") if c.strip()]
        for c in cols:
            if c not in schema.names:
                raise _fail(
                    name, f"no column {c!r} (for {flag}); columns are: {', '.join(schema.names)}"
                )
        if len(cols) == 1 and _is_list(schema.field(cols[0]).type, pa):
            return ("rows", cols), None
        for c in cols:
            if not _is_number(schema.field(c).type, pa):
                raise _fail(name, f"column {c!r} has type {schema.field(c).type}, not numbers")
        return ("columns", cols), cols
    lists = [f.name for f in schema if f.name not in used and _is_list(f.type, pa)]
    if len(lists) > 1:
        raise _fail(
            name, f"several list columns ({', '.join(lists)})", hint=f"choose one with {flag}"
        )
    if lists:
        return ("rows", lists), None
    cols = [f.name for f in schema if f.name not in used and _is_number(f.type, pa)]
    if not cols:
        raise _fail(name, "no numeric or list columns to read bins from")
    return ("columns", cols), cols


def _convert(name, rb, spec, offset):
    """One role of a RecordBatch → numpy: (B, N) rows, (B,) classes or ids."""
    layout, cols = spec
    if layout == "columns":
        out = np.empty((rb.num_rows, len(cols)), dtype=np.float64)
        for j, c in enumerate(cols):
            out[:, j] = _column_numbers(name, rb.column(c), offset, c)
        return out
    arr = rb.column(cols[0])
    if layout == "id":
        return np.asarray(arr.to_numpy(zero_copy_only=False))
    if layout == "classes":
        if arr.null_count:
            r = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise _fail(name, f"column {cols[0]!r} is missing a value", row=offset + r)
        return arr.to_numpy(zero_copy_only=False)
    return _list_rows(name, arr, offset, cols[0])


def _column_numbers(name, arr, offset, col):
    if arr.null_count:
        r = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column {col!r} is missing a value", row=offset + r)
    return arr.to_numpy(zero_copy_only=False)


def _list_rows(name, arr, offset, col):
    """A list / fixed-size-list column → (B, N) numpy, every row the same length."""
    import pyarrow as pa

    if arr.null_count:
        r = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column {col!r} has a missing row", row=offset + r)
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
    else:
        lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if len(lengths) else 0
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            r = int(bad[0])
            raise _fail(
                name, f"column {col!r} has {lengths[r]} values in this row but {width} in the first",
                row=offset + r, hint="every row needs the same number of bins",
            )
    flat = arr.flatten()
    if not (_is_number(flat.type, pa)):
        raise _fail(name, f"column {col!r} holds {flat.type}, not numbers")
    if flat.null_count:
        i = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column {col!r} is missing a value", row=offset + i // width, column=i % width)
    return flat.to_numpy(zero_copy_only=False).reshape(len(arr), width)


def read_positions(spec):
    """``--positions``: a ``.npy`` 1-D array, a text file (one number per line), or
    ``x1,x2,…``. Returns float64 (N,)."""
    if os.path.exists(spec):
        try:
            if spec.endswith(".npy"):
                x = np.load(spec, allow_pickle=False)
            else:
                with open(spec) as f:
                    lines = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
                x = np.array([float(v) for v in lines])
        except (ValueError, OSError) as e:
            raise EMDInputError(f"cannot read positions: {e}", source=spec) from None
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
        with open(name) as f:
            lines = [ln for ln in f if ln.strip()]
        try:
            float(lines[0].split(delimiter)[0])
        except (ValueError, IndexError):
            lines = lines[1:]  # a header
        return np.loadtxt(lines, delimiter=delimiter, ndmin=2)
    except (ValueError, OSError, EOFError) as e:
        raise EMDInputError(f"cannot read the ground matrix: {e}", source=name) from None

"""Parquet sources, read in record batches in bounded memory.

``pre_buffer=False`` with a read buffer keeps pyarrow from holding every row group's
column chunks (memory that grew with the file); standard input, which Parquet cannot be
read from without seeking, is first copied to an unlinked temporary file (disk, not
memory, and nothing to remove afterwards whatever happens).
"""

import os
import shutil
import tempfile

import numpy as np

from ..errors import EMDInputError, one_line
from .readahead import read_ahead

DEFAULT_TARGET_COLUMN = "target"
READ_BUFFER = 1 << 22  # bytes pyarrow reads at a time from a column chunk


def _fail(name, message, **kw):
    return EMDInputError(message, source=name, **kw)


def _spool(stream):
    """Copy a non-seekable stream into an unlinked temporary file; returns that file."""
    fd, path = tempfile.mkstemp(prefix="emd-stdin-", suffix=".parquet")
    os.unlink(path)  # gone from the folder at once: the data lives as long as the handle
    f = os.fdopen(fd, "w+b")
    try:
        shutil.copyfileobj(stream, f, 1 << 22)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


class ParquetSource:
    """A Parquet file: ``roles`` maps "pred", "target", "id" to a column spec
    ``(layout, columns)``; ``bin_names`` are the column names when bins are columns."""

    kind = "Parquet"

    def __init__(self, name, pf, roles, width, bin_names, handle, dtype=None):
        self.name, self.pf, self.roles, self.dtype = name, pf, roles, dtype
        self.n_rows = pf.metadata.num_rows
        self.width, self.bin_names, self.handle = width, bin_names, handle
        self.rows = None  # (start, stop): read only these rows

    def window(self, start, stop):
        """Read only rows ``start`` to ``stop`` (the row groups that hold them)."""
        self.rows, self.n_rows = (start, stop), stop - start

    @property
    def row_bytes(self):
        """Bytes of one row of every column this source reads (an estimate for lists)."""
        return max(8 * max(self.width or 32, 1) + 16, 1)

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

    def batches(self, size, roles, reuse=False, exact=True):
        """Yield dicts role → numpy array of ``size`` rows (the last may be shorter; with
        ``exact`` false, at most ``size``: a row group's end cuts a batch, which saves a
        copy when no other source has to line up with these batches). With ``reuse`` the
        next batch is decoded while the caller computes this one."""
        chunks = self._record_batches(size, roles)
        if exact:
            chunks = rechunk(chunks, size)
        yield from read_ahead(chunks) if reuse else chunks

    def _record_batches(self, size, roles):
        wanted = sorted({c for r in roles for c in self.roles[r][1]})
        offset = 0
        widths = {}
        try:
            for rb in self._iter(size, wanted):
                chunk = {r: _convert(self.name, rb, self.roles[r], offset) for r in roles}
                for r, a in chunk.items():
                    if a.ndim == 2 and widths.setdefault(r, a.shape[1]) != a.shape[1]:
                        raise _fail(
                            self.name, f"row has {a.shape[1]} values but earlier rows have "
                            f"{widths[r]}", row=offset, hint="every row needs the same number of bins",
                        )
                yield chunk
                offset += rb.num_rows
        except EMDInputError:
            raise
        except (OSError, ValueError) as e:
            raise _fail(self.name, f"cannot read {self.kind} data: {one_line(e)}", row=offset) from None

    def _iter(self, size, columns):
        """Record batches one row group at a time: over a whole file, pyarrow keeps every
        row group it has decoded until the end (memory that grows with the file)."""
        lo, hi = self.rows or (0, self.n_rows)
        row = 0  # the file's row at the start of the next record batch
        for g in range(self.pf.metadata.num_row_groups):
            n = self.pf.metadata.row_group(g).num_rows
            if row + n <= lo or row >= hi:
                row += n
                continue
            for rb in self.pf.iter_batches(batch_size=size, row_groups=[g], columns=columns,
                                           use_threads=False):
                a, b = max(lo - row, 0), min(hi - row, rb.num_rows)
                row += rb.num_rows
                if b > a:
                    yield rb if (a, b) == (0, rb.num_rows) else rb.slice(a, b - a)

    def close(self):
        if hasattr(self.handle, "close"):
            self.handle.close()


def rechunk(chunks, size):
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


def open_parquet(name, stream, role, column, target_column, carried):
    """A :class:`ParquetSource` for ``role`` from an open binary stream; ``carried``
    maps the roles "id" and "group" to the columns that hold them (or None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if name == "<stdin>":
        handle = _spool(stream)
    elif "://" in name:  # a pyarrow.fs file (a URI): read through it
        handle = stream
    else:  # by name: pyarrow's own file, read without the GIL
        stream.close()
        handle = name
    try:
        pf = pq.ParquetFile(handle, pre_buffer=False, buffer_size=READ_BUFFER)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as e:
        if hasattr(handle, "close"):
            handle.close()
        raise _fail(
            name, f"cannot read Parquet file: {one_line(e)}", hint="the file may be truncated"
        ) from None
    try:
        roles, width, bin_names = _roles(name, schema, role, column, target_column, carried, pa)
    except BaseException:
        if hasattr(handle, "close"):
            handle.close()
        raise
    return ParquetSource(name, pf, roles, width, bin_names, handle,
                         _stored_dtype(schema, roles.get(role), pa))


def _roles(name, schema, role, column, target_column, carried, pa):
    """(roles, width or None, bin column names or None) of the file's columns."""
    names = schema.names
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise _fail(name, f"has {names.count(dup[0])} columns named {dup[0]!r}",
                    hint="column names must be unique; rename the duplicates")

    def need(col, flag):
        if col not in names:
            raise _fail(name, f"no column {col!r} (for {flag}); columns are: {', '.join(names)}")
        return col

    roles = {}
    used = set()
    for r, flag in (("id", "--id-column"), ("group", "--group-by")):
        col = carried.get(r)
        if col and role == "pred":
            roles[r] = ("id", [need(col, flag)])
            used.add(col)
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
    elif spec[0] == "classes":
        width = 0
    return roles, width, bin_names
def _stored_dtype(schema, spec, pa):
    """The numpy dtype name the rows of ``spec`` are stored in (None if not one float)."""
    layout, cols = spec
    types = [schema.field(c).type for c in cols]
    if layout == "rows":
        types = [t.value_type for t in types if _is_list(t, pa)]
    names = {str(t) for t in types}
    return {"float": "float32", "double": "float64"}.get(names.pop()) if len(names) == 1 else None


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
    if layout == "columns":  # one array in the columns' common dtype (float32 stays float32)
        parts = [_column_numbers(name, rb.column(c), offset, c) for c in cols]
        out = np.empty((rb.num_rows, len(cols)), dtype=np.result_type(*parts))
        for j, a in enumerate(parts):
            out[:, j] = a
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
    if pa.types.is_fixed_size_list(arr.type):  # no nulls: the child's slice (flatten copies)
        flat = arr.values.slice(arr.offset * width, len(arr) * width)
    else:
        flat = arr.flatten()
    if not (_is_number(flat.type, pa)):
        raise _fail(name, f"column {col!r} holds {flat.type}, not numbers")
    if flat.null_count:
        i = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column {col!r} is missing a value", row=offset + i // width, column=i % width)
    return flat.to_numpy(zero_copy_only=False).reshape(len(arr), width)



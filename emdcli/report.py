"""Per-row results out: CSV/TSV/JSONL streams, Parquet, NPY, Rich tables, summaries.

Rows are written as they come. Files are written to a temporary name beside the target and
renamed only on success, so a failed run leaves no half-written file. Floats are written
at full precision (the shortest text that reads back to the same float64/float32).
"""

import json
import math
import os
import sys
import tempfile

import numpy as np

from .errors import EMDInputError

FORMATS = ("table", "csv", "tsv", "jsonl")
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet", ".npy": "npy"}
TABLE_ROWS = 20


def format_float(v):
    """Shortest round-trip text of a float64 or float32 value; ``nan``/``inf``/``-inf``."""
    if isinstance(v, np.float32):
        return _float32_texts(np.array([v]))[0] if np.isfinite(v) else _nonfinite(float(v))
    v = float(v)
    return repr(v) if math.isfinite(v) else _nonfinite(v)


# numpy >= 2.3 spells a float32 of magnitude >= 1e6 in scientific notation (past 2^24 a
# float32 no longer holds every integer); earlier numpys do so only from 1e16 on
_FLOAT32_SCIENTIFIC_FROM_1E6 = str(np.float32(1e6)) == "1e+06"


def _float32_texts(a):
    """numpy's shortest round-trip text of each float32 of ``a`` (1-D), spelt as numpy
    >= 2.3 spells it whatever the numpy: the same file from the same results."""
    texts = a.astype(str)
    if not _FLOAT32_SCIENTIFIC_FROM_1E6:
        with np.errstate(invalid="ignore"):
            big = np.flatnonzero(np.isfinite(a) & (np.abs(a) >= 1e6))
        if big.size:
            texts = texts.astype(object)
            for i in big:
                texts[i] = np.format_float_scientific(a[i], unique=True, trim="-", exp_digits=2)
    return texts.tolist()


def _nonfinite(v):
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return format_float(v)
    if isinstance(v, (np.bool_, bool)):
        return "true" if v else "false"
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)


def _quoted(text, sep):
    """CSV quoting (RFC 4180) for a cell holding the separator, a quote or a newline."""
    if sep in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _json_value(v):
    if isinstance(v, np.floating):
        return json.loads(format_float(v)) if np.isfinite(v) else None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _text_cells(values, sep):
    """A column's CSV/TSV cells, all at once: what :func:`_cell` (and :func:`_quoted`)
    give cell by cell (float64: ``repr``, which spells nan/inf/-inf as we do; float32:
    numpy's shortest round-trip text), without a numpy scalar per cell."""
    a = np.asarray(values)
    if a.dtype == np.float64:
        return list(map(repr, a.tolist()))
    if a.dtype == np.float32:
        return _float32_texts(a.ravel())
    if a.dtype.kind == "b":
        return ["true" if v else "false" for v in a.tolist()]
    if a.dtype.kind in "iu":
        return list(map(str, a.tolist()))
    return [_quoted(_cell(v), sep) for v in a]


def _json_cells(values):
    """A column's JSON values as text, all at once: ``json.dumps`` of :func:`_json_value`
    cell by cell (non-finite floats are ``null``; a float32 is its shortest text read as
    a Python float)."""
    a = np.asarray(values)
    if a.dtype.kind == "f":
        finite = np.isfinite(a).tolist()
        texts = a.tolist() if a.dtype == np.float64 else map(float, a.astype(str).tolist())
        return [repr(v) if ok else "null" for v, ok in zip(texts, finite)]
    if a.dtype.kind == "b":
        return ["true" if v else "false" for v in a.tolist()]
    if a.dtype.kind in "iu":
        return list(map(str, a.tolist()))
    return [json.dumps(_json_value(v)) for v in a]


class AtomicPath:
    """A temporary path beside ``path``; ``commit()`` renames it into place."""

    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
        os.close(fd)
        umask = os.umask(0)  # mkstemp makes 0600 files; give the result the usual mode
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)

    def commit(self):
        os.replace(self.tmp, self.path)

    def abort(self):
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def output_format(output, fmt, stdout_is_tty):
    """The format to write: from ``--output``'s extension, else ``--format``, else by tty."""
    if output and output != "-":
        ext = os.path.splitext(output)[1].lower()
        if ext not in FILE_FORMATS:
            raise EMDInputError(
                f"cannot tell the format of {output!r} from its extension",
                source="--output", hint=f"use one of {', '.join(FILE_FORMATS)}",
            )
        return FILE_FORMATS[ext]
    if fmt:
        return fmt
    return "table" if stdout_is_tty else "csv"


class TextWriter:
    """CSV, TSV or JSONL rows to a text stream."""

    def __init__(self, stream, fmt, columns):
        self.stream, self.fmt, self.columns = stream, fmt, columns
        if fmt in ("csv", "tsv"):
            self.sep = "," if fmt == "csv" else "\t"
            stream.write(self.sep.join(columns) + "\n")

    def write(self, batch):
        if not len(batch[self.columns[0]]):
            return
        if self.fmt == "jsonl":
            cols = [[f"{json.dumps(c)}: {v}" for v in _json_cells(batch[c])] for c in self.columns]
            lines = ("{" + ", ".join(row) + "}" for row in zip(*cols))
        else:
            cols = [_text_cells(batch[c], self.sep) for c in self.columns]
            lines = map(self.sep.join, zip(*cols))
        self.stream.write("\n".join(lines) + "\n")

    def close(self):
        self.stream.flush()


class ParquetWriter:
    """Rows to a Parquet file, one row group per batch. ``dtypes`` (column → numpy dtype,
    ``width`` for list columns) type the columns of a file with no rows."""

    def __init__(self, path, columns, dtypes=None, width=None):
        self.path, self.columns, self.writer = path, columns, None
        self.dtypes, self.width = dtypes or {}, width

    def write(self, batch):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: _arrow_column(batch[c]) for c in self.columns})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self):
        if self.writer is None:  # no rows: still write a valid, empty, typed file
            empty = {}
            for c in self.columns:
                dt = np.dtype(self.dtypes.get(c, np.int64))
                empty[c] = np.empty((0, self.width or 0) if c == "gradient" else 0, dtype=dt)
            self.write(empty)
        self.writer.close()


def _arrow_column(values):
    import pyarrow as pa

    values = np.asarray(values)
    if values.ndim == 2:  # gradients: one fixed-size list per row
        flat = pa.array(values.ravel())
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    return pa.array(values)


class NpyWriter:
    """Rows into a preallocated ``.npy``: 1-D for one column, (rows, N) for gradients,
    a structured array when there are several columns."""

    def __init__(self, path, columns, n_rows, dtypes, width=None):
        self.columns = columns
        if width is not None:
            shape, dtype = (n_rows, width), dtypes[columns[0]]
        elif len(columns) == 1:
            shape, dtype = (n_rows,), dtypes[columns[0]]
        else:
            shape, dtype = (n_rows,), np.dtype([(c, dtypes[c]) for c in columns])
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.row = 0

    def write(self, batch):
        n = len(batch[self.columns[0]])
        target = self.array[self.row : self.row + n]
        if self.array.dtype.names:
            for c in self.columns:
                target[c] = batch[c]
        else:
            target[...] = batch[self.columns[0]]
        self.row += n

    def close(self):
        self.array.flush()
        del self.array


class TableWriter:
    """A Rich table of the first rows, printed at the end (for terminals)."""

    def __init__(self, console, columns, title):
        self.console, self.columns, self.title = console, columns, title
        self.rows, self.count = [], 0

    def discard(self):
        """Called instead of ``close`` when the run fails: print nothing."""

    def write(self, batch):
        n = len(batch[self.columns[0]])
        take = max(0, min(n, TABLE_ROWS - len(self.rows)))
        for i in range(take):
            self.rows.append([_cell(batch[c][i]) for c in self.columns])
        self.count += n

    def close(self):
        from rich.table import Table

        caption = None
        if self.count > len(self.rows):
            caption = f"first {len(self.rows)} of {self.count} rows; use --format csv or --output for all"
        table = Table(title=self.title, caption=caption)
        for c in self.columns:
            table.add_column(c, justify="left" if c == self.columns[0] else "right")
        for r in self.rows:
            table.add_row(*r)
        self.console.print(table)


class Summary:
    """Running statistics of one value column: count, mean, std, min, p50, p95, max.

    Keeps the values (8 bytes a row) for exact quantiles; non-finite values are counted
    apart and left out of the statistics.
    """

    def __init__(self, name):
        self.name = name
        self.parts = []
        self.not_converged = None
        self.timing = None  # a Timing, once a job has run

    def add(self, values, converged=None):
        """Add a batch of values (and, for iterative metrics, their converged flags)."""
        self.parts.append(np.asarray(values, dtype=np.float64).copy())
        if converged is not None:
            self.not_converged = (self.not_converged or 0) + int((~np.asarray(converged)).sum())

    def stats(self):
        v = np.concatenate(self.parts) if self.parts else np.empty(0)
        finite = v[np.isfinite(v)]
        out = {"count": int(v.size), "nonfinite": int(v.size - finite.size)}
        if self.not_converged is not None:
            out["not_converged"] = self.not_converged
        if finite.size:
            out.update(
                mean=float(finite.mean()), std=float(finite.std()), min=float(finite.min()),
                p50=float(np.quantile(finite, 0.5)), p95=float(np.quantile(finite, 0.95)),
                max=float(finite.max()),
            )
        return out

    def line(self):
        s = self.stats()
        parts = [f"{k}={format_float(v) if isinstance(v, float) else v}" for k, v in s.items()
                 if not (k in ("nonfinite", "not_converged") and v == 0)]
        return f"{self.name}: " + " ".join(parts)


class Timing:
    """Where a job's time went (seconds): reading batches, computing, writing, in all;
    ``gpu``: the GPU launchers' phases (``to_device``, ``compile``, ``kernel``,
    ``to_host``) when they were clocked, else None."""

    def __init__(self):
        self.rows = 0
        self.read = self.compute = self.write = self.wall = 0.0
        self.gpu = None

    def line(self):
        from .timing import format_seconds

        def fs(seconds):
            return "0 s" if seconds == 0 else format_seconds(seconds)

        rate = f" ({self.rows / self.wall:,.0f} rows/s)" if self.wall > 0 else ""
        text = (f"timing: {self.rows} rows in {fs(self.wall)}{rate}: read {fs(self.read)}, "
                f"compute {fs(self.compute)}, write {fs(self.write)}")
        if self.gpu is not None:
            g = self.gpu
            text += (f"; of the compute, on the GPU: copies in {fs(g['to_device'])}, "
                     f"compilation {fs(g['compile'])}, kernels {fs(g['kernel'])}, "
                     f"copies out {fs(g['to_host'])}")
        return text


def stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr)

"""Where a job's rows go: CSV/TSV/JSONL streams, Parquet, NPY, Rich tables.

A :class:`Sinks` holds every output of one job; they are opened before any work (so an
unwritable path fails at once), written batch by batch, and committed or aborted
together: files are written under a temporary name (:mod:`.atomic`) and renamed into
place only when every one succeeded. Floats are written at full precision.
"""

import os

import numpy as np

from .. import report
from .atomic import AtomicPath, OutputError, output_error

PARQUET_ROW_GROUP = 1 << 20  # rows a Parquet row group holds (results are ~16 B a row)


class StdoutClosed(Exception):
    """The reader of standard output went away (``| head``)."""


class TextWriter:
    """CSV, TSV or JSONL rows to a text stream (closed at the end when ``owned``)."""

    def __init__(self, stream, fmt, columns, owned=False):
        self.stream, self.fmt, self.columns, self.owned = stream, fmt, columns, owned
        if fmt in ("csv", "tsv"):
            self.sep = "," if fmt == "csv" else "\t"
            stream.write(self.sep.join(columns) + "\n")

    def write(self, batch):
        if not len(batch[self.columns[0]]):
            return
        if self.fmt == "jsonl":
            cols = [[f"{report.json_key(c)}: {v}" for v in report.json_cells(batch[c])]
                    for c in self.columns]
            lines = ("{" + ", ".join(row) + "}" for row in zip(*cols))
        else:
            cols = [report.text_cells(batch[c], self.sep) for c in self.columns]
            lines = map(self.sep.join, zip(*cols))
        self.stream.write("\n".join(lines) + "\n")

    def close(self):
        (self.stream.close if self.owned else self.stream.flush)()

    def discard(self):
        if self.owned:
            self.stream.close()


class ParquetWriter:
    """Rows to a Parquet file in row groups of about ``PARQUET_ROW_GROUP`` rows (batches
    are held until a group is full), floats without dictionary encoding. ``dtypes``
    (column → numpy dtype, ``width`` for list columns) type the columns of an empty file."""

    group_rows = PARQUET_ROW_GROUP  # rows a row group holds (wide tables: fewer)

    def __init__(self, path, columns, dtypes=None, width=None):
        self.path, self.columns, self.writer = path, columns, None
        self.dtypes, self.width = dtypes or {}, width
        self.pending, self.rows = [], 0

    def write(self, batch):
        n = len(batch[self.columns[0]])
        if n:
            self.pending.append({c: np.asarray(batch[c]) for c in self.columns})
            self.rows += n
        if self.rows >= self.group_rows:
            self._flush()

    def _flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self.pending or [_empty(self.columns, self.dtypes, self.width)]  # an empty, typed file
        self.pending, self.rows = [], 0
        # one row group from the batches as they are (chunks of one table: no copy)
        table = pa.Table.from_batches([_record_batch(b, self.columns, self.dtypes, self.width)
                                       for b in parts])
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, **_encodings(parts[0]))
        self.writer.write_table(table, row_group_size=max(len(table), 1))

    def close(self):
        if self.pending or self.writer is None:
            self._flush()
        self.writer.close()

    def discard(self):
        self.pending = []
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass


class ArrowWriter:
    """Rows as Arrow IPC record batches, one per batch as it comes: a file (``.arrow``,
    ``.feather``: the random-access format) or a stream (standard output, for
    ``emd … -f arrow | duckdb``/polars/pyarrow)."""

    def __init__(self, sink, columns, dtypes=None, width=None, stream=False):
        self.sink, self.columns, self.writer = sink, columns, None
        self.dtypes, self.width, self.stream = dtypes or {}, width, stream

    def write(self, batch):
        if len(batch[self.columns[0]]) or self.writer is None:
            self._write(_record_batch(batch, self.columns, self.dtypes, self.width))

    def _write(self, rb):
        import pyarrow as pa

        if self.writer is None:
            new = pa.ipc.new_stream if self.stream else pa.ipc.new_file
            self.writer = new(self.sink, rb.schema)
        if rb.num_rows:
            self.writer.write_batch(rb)

    def close(self):
        if self.writer is None:
            self.write({c: [] for c in self.columns})
        self.writer.close()
        if self.stream:
            self.sink.flush()

    def discard(self):
        if self.writer is not None and not self.stream:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass


def _record_batch(batch, columns, dtypes, width):
    """A RecordBatch of ``batch``'s columns (typed by ``dtypes`` when it has no rows)."""
    import pyarrow as pa

    if not len(batch[columns[0]]):
        batch = _empty(columns, dtypes, width)
    return pa.record_batch([_arrow_column(batch[c]) for c in columns], names=columns)


def _empty(columns, dtypes, width):
    """No rows, each column typed (``dtypes``; row ids int64; gradients ``width`` wide)."""
    return {c: np.empty((0, width or 0) if c == "gradient" else 0,
                        dtype=np.dtype(dtypes.get(c, np.int64))) for c in columns}


def _encodings(data):
    """Parquet writer options for result columns: no dictionaries (tried and dropped on
    random floats, at a cost), floats plain and uncompressed (they do not compress),
    integers (row ids, iteration counts) delta-encoded: 2× faster, a third smaller."""
    encoding, compression = {}, {}
    for c, v in data.items():
        if v.dtype.kind == "f":
            encoding[c], compression[c] = "PLAIN", "none"
        elif v.dtype.kind in "iu" and v.dtype.itemsize >= 4:
            encoding[c], compression[c] = "DELTA_BINARY_PACKED", "snappy"
        else:
            compression[c] = "snappy"
    return dict(use_dictionary=False, column_encoding=encoding, compression=compression)


def _arrow_column(values):
    import pyarrow as pa

    values = np.asarray(values)
    if values.ndim == 2:  # gradients: one fixed-size list per row
        flat = pa.array(values.ravel())
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    return pa.array(values)


def npy_header(dtype, shape):
    """The NPY 1.0 header for ``dtype`` and ``shape``, padded to a multiple of 64 bytes."""
    fmt = np.lib.format
    header = fmt.header_data_from_array_1_0(np.empty(0, dtype))
    header["shape"] = tuple(shape)
    buf = __import__("io").BytesIO()
    fmt.write_array_header_1_0(buf, header)
    return buf.getvalue()


class NpyWriter:
    """Rows appended to a ``.npy`` file by plain writes (no memory map, so a full disk is
    an error, not a SIGBUS): 1-D for one column, (rows, N) for gradients, a structured
    array for several columns. The header, written first, promises ``n_rows``."""

    def __init__(self, path, columns, n_rows, dtypes, width=None):
        self.columns = columns
        if width is not None:
            shape, dtype = (n_rows, width), dtypes[columns[0]]
        elif len(columns) == 1:
            shape, dtype = (n_rows,), dtypes[columns[0]]
        else:
            shape, dtype = (n_rows,), np.dtype([(c, dtypes[c]) for c in columns])
        self.dtype, self.shape = np.dtype(dtype), shape
        self.f = open(path, "wb")
        self.f.write(npy_header(self.dtype, shape))
        self.row = 0
        self.total = self.f.tell() + int(np.prod(shape)) * self.dtype.itemsize

    def write(self, batch):
        n = len(batch[self.columns[0]])
        if self.dtype.names:
            out = np.empty(n, self.dtype)
            for c in self.columns:
                out[c] = batch[c]
        else:
            out = np.ascontiguousarray(batch[self.columns[0]], dtype=self.dtype)
        self.f.write(memoryview(out.reshape(-1).view(np.uint8)) if out.size else b"")
        self.row += n

    def close(self):
        if self.row != self.shape[0]:
            raise OutputError(f"{self.row} rows written but {self.shape[0]} expected")
        self.f.close()

    def discard(self):
        self.f.close()


class TableWriter:
    """A Rich table of the first rows, printed at the end (for terminals)."""

    def __init__(self, console, columns, title):
        self.console, self.columns, self.title = console, columns, title
        self.rows, self.count = [], 0

    def discard(self):
        """Called instead of ``close`` when the run fails: print nothing."""

    def write(self, batch):
        n = len(batch[self.columns[0]])
        take = max(0, min(n, report.TABLE_ROWS - len(self.rows)))
        for i in range(take):
            self.rows.append([report.cell(batch[c][i]) for c in self.columns])
        self.count += n

    def close(self):
        from rich.table import Table

        table = Table(title=self.title)
        for c in self.columns:
            table.add_column(c, justify="left" if c == self.columns[0] else "right")
        for r in self.rows:
            table.add_row(*r)
        self.console.print(table)
        if self.count > len(self.rows):  # a line of its own: wrapped to the terminal, not the table
            self.console.print(f"first {len(self.rows)} of {self.count:,} rows; use --format csv "
                               "or --output for all", style="dim", markup=False, highlight=False)


class FileSink:
    """One output file: its temporary file exists from construction on; the format's
    writer opens on the first batch (when the gradient width is known)."""

    def __init__(self, path, fmt, columns, dtypes, n_rows):
        self.path, self.fmt, self.columns = path, fmt, columns
        self.dtypes, self.n_rows = dtypes, n_rows
        self.atomic = AtomicPath(path)
        self.writer = None

    def _open(self, width):
        tmp = self.atomic.tmp
        if self.columns[-1] != "gradient":
            width = None  # the width types gradient files only
        if self.fmt == "parquet":
            return ParquetWriter(tmp, self.columns, self.dtypes, width)
        if self.fmt == "arrow":
            return ArrowWriter(tmp, self.columns, self.dtypes, width)
        if self.fmt == "npy":
            cols = self.columns[1:] if width is None else self.columns[-1:]
            return NpyWriter(tmp, cols, self.n_rows, self.dtypes, width)
        return TextWriter(open(tmp, "w", newline=""), self.fmt, self.columns, owned=True)

    def _guard(self, action, *args):
        try:
            return action(*args)
        except OSError as e:
            tmp = self.atomic.tmp
            written = os.path.getsize(tmp) if os.path.exists(tmp) else None
            raise output_error(self.path, e, written, getattr(self.writer, "total", None)) from None

    def _ready(self, width):
        if self.writer is None:
            self.writer = self._guard(self._open, width)
        return self.writer

    def write(self, batch, width=None):
        self._guard(self._ready(width).write, batch)

    def finish(self, width=None):
        """Complete the temporary file (an empty, typed one when no rows came)."""
        self._guard(self._ready(width).close)

    def publish(self):
        self.atomic.commit()

    def abort(self):
        if self.writer is not None:
            try:
                self.writer.discard()
            except Exception:  # noqa: BLE001 - best effort before deleting the file
                pass
        self.atomic.abort()


class StreamSink:
    """Rows to standard output: CSV/TSV/JSONL text, or a table on a terminal."""

    path = "standard output"

    def __init__(self, stream, fmt, columns, console, title, dtypes=None):
        self.stream, self.fmt, self.columns, self.dtypes = stream, fmt, columns, dtypes
        self.writer = TableWriter(console, columns, title) if fmt == "table" else None

    def _guard(self, action, *args):
        try:
            return action(*args)
        except BrokenPipeError:
            raise StdoutClosed() from None
        except OSError as e:
            raise output_error("standard output", e) from None

    def _ready(self):
        if self.writer is None:  # the header goes out with the first rows, not before
            if self.fmt in ("arrow", "parquet"):  # binary: to the stream's bytes
                binary = getattr(self.stream, "buffer", self.stream)
                self.stream.flush()
                self.writer = (ArrowWriter(binary, self.columns, self.dtypes, stream=True)
                               if self.fmt == "arrow" else ParquetWriter(binary, self.columns, self.dtypes))
            else:
                self.writer = self._guard(TextWriter, self.stream, self.fmt, self.columns)
        return self.writer

    def write(self, batch, width=None):
        self._guard(self._ready().write, batch)

    def finish(self, width=None):
        self._guard(self._ready().close)

    def publish(self):
        pass

    def abort(self):
        pass


class Sinks:
    """Every output of one job: written together, renamed into place only once all are
    complete, else aborted together (no file left behind)."""

    def __init__(self, sinks):
        self.sinks = list(sinks)

    @property
    def files(self):
        return [s.path for s in self.sinks if isinstance(s, FileSink)]

    def write(self, batch, width):
        for s in self.sinks:
            s.write(batch, width)

    def commit(self, width):
        for s in self.sinks:
            s.finish(width)
        for s in self.sinks:
            s.publish()

    def abort(self):
        for s in self.sinks:
            s.abort()

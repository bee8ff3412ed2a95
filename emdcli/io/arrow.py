"""Arrow IPC (files and streams) and CSV sources: the Parquet source's columns and
conversions over another reader of record batches.

An IPC file is memory-mapped and its batches sliced (no copy); an IPC stream or a CSV on
standard input is first spooled to an unlinked temporary file (as Parquet is). A CSV is
read by ``pyarrow.csv``'s streaming reader in blocks: bins as columns, a header line
required. Its row count is its line count (taken by a pass over the bytes); a CSV whose
quoted cells hold line breaks is refused when the counts disagree.
"""

import os

from ..errors import EMDInputError, one_line
from .parquet import ParquetSource, _roles, _spool, _stored_dtype

ARROW_FILE_MAGIC = b"ARROW1"
ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
CSV_BLOCK = 1 << 22  # bytes the CSV reader parses at a time


def _fail(name, message, **kw):
    return EMDInputError(message, source=name, **kw)


class ReaderSource(ParquetSource):
    """A source over ``reader(columns)``, a function yielding record batches of the
    whole file from its start (called once per pass), with ``n_rows`` known ahead."""

    kind = "Arrow IPC"

    def __init__(self, name, reader, n_rows, schema, roles, width, bin_names, handle):  # noqa: B027
        self.name, self.pf, self.roles, self.handle = name, None, roles, handle
        self.width, self.bin_names = width, bin_names
        self.dtype = _stored_dtype(schema, roles.get("pred", roles.get("target")), _pa())
        self.reader, self.n_rows = reader, n_rows

    def window(self, start, stop):
        raise EMDInputError("an Arrow or CSV file is read whole by one task", source=self.name)

    def _iter(self, size, columns):
        rows = 0
        for rb in self.reader(columns):
            for start in range(0, rb.num_rows, size):
                yield rb.slice(start, size)
            rows += rb.num_rows
        if rows != self.n_rows:
            raise _fail(self.name, f"has {rows} rows where {self.n_rows} were counted",
                        hint="quoted cells with line breaks are not supported in CSV input")


def _pa():
    import pyarrow as pa

    return pa


def _handle(name, stream):
    """A file pyarrow can map or seek: the file itself, or stdin (or a URI) spooled."""
    if name == "<stdin>" or "://" in name:
        f = _spool(stream)
        return f, f
    stream.close()
    return name, None


def open_arrow(name, stream, kind, role, options):
    """A :class:`ReaderSource` of an Arrow IPC file (``kind`` "arrow-file") or stream
    ("arrow-stream"); ``options`` are :func:`~.parquet.open_parquet`'s (column,
    target_column, carried)."""
    pa = _pa()
    path, owned = _handle(name, stream)
    try:
        source = pa.memory_map(path if isinstance(path, str) else f"/proc/self/fd/{path.fileno()}")
        if kind == "arrow-file":
            f = pa.ipc.open_file(source)
            schema, counts = f.schema, [f.get_batch(i).num_rows for i in range(f.num_record_batches)]

            def reader(columns):
                for i in range(f.num_record_batches):
                    yield f.get_batch(i).select(columns)
        else:
            schema = pa.ipc.open_stream(source).schema
            counts = [rb.num_rows for rb in _stream_batches(pa, source)]

            def reader(columns):
                for rb in _stream_batches(pa, source):
                    yield rb.select(columns)
    except (pa.ArrowException, OSError) as e:
        if owned is not None:
            owned.close()
        raise _fail(name, f"cannot read the Arrow IPC data: {one_line(e)}",
                    hint="the file may be truncated") from None
    return _source(name, reader, sum(counts), schema, role, options, owned)


def _stream_batches(pa, source):
    source.seek(0)
    yield from pa.ipc.open_stream(source)


def _source(name, reader, n_rows, schema, role, options, handle):
    try:
        roles, width, bin_names = _roles(name, schema, role, *options, _pa())
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    return ReaderSource(name, reader, n_rows, schema, roles, width, bin_names, handle)


def open_csv(name, stream, role, options):
    """A :class:`ReaderSource` of a CSV (``.tsv``: tab-separated) file with a header;
    bin columns are read as float64 whatever the first block looked like."""
    pa = _pa()
    import pyarrow.csv as pacsv

    path, owned = _handle(name, stream)
    if owned is not None:
        path = f"/proc/self/fd/{owned.fileno()}"
    parse = pacsv.ParseOptions(delimiter="\t" if name.lower().endswith(".tsv") else ",")
    read = pacsv.ReadOptions(block_size=CSV_BLOCK)
    types = {}

    def reader(columns):
        convert = pacsv.ConvertOptions(column_types=types, include_columns=columns)
        yield from pacsv.open_csv(path, read_options=read, parse_options=parse,
                                  convert_options=convert)

    try:
        first = pacsv.open_csv(path, read_options=read, parse_options=parse)
        schema = first.schema
        first.close()
        _check_header(name, schema.names)
        lines = _count_lines(path)
        src = _source(name, reader, max(lines - 1, 0), schema, role, options, owned)
    except EMDInputError:
        if owned is not None:
            owned.close()
        raise
    except (pa.ArrowException, OSError) as e:
        if owned is not None:
            owned.close()
        raise _fail(name, f"cannot read the CSV: {one_line(e)}") from None
    src.kind = "CSV"
    used = {c for _, cols in src.roles.values() for c in cols}
    text = [f.name for f in schema if f.name not in used and not pa.types.is_floating(f.type)
            and not pa.types.is_integer(f.type)]
    if text and options[0] is None:  # a cell that is not a number made a column text
        if owned is not None:
            owned.close()
        raise _fail(name, f"column {text[0]!r} holds text, not numbers",
                    hint="every column is a bin unless --pred-column, --target-column, "
                    "--id-column or --group-by names it")
    types.update({f.name: f.type for f in schema})
    for layout, cols in src.roles.values():
        if layout == "columns":
            types.update({c: pa.float64() for c in cols})
    return src


def _check_header(name, names):
    def number(text):
        try:
            float(text)
            return True
        except ValueError:
            return False

    if names and all(number(n) for n in names):
        raise _fail(name, "has no header line (its first line is numbers)",
                    hint="CSV input needs a header naming the columns")


def _count_lines(path):
    """Lines of a text file: its newlines, plus one for a last line without one."""
    lines, last = 0, b"\n"
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 22):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def sniff(name, head):
    """The kind of an IPC or CSV input from its first bytes and name, or None."""
    if head.startswith(ARROW_FILE_MAGIC):
        return "arrow-file"
    if head.startswith(ARROW_STREAM_MAGIC):
        return "arrow-stream"
    ext = os.path.splitext(name)[1].lower()
    if ext in (".csv", ".tsv"):
        return "csv"
    if name == "<stdin>" and head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "csv"
    return None

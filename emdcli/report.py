"""Results as text and summaries: full-precision cells, output formats, statistics.

Floats are written at full precision (the shortest text that reads back to the same
float64/float32). The writers that use these cells are in :mod:`emdcli.io.sinks`.
"""

import json
import math
import os
import sys

import numpy as np

from .errors import EMDInputError

FORMATS = ("table", "csv", "tsv", "jsonl", "arrow", "parquet")  # on standard output
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet", ".npy": "npy",
                ".arrow": "arrow", ".feather": "arrow"}
BINARY_FORMATS = ("arrow", "parquet", "npy")
TABLE_ROWS = 20


def format_float(v):
    """Shortest round-trip text of a float64 or float32 value; ``nan``/``inf``/``-inf``."""
    if isinstance(v, np.float32):
        return _float32_texts(np.array([v]))[0] if np.isfinite(v) else _nonfinite(float(v))
    v = float(v)
    return repr(v) if math.isfinite(v) else _nonfinite(v)


def format_position(v):
    """A bin position as text: ``3`` for 3.0, else :func:`format_float`."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 2 ** 53 else format_float(float(v))


def format_short(v, digits=7):
    """A float for a terminal: at most ``digits`` significant digits (files and pipes get
    :func:`format_float`'s full precision)."""
    v = float(v)
    return f"{v:.{digits}g}" if math.isfinite(v) else _nonfinite(v)


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


def cell(v):
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


def json_key(name):
    """A column name as a JSON string."""
    return json.dumps(name)


def _json_value(v):
    if isinstance(v, np.floating):
        return json.loads(format_float(v)) if np.isfinite(v) else None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return v.item()
    return v


def text_cells(values, sep):
    """A column's CSV/TSV cells, all at once: what :func:`cell` (and :func:`_quoted`)
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
    return [_quoted(cell(v), sep) for v in a]


def json_cells(values):
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


def quantile(values, q):
    """``np.quantile(values, q)``, the same bits (its linear method, Hyndman and Fan's 7th):
    with h = (n − 1)·q and x sorted, x_⌊h⌋ + (h − ⌊h⌋)·(x_⌊h⌋+1 − x_⌊h⌋), evaluated as
    numpy's ``_lerp``; without numpy's ``np.unique`` call, which imports ``numpy.ma``
    (20 ms of a small job's 0.3 s). ``values``: 1-D, finite, not empty."""
    n = values.size
    h = (n - 1) * q
    lo = min(math.floor(h), n - 1)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, [lo, hi])
    a, b = float(part[lo]), float(part[hi])
    t, d = h - math.floor(h), b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


class Summary:
    """Running statistics of one value column: count, mean, std, min, p50, p95, max.

    Exact while at most :data:`EXACT_LIMIT` values have come (the values are kept: 8 bytes
    a row); past that the values go into a :class:`~emdcli.sketch.QuantileSketch` and the
    moments are merged batch by batch, so memory stays bounded whatever the row count
    (p50 and p95 then within a relative 1e-4, which the line says). Non-finite values are
    counted apart and left out of the statistics.
    """

    EXACT_LIMIT = 1 << 21

    def __init__(self, name):
        from .sketch import Moments

        self.name = name
        self.parts, self.kept = [], 0
        self.moments, self.sketch = Moments(), None
        self.count = self.nonfinite = 0
        self.not_converged = None
        self.timing = None  # a Timing, once a job has run

    def add(self, values, converged=None):
        """Add a batch of values (and, for iterative metrics, their converged flags)."""
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        self.count += v.size
        self.nonfinite += v.size - finite.size
        if self.sketch is not None:
            self.moments.add(finite)
            self.sketch.add(finite)
        else:  # exact: the values are kept, the moments are taken only when they go
            self.parts.append(finite.copy())
            self.kept += finite.size
            if self.kept > self.EXACT_LIMIT:
                self._to_sketch()
        if converged is not None:
            self.not_converged = (self.not_converged or 0) + int((~np.asarray(converged)).sum())

    def _to_sketch(self):
        """Leave exact mode: the kept values go into the moments and a sketch."""
        from .sketch import QuantileSketch

        if self.sketch is None:
            self.sketch = QuantileSketch()
            for part in self.parts:
                self.moments.add(part)
                self.sketch.add(part)
            self.parts = []

    def merge(self, other):
        """Add another part's summary (a file or a worker's): exact while both are exact
        and their values together fit :data:`EXACT_LIMIT`, else moments merged exactly
        (parallel Welford) and quantiles from the merged sketches."""
        self.count += other.count
        self.nonfinite += other.nonfinite
        if other.not_converged is not None:
            self.not_converged = (self.not_converged or 0) + other.not_converged
        if self.sketch is None and other.sketch is None and \
                self.kept + other.kept <= self.EXACT_LIMIT:
            self.parts += other.parts
            self.kept += other.kept
            return self
        self._to_sketch()
        if other.sketch is None:
            for part in other.parts:
                self.moments.add(part)
                self.sketch.add(part)
        else:
            self.moments.merge(other.moments)
            self.sketch.merge(other.sketch)
        return self

    def stats(self):
        out = {"count": int(self.count), "nonfinite": int(self.nonfinite)}
        if self.not_converged is not None:
            out["not_converged"] = self.not_converged
        if self.sketch is not None:
            m, sk = self.moments, self.sketch
            out.update(mean=m.mean, std=m.std, min=m.min, p50=sk.quantile(0.5),
                       p95=sk.quantile(0.95), max=m.max)
        elif self.kept:
            finite = np.concatenate(self.parts)
            out.update(
                mean=float(finite.mean()), std=float(finite.std()), min=float(finite.min()),
                p50=quantile(finite, 0.5), p95=quantile(finite, 0.95),
                max=float(finite.max()),
            )
        return out

    def line(self, label=None, short=False):
        """One line; ``short``: numbers to 7 significant digits, for a terminal."""
        s = self.stats()
        fmt = format_short if short else format_float
        parts = [f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in s.items()
                 if not (k in ("nonfinite", "not_converged") and v == 0)]
        if self.sketch is not None:
            parts.append("(p50, p95 within 1e-4)")
        return f"{label or self.name}: " + " ".join(parts)


class Grouped:
    """A :class:`Summary` of all rows and one per group (``--group-by``): the groups in
    the order they first came."""

    def __init__(self, name, by):
        self.name, self.by = name, by
        self.all, self.groups = Summary(name), {}
        self.timing = None

    @property
    def count(self):
        return self.all.count

    def stats(self):
        return self.all.stats()

    def add(self, values, converged=None, groups=None):
        self.all.add(values, converged)
        if groups is None:
            return
        groups = np.asarray(groups)
        if groups.dtype.kind in "OUS" or groups.size == 0 or groups.min() != groups.max():
            keys, inverse = np.unique(groups.astype(str) if groups.dtype.kind == "O" else groups,
                                      return_inverse=True)
        else:  # one group in the whole batch (a partition column): no sort
            keys, inverse = groups[:1], None
        values = np.asarray(values)
        for i, key in enumerate(keys.tolist()):
            pick = slice(None) if inverse is None else inverse == i
            self.groups.setdefault(key, Summary(self.name)).add(
                values[pick], None if converged is None else np.asarray(converged)[pick])

    def merge(self, other):
        self.all.merge(other.all)
        for key, s in other.groups.items():
            if key in self.groups:
                self.groups[key].merge(s)
            else:
                self.groups[key] = s
        return self

    def rows(self):
        """(group, stats) per group, then (None, stats of all rows)."""
        return [(k, s.stats()) for k, s in self.groups.items()] + [(None, self.all.stats())]

    def line(self, short=False):
        lines = [self.all.line(short=short)]
        lines += [s.line(f"{self.name}[{self.by}={k}]", short=short) for k, s in self.groups.items()]
        return "\n".join(lines)


class Count:
    """A summary that only counts the rows: for a job whose statistics nothing shows or
    writes (``--quiet``), the batch-by-batch sorting into the sketch is not done."""

    def __init__(self, name):
        self.name, self.count, self.timing = name, 0, None

    def add(self, values, converged=None, groups=None):
        self.count += len(values)

    def merge(self, other):
        self.count += other.count
        return self

    def stats(self):
        return {"count": int(self.count)}

    def line(self, short=False):
        return f"{self.name}: count={self.count}"


def new_summary(name, group_by=None, statistics=True):
    """The running summary of a job: a :class:`Summary`, or :class:`Grouped` by a column;
    without ``statistics``, a :class:`Count`."""
    if not statistics:
        return Count(name)
    return Grouped(name, group_by) if group_by else Summary(name)


def summary_rows(summary):
    """(group or None, stats) rows of a summary, grouped or not."""
    return summary.rows() if isinstance(summary, Grouped) else [(None, summary.stats())]


STATS = ("count", "nonfinite", "mean", "std", "min", "p50", "p95", "max")


def summary_doc(summary, extra=None):
    """The statistics as a JSON-ready dict: ``extra``, the metric, the grouping, the
    summary of all rows and one per group (non-finite numbers as None)."""
    rows = summary_rows(summary)
    doc = dict(extra or {}, metric=summary.name, group_by=getattr(summary, "by", None),
               summary=rows[-1][1], groups=[dict(group=k, **s) for k, s in rows[:-1]])
    return _finite_json(doc)


def write_summary(path, summary):
    """``--summary FILE``: the statistics as CSV (one row per group, then ``all``) or as
    JSON (``.json``), written atomically."""
    from .io.atomic import write_text

    rows = summary_rows(summary)
    if path.lower().endswith(".json"):
        text = json.dumps(summary_doc(summary), indent=2) + "\n"
    else:
        cols = ["group", *STATS] + (["not_converged"] if "not_converged" in rows[-1][1] else [])
        lines = [",".join(cols)]
        for k, s in rows:
            cells = ["all" if k is None else _quoted(cell(k), ",")]
            cells += [cell(s.get(c)) for c in cols[1:]]
            lines.append(",".join(cells))
        text = "\n".join(lines) + "\n"
    write_text(path, text)


def _finite_json(obj):
    """``obj`` with non-finite floats as None (JSON has no nan)."""
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


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


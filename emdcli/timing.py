"""A small timing harness shared by ``benchmarks/*.py`` and ``emd bench`` (numpy only).

>>> t = measure(lambda: sum(range(1000)), repeat=5, min_time=0.001)
>>> t.repeats, t.min_s <= t.median_s <= t.max_s
(5, True)

The first call is timed on its own (it includes Numba compilation or cache loading);
then ``warmup`` untimed calls; then ``repeat`` samples, each looping the function
enough times to last at least ``min_time`` so that short calls are not lost in timer
noise. All reported times are per call.
"""

import gc
import math
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Per-call wall times in seconds (``time.perf_counter``)."""

    first_call_s: float  # the very first call: compilation / cache load included
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float  # interquartile range of the samples: the spread
    repeats: int  # samples taken
    loops: int  # calls per sample

    @property
    def rel_iqr(self):
        """Spread relative to the median (0.05 = 5 %)."""
        return self.iqr_s / self.median_s if self.median_s > 0 else math.nan


def _time_loops(fn, loops):
    timer = time.perf_counter
    t0 = timer()
    for _ in range(loops):
        fn()
    return timer() - t0


def measure(fn, *, repeat=7, warmup=1, min_time=0.02, budget=10.0, min_repeat=3):
    """Time ``fn()`` (no arguments: close over the data); return a :class:`Timing`.

    repeat: samples wanted; cut down (not below ``min_repeat``) when the samples would
    take more than ``budget`` seconds in all. min_time: the least duration of one sample;
    the loop count per sample is chosen from a calibration call to reach it. The garbage
    collector is paused while sampling, as :mod:`timeit` does.
    """
    first = _time_loops(fn, 1)
    for _ in range(warmup):
        fn()
    est = _time_loops(fn, 1)  # calibration call
    loops = max(1, math.ceil(min_time / est)) if est > 0 else 1000
    if est * loops * repeat > budget:
        repeat = max(min_repeat, int(budget // (est * loops)))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        samples = np.array([_time_loops(fn, loops) / loops for _ in range(repeat)])
    finally:
        if was_enabled:
            gc.enable()
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return Timing(
        first_call_s=first,
        median_s=float(med),
        min_s=float(samples.min()),
        max_s=float(samples.max()),
        iqr_s=float(q3 - q1),
        repeats=len(samples),
        loops=loops,
    )


def format_seconds(s):
    """``0.00123`` → ``"1.23 ms"``: three significant digits, unit from s to ns."""
    if s is None or not math.isfinite(s):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _cell(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else "-"
    return str(v)


def _is_label(v):
    """A string that does not read as a number (e.g. "float64", not "1.2 ms" or "-")."""
    return isinstance(v, str) and v.strip()[:1] not in tuple("0123456789+-.") + ("",)


def format_table(rows, columns=None, *, sep="  "):
    """Rows (dicts, or sequences with ``columns``) → an aligned plain-text table.

    columns: the headers (and, for dict rows, the keys in order; default: the first
    row's keys). Floats are shown with 3 significant digits (pre-format times with
    :func:`format_seconds`); a column is left-aligned when it holds labels, else right.
    """
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    cells = [[r.get(c) for c in columns] if isinstance(r, dict) else list(r) for r in rows]
    text = [[_cell(v) for v in row] for row in cells]
    widths = [len(str(c)) for c in columns]
    for row in text:
        widths = [max(w, len(t)) for w, t in zip(widths, row)]
    left = [any(_is_label(row[i]) for row in cells) for i in range(len(columns))]

    def line(vals):
        out = [v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(vals, widths, left)]
        return sep.join(out).rstrip()

    lines = [line([str(c) for c in columns]), line(["-" * w for w in widths])]
    lines += [line(row) for row in text]
    return "\n".join(lines)

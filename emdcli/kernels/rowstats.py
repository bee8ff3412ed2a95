"""Row statistics for the public functions' checks and normalisation (CPU, Numba).

``row_sums_min(x, sums, mins)``: ``sums[b] = Σ_i x[b, i]`` and ``mins[b] = min_i x[b, i]``,
in float64 whatever the storage dtype, in one pass over the rows (runs of rows on threads,
``kernels.threads``). A row holding
a NaN or an infinity gets a non-finite sum, which is how the caller finds it (and then
locates the element with numpy). The l1-normalised distribution is then
``p = x / sums`` without a copy: the EMD kernels take ``1 / sums`` as a row scale.
The chain's lanes kernel can take the sums itself (:class:`RowSums`,
:func:`sums_mins_lanes`) from the tile it reads a block of rows into.
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads


class RowSums(NamedTuple):
    """The l1 normalisation done by a lanes kernel as it reads the rows: each row's sum
    and minimum (the same bits as :func:`row_sums_min`) go to ``stats`` (2, B) and its
    scale ``1 / sum`` to the scale array SP (B,), which the caller checks afterwards (one
    pass over the rows, not two)."""

    stats: np.ndarray


def row_sums_min(x, sums, mins):
    """Fill ``sums`` (B,) and ``mins`` (B,) float64 from x (B, N), N ≥ 1."""
    threads.run(_sums_mins, x.shape[0], (x, sums, mins), min_items=max(1, 8192 // x.shape[1]),
                parallel=_sums_mins_parallel)


@njit(cache=True, nogil=True)
def _sums_mins(x, sums, mins, lo, hi, slot):
    """:func:`row_sums_min` for rows lo … hi−1."""
    n = x.shape[1]
    for b in range(lo, hi):
        row = x[b]
        s = 0.0
        m = np.float64(row[0])
        for i in range(n):
            v = np.float64(row[i])
            s += v
            if v < m:
                m = v
        sums[b] = s
        mins[b] = m


@njit(cache=True, parallel=True, nogil=True)
def _sums_mins_parallel(x, sums, mins, n, parts):
    for k in prange(parts):
        _sums_mins(x, sums, mins, k * n // parts, (k + 1) * n // parts, k)


@njit(cache=True)
def sums_mins_lanes(X, sums, mins):
    """sums (LANES,) ← Σ_i X[i, j] in order, mins (LANES,) ← min_i X[i, j], per column of
    a tile X (N, LANES), N ≥ 1: :func:`_sums_mins`'s loop, the rows side by side (the same
    bits; a NaN never replaces the minimum). The lane loops read their width at run time,
    so LLVM vectorises them. A call, not inlined: Numba's inlining of it added 0.7-1 s to
    each lanes kernel's compilation."""
    n, lanes = X.shape
    for j in range(lanes):
        sums[j] = 0.0
        mins[j] = X[0, j]
    for i in range(n):
        for j in range(lanes):
            v = X[i, j]
            sums[j] += v
            mins[j] = v if v < mins[j] else mins[j]

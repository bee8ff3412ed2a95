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
    """:func:`row_sums_min` for rows lo … hi−1: four rows side by side, each summed in
    order from 0.0 (a row's sum is a chain of dependent additions; four chains at once
    keep the adder busy: 1.3× faster on 65 536 × 32 float32 rows, 1.9× on 4096 × 1000)."""
    n = x.shape[1]
    top = lo + (hi - lo) // 4 * 4
    for b in range(lo, top, 4):
        s0 = s1 = s2 = s3 = 0.0
        m0, m1 = np.float64(x[b, 0]), np.float64(x[b + 1, 0])
        m2, m3 = np.float64(x[b + 2, 0]), np.float64(x[b + 3, 0])
        for i in range(n):
            v0, v1 = np.float64(x[b, i]), np.float64(x[b + 1, i])
            v2, v3 = np.float64(x[b + 2, i]), np.float64(x[b + 3, i])
            s0 += v0
            s1 += v1
            s2 += v2
            s3 += v3
            m0 = v0 if v0 < m0 else m0
            m1 = v1 if v1 < m1 else m1
            m2 = v2 if v2 < m2 else m2
            m3 = v3 if v3 < m3 else m3
        sums[b], sums[b + 1], sums[b + 2], sums[b + 3] = s0, s1, s2, s3
        mins[b], mins[b + 1], mins[b + 2], mins[b + 3] = m0, m1, m2, m3
    for b in range(top, hi):
        row = x[b]
        s = 0.0
        m = np.float64(row[0])
        for i in range(n):
            v = np.float64(row[i])
            s += v
            m = v if v < m else m
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

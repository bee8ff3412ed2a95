"""The report's two row passes (CPU, Numba), each one pass over a batch (runs of rows on
threads, ``kernels.threads``).

``class_ranks(x, c, rank, top)``: per row b, ``top[b] = x[b, c_b]`` and ``rank[b]`` the
place of the target class ``c_b`` when the row is sorted by decreasing mass, ties broken
by bin order (as argmax):
``rank = #{k : x_k > x_c} + #{k < c : x_k = x_c}``, so that ``rank == 0`` iff
``argmax x == c`` and the target is in the top k iff ``rank < k``. A positive row scale
changes none of these, so x is read as stored.

``flow_columns(f, w, label, sq, acc_abs, acc_signed)``: per row ``sq[b] = Σ_j w_j f_bj²``
(EMD², rho = 2, from the flows) and, per chunk of rows k and row label g (the row's
group), ``acc_abs[k, g, j] += |f_bj|`` and ``acc_signed[k, g, j] += f_bj`` in float64;
the caller sums over k.
"""

import numpy as np
from numba import njit

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads


def class_ranks(x, c, rank, top):
    """Fill rank (B,) int64 and top (B,) float64 from x (B, N) and c (B,) int64 (two
    branch-free counts, which vectorise)."""
    threads.run(_rank_runs, x.shape[0], (x, c, rank, top),
                min_items=max(1, threads.POOL_ITEMS // max(1, x.shape[1])))


def flow_columns(f, w, label, sq, acc_abs, acc_signed):
    """Fill sq (B,) and add into acc_abs, acc_signed (chunks, groups, E) float64, zeroed
    by the caller, from the flows f (B, E) and the weights w (E,) (finite flows:
    fastmath lets the sum of squares vectorise, in another order than a plain loop); at
    most ``chunks`` runs of rows, each into its own accumulator."""
    threads.run(_flow_runs, f.shape[0], (f, w, label, sq, acc_abs, acc_signed),
                slots=acc_abs.shape[0], min_items=max(1, threads.POOL_ITEMS // max(1, f.shape[1])))


@njit(cache=True, nogil=True)
def _rank_runs(x, c, rank, top, lo, hi, slot):
    n = x.shape[1]
    for b in range(lo, hi):
        row = x[b]
        k = c[b]
        xc = row[k]
        above = 0
        for i in range(n):
            above += np.int64(row[i] > xc)
        for i in range(k):
            above += np.int64(row[i] == xc)
        rank[b] = above
        top[b] = np.float64(xc)


@njit(cache=True, nogil=True, fastmath=True)
def _flow_runs(f, w, label, sq, acc_abs, acc_signed, lo, hi, slot):
    e = f.shape[1]
    for r in range(lo, hi):
        a = acc_abs[slot, label[r]]
        sg = acc_signed[slot, label[r]]
        row = f[r]
        s = 0.0
        for j in range(e):
            v = np.float64(row[j])
            s += w[j] * v * v
            a[j] += abs(v)
            sg[j] += v
        sq[r] = s

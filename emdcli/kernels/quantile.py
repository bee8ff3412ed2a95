"""W_p^p on the line by the quantile form, batched: one merge of the two CDFs per row.

For distributions a, b (B, N) on positions x (N,), increasing,

    W_p^p(a, b) = ∫_0^1 |x_{i(t)} − x_{j(t)}|^p dt,  i(t) = min{i : A_i ≥ t}, j(t) likewise,

with A, B the running sums. Walking both CDFs at once visits N + N − 1 segments at most
(the monotone, optimal plan). The dual potentials φ (for a) and ψ (for b) follow along
the plan: φ_i + ψ_j = |x_i − x_j|^p on each pair it uses; ∂W_p^p/∂a = φ up to a constant
(projected to sum zero here). Rows must carry equal mass (normalised by the caller).
"""

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads


@njit(cache=True, inline="always")
def _cost(d, power):
    d = abs(d)
    if power == 1.0:
        return d
    if power == 2.0:
        return d * d
    return d ** power


def wasserstein_rows(A, SA, Bq, SB, x, power, out, G):
    """out[r] = W_p^p(a, b) on positions x for a = SA[r]·A[r], b = SB[r]·Bq[r] (an empty
    scale is 1); G (B, N) the projected potentials of a when G has N columns (else no
    gradient). A, Bq float32 or float64; float64 sums. Each potential needs only the other
    side's current one: no scratch per row. Runs of rows on threads (``kernels.threads``)."""
    threads.run(_runs, A.shape[0], ((A, SA, Bq, SB), x, power, out, G),
                min_items=max(1, 4096 // max(1, A.shape[1])), parallel=_runs_parallel)


@njit(cache=True, parallel=True, nogil=True)
def _runs_parallel(sides, x, power, out, G, n, parts):
    for k in prange(parts):
        _runs(sides, x, power, out, G, k * n // parts, (k + 1) * n // parts, k)


@njit(cache=True, nogil=True)
def _runs(sides, x, power, out, G, lo, hi, slot):
    """Rows lo … hi−1 of :func:`wasserstein_rows`; rho = 1 and 2 folded in."""
    if power == 2.0:
        _merge_rows(sides, x, 2.0, out, G, lo, hi)
    elif power == 1.0:
        _merge_rows(sides, x, 1.0, out, G, lo, hi)
    else:
        _merge_rows(sides, x, power, out, G, lo, hi)


@njit(cache=True, inline="always")
def _merge_rows(sides, x, power, out, G, lo, hi):
    A, SA, Bq, SB = sides
    n = A.shape[1]
    grad = G.shape[1] == n
    for r in range(lo, hi):
        a, b = A[r], Bq[r]
        g = G[r] if grad else G[0]
        sa = np.float64(SA[r]) if SA.shape[0] else 1.0
        sb = np.float64(SB[r]) if SB.shape[0] else 1.0
        i = 0
        j = 0
        fa = a[0] * sa
        fb = b[0] * sb
        t = 0.0
        total = 0.0
        phi = 0.0  # φ_i of the current i, ψ_j of the current j: φ_i + ψ_j = c(x_i, x_j)
        cost = _cost(x[0] - x[0], power)  # c(x_i, x_j) of the current pair
        psi = cost
        phi_sum = 0.0
        if grad:
            g[0] = 0.0
        while True:
            top = min(fa, fb)
            if top > t:
                total += (top - t) * cost
                t = top
            if i == n - 1 and j == n - 1:
                break
            if j == n - 1 or (i < n - 1 and fa <= fb):
                i += 1
                fa += a[i] * sa
                cost = _cost(x[i] - x[j], power)
                phi = cost - psi
                phi_sum += phi
                if grad:
                    g[i] = phi
            else:
                j += 1
                fb += b[j] * sb
                cost = _cost(x[i] - x[j], power)
                psi = cost - phi
        out[r] = total
        if grad:
            mean = phi_sum / n
            for k in range(n):
                g[k] -= mean


def wasserstein_classes(A, SA, c, x, power, out, G):
    """W_p^p against class targets c (B,): all of b at x_c, so ``out[r] = Σ_i a_i
    |x_i − x_c|^p`` and the potentials are the costs ``|x_i − x_c|^p``, projected (G with
    N columns; else no gradient)."""
    threads.run(_class_runs, A.shape[0], (A, SA, c, x, power, out, G),
                min_items=max(1, 4096 // max(1, A.shape[1])), parallel=_class_parallel)


@njit(cache=True, parallel=True, nogil=True)
def _class_parallel(A, SA, c, x, power, out, G, n, parts):
    for k in prange(parts):
        _class_runs(A, SA, c, x, power, out, G, k * n // parts, (k + 1) * n // parts, k)


@njit(cache=True, nogil=True)
def _class_runs(A, SA, c, x, power, out, G, lo, hi, slot):
    if power == 2.0:
        _class_rows(A, SA, c, x, 2.0, out, G, lo, hi)
    elif power == 1.0:
        _class_rows(A, SA, c, x, 1.0, out, G, lo, hi)
    else:
        _class_rows(A, SA, c, x, power, out, G, lo, hi)


@njit(cache=True, inline="always")
def _class_rows(A, SA, c, x, power, out, G, lo, hi):
    n = A.shape[1]
    grad = G.shape[1] == n
    for r in range(lo, hi):
        a = A[r]
        xc = x[c[r]]
        sa = np.float64(SA[r]) if SA.shape[0] else 1.0
        total = 0.0
        mean = 0.0
        g = G[r] if grad else G[0]
        for i in range(n):
            cost = _cost(x[i] - xc, power)
            total += np.float64(a[i]) * cost
            mean += cost
            if grad:
                g[i] = cost
        out[r] = total * sa
        if grad:
            mean /= n
            for i in range(n):
                g[i] -= mean

"""W_p^p on the line by the quantile form, batched: one merge of the two CDFs per row.

For distributions a, b (B, N) on positions x (N,), increasing,

    W_p^p(a, b) = ∫_0^1 |x_{i(t)} − x_{j(t)}|^p dt,  i(t) = min{i : A_i ≥ t}, j(t) likewise,

with A, B the running sums. Walking both CDFs at once visits N + N − 1 segments at most
(the monotone, optimal plan). The dual potentials φ (for a) and ψ (for b) follow along
the plan: φ_i + ψ_j = |x_i − x_j|^p on each pair it uses; ∂W_p^p/∂a = φ up to a constant
(projected to sum zero here). Rows must carry equal mass (normalised by the caller).

Each step of the walk is a load, a compare and an index update on the last one, so a row
at a time waits on itself (and mispredicts half its steps on random rows). Here
:data:`ROWS` rows walk side by side without branches: the same steps per row in the same
order (the same bits as one at a time, whatever the batch), about 2× faster on 100 000 ×
32 float64 rows. For p other than 1 and 2 the costs come from an (N, N) table made once
a batch (:func:`cost_table`) where that takes fewer powers than the walk would; without
one, a row at a time with branches, which lets the core run ahead of its ``pow`` calls.
:func:`_start`, :func:`_step` and :func:`_finish` are jitted functions of their own, which
LLVM inlines: as Numba ``inline="always"`` helpers, copied into every call site of the
three p variants, one signature took 45 s to compile (4–5 s now).
"""

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads


ROWS = 4  # rows merged side by side: four chains of dependent steps in flight at once
TABLE_BINS = 1024  # other p: a table of the N × N costs up to this width (8 MB)


@njit(cache=True, inline="always")
def _cost(d, power):
    d = abs(d)
    if power == 1.0:
        return d
    if power == 2.0:
        return d * d
    return d ** power


@njit(cache=True, inline="always")
def _pair_cost(x, C, i, j, power):
    """``|x_i − x_j|^p``: computed for p = 1 and 2, else from the table C (N, N) if it
    has rows (the same bits: :func:`_fill_costs`)."""
    if power == 1.0 or power == 2.0 or C.shape[0] == 0:
        return _cost(x[i] - x[j], power)
    return C[i, j]


@njit(cache=True)
def _fill_costs(x, power, C):
    n = x.shape[0]
    for i in range(n):
        for j in range(n):
            C[i, j] = _cost(x[i] - x[j], power)


def cost_table(x, power, b):
    """The (N, N) costs ``|x_i − x_j|^p`` where a table pays (p other than 1 and 2, at
    most :data:`TABLE_BINS` bins, N² powers at most the 2N − 1 a row the merge would
    take), else an empty (0, 0) array."""
    n = x.shape[0]
    if power in (1.0, 2.0) or n > TABLE_BINS or n * n > b * (2 * n - 1):
        return np.empty((0, 0))
    C = np.empty((n, n))
    _fill_costs(x, power, C)
    return C


def wasserstein_rows(A, SA, Bq, SB, x, power, out, G):
    """out[r] = W_p^p(a, b) on positions x for a = SA[r]·A[r], b = SB[r]·Bq[r] (an empty
    scale is 1); G (B, N) the projected potentials of a when G has N columns (else no
    gradient: G None below, so that code is not compiled). A, Bq float32 or float64;
    float64 sums. Runs of rows on threads (``kernels.threads``), :data:`ROWS` rows side by
    side in each, their running sums in a scratch row of (2·ROWS, N)."""
    b, n = A.shape
    grads = G if G.shape[1] == n else None
    C = cost_table(x, power, b)
    scratch = np.empty((max(1, min(threads.threads(), b)), 2 * ROWS, n))
    threads.run(_runs, b, ((A, SA, Bq, SB), x, C, power, out, grads, scratch),
                slots=scratch.shape[0], min_items=max(1, 4096 // max(1, n)),
                parallel=_runs_parallel)


@njit(cache=True, parallel=True, nogil=True)
def _runs_parallel(sides, x, C, power, out, G, scratch, n, parts):
    for k in prange(parts):
        _runs(sides, x, C, power, out, G, scratch, k * n // parts, (k + 1) * n // parts, k)


@njit(cache=True, nogil=True)
def _runs(sides, x, C, power, out, G, scratch, lo, hi, slot):
    """Rows lo … hi−1 of :func:`wasserstein_rows`; p = 1 and 2 folded in."""
    S = scratch[slot]
    if power == 2.0:
        _merge_rows(sides, x, C, 2.0, out, G, S, lo, hi)
    elif power == 1.0:
        _merge_rows(sides, x, C, 1.0, out, G, S, lo, hi)
    else:
        _merge_rows(sides, x, C, power, out, G, S, lo, hi)


@njit(cache=True, inline="always")
def _merge_rows(sides, x, C, power, out, G, S, lo, hi):
    """Rows lo … hi−1: :data:`ROWS` at a time without branches where a step is cheap;
    where it calls ``pow`` (no table), one at a time with them (the four rows' states
    would be spilled around every call, and the branches predict the walk ahead)."""
    if not (power == 1.0 or power == 2.0 or C.shape[0] > 0):
        for r in range(lo, hi):
            _walk(sides, x, power, out, G, r)
        return
    r = lo
    while r + ROWS <= hi:
        _merge_four(sides, x, C, power, out, G, S, r)
        r += ROWS
    FA, FB = S[0], S[1]
    while r < hi:
        s = _start(sides, r, FA, FB, x, C, power, G)
        for _ in range(2 * FA.shape[0] - 2):
            s = _step(FA, FB, x, C, power, s, G, r)
        _finish(FA, FB, s, out, G, r)
        r += 1


@njit(cache=True, nogil=True)
def _walk(sides, x, power, out, G, r):
    """Row r's merge, the running sums formed as it walks (the same steps and bits as
    :func:`_start`, :func:`_step` and :func:`_finish`, with branches)."""
    A, SA, Bq, SB = sides
    a, b = A[r], Bq[r]
    n = a.shape[0]
    sa = np.float64(SA[r]) if SA.shape[0] else 1.0
    sb = np.float64(SB[r]) if SB.shape[0] else 1.0
    i = 0
    j = 0
    fa = a[0] * sa
    fb = b[0] * sb
    t = 0.0
    total = 0.0
    phi = 0.0
    cost = _cost(x[0] - x[0], power)
    psi = cost
    phi_sum = 0.0
    if G is not None:
        G[r, 0] = 0.0
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
            if G is not None:
                G[r, i] = phi
        else:
            j += 1
            fb += b[j] * sb
            cost = _cost(x[i] - x[j], power)
            psi = cost - phi
    out[r] = total
    if G is not None:
        mean = phi_sum / n
        for k in range(n):
            G[r, k] -= mean


@njit(cache=True, inline="always")
def _merge_four(sides, x, C, power, out, G, S, r):
    """Rows r … r+3 merged side by side: the same steps, in the same order per row, as
    one at a time (the same bits), but four independent chains for the core to overlap
    (a step is a load, a compare and an index update on its row's last one)."""
    A0, B0, A1, B1, A2, B2, A3, B3 = S[0], S[1], S[2], S[3], S[4], S[5], S[6], S[7]
    s0 = _start(sides, r, A0, B0, x, C, power, G)
    s1 = _start(sides, r + 1, A1, B1, x, C, power, G)
    s2 = _start(sides, r + 2, A2, B2, x, C, power, G)
    s3 = _start(sides, r + 3, A3, B3, x, C, power, G)
    for _ in range(2 * A0.shape[0] - 2):
        s0 = _step(A0, B0, x, C, power, s0, G, r)
        s1 = _step(A1, B1, x, C, power, s1, G, r + 1)
        s2 = _step(A2, B2, x, C, power, s2, G, r + 2)
        s3 = _step(A3, B3, x, C, power, s3, G, r + 3)
    _finish(A0, B0, s0, out, G, r)
    _finish(A1, B1, s1, out, G, r + 1)
    _finish(A2, B2, s2, out, G, r + 2)
    _finish(A3, B3, s3, out, G, r + 3)


@njit(cache=True, nogil=True)
def _start(sides, r, FA, FB, x, C, power, G):
    """Row r's running sums FA, FB (N,) float64 of a and b, and the merge's first state
    ``(i, j, t, total, cost, phi, psi)`` at the pair (0, 0): φ_0 = 0, ψ_0 = c(x_0, x_0)."""
    A, SA, Bq, SB = sides
    a, b = A[r], Bq[r]
    sa = np.float64(SA[r]) if SA.shape[0] else 1.0
    sb = np.float64(SB[r]) if SB.shape[0] else 1.0
    fa = 0.0
    fb = 0.0
    for k in range(a.shape[0]):
        fa += a[k] * sa
        fb += b[k] * sb
        FA[k] = fa
        FB[k] = fb
    cost = _pair_cost(x, C, 0, 0, power)
    if G is not None:
        G[r, 0] = 0.0
    return 0, 0, 0.0, 0.0, cost, 0.0, cost


@njit(cache=True, nogil=True)
def _step(FA, FB, x, C, power, state, G, r):
    """One step of the merge, without branches: the segment up to ``min(A_i, B_j)`` at
    the current pair's cost, then the side whose running sum is the smaller moves on
    (a on ties; the other once one side is at its last bin), and the potentials follow
    the plan: φ_i + ψ_j = c(x_i, x_j), φ_i written to G[r, i]."""
    i, j, t, total, cost, phi, psi = state
    m = FA.shape[0] - 1
    fa = FA[i]
    fb = FB[j]
    top = min(fa, fb)
    seg = top - t
    part = seg * cost
    total += part if seg > 0.0 else 0.0
    t = top if top > t else t
    move_a = np.int64((fa <= fb) & (i < m)) | np.int64(j == m)
    i += move_a
    j += 1 - move_a
    cost = _pair_cost(x, C, i, j, power)
    if G is not None:  # (a float select on an int condition is a branch on x86, no
        # float cmov: mispredicted half the time on random rows, 1.6x slower on Zen 3).
        # x·1 + y·0 is x exactly for finite x, y (φ and ψ are never −0: c ≥ +0)
        ma = np.float64(move_a)
        mb = 1.0 - ma
        phi_a = cost - psi
        psi_b = cost - phi
        phi = phi_a * ma + phi * mb
        psi = psi * ma + psi_b * mb
        G[r, i] = phi
    return i, j, t, total, cost, phi, psi


@njit(cache=True, nogil=True)
def _finish(FA, FB, state, out, G, r):
    """The last segment, at the pair (N−1, N−1), into out[r]; G[r] ← φ minus its mean
    (the sum in the order the merge met the φ_i)."""
    i, j, t, total, cost, phi, psi = state
    top = min(FA[i], FB[j])
    seg = top - t
    part = seg * cost
    out[r] = total + part if seg > 0.0 else total
    if G is not None:
        n = FA.shape[0]
        phi_sum = 0.0
        for k in range(1, n):
            phi_sum += G[r, k]
        mean = phi_sum / n
        for k in range(n):
            G[r, k] -= mean


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

"""Chain-space EMD^rho kernels (CPU, Numba).

Bins sit at increasing positions ``x_0 < … < x_{N-1}`` with gaps ``d_i = x_{i+1} − x_i``.
With ``phi_i = Σ_{j≤i} (p_j − q_j)`` (0-based, ``i = 0 … N−2``)::

    EMD^rho(p, q) = Σ_i d_i |phi_i|^rho
    g_k = rho Σ_i d_i sgn(phi_i) |phi_i|^(rho−1) ([k ≤ i] − (i+1)/N)

The gradient is the mass-conserving projection (it sums to zero), computed in O(N) per
row: with ``a_i = rho d_i sgn(phi_i)|phi_i|^(rho−1)``, ``A = Σ a_i``, the prefix sums
``S_k = Σ_{i<k} a_i`` and ``T = Σ_i (i+1) a_i``, ``g_k = (A − S_k) − T/N``.

Layers: ``_row`` (serial, one row: a vectorisable difference pass, the serial scan, a
vectorisable gradient pass) → ``_rows`` (a run of rows with one scratch row) →
``chain_batch`` (prange over contiguous chunks of rows; rho = 1 and 2 are dispatched once
per call so the compiler folds them into the loops). Each row may carry a scale for the
prediction and one for the target (``p = sp·x``: the l1 normalisation without a copy).
Kernels never validate:
``emdcli.api`` does. Accumulation is in float64 whatever the storage dtype.
"""

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _slope(phi, rho):
    """``sgn(phi) |phi|^(rho−1)`` with ``sgn(0) = 0``; cheap paths for rho = 1, 2."""
    if rho == 1.0:  # branch-free: the sign of a soft row's phi flips unpredictably
        s = math.copysign(1.0, phi)
        return s if phi != 0.0 else 0.0
    if rho == 2.0:
        return phi
    a = abs(phi)
    if a == 0.0:
        return 0.0
    s = a ** (rho - 1.0)
    return s if phi > 0.0 else -s


@njit(cache=True, inline="always")
def _power(phi, rho):
    """``|phi|^rho`` with cheap paths for rho = 1, 2."""
    if rho == 1.0:
        return abs(phi)
    if rho == 2.0:
        return phi * phi
    return abs(phi) ** rho


@njit(cache=True, inline="always")
def _row(p, q, c, sp, sq, d, rho, g, want_grad, s):
    """EMD^rho of ``sp·p`` against ``sq·q`` (class ``c ≥ 0``: one-hot target, q unused)
    and, when ``want_grad``, its projected gradient into ``g`` (N,); s (N,) float64
    scratch."""
    n = p.shape[0]
    if c < 0:
        for i in range(n - 1):
            s[i] = sp * np.float64(p[i]) - sq * np.float64(q[i])
    else:
        for i in range(n - 1):
            s[i] = sp * np.float64(p[i])
        if c < n - 1:
            s[c] -= 1.0
    phi = 0.0
    total = 0.0
    if not want_grad:
        for i in range(n - 1):
            phi += s[i]
            total += d[i] * _power(phi, rho)
        return total
    weighted = 0.0  # T
    prefix = 0.0  # S_i, then A
    count = 0.0
    for i in range(n - 1):
        phi += s[i]
        total += d[i] * _power(phi, rho)
        a = rho * d[i] * _slope(phi, rho)
        count += 1.0
        weighted += count * a
        s[i] = prefix
        prefix += a
    mean = weighted / n
    base = prefix - mean
    for k in range(n - 1):
        g[k] = base - s[k]
    g[n - 1] = -mean
    return total


@njit(cache=True, inline="always")
def _rows(P, Q, C, SP, SQ, d, rho, out, G, lo, hi, s):
    """Rows ``lo … hi−1``; classes C when ``C`` is not empty, else target rows Q."""
    use_c = C.shape[0] > 0
    want_grad = G.shape[1] > 0
    scale_p = SP.shape[0] > 0
    scale_q = SQ.shape[0] > 0 and not use_c
    for b in range(lo, hi):
        c = C[b] if use_c else -1
        q = P[b] if use_c else Q[b]
        g = G[b] if want_grad else G[0]
        sp = SP[b] if scale_p else 1.0
        sq = SQ[b] if scale_q else 1.0
        out[b] = _row(P[b], q, c, sp, sq, d, rho, g, want_grad, s)


@njit(cache=True, parallel=True)
def chain_batch(P, Q, C, SP, SQ, d, rho, out, G, scratch):
    """EMD^rho of every row into ``out`` (B,), gradients into ``G`` (B, N) unless G has
    no columns. P (B, N); Q (B, N) target rows, or C (B,) int64 class indices (then Q is
    ignored; pass an empty C for rows); SP, SQ (B,) float64 row scales, or empty for 1:
    row b compares ``SP[b]·P[b]`` with ``SQ[b]·Q[b]`` (the l1 normalisation, no copy);
    d (N−1,) float64; scratch (chunks, N) float64: the rows are split into ``chunks``
    contiguous runs, one scratch row each."""
    n_rows = P.shape[0]
    n_chunks = min(scratch.shape[0], n_rows)
    for ch in prange(n_chunks):
        lo, hi = ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks
        if rho == 2.0:
            _rows(P, Q, C, SP, SQ, d, 2.0, out, G, lo, hi, scratch[ch])
        elif rho == 1.0:
            _rows(P, Q, C, SP, SQ, d, 1.0, out, G, lo, hi, scratch[ch])
        else:
            _rows(P, Q, C, SP, SQ, d, rho, out, G, lo, hi, scratch[ch])

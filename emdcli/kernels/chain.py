"""Chain-space EMD^rho kernels (CPU, Numba).

Bins sit at increasing positions ``x_0 < … < x_{N-1}`` with gaps ``d_i = x_{i+1} − x_i``.
With ``phi_i = Σ_{j≤i} (p_j − q_j)`` (0-based, ``i = 0 … N−2``)::

    EMD^rho(p, q) = Σ_i d_i |phi_i|^rho
    g_k = rho Σ_i d_i sgn(phi_i) |phi_i|^(rho−1) ([k ≤ i] − (i+1)/N)

The gradient is the mass-conserving projection (it sums to zero), computed in O(N) per
row: with ``a_i = rho d_i sgn(phi_i)|phi_i|^(rho−1)``, ``A = Σ a_i``, the prefix sums
``S_k = Σ_{i<k} a_i`` and ``T = Σ_i (i+1) a_i``, ``g_k = (A − S_k) − T/N``.

Accuracy. Each row may carry a scale for the prediction and one for the target
(``p = sp·x``: the l1 normalisation without a copy). A rounded scale is off by a relative
~1e-16 in every bin alike, so phi drifts by ~1e-16 × the cumulative mass, which swamps
phi where p and q nearly cancel (1e-6 relative error and worse at 10^6 bins). Hence:

- ``s_j = sp·p_j − sq·q_j`` rounded once (``diff``: the products' rounding errors are
  added back, exactly, by FMA), so no bin rounds at the size of ``p_j`` itself;
- the scan runs on to ``phi_{N−1} = r``, the residual mass (0 in exact arithmetic: it is
  the scale rounding). Moving every phi by at most |r| moves the value by at most
  ``rho |r| (D/V)^(1/rho)`` relative (Hölder; ``D = Σ d_i``, V the value). Where that
  exceeds ``RESIDUAL_RTOL`` the row is scanned again with the residual taken back in
  proportion to the prediction's cumulative mass, ``s_j ← s_j − r·sp·p_j`` (p rescaled
  to q's unit mass). Only rows given a prediction scale (the l1 path, where both masses
  are 1 by construction); rows without one are taken as given. Ordinary narrow rows
  never need the second scan; wide ones (≳ 10^5 bins, where r ~ 1e-15 can matter at
  this tolerance) mostly do.

Layers: ``_rows`` (serial, a run of rows with one scratch row: per row a vectorisable
difference pass, the scan, a vectorisable gradient pass; compiled once for any rho and
called, not inlined: LLVM unswitches the rho = 1, 2 branches of ``_power``/``_slope``)
→ ``chain_batch`` (contiguous runs of rows on threads, ``kernels.threads``; a second
round only when some row was marked for the residual; ``nogil``, so a reader thread
decodes the next batch meanwhile). Kernels never validate: ``emdcli.api`` does. Accumulation is in float64
whatever the storage dtype. ``kernels.small`` is this kernel's numpy twin (same bits);
``kernels.chain_lanes`` runs LANES rows side by side, also with the same bits (rho 1, 2:
``emdcli.api`` sends it the batches where that is faster). The scalar helpers live in
``kernels.scalars`` (shared with the tree and the lanes).
"""

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads
from .scalars import _power, _slope, diff, lane_sum, needs_residual_fix, unit_diff  # noqa: F401


@njit(cache=True, inline="always")
def _differences(p, q, c, sp, sq, rsp, s):
    """``s_j = sp·p_j − sq·q_j − rsp·p_j`` (:func:`diff`) for all N bins (class c ≥ 0:
    ``q_j = [j = c]``, q unused)."""
    n = p.shape[0]
    if c < 0:
        for i in range(n):
            pi = np.float64(p[i])
            s[i] = diff(pi, np.float64(q[i]), sp, sq) - rsp * pi
    else:
        for i in range(n):
            pi = np.float64(p[i])
            s[i] = sp * pi - rsp * pi
        pc = np.float64(p[c])
        s[c] = unit_diff(sp, pc) - rsp * pc


@njit(cache=True, inline="always")
def _scan_value(s, d, rho, n):
    """``(Σ_{i<N−1} d_i |phi_i|^rho, phi_{N−1})`` with ``phi_i = Σ_{j≤i} s_j``."""
    phi = 0.0
    total = 0.0
    for i in range(n - 1):
        phi += s[i]
        total += d[i] * _power(phi, rho)
    return total, phi + s[n - 1]


@njit(cache=True, inline="always")
def _scan_grad(s, d, rho, n, g):
    """As :func:`_scan_value`, and the projected gradient into g (N,); s is overwritten."""
    phi = 0.0
    total = 0.0
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
    residual = phi + s[n - 1]
    mean = weighted / n
    base = prefix - mean
    for k in range(n - 1):
        g[k] = base - s[k]
    g[n - 1] = -mean
    return total, residual


@njit(cache=True, inline="always")
def _residual(p, q, c, sp, sq):
    """``r = Σ_j s_j`` (rsp = 0) summed in the scan's order: the residual mass."""
    r = 0.0
    if c < 0:
        for i in range(p.shape[0]):
            r += diff(np.float64(p[i]), np.float64(q[i]), sp, sq)
        return r
    for i in range(p.shape[0]):
        pi = np.float64(p[i])
        r += unit_diff(sp, pi) if i == c else sp * pi
    return r


@njit(cache=True)
def _rows(P, Q, C, SP, SQ, d, rho, out, G, lo, hi, s, fixing):
    """Rows ``lo … hi−1``; classes C when ``C`` is not empty, else target rows Q.

    First pass (``fixing`` false): rows whose residual matters get ``out[b] = −1``
    (values are ≥ 0). Second pass (``fixing``): only those rows, residual removed."""
    use_c = C.shape[0] > 0
    want_grad = G.shape[1] > 0
    scale_p = SP.shape[0] > 0
    scale_q = SQ.shape[0] > 0 and not use_c
    length = lane_sum(d)
    n = P.shape[1]
    for b in range(lo, hi):
        if fixing and not out[b] < 0.0:  # (NaN rows too)
            continue
        c = C[b] if use_c else -1
        p = P[b]
        q = P[b] if use_c else Q[b]
        g = G[b] if want_grad else G[0]
        sp = SP[b] if scale_p else 1.0
        sq = SQ[b] if scale_q else 1.0
        # r / (p's mass 1/sp) per unit of stored p
        rsp = _residual(p, q, c, sp, sq) * sp if fixing else 0.0
        _differences(p, q, c, sp, sq, rsp, s)
        if want_grad:
            total, r = _scan_grad(s, d, rho, n, g)
        else:
            total, r = _scan_value(s, d, rho, n)
        if scale_p and not fixing and needs_residual_fix(r, total, length, rho):
            total = -1.0
        out[b] = total


def chain_batch(rows, d, rho, out, G, scratch):
    """EMD^rho of every row into ``out`` (B,), gradients into ``G`` (B, N) unless G has
    no columns. rows = (P, Q, C, SP, SQ) (a :class:`~.tiles.LaneRows`): P (B, N); Q (B, N)
    target rows, or C (B,) int64 class indices (then Q is ignored; pass an empty C for
    rows); SP, SQ (B,) float64 row scales, or empty for 1: row b compares ``SP[b]·P[b]``
    with ``SQ[b]·Q[b]`` (the l1 normalisation, no copy); d (N−1,) float64; scratch
    (chunks, N) float64: the rows are split into at most ``chunks`` contiguous runs, one
    scratch row each."""
    P = rows[0]
    n_rows = P.shape[0]
    args = (*rows, d, rho, out, G, scratch)
    each = max(1, 4096 // max(1, P.shape[1]))
    for fixing in (False, True):  # the second round only for rows whose residual mattered
        if fixing and not (out[:n_rows] < 0.0).any():
            break
        threads.run(_runs, n_rows, (*args, fixing), slots=scratch.shape[0], min_items=each,
                    parallel=_runs_parallel)


@njit(cache=True, nogil=True)
def _runs(P, Q, C, SP, SQ, d, rho, out, G, scratch, fixing, lo, hi, slot):
    """:func:`chain_batch` for rows lo … hi−1 (scratch row ``slot``)."""
    _rows(P, Q, C, SP, SQ, d, rho, out, G, lo, hi, scratch[slot], fixing)


@njit(cache=True, parallel=True, nogil=True)
def _runs_parallel(P, Q, C, SP, SQ, d, rho, out, G, scratch, fixing, n, parts):
    for k in prange(parts):
        _runs(P, Q, C, SP, SQ, d, rho, out, G, scratch, fixing, k * n // parts,
              (k + 1) * n // parts, k)

"""Chain-space EMD^rho, rho = 1 or 2, LANES rows side by side (CPU, Numba).

``kernels.chain`` runs one row at a time: its scan (``phi += s_i``, then the running
sums of the slope terms) is a chain of dependent additions, about four cycles a bin
whatever the SIMD width. Here a block of ``LANES`` rows is transposed into a tile
(``kernels.tiles``: row j of the block is column j of the tile), and the scan over the
bins is the outer loop with the rows the inner, vectorised one, its running sums held in
registers (:func:`.tiles.lane_scan`). Per row the operations are those of
``kernels.chain`` in the same order, so the values and gradients are the same bits
(``kernels.small``, the numpy twin, stays exact); so is the residual pass (accuracy note
in ``kernels.chain``), done here on whole blocks: rows not marked are computed again
with nothing taken back, which gives their first values again. The first pass keeps each
marked row's residual r (R), so the second computes a block once, not twice.

``chain_lanes`` has ``chain_batch``'s arguments and results; scratch (chunks, width)
with ``width ≥ lanes_width(N)``. Its kernel ``_lanes_runs`` is compiled per job kind:
without the row sums' code when it takes no sums (stats None) and without the gradient's
when it gives none (G None), ``is None`` tests Numba decides as it compiles (a narrow
chain's values: 40 % less compile time than with both in one kernel; ``emdcli.warmup``
names these variants). The last ``B mod LANES`` rows go through a zero-padded
block. Other rho go through ``chain_batch`` (bound by ``pow``, not by the scan).

``reads``, how the kernel reads the rows P, None (masses, scaled by SP) or:

- a :class:`~.softmax.Softmax`: P holds logits z, whose p = softmax(z) is computed in the
  block's tile (``kernels.softmax``), or already p; the gradient is with respect to p or,
  through the softmax's chain rule, to z (computed in the tile, before rounding); no
  scales (SP empty);
- a :class:`~.rowstats.RowSums`: the l1 normalisation, SP (B,) filled with each row's
  ``1 / Σ_i P[b, i]`` from the block's own tile before its differences are formed (the
  same bits as computing SP first), the sums and minima written out for the caller's
  checks.
"""

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads
from .rowstats import RowSums, sums_mins_lanes
from .scalars import lane_sum, needs_residual_fix, unit_diff
from .softmax import Softmax, offsets_dots, softmax_lanes, target_differences
from .tiles import (LANES, LaneRows, differences_to_lanes, gradient_from_lanes,  # noqa: F401
                    lane_scan, rule_from_lanes, tail_block, to_lanes)

MAX_LANE_BINS = 4096  # wider rows go one at a time: the tiles would leave the L2 cache
MIN_LANE_BINS_FLOAT64 = 256
MIN_LANE_ROWS = 2 * LANES
# narrower rows take the l1 check's sums from a pass of their own (kernels.rowstats):
# reading a block twice into its tile, once for the sums, costs more than that pass there
MIN_SUMS_BINS = 64


def lanes_width(n, reads=None):
    """The scratch row width :func:`chain_lanes` needs for rows of n bins (under a
    softmax: one more tile, the block's p)."""
    return (2 * n + 7 + (n if isinstance(reads, Softmax) else 0)) * LANES


def takes_sums(n):
    """Whether ``api`` leaves the l1 check's row sums of rows of n bins to this kernel
    (:class:`~.rowstats.RowSums`). Measured with ``emdcli.emd2`` on 4 M float32 elements
    against class targets: 20 % slower than the separate pass at N = 16 and 32, even at
    64, 5-20 % faster from 128 on (both dtypes)."""
    return n >= MIN_SUMS_BINS


def use_lanes(b, n, rho, itemsize=4):
    """Whether ``api`` sends b rows of n bins stored with ``itemsize`` bytes a value (a
    batch past ``rows.SMALL_ELEMENTS``) here: where it is faster (``benchmarks/
    bench_chain.py``; narrow float64 rows stream from memory near the copy floor one at a
    time already, and a few blocks, one of them padded, keep a core idle)."""
    return (b >= MIN_LANE_ROWS and 2 <= n <= MAX_LANE_BINS and rho in (1.0, 2.0)
            and (itemsize == 4 or n >= MIN_LANE_BINS_FLOAT64))


@njit(cache=True, inline="always")
def _tiles(scratch, n):
    """A scratch row as ``(X, T, state)``: tiles (N, LANES) and state (7, LANES) rows
    phi, total, weighted, prefix, sp, sq, rsp. The scan may write its prefix sums T over
    its differences X (:func:`.tiles.lane_scan`): one tile less in the cache, 10-20 %
    faster at 512 × 1000 (``benchmarks/bench_chain.py``)."""
    size = n * LANES
    return (scratch[:size].reshape((n, LANES)), scratch[size:2 * size].reshape((n, LANES)),
            scratch[2 * size:2 * size + 7 * LANES].reshape((7, LANES)))


@njit(cache=True, inline="always")
def _differences(P, Q, C, lo, X, scales, targets):
    """X ← the differences of rows lo … lo+LANES−1 (``kernels.chain._differences``);
    without ``targets``, ``sp·p − rsp·p`` alone (Q and the class bins not read)."""
    use_c = C.shape[0] > 0
    differences_to_lanes(P, Q, lo, X, scales, targets and not use_c)
    if use_c and targets:  # each row's class bin
        for j in range(LANES):
            c = C[lo + j]
            pc = np.float64(P[lo + j, c])
            X[c, j] = unit_diff(scales[0, j], pc) - scales[2, j] * pc


@njit(cache=True, inline="always")
def _block(P, Q, C, SP, SQ, d, rho, out, G, lo, scratch, R, fixing):
    """Rows ``lo … lo+LANES−1``: ``kernels.chain._rows`` for them, side by side.
    First pass: rows whose residual matters get ``out = −1`` and their residual r in R
    (B,; empty without scales); ``fixing``: those rows again, r·sp taken back. scratch:
    a row of ``lanes_width(N)``. G None (or without columns): values only."""
    X, _, state = _tiles(scratch, P.shape[1])
    T = X  # the scan's prefix sums over its differences (X[n − 1], not scanned, stays)
    n = P.shape[1]
    scales = state[4:7]
    for j in range(LANES):
        scales[0, j] = SP[lo + j] if SP.shape[0] > 0 else 1.0
        scales[1, j] = SQ[lo + j] if SQ.shape[0] > 0 and C.shape[0] == 0 else 1.0
        # rsp = r·sp, r = phi_{N−2} + s_{N−1} = Σ s_i in order (``kernels.chain._residual``)
        scales[2, j] = R[lo + j] * scales[0, j] if fixing and out[lo + j] < 0.0 else 0.0
    _differences(P, Q, C, lo, X, scales, True)
    lane_scan(X, T, d, rho, G is not None and G.shape[1] > 0, state)
    phi, total, weighted, prefix = state[0], state[1], state[2], state[3]
    length = lane_sum(d)
    for j in range(LANES):
        value = total[j]
        r = phi[j] + X[n - 1, j]
        if SP.shape[0] > 0 and not fixing and needs_residual_fix(r, value, length, rho):
            value = -1.0
            R[lo + j] = r
        out[lo + j] = value
    if G is not None and G.shape[1] > 0:  # (G None: this code is not compiled)
        for j in range(LANES):
            weighted[j] /= n  # the mean: g = (A − S_k) − mean, g_{N−1} = −mean
            prefix[j] -= weighted[j]
        gradient_from_lanes(T, prefix, G, lo)
        for j in range(LANES):
            G[lo + j, n - 1] = -weighted[j]


@njit(cache=True, inline="always")
def _row_sums(P, lo, scratch, stats, SP):
    """The l1 scales of rows ``lo … lo+LANES−1`` from the block's own tile, before
    :func:`_block` reads it again as differences: SP ← 1 / Σ_i p_i, stats (2, B) ← the
    sums and minima for the caller's checks (:class:`.rowstats.RowSums`)."""
    X, _, state = _tiles(scratch, P.shape[1])
    to_lanes(P, lo, X)
    sums_mins_lanes(X, state[0], state[1])
    for j in range(LANES):
        s = state[0, j]
        stats[0, lo + j] = s
        stats[1, lo + j] = state[1, j]
        SP[lo + j] = 1.0 / s if s != 0.0 else np.inf  # (checked by the caller)


@njit(cache=True, inline="always")
def _softmax_block(Z, Q, C, SQ, d, rho, out, G, lo, scratch, logits, chain_rule, scale):
    """Rows ``lo … lo+LANES−1`` of Z, ``logits`` (``p = softmax(z)`` in a tile, PT) or a
    softmax's output p: :func:`_block`'s pass on p (no scales, so no residual pass) and
    the gradient with respect to p, or with ``chain_rule`` to z: ``p ⊙ (g − ⟨g, p⟩) ·
    scale`` before rounding."""
    n = Z.shape[1]
    X, T, state = _tiles(scratch, n)
    at = (2 * n + 7) * LANES
    PT = scratch[at:at + n * LANES].reshape((n, LANES))
    to_lanes(Z, lo, PT)
    if logits:
        softmax_lanes(PT, state[0], state[1])
    classes = C.shape[0] > 0
    if classes:  # the differences are p but in each row's class bin, p_c − 1 (rounded
        X = PT  # once): scanned in PT itself, p_c kept aside (state[5]) and put back
        for j in range(LANES):
            c = C[lo + j]
            state[5, j] = PT[c, j]
            PT[c, j] = unit_diff(1.0, state[5, j])
    else:
        to_lanes(Q, lo, X)
        target_differences(X, PT, SQ[lo:lo + LANES])
        T = X  # the prefix sums over the differences (under classes X is PT: kept)
    want_grad = G.shape[1] > 0
    lane_scan(X, T, d, rho, want_grad, state)
    if classes:
        for j in range(LANES):
            PT[C[lo + j], j] = state[5, j]
    total, weighted, prefix = state[1], state[2], state[3]
    for j in range(LANES):
        out[lo + j] = total[j]
    if not want_grad:
        return
    for j in range(LANES):
        weighted[j] /= n  # the mean, as in _block
        prefix[j] -= weighted[j]
    if not chain_rule:
        gradient_from_lanes(T, prefix, G, lo)
        for j in range(LANES):
            G[lo + j, n - 1] = -weighted[j]
        return
    for j in range(LANES):
        weighted[j] = -weighted[j]  # g_{N−1} = −mean
    offsets_dots(T, PT, prefix, weighted, state[4])  # g, and ⟨g, p⟩
    rule_from_lanes(T, PT, state[4], G, lo, scale)  # p ⊙ (g − ⟨g, p⟩), on the way out


@njit(cache=True, inline="always")
def _marked(out, lo, hi):
    """Whether a row of lo … hi−1 was marked for the residual pass (``out < 0``)."""
    for b in range(lo, hi):
        if out[b] < 0.0:
            return True
    return False


def chain_lanes(rows, d, rho, out, G, scratch, reads=None):
    """``kernels.chain.chain_batch`` (the same bits) for rho 1 or 2, N ≥ 2, LANES rows side
    by side: rows a :class:`~.tiles.LaneRows` (chain_batch's first five arguments), d the
    gaps; scratch (chunks, ≥ lanes_width(N, reads)) float64, one row per contiguous run
    of blocks. The last ``B mod LANES`` rows go through padded copies. ``reads``: see the
    module's docstring."""
    P, Q, C, SP, SQ = rows
    b = P.shape[0]
    full = b - b % LANES
    sums = isinstance(reads, RowSums)
    if full:
        _lanes_batch(tuple(a[:full] for a in rows), d, rho, out[:full], G[:full], scratch,
                     reads)  # (stats whole: the tail's type, one compile)
    if full == b:
        return
    m = b - full

    def pad(a, fill):
        return tail_block(a, full, fill)

    g = np.empty((LANES, G.shape[1]), dtype=G.dtype)
    v = np.empty(LANES, dtype=out.dtype)
    block = (pad(P, 1 if sums else 0), pad(Q, 0) if Q.shape[0] == b else pad(P, 0),
             pad(C, 0), pad(SP, 1.0), pad(SQ, 1.0))  # (padded rows with mass, under sums)
    tail = RowSums(np.empty((2, LANES))) if sums else reads
    _lanes_batch(block, d, rho, v, g, scratch[:1], tail)
    out[full:] = v[:m]
    G[full:] = g[:m]
    if sums:
        SP[full:] = block[3][:m]
        reads.stats[:, full:] = tail.stats[:, :m]


def _lanes_batch(rows, d, rho, out, G, scratch, reads=None):
    """:func:`chain_lanes` for B a multiple of LANES: runs of blocks on threads
    (``kernels.threads``), one scratch row each."""
    P = rows[0]
    n_blocks = P.shape[0] // LANES
    each = max(1, 8192 // (LANES * max(1, P.shape[1])))
    if isinstance(reads, Softmax):
        P, Q, C, _, SQ = rows
        threads.run(_softmax_runs, n_blocks,
                    (P, Q, C, SQ, d, rho, out, G, scratch, reads.logits, reads.chain_rule,
                     reads.scale),
                    slots=scratch.shape[0], min_items=each, parallel=_softmax_parallel)
        return
    stats = reads.stats if isinstance(reads, RowSums) else None
    R = np.empty(P.shape[0] if rows[3].shape[0] else 0)  # the marked rows' residuals
    grads = G if G.shape[1] else None  # (values only: a specialisation without their code)
    args = (*rows, d, rho, out, grads, scratch, stats, R)
    for fixing in (False, True):  # the second round only for blocks holding a marked row
        if fixing and not (out[:P.shape[0]] < 0.0).any():
            break
        threads.run(_lanes_runs, n_blocks, (*args, fixing), slots=scratch.shape[0],
                    min_items=each, parallel=_lanes_parallel)


@njit(cache=True, nogil=True)
def _lanes_runs(P, Q, C, SP, SQ, d, rho, out, G, scratch, stats, R, fixing, first, last,
                slot):
    """Blocks ``first … last−1`` of :func:`_lanes_batch` (scratch row ``slot``)."""
    for blk in range(first, last):
        lo = blk * LANES
        if not fixing or _marked(out, lo, lo + LANES):
            if stats is not None and not fixing:  # (stats None: not compiled at all)
                _row_sums(P, lo, scratch[slot], stats, SP)
            _block(P, Q, C, SP, SQ, d, rho, out, G, lo, scratch[slot], R, fixing)


@njit(cache=True, parallel=True, nogil=True)
def _lanes_parallel(P, Q, C, SP, SQ, d, rho, out, G, scratch, stats, R, fixing, n, parts):
    for k in prange(parts):
        _lanes_runs(P, Q, C, SP, SQ, d, rho, out, G, scratch, stats, R, fixing,
                    k * n // parts, (k + 1) * n // parts, k)


@njit(cache=True, nogil=True)
def _softmax_runs(Z, Q, C, SQ, d, rho, out, G, scratch, logits, chain_rule, scale, first,
                  last, slot):
    """Blocks ``first … last−1`` under a softmax (:func:`_softmax_block`, scratch row
    ``slot``)."""
    for blk in range(first, last):
        _softmax_block(Z, Q, C, SQ, d, rho, out, G, blk * LANES, scratch[slot], logits,
                       chain_rule, scale)


@njit(cache=True, parallel=True, nogil=True)
def _softmax_parallel(Z, Q, C, SQ, d, rho, out, G, scratch, logits, chain_rule, scale, n,
                      parts):
    for k in prange(parts):
        _softmax_runs(Z, Q, C, SQ, d, rho, out, G, scratch, logits, chain_rule, scale,
                      k * n // parts, (k + 1) * n // parts, k)

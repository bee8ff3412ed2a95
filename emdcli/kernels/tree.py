"""Tree-space HEMD^rho kernels (CPU, Numba).

The tree is flattened once (``emdcli.spaces.Tree``) into arrays in which every parent
comes before its children: node 0 is the root, ``parent[v] < v``, ``weight[v]`` is the
cost of the edge v → parent(v), ``bin_node[k]`` is the node carrying bin k and
``count[v]`` the number of bins in the subtree of v. With
``phi_v = Σ_{bins k under v} (p_k − q_k)``::

    HEMD^rho(p, q) = Σ_{v ≠ root} w_v |phi_v|^rho
    r_k = rho Σ_{v on the path from bin k to the root} w_v sgn(phi_v) |phi_v|^(rho−1)
    g = r − mean(r)

One post-order pass (reverse node order) accumulates phi and the value; one pre-order
pass (forward order) accumulates the path sums. ``mean(r) = (1/N) Σ_v a_v count_v`` with
``a_v = rho w_v sgn(phi_v)|phi_v|^(rho−1)`` comes out of the first pass for free.

Accuracy as in ``kernels.chain``: ``s_k = sp·p_k − sq·q_k`` rounded once (``diff``), and
the root's ``phi`` is the residual mass r (0 in exact arithmetic). Moving every phi_v by
at most ``|r|·(p's mass under v)`` moves the value by at most ``rho |r| (M/V)^(1/rho)``
relative, ``M = Σ_k p_k depth_k``; rows where that exceeds ``RESIDUAL_RTOL`` are marked
(``out = −1``) and done again by ``_fix_rows`` with ``s_k ← s_k − r·sp·p_k``.

Layers: ``_row_*`` serial row passes on a scratch row → ``_value_runs``/``_grad_runs`` (a
run of rows, ``nogil``; rho = 1 and 2 dispatched once, so that the compiler folds them
into the passes, 1.1–2.3×) → ``tree_*`` drivers that split the batch into contiguous runs
on threads (``kernels.threads``), one caller-owned scratch row per run; ``_fix_rows``
(serial, any rho) for the rare marked rows. ``kernels.tree_lanes`` runs LANES rows side by
side with the same bits (rho 1, 2; ``emdcli.api`` sends it batches of
at least ``tree_lanes.MIN_LANE_ROWS`` rows).
"""

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads
from .scalars import _power, _slope, diff, needs_residual_fix, unit_diff


@njit(cache=True, inline="always")
def _scatter(p, q, c, sp, sq, rsp, bin_node, depth, acc):
    """``acc[node] = Σ s_k`` over the bins k on each node, ``s_k = sp·p_k − sq·q_k −
    rsp·p_k`` (``kernels.chain.diff``; class c ≥ 0: one-hot, q unused). Returns
    ``M = Σ_k sp·p_k depth_k = Σ_v w_v (p's mass under v)``: a residual r moves the
    value by at most ``rho |r| M^(1/rho) V^(1−1/rho)``."""
    acc[:] = 0.0
    m = 0.0
    for k in range(bin_node.shape[0]):
        pk = np.float64(p[k])
        node = bin_node[k]
        m += pk * depth[node]
        if c < 0:
            acc[node] += diff(pk, np.float64(q[k]), sp, sq) - rsp * pk
        else:
            acc[node] += sp * pk - rsp * pk
    if c >= 0:
        pc = np.float64(p[c])
        acc[bin_node[c]] += (unit_diff(sp, pc) - rsp * pc) - (sp * pc - rsp * pc)
    return sp * m


@njit(cache=True)
def path_lengths(parent, weight):
    """``depth_v`` = the path length from node v to the root (nodes,)."""
    depth = np.empty(parent.shape[0])
    depth[0] = 0.0
    for v in range(1, parent.shape[0]):
        depth[v] = depth[parent[v]] + weight[v]
    return depth


@njit(cache=True, inline="always")
def _residual(p, q, c, sp, sq):
    """``r = Σ_k s_k`` (rsp = 0): the residual mass."""
    r = 0.0
    for k in range(p.shape[0]):
        pk = np.float64(p[k])
        if c < 0:
            r += diff(pk, np.float64(q[k]), sp, sq)
        elif k == c:
            r += unit_diff(sp, pk)
        else:
            r += sp * pk
    return r


@njit(cache=True, inline="always")
def _row_value(parent, weight, rho, acc):
    """``(HEMD^rho, phi_root)`` from the scattered ``acc`` (nodes,), summed up in place."""
    total = 0.0
    for v in range(parent.shape[0] - 1, 0, -1):
        phi = acc[v]
        total += weight[v] * _power(phi, rho)
        acc[parent[v]] += phi
    return total, acc[0]


@njit(cache=True, inline="always")
def _row_value_grad(parent, weight, bin_node, count, rho, acc, g):
    """As :func:`_row_value`, and the projected gradient into ``g`` (N,)."""
    total = 0.0
    mean = 0.0
    for v in range(parent.shape[0] - 1, 0, -1):
        phi = acc[v]
        total += weight[v] * _power(phi, rho)
        acc[parent[v]] += phi
        a = rho * weight[v] * _slope(phi, rho)
        mean += a * count[v]
        acc[v] = a  # phi_v is no longer needed: keep the edge's slope term
    residual = acc[0]
    mean /= bin_node.shape[0]
    acc[0] = 0.0
    for v in range(1, parent.shape[0]):
        acc[v] += acc[parent[v]]  # r at node v: path sum to the root
    for k in range(bin_node.shape[0]):
        g[k] = acc[bin_node[k]] - mean
    return total, residual


@njit(cache=True)
def _fix_rows(P, Q, c, SP, SQ, parent, weight, bin_node, count, rho, out, G, acc, depth):
    """Rows marked ``out[b] < 0`` by the first pass, again with the residual mass taken
    back in proportion to the prediction's mass (``kernels.chain``). Rare: serial,
    compiled once for any rho."""
    want_grad = G.shape[1] > 0
    for b in range(P.shape[0]):
        if not out[b] < 0.0:
            continue
        sp, sq = _scales(SP, SQ, b)
        p, q = P[b], Q[b]
        _scatter(p, q, c[b], sp, sq, _residual(p, q, c[b], sp, sq) * sp, bin_node, depth,
                 acc)
        if want_grad:
            out[b] = _row_value_grad(parent, weight, bin_node, count, rho, acc, G[b])[0]
        else:
            out[b] = _row_value(parent, weight, rho, acc)[0]


@njit(cache=True, inline="always")
def _scales(SP, SQ, b):
    """Row b's scales (1 where the scale arrays are empty)."""
    return SP[b] if SP.shape[0] > 0 else 1.0, SQ[b] if SQ.shape[0] > 0 else 1.0


@njit(cache=True, inline="always")
def _mark(total, r, m, rho, scaled):
    """total, or −1 (values are ≥ 0) where the residual r matters: ``_fix_rows``. Only
    rows given a prediction scale (the l1 path: unit masses by construction)."""
    return -1.0 if scaled and needs_residual_fix(r, total, m, rho) else total


def tree_value(rows, arrays, rho, out, scratch):
    """``out[b] = HEMD^rho(SP[b]·P[b], SQ[b]·Q[b])`` (``c[b] ≥ 0``: against class ``c[b]``;
    Q unused).

    rows = (P, Q, c, SP, SQ) (a :class:`~.tiles.LaneRows`): P (B, N); Q (B, N), or any
    (B, ·) array when classes are given; c (B,) int64, −1 for row targets; SP, SQ (B,)
    float64 row scales, or empty for 1 (the l1 normalisation, no copy). arrays = (parent,
    weight, bin_node, count): (nodes,), (nodes,), (N,), (nodes,). out (B,); scratch
    (chunks, nodes) float64: the rows are split into at most ``chunks`` contiguous runs on
    threads (``kernels.threads``), one scratch row each.
    """
    tree_value_grad(rows, arrays, rho, out, np.empty((rows[0].shape[0], 0), dtype=out.dtype),
                    scratch)


def tree_value_grad(rows, arrays, rho, out, G, scratch):
    """Values into ``out`` (B,), projected gradients into ``G`` (B, N) unless G has no
    columns; see tree_value."""
    P, Q, c, SP, SQ = rows
    parent, weight, bin_node, count = arrays
    n_rows = P.shape[0]
    depth = path_lengths(parent, weight)
    args = (P, Q, c, SP, SQ, (parent, weight, bin_node, count, depth), rho, out, G, scratch)
    grad = G.shape[1] > 0
    threads.run(_grad_runs if grad else _value_runs, n_rows, args, slots=scratch.shape[0],
                min_items=max(1, 4096 // max(1, parent.shape[0])),
                parallel=_grad_parallel if grad else _value_parallel)
    if n_rows > 0 and (out[:n_rows] < 0.0).any():
        _fix_rows(P, Q, c, SP, SQ, parent, weight, bin_node, count, rho, out, G, scratch[0],
                  depth)


@njit(cache=True, nogil=True)
def _value_runs(P, Q, c, SP, SQ, tree, rho, out, G, scratch, lo, hi, slot):
    """Rows lo … hi−1 of :func:`tree_value`'s first pass (scratch row ``slot``); tree:
    (parent, weight, bin_node, count, depth); G unused."""
    if rho == 2.0:  # rho = 1 and 2 fold into the loops (as in ``chain_batch``)
        _value_rows(P, Q, c, SP, SQ, tree, 2.0, out, scratch[slot], lo, hi)
    elif rho == 1.0:
        _value_rows(P, Q, c, SP, SQ, tree, 1.0, out, scratch[slot], lo, hi)
    else:
        _value_rows(P, Q, c, SP, SQ, tree, rho, out, scratch[slot], lo, hi)


@njit(cache=True, nogil=True)
def _grad_runs(P, Q, c, SP, SQ, tree, rho, out, G, scratch, lo, hi, slot):
    """:func:`_value_runs` with the gradients into G."""
    if rho == 2.0:
        _grad_rows(P, Q, c, SP, SQ, tree, 2.0, out, G, scratch[slot], lo, hi)
    elif rho == 1.0:
        _grad_rows(P, Q, c, SP, SQ, tree, 1.0, out, G, scratch[slot], lo, hi)
    else:
        _grad_rows(P, Q, c, SP, SQ, tree, rho, out, G, scratch[slot], lo, hi)


@njit(cache=True, parallel=True, nogil=True)
def _value_parallel(P, Q, c, SP, SQ, tree, rho, out, G, scratch, n, parts):
    for k in prange(parts):
        _value_runs(P, Q, c, SP, SQ, tree, rho, out, G, scratch, k * n // parts,
                    (k + 1) * n // parts, k)


@njit(cache=True, parallel=True, nogil=True)
def _grad_parallel(P, Q, c, SP, SQ, tree, rho, out, G, scratch, n, parts):
    for k in prange(parts):
        _grad_runs(P, Q, c, SP, SQ, tree, rho, out, G, scratch, k * n // parts,
                   (k + 1) * n // parts, k)


@njit(cache=True, inline="always")
def _value_rows(P, Q, c, SP, SQ, tree, rho, out, acc, lo, hi):
    parent, weight, bin_node, _, depth = tree
    for b in range(lo, hi):
        sp, sq = _scales(SP, SQ, b)
        m = _scatter(P[b], Q[b], c[b], sp, sq, 0.0, bin_node, depth, acc)
        total, r = _row_value(parent, weight, rho, acc)
        out[b] = _mark(total, r, m, rho, SP.shape[0] > 0)


@njit(cache=True, inline="always")
def _grad_rows(P, Q, c, SP, SQ, tree, rho, out, G, acc, lo, hi):
    parent, weight, bin_node, count, depth = tree
    for b in range(lo, hi):
        sp, sq = _scales(SP, SQ, b)
        m = _scatter(P[b], Q[b], c[b], sp, sq, 0.0, bin_node, depth, acc)
        total, r = _row_value_grad(parent, weight, bin_node, count, rho, acc, G[b])
        out[b] = _mark(total, r, m, rho, SP.shape[0] > 0)

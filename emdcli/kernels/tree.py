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

Layers: ``_row_*`` serial row kernels with a scratch row → ``tree_*`` parallel drivers
that split the batch into contiguous chunks, one caller-owned scratch row per chunk, and
dispatch rho = 1 and 2 once so that the compiler folds them into the passes (1.1–2.3×).
"""

import numpy as np
from numba import njit, prange

from .chain import _power, _slope


@njit(cache=True, inline="always")
def _scatter(p, q, c, sp, sq, bin_node, acc):
    """``acc[node] = Σ (sp·p_k − sq·q_k)`` over the bins k on each node (class c ≥ 0:
    one-hot)."""
    acc[:] = 0.0
    for k in range(bin_node.shape[0]):
        if c < 0:
            acc[bin_node[k]] += sp * np.float64(p[k]) - sq * np.float64(q[k])
        else:
            acc[bin_node[k]] += sp * np.float64(p[k])
    if c >= 0:
        acc[bin_node[c]] -= 1.0


@njit(cache=True, inline="always")
def _row_value(p, q, c, sp, sq, parent, weight, bin_node, rho, acc):
    """HEMD^rho of ``sp·p`` against ``sq·q``; ``acc`` (nodes,) is scratch."""
    _scatter(p, q, c, sp, sq, bin_node, acc)
    total = 0.0
    for v in range(parent.shape[0] - 1, 0, -1):
        phi = acc[v]
        total += weight[v] * _power(phi, rho)
        acc[parent[v]] += phi
    return total


@njit(cache=True, inline="always")
def _row_value_grad(p, q, c, sp, sq, parent, weight, bin_node, count, rho, acc, g):
    """HEMD^rho of ``sp·p`` against ``sq·q`` and its projected gradient into ``g`` (N,)."""
    _scatter(p, q, c, sp, sq, bin_node, acc)
    total = 0.0
    mean = 0.0
    for v in range(parent.shape[0] - 1, 0, -1):
        phi = acc[v]
        total += weight[v] * _power(phi, rho)
        acc[parent[v]] += phi
        a = rho * weight[v] * _slope(phi, rho)
        mean += a * count[v]
        acc[v] = a  # phi_v is no longer needed: keep the edge's slope term
    mean /= bin_node.shape[0]
    acc[0] = 0.0
    for v in range(1, parent.shape[0]):
        acc[v] += acc[parent[v]]  # r at node v: path sum to the root
    for k in range(bin_node.shape[0]):
        g[k] = acc[bin_node[k]] - mean
    return total


@njit(cache=True, inline="always")
def _scales(SP, SQ, b):
    """Row b's scales (1 where the scale arrays are empty)."""
    return SP[b] if SP.shape[0] > 0 else 1.0, SQ[b] if SQ.shape[0] > 0 else 1.0


@njit(cache=True, parallel=True)
def tree_value(P, Q, c, SP, SQ, parent, weight, bin_node, rho, out, scratch):
    """``out[b] = HEMD^rho(SP[b]·P[b], SQ[b]·Q[b])`` (``c[b] ≥ 0``: against class ``c[b]``;
    Q unused).

    P (B, N); Q (B, N), or any (B, ·) array when classes are given; c (B,) int64, −1 for
    row targets; SP, SQ (B,) float64 row scales, or empty for 1 (the l1 normalisation,
    no copy); parent, weight (nodes,); bin_node (N,); out (B,); scratch (chunks, nodes)
    float64: the rows are split into ``chunks`` contiguous runs, one scratch row each.
    """
    n_rows = P.shape[0]
    n_chunks = min(scratch.shape[0], n_rows)
    for ch in prange(n_chunks):
        acc = scratch[ch]
        for b in range(ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks):
            sp, sq = _scales(SP, SQ, b)
            p, q = P[b], Q[b]
            if rho == 2.0:  # rho = 1 and 2 fold into the loops (as in ``chain_batch``)
                out[b] = _row_value(p, q, c[b], sp, sq, parent, weight, bin_node, 2.0, acc)
            elif rho == 1.0:
                out[b] = _row_value(p, q, c[b], sp, sq, parent, weight, bin_node, 1.0, acc)
            else:
                out[b] = _row_value(p, q, c[b], sp, sq, parent, weight, bin_node, rho, acc)


@njit(cache=True, parallel=True)
def tree_value_grad(P, Q, c, SP, SQ, parent, weight, bin_node, count, rho, out, G, scratch):
    """Values into ``out`` (B,), projected gradients into ``G`` (B, N); see tree_value."""
    n_rows = P.shape[0]
    n_chunks = min(scratch.shape[0], n_rows)
    for ch in prange(n_chunks):
        acc = scratch[ch]
        for b in range(ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks):
            sp, sq = _scales(SP, SQ, b)
            p, q, g = P[b], Q[b], G[b]
            if rho == 2.0:
                out[b] = _row_value_grad(p, q, c[b], sp, sq, parent, weight, bin_node, count,
                                         2.0, acc, g)
            elif rho == 1.0:
                out[b] = _row_value_grad(p, q, c[b], sp, sq, parent, weight, bin_node, count,
                                         1.0, acc, g)
            else:
                out[b] = _row_value_grad(p, q, c[b], sp, sq, parent, weight, bin_node, count,
                                         rho, acc, g)

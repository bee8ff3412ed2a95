"""Flows: the signed mass crossing each gap of a chain or each edge of a tree, written in
the same pass as the value (CPU, Numba).

Chain: ``phi_i = Σ_{j≤i} (p_j − q_j)`` for the gaps ``i = 0 … N−2`` (the mass moving right
across gap i when positive), so that ``EMD^rho = Σ_i d_i |phi_i|^rho``. Tree:
``phi_v = Σ_{bins k under v} (p_k − q_k)`` for the edges ``v → parent(v)``, ``v = 1 …
nodes−1`` (the mass moving up, out of the subtree of v, when positive), so that
``HEMD^rho = Σ_v w_v |phi_v|^rho``.

Each row runs ``kernels.chain``'s (or ``kernels.tree``'s) operations, in their order, with the
flows stored on the way: values and gradients have those kernels' bits, residual
correction included. ``rows`` is a :class:`~.tiles.LaneRows` (P, Q, C, SP, SQ as in
``chain_batch``: C empty for target rows; on a tree C is −1 for a target row); F
(B, gaps or edges) in the working dtype; G (B, N), or (B, 0) for no gradient; scratch
(chunks, width) float64.
"""

from numba import njit

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads
from .threads import POOL_ITEMS
from .chain import _differences, _residual, _scan_grad
from .scalars import _power, lane_sum, needs_residual_fix
from .tree import _mark, _row_value_grad, _scatter, path_lengths
from .tree import _residual as _tree_residual


@njit(cache=True, inline="always")
def _scan_flows(s, d, rho, n, f):
    """``kernels.chain._scan_value`` (its operations, in its order), storing phi in f."""
    phi = 0.0
    total = 0.0
    for i in range(n - 1):
        phi += s[i]
        f[i] = phi
        total += d[i] * _power(phi, rho)
    return total, phi + s[n - 1]


@njit(cache=True, inline="always")
def _tree_value_flows(parent, weight, rho, acc, f):
    """``kernels.tree._row_value`` (its operations, in its order), storing phi_v in
    ``f[v − 1]``: v's sum is complete when reached, its children coming after it."""
    total = 0.0
    for v in range(parent.shape[0] - 1, 0, -1):
        phi = acc[v]
        f[v - 1] = phi
        total += weight[v] * _power(phi, rho)
        acc[parent[v]] += phi
    return total, acc[0]


@njit(cache=True)
def _chain_rows(rows, d, rho, out, G, F, lo, hi, s, fixing):
    """``kernels.chain._rows`` with the flows of each row into ``F[b]``."""
    P, Q, C, SP, SQ = rows
    use_c = C.shape[0] > 0
    want_grad = G.shape[1] > 0
    scale_p = SP.shape[0] > 0
    scale_q = SQ.shape[0] > 0 and not use_c
    length = lane_sum(d)
    n = P.shape[1]
    for b in range(lo, hi):
        if fixing and not out[b] < 0.0:
            continue
        c = C[b] if use_c else -1
        p = P[b]
        q = P[b] if use_c else Q[b]
        sp = SP[b] if scale_p else 1.0
        sq = SQ[b] if scale_q else 1.0
        rsp = _residual(p, q, c, sp, sq) * sp if fixing else 0.0
        _differences(p, q, c, sp, sq, rsp, s)
        f = F[b]
        if want_grad:
            phi = 0.0
            for i in range(n - 1):  # the scan's running sum, in its order
                phi += s[i]
                f[i] = phi
            total, r = _scan_grad(s, d, rho, n, G[b])
        else:
            total, r = _scan_flows(s, d, rho, n, f)
        if scale_p and not fixing and needs_residual_fix(r, total, length, rho):
            total = -1.0
        out[b] = total


def chain_flows(rows, d, rho, out, G, F, scratch):
    """``kernels.chain.chain_batch``, and the flows ``phi`` (B, N−1) into F; scratch
    (chunks, N)."""
    n_rows = rows[0].shape[0]
    each = max(1, POOL_ITEMS // max(1, rows[0].shape[1]))
    for fixing in (False, True):
        if fixing and not (out[:n_rows] < 0.0).any():
            break
        threads.run(_chain_runs, n_rows, (rows, d, rho, out, G, F, scratch, fixing),
                    slots=scratch.shape[0], min_items=each)


@njit(cache=True, nogil=True)
def _chain_runs(rows, d, rho, out, G, F, scratch, fixing, lo, hi, slot):
    _chain_rows(rows, d, rho, out, G, F, lo, hi, scratch[slot], fixing)


@njit(cache=True)
def _tree_row(rows, b, rsp, tree, rho, G, F, acc):
    """Row b: scatter, its flows into ``F[b]`` (a copy summed up), then
    ``kernels.tree``'s value (and gradient) pass on acc; returns ``(total, r, M)``."""
    P, Q, C, SP, SQ = rows
    parent, weight, bin_node, count, depth = tree
    nodes = parent.shape[0]
    sp = SP[b] if SP.shape[0] > 0 else 1.0
    sq = SQ[b] if SQ.shape[0] > 0 else 1.0
    a = acc[:nodes]
    m = _scatter(P[b], Q[b], C[b], sp, sq, rsp, bin_node, depth, a)
    if G.shape[1] == 0:
        total, r = _tree_value_flows(parent, weight, rho, a, F[b])
        return total, r, m
    up = acc[nodes:2 * nodes]  # the flows from a copy: the gradient pass reuses acc
    up[:] = a
    _tree_value_flows(parent, weight, rho, up, F[b])
    total, r = _row_value_grad(parent, weight, bin_node, count, rho, a, G[b])
    return total, r, m


def tree_flows(rows, tree, rho, out, G, F, scratch):
    """``kernels.tree.tree_value`` / ``tree_value_grad``, and the flows ``phi_v``
    (B, nodes−1) into F (column v−1: the edge above node v). tree = (parent, weight,
    bin_node, count); scratch (chunks, 2·nodes)."""
    parent, weight = tree[0], tree[1]
    arrays = (*tree, path_lengths(parent, weight))
    n_rows = rows[0].shape[0]
    threads.run(_tree_runs, n_rows, (rows, arrays, rho, out, G, F, scratch),
                slots=scratch.shape[0], min_items=max(1, POOL_ITEMS // max(1, parent.shape[0])))
    if n_rows and (out[:n_rows] < 0.0).any():
        _tree_fix(rows, arrays, rho, out, G, F, scratch[0])


@njit(cache=True, nogil=True)
def _tree_runs(rows, tree, rho, out, G, F, scratch, lo, hi, slot):
    scaled = rows[3].shape[0] > 0
    for b in range(lo, hi):
        total, r, m = _tree_row(rows, b, 0.0, tree, rho, G, F, scratch[slot])
        out[b] = _mark(total, r, m, rho, scaled)


@njit(cache=True)
def _tree_fix(rows, arrays, rho, out, G, F, acc):
    """Rows marked by the first pass, again, the residual taken back
    (``kernels.tree._fix_rows``)."""
    P, Q, C, SP, SQ = rows
    scaled = SP.shape[0] > 0
    n_rows = P.shape[0]
    for b in range(n_rows):  # rare: the residual mattered (kernels.tree._fix_rows)
        if out[b] < 0.0:
            sp = SP[b] if scaled else 1.0
            sq = SQ[b] if SQ.shape[0] > 0 else 1.0
            rsp = _tree_residual(P[b], Q[b], C[b], sp, sq) * sp
            out[b] = _tree_row(rows, b, rsp, arrays, rho, G, F, acc)[0]


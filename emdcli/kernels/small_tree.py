"""The tree HEMD^rho kernel (:mod:`.tree`) in plain numpy, for jobs that would spend more
time loading or compiling the kernel than computing (``emdcli.jobs.startup``).

:func:`tree_small` computes what ``tree_value_grad`` computes, the same operations in the
same order, so the results are the same bits: a block of rows is transposed (bins and
nodes by rows) and the kernel's loops over bins and nodes run in Python, each step one
numpy operation over the block's rows; its sequential sums start from 0.0 as the
kernel's; ``diff``'s fused multiply-adds are Dekker's exact product errors
(``kernels.small``, exact where :func:`~.small.exact_products` holds). rho = 1 and 2.
"""

import numpy as np

from .accuracy import RESIDUAL_RTOL
from .small import CHUNK, _differences, _product_error

# the (nodes, rows) scratch of a block stays under this many values (16 MB)
BLOCK_VALUES = 1 << 21


def _running(a):
    """``((0.0 + a[0]) + a[1]) + …`` along axis 0, as the kernel's ``+=`` from 0.0."""
    out = np.zeros(a.shape[1:])
    for row in a:
        out += row
    return out


def _power(phi, rho):
    return np.abs(phi) if rho == 1.0 else phi * phi


def _slope(phi, rho):
    """``kernels.scalars._slope``: sgn(phi) (0 at 0) for rho 1, phi for rho 2."""
    return np.where(phi != 0.0, np.copysign(1.0, phi), 0.0) if rho == 1.0 else phi


def _scatter(p, q, c, sp, sq, rsp, tree):
    """``kernels.tree._scatter`` on a block: p, q (B, N) float64 or q None (classes c
    (B,)); sp, sq, rsp (B,). Returns acc (nodes, B) and M (B,)."""
    parent, _, bin_node, _, depth = tree
    b, n = p.shape
    st = np.empty((n, b))  # s_k of the block's rows, bin by bin
    m = np.empty(b)
    step = max(1, CHUNK // max(n, 1))  # rows at a time: temporaries in the L2 cache
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        pb, spb, rspb = p[lo:hi], sp[lo:hi], rsp[lo:hi]
        if c is None:
            st[:, lo:hi] = _differences(pb, q[lo:hi], None, spb, sq[lo:hi], rspb).T
        else:
            st[:, lo:hi] = (spb[:, None] * pb - rspb[:, None] * pb).T
        # Σ_k p_k depth_k from 0.0 (a first term −0.0 would differ in the sign of a zero
        # sum only, which the residual test reads as 0 either way)
        m[lo:hi] = np.cumsum(pb * depth[bin_node], axis=1)[:, -1] if n else 0.0
    acc = np.zeros((parent.shape[0], b))
    acc[bin_node] = st + 0.0  # 0.0 + s_k, the kernel's += (a node carries one bin at most)
    if c is not None:
        lanes = np.arange(b)
        pc = p[lanes, c]
        wc = sp * pc
        unit = (wc - 1.0) + _product_error(sp, pc, wc)
        acc[bin_node[c], lanes] += (unit - rsp * pc) - (sp * pc - rsp * pc)
    return acc, sp * m


def _value_grad(acc, tree, rho, want_grad):
    """``kernels.tree._row_value`` / ``_row_value_grad`` on a block's acc (nodes, B),
    summed up in place: (values (B,), residual (B,), gradient (B, N) or None)."""
    parent, weight, bin_node, count, _ = tree
    nodes = parent.shape[0]
    up = parent.tolist()
    for v in range(nodes - 1, 0, -1):
        acc[up[v]] += acc[v]
    residual = acc[0].copy()
    phi = acc[1:]
    total = _running((weight[1:, None] * _power(phi, rho))[::-1])  # v = nodes−1 … 1
    if not want_grad:
        return total, residual, None
    a = (rho * weight[1:])[:, None] * _slope(phi, rho)
    mean = _running((a * count[1:, None].astype(np.float64))[::-1]) / bin_node.shape[0]
    acc[1:] = a
    acc[0] = 0.0
    for v in range(1, nodes):
        acc[v] += acc[up[v]]
    return total, residual, (acc[bin_node] - mean).T


def _block(rows, scaled, tree, rho, want_grad):
    """One block's values and gradients: rows = (p, q, c, sp, sq) as :func:`_scatter`
    takes them; ``scaled``: the residual pass (``kernels.tree._fix_rows``) applies."""
    b = rows[0].shape[0]
    acc, m = _scatter(*rows, np.zeros(b), tree)
    values, r, g = _value_grad(acc, tree, rho, want_grad)
    e = rho * np.abs(r) / RESIDUAL_RTOL
    fix = values < (e if rho == 1.0 else e * e) * m
    if scaled and fix.any():  # ``_fix_rows``: the residual taken back along p's mass
        k = np.flatnonzero(fix)
        p, q, c, sp, sq = (None if a is None else a[k] for a in rows)
        s0 = _differences(p, q, c, sp, sq, np.zeros(k.shape[0]))
        acc, _ = _scatter(p, q, c, sp, sq, _running(s0.T) * sp, tree)
        values[k], _, g_fix = _value_grad(acc, tree, rho, want_grad)
        if want_grad:
            g[k] = g_fix
    return values, g


def tree_small(x, t, c, sp, sq, arrays, rho, want_grad):
    """``tree_value_grad`` for rho ∈ {1, 2}: x (B, N) stored rows; t (B, N) target rows
    (unread for classes); c (B,) int64 classes, all −1 for row targets; sp, sq (B,)
    float64 row scales or empty (1); arrays = (parent, weight, bin_node, count). Returns
    values (B,) float64 and the gradient (B, N) float64 or None."""
    parent, weight, bin_node, count = arrays
    depth = np.empty(parent.shape[0])  # ``kernels.tree.path_lengths``
    depth[0] = 0.0
    for v in range(1, parent.shape[0]):
        depth[v] = depth[parent[v]] + weight[v]
    tree = (parent, np.asarray(weight, dtype=np.float64), bin_node, count, depth)
    b, n = x.shape
    classes = b > 0 and c[0] >= 0
    scaled = sp.shape[0] > 0
    ones = np.ones(b)
    sp = sp if scaled else ones
    sq = sq if sq.shape[0] and not classes else ones
    values = np.empty(b)
    g = np.empty((b, n)) if want_grad else None
    step = max(1, BLOCK_VALUES // max(parent.shape[0], n, 1))
    with np.errstate(all="ignore"):  # unchecked non-finite rows give nan/inf, as there
        for lo in range(0, b, step):
            hi = min(b, lo + step)
            p = np.asarray(x[lo:hi], dtype=np.float64)
            q = None if classes else np.asarray(t[lo:hi], dtype=np.float64)
            rows = (p, q, c[lo:hi] if classes else None, sp[lo:hi], sq[lo:hi])
            v, gb = _block(rows, scaled, tree, rho, want_grad)
            values[lo:hi] = v
            if want_grad:
                g[lo:hi] = gb
    return values, g

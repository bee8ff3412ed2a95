"""Where the mass goes: flows across a chain's gaps or a tree's edges, and sparse optimal
transport plans. Validation here, the passes in ``kernels.flows`` and ``kernels.plans``.

Chain flows ``phi_i = Σ_{j≤i}(p_j − q_j)`` (B, N−1): the mass crossing gap i, rightwards
when positive. Tree flows ``phi_v = Σ_{k under v}(p_k − q_k)`` (B, nodes−1), column v−1 for
the edge above node v: the mass leaving v's subtree when positive. In both,
``EMD^rho = Σ w |phi|^rho`` (w the gaps ``d_i`` or the edge weights ``w_v``).
"""

from typing import NamedTuple

import numpy as np

from . import rows
from .api import _check_rho, _chunk_scratch, prepare
from .errors import EMDInputError
from .spaces import Chain, Ground, space_for


class Plan(NamedTuple):
    """A sparse transport plan per row, COO: entry e moves ``mass[e]`` from bin
    ``source[e]`` of row ``row[e]``'s prediction to bin ``target[e]`` of its target.
    Entries are grouped by row, in row order."""

    row: np.ndarray
    source: np.ndarray
    target: np.ndarray
    mass: np.ndarray

    def dense(self, b, n):
        """Row b's plan as an (N, N) matrix (for checks and small examples)."""
        m = np.zeros((n, n), dtype=self.mass.dtype)
        sel = self.row == b
        np.add.at(m, (self.source[sel], self.target[sel]), self.mass[sel])
        return m


def flows(pred, target, *, space=None, positions=None, rho=1.0, normalize="l1",
          dtype="float64", gradient=False, grad_wrt="distribution", check=True):
    """Flows (B, E) between each prediction row and its target, and the EMD^rho values.

    Arguments as for :func:`emdcli.emd` (a chain or a tree; CPU). Returns
    ``(values (B,), flows (B, E))``, with the gradient ``(B, N)`` (with respect to the
    distribution, projected) as a third element when ``gradient`` is true; the values and
    gradients have :func:`emdcli.emd`'s bits (``grad_wrt`` as there). E = N − 1 gaps on a
    chain, nodes − 1 edges on a tree (:func:`flow_names` names them).
    """
    rho = _check_rho(rho)
    rows.check_grad_wrt(grad_wrt)
    dt = rows.resolve_dtype(dtype)
    batch = prepare(pred, target, normalize, dt, check)
    sp = _space(space, positions, batch.x.shape[1])
    values, f, g = value_flows(batch, sp, rho, dt, gradient)
    if not gradient:
        return values, f
    if grad_wrt == "input":
        g = rows.input_gradient(g, batch.x, batch.sx, normalize)
    return values, f, g


def value_flows(batch, space, rho, dt, gradient=False, f=None):
    """``(values, flows, gradients or None)`` in dtype ``dt`` of a validated
    :class:`rows.Batch` on a :class:`Chain` or :class:`Tree`, in one pass
    (``kernels.flows``); the flows into ``f`` (B, E) when it is given."""
    from .kernels import flows as kernels
    from .kernels.tiles import LaneRows

    x, sx, kind, t, st = batch
    b, n = x.shape
    values = np.empty(b, dtype=dt)
    g = np.empty((b, n if gradient else 0), dtype=dt)
    if isinstance(space, Chain):
        classes = t if kind == "classes" else np.empty(0, dtype=np.int64)
        lanes = LaneRows(x, x if kind == "classes" else t, classes, sx, st)
        f = _flows_array(f, (b, n - 1), dt)
        kernels.chain_flows(lanes, space.gaps, rho, values, g, f, _chunk_scratch(n, b))
    else:
        c, q = (t, x) if kind == "classes" else (np.full(b, -1, dtype=np.int64), t)
        f = _flows_array(f, (b, space.n_nodes - 1), dt)
        arrays = (space.parent, space.weight, space.bin_node, space.count)
        rows_ = LaneRows(x, q, c, sx, st)
        from .kernels import tree_lanes as lanes

        if not gradient and lanes.use_lanes(b, rho):  # LANES rows side by side, same bits
            width = lanes.lanes_width(space.n, space.n_nodes)
            lanes.tree_lanes(rows_, arrays, rho, values, g, _chunk_scratch(width, -(-b // 32)), f)
        else:
            kernels.tree_flows(rows_, arrays, rho, values, g, f,
                               _chunk_scratch(2 * space.n_nodes, b))
    return values, f, (g if gradient else None)


def _flows_array(f, shape, dt):
    if f is not None and f.shape == shape and f.dtype == dt:
        return f
    return np.empty(shape, dtype=dt)


def flow_names(space):
    """Column names of the flows: ``"x_i..x_{i+1}"`` for a chain's gaps (bin positions),
    the child node's name for a tree's edges."""
    if isinstance(space, Chain):
        from .report import format_position

        x = [format_position(v) for v in space.positions]
        return [f"{a}..{b}" for a, b in zip(x[:-1], x[1:])]
    return [str(v) for v in space.names[1:]]


def flow_weights(space):
    """The cost per unit of flow of each column: a chain's gaps or a tree's edge weights."""
    return space.gaps if isinstance(space, Chain) else space.weight[1:]


def plan(pred, target, *, space=None, positions=None, normalize="l1", dtype="float64",
         check=True):
    """An optimal transport plan per row, sparse (:class:`Plan`).

    On a chain the monotone (north-west) plan, at most 2N − 1 entries per row; on a tree
    mass is matched inside the smallest common subtree first, at most 2N entries; for a
    class target c, ``p_k`` from every bin k to c. Row marginals are p and q and
    ``Σ mass · dist(source, target)`` is the EMD (rho = 1), up to rounding. Arguments as
    for :func:`emdcli.emd`.
    """
    dt = rows.resolve_dtype(dtype)
    batch = prepare(pred, target, normalize, dt, check)
    return batch_plan(batch, _space(space, positions, batch.x.shape[1]), dt)


def batch_plan(batch, space, dt, first_row=0):
    """:func:`plan` of a validated :class:`rows.Batch`, masses in dtype ``dt``; rows
    numbered from ``first_row``."""
    x, sx, kind, t, st = batch
    if kind == "classes":
        r, k = np.nonzero(x)
        m = x[r, k].astype(np.float64)
        p = m * sx[r] if sx.shape[0] else m  # sp·x_k in float64, then rounded once
        return Plan(r.astype(np.int64) + first_row, k.astype(np.int64), t[r],
                    p.astype(dt, copy=False))
    from .kernels import plans as kernels

    sides = (x, t, sx, st)
    tree = None if isinstance(space, Chain) else (space.parent, space.bin_node)
    counts = kernels.chain_counts(sides) if tree is None else kernels.tree_counts(sides, tree)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    out = (np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64),
           np.empty(total, dtype=dt))
    if tree is None:
        kernels.chain_fill(sides, offsets, out)
    else:
        kernels.tree_fill(sides, tree, offsets, out)
    row = np.repeat(np.arange(first_row, first_row + len(counts), dtype=np.int64), counts)
    return Plan(row, *out)


def _space(space, positions, n):
    sp = space_for(space, positions, n)
    if isinstance(sp, Ground):
        raise EMDInputError("flows and plans need a chain or a tree, not a ground matrix",
                            hint="build a tree from it: emd tree build --ground D.npy")
    return sp

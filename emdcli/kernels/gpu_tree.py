"""Tree-space HEMD^rho kernels (GPU, numba.cuda): the twin of ``kernels.tree``.

Same flattened tree (root 0; ``parent``, ``weight`` (nodes,), ``bin_node`` (N,),
``count`` (nodes,)) and the same mathematics, ``phi_v = Σ_{bins k under v} (p_k − q_k)``::

    HEMD^rho = Σ_{v ≠ root} w_v |phi_v|^rho,   a_v = rho w_v sgn(phi_v)|phi_v|^(rho−1)
    r_v = a_v + r_parent(v) (r_root = 0),      g_k = r_{bin_node k} − (1/N) Σ_v a_v count_v

Thread mapping: a group of W lanes per row, R = threads/W groups per block (as in
``gpu_chain``). The serial post-order and pre-order passes of the CPU become
level-synchronous passes over a :class:`TreePlan`, one barrier per level:
  scatter   bins into their nodes, in *layers* (the j-th bin of every node in layer j),
            so two lanes never add into one node at once (no atomics; deterministic)
  up        nodes by height (leaves first): phi_u = own_u + Σ_children phi_c (the
            children summed last to first, as the CPU adds them), then value and a_u
  down      nodes by depth (root first): r_v = a_v + r_parent(v)
Per-row scratch, 2·nodes float64 (phi and a/r), sits in dynamic shared memory when it
fits, else in a global scratch row per group slot. One launch does value and gradient.
The plan and the tree's arrays are built and copied to the device once per distinct
tree (a small cache keyed by the arrays' bytes), not per row and not per call, and travel
packed in one int64 array (:func:`pack_plan`): Numba's host-side cost of a launch grows
with the number of array arguments, and the paper's Table 1 batch is small enough for
that cost to matter.

Also here, for Sinkhorn: ``tree_apply``, the tree's Gibbs kernel K x / (K ⊙ M) x in the
plain and log forms (``gibbs._tree_plain`` / ``_tree_log`` on the same level schedule).
"""

from collections import OrderedDict, namedtuple

import numpy as np
from numba import cuda, float64

from .gpu_chain import power, slope
from .gpu_common import (
    CLOCK, SCRATCH_BYTES, SHARED_BYTES, cached, dummy, finish, group_scan, launch_shape, log_, logaddexp,
    on_device, to_device, value_grad_outputs, work_array,
)

# the arrays packed in a plan, in order: plan[k] : plan[k + 1] is array k
PARENT, BIN_NODE, CHILD_PTR, CHILD_IDX, UP_NODES, UP_PTR, DOWN_NODES, DOWN_PTR, BIN_PERM, \
    LAYER_PTR, COUNT = range(11)
HEADER = 12  # 11 offsets and the end

TreePlan = namedtuple("TreePlan", "packed nodes widest")
TreePlan.__doc__ = """A tree's level schedule on the device: ``packed`` one int64 array
holding every array of :func:`tree_plan` (and the subtree bin counts) behind a header of
offsets (one kernel argument instead of eleven: Numba's launch cost grows with the
arguments), ``nodes`` and ``widest`` (the largest level, to size the groups)."""


def tree_plan(parent, bin_node):
    """Host arrays of the level schedule (all int64):

    child_ptr (nodes+1,), child_idx: the children of u, in node order;
    up_nodes, up_ptr: nodes by height (0 = leaves), level h is up_nodes[up_ptr[h]:up_ptr[h+1]];
    down_nodes, down_ptr: nodes by depth (0 = the root), likewise;
    bin_perm, layer_ptr: bins by their rank among the bins of their node, in bin order;
    widest: the largest level (to size the groups).
    """
    parent = np.asarray(parent, dtype=np.int64)
    bin_node = np.asarray(bin_node, dtype=np.int64)
    nodes = parent.shape[0]
    kids = np.flatnonzero(parent >= 0)
    order = np.argsort(parent[kids], kind="stable")
    child_ptr = np.zeros(nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(parent[kids], minlength=nodes), out=child_ptr[1:])
    child_idx = kids[order].astype(np.int64)
    depth = np.zeros(nodes, dtype=np.int64)
    height = np.zeros(nodes, dtype=np.int64)
    for _ in range(nodes):  # relax until stable: at most the tree's height rounds
        new_depth = np.zeros(nodes, dtype=np.int64)
        new_depth[kids] = depth[parent[kids]] + 1
        new_height = np.zeros(nodes, dtype=np.int64)
        np.maximum.at(new_height, parent[kids], height[kids] + 1)
        if np.array_equal(new_depth, depth) and np.array_equal(new_height, height):
            break
        depth, height = new_depth, new_height
    up_nodes = np.argsort(height, kind="stable").astype(np.int64)
    up_ptr = np.concatenate([[0], np.cumsum(np.bincount(height))]).astype(np.int64)
    down_nodes = np.argsort(depth, kind="stable").astype(np.int64)
    down_ptr = np.concatenate([[0], np.cumsum(np.bincount(depth))]).astype(np.int64)
    by_node = np.argsort(bin_node, kind="stable")
    sorted_nodes = bin_node[by_node]
    rank = np.empty(bin_node.shape[0], dtype=np.int64)
    rank[by_node] = np.arange(bin_node.shape[0]) - np.searchsorted(sorted_nodes, sorted_nodes)
    bin_perm = np.argsort(rank, kind="stable").astype(np.int64)
    layer_ptr = np.concatenate([[0], np.cumsum(np.bincount(rank))]).astype(np.int64)
    widest = int(max(np.diff(up_ptr).max(), np.diff(down_ptr).max(), np.diff(layer_ptr).max()))
    return child_ptr, child_idx, up_nodes, up_ptr, down_nodes, down_ptr, bin_perm, layer_ptr, widest


def pack_plan(parent, bin_node, count=None):
    """(one int64 array: the offsets header, then parent, bin_node, the
    :func:`tree_plan` arrays and ``count`` (empty when None), in the order of the
    ``PARENT`` … ``COUNT`` constants; widest)."""
    parent = np.asarray(parent, dtype=np.int64)
    bin_node = np.asarray(bin_node, dtype=np.int64)
    *levels, widest = tree_plan(parent, bin_node)
    child_ptr, child_idx, up_nodes, up_ptr, down_nodes, down_ptr, bin_perm, layer_ptr = levels
    count = np.empty(0, np.int64) if count is None else np.asarray(count, dtype=np.int64)
    parts = [parent, bin_node, child_ptr, child_idx, up_nodes, up_ptr, down_nodes, down_ptr,
             bin_perm, layer_ptr, count]
    offsets = HEADER + np.concatenate([[0], np.cumsum([len(a) for a in parts])])
    return np.concatenate([offsets] + parts).astype(np.int64), widest


_PLANS = OrderedDict()


def device_tree(parent, bin_node, count, *extra):
    """(the :class:`TreePlan` on the device, device copies of the ``extra`` host arrays),
    cached by the arrays' bytes: a training loop calling with the same tree copies
    nothing. parent, bin_node, count (or None) and extra are host arrays."""
    arrays = [np.ascontiguousarray(a) for a in (parent, bin_node) + extra]
    if count is not None:
        count = np.ascontiguousarray(count, dtype=np.int64)
    key = tuple((a.dtype.str, a.tobytes()) for a in arrays) + (
        None if count is None else count.tobytes(),)
    hit = _PLANS.get(key)
    if hit is None:
        packed, widest = pack_plan(arrays[0], arrays[1], count)
        plan = TreePlan(cuda.to_device(packed), len(arrays[0]), widest)
        hit = plan, tuple(cuda.to_device(a) for a in arrays[2:])
        _PLANS[key] = hit
        while len(_PLANS) > 8:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return hit



# ----------------------------------------------------------------------------- device


@cuda.jit(device=True)
def _tree_rows(P, Q, c, rho, out, G, want_grad, plan, weight, width, buf, acc, at):
    """All rows of this block's groups; phi at acc[at : at+nodes], a/r after it."""
    # the packed arrays (views; a device function cannot return one)
    parent = plan[plan[PARENT]:plan[PARENT + 1]]
    bin_node = plan[plan[BIN_NODE]:plan[BIN_NODE + 1]]
    count = plan[plan[COUNT]:plan[COUNT + 1]]
    child_ptr = plan[plan[CHILD_PTR]:plan[CHILD_PTR + 1]]
    child_idx = plan[plan[CHILD_IDX]:plan[CHILD_IDX + 1]]
    up_nodes = plan[plan[UP_NODES]:plan[UP_NODES + 1]]
    up_ptr = plan[plan[UP_PTR]:plan[UP_PTR + 1]]
    down_nodes = plan[plan[DOWN_NODES]:plan[DOWN_NODES + 1]]
    down_ptr = plan[plan[DOWN_PTR]:plan[DOWN_PTR + 1]]
    bin_perm = plan[plan[BIN_PERM]:plan[BIN_PERM + 1]]
    layer_ptr = plan[plan[LAYER_PTR]:plan[LAYER_PTR + 1]]
    tid = cuda.threadIdx.x
    lane = tid % width
    per_block = cuda.blockDim.x // width
    n_rows, n = P.shape[0], P.shape[1]
    nodes = parent.shape[0]
    ar = at + nodes
    step = cuda.gridDim.x * per_block
    first = cuda.blockIdx.x * per_block
    while first < n_rows:
        b = first + tid // width
        live = b < n_rows
        cls = c[b] if live else -1
        for v in range(lane, nodes, width):
            acc[at + v] = 0.0
        cuda.syncthreads()
        for layer in range(layer_ptr.shape[0] - 1):  # one bin per node per layer
            if live:
                for j in range(layer_ptr[layer] + lane, layer_ptr[layer + 1], width):
                    k = bin_perm[j]
                    s = float64(P[b, k])
                    if cls < 0:
                        s -= float64(Q[b, k])
                    elif k == cls:
                        s -= 1.0
                    acc[at + bin_node[k]] += s
            cuda.syncthreads()
        total = 0.0
        mean = 0.0
        for h in range(up_ptr.shape[0] - 1):  # children are final one level down
            if live:
                for j in range(up_ptr[h] + lane, up_ptr[h + 1], width):
                    u = up_nodes[j]
                    phi = acc[at + u]
                    for e in range(child_ptr[u + 1] - 1, child_ptr[u] - 1, -1):
                        phi += acc[at + child_idx[e]]
                    acc[at + u] = phi
                    if u == 0:
                        if want_grad:
                            acc[ar] = 0.0
                        continue
                    total += weight[u] * power(phi, rho)
                    if want_grad:
                        a = rho * weight[u] * slope(phi, rho)
                        mean += a * count[u]
                        acc[ar + u] = a
            cuda.syncthreads()
        incl, excl, total = group_scan(buf, tid, lane, width, total)
        if want_grad:
            incl, excl, mean = group_scan(buf, tid, lane, width, mean)
            mean /= n
            for dl in range(1, down_ptr.shape[0] - 1):  # parents are final one level up
                if live:
                    for j in range(down_ptr[dl] + lane, down_ptr[dl + 1], width):
                        v = down_nodes[j]
                        acc[ar + v] += acc[ar + parent[v]]
                cuda.syncthreads()
            if live:
                for k in range(lane, n, width):
                    G[b, k] = acc[ar + bin_node[k]] - mean
            cuda.syncthreads()  # the next row zeroes acc
        if live and lane == 0:
            out[b] = total
        first += step


@cuda.jit
def _tree_shared(P, Q, c, rho, out, G, want_grad, plan, weight, width):
    """Scratch in dynamic shared memory: threads + R·2·nodes float64."""
    dyn = cuda.shared.array(0, dtype=float64)
    at = cuda.blockDim.x + (cuda.threadIdx.x // width) * 2 * weight.shape[0]
    _tree_rows(P, Q, c, rho, out, G, want_grad, plan, weight, width, dyn, dyn, at)


@cuda.jit
def _tree_global(P, Q, c, rho, out, G, want_grad, plan, weight, width, scratch):
    """Scratch in global memory: scratch (grid·R·2·nodes,) float64."""
    dyn = cuda.shared.array(0, dtype=float64)
    slot = cuda.blockIdx.x * (cuda.blockDim.x // width) + cuda.threadIdx.x // width
    _tree_rows(P, Q, c, rho, out, G, want_grad, plan, weight, width, dyn, scratch,
               slot * 2 * weight.shape[0])


# ----------------------------------------------------- Gibbs kernel on a tree (Sinkhorn)


@cuda.jit(device=True)
def tree_apply(x, out, moment, log_form, active, lane, width, alpha, w, plan, scale, t):
    """out = K x (or (K ⊙ M) x; log forms: of e^x) on a tree, the group's lanes across
    each level; t (7·L,) work, 7 runs of L ≥ nodes: up, outside, own, um, om, suf, sufm."""
    parent = plan[plan[PARENT]:plan[PARENT + 1]]
    bin_node = plan[plan[BIN_NODE]:plan[BIN_NODE + 1]]
    kids = plan[plan[CHILD_IDX]:plan[CHILD_IDX + 1]]
    child_ptr = plan[plan[CHILD_PTR]:plan[CHILD_PTR + 1]]
    up_nodes = plan[plan[UP_NODES]:plan[UP_NODES + 1]]
    up_ptr = plan[plan[UP_PTR]:plan[UP_PTR + 1]]
    down_nodes = plan[plan[DOWN_NODES]:plan[DOWN_NODES + 1]]
    down_ptr = plan[plan[DOWN_PTR]:plan[DOWN_PTR + 1]]
    bin_perm = plan[plan[BIN_PERM]:plan[BIN_PERM + 1]]
    layer_ptr = plan[plan[LAYER_PTR]:plan[LAYER_PTR + 1]]
    L = t.shape[0] // 7
    up, outside, own, um = t[0:L], t[L:2 * L], t[2 * L:3 * L], t[3 * L:4 * L]
    om, suf, sufm = t[4 * L:5 * L], t[5 * L:6 * L], t[6 * L:7 * L]
    nodes = parent.shape[0]
    zero = scale - scale  # 0 and −inf in the working dtype: a float64 literal would carry
    ninf = log_(zero)  # float32 work into float64 (slow exp / log1p on a GPU)
    empty = ninf if log_form else zero
    if active:
        for v in range(lane, nodes, width):
            own[v] = empty
            um[v] = empty
            if v == 0:
                outside[0] = empty
                om[0] = empty
    cuda.syncthreads()
    for layer in range(layer_ptr.shape[0] - 1):
        if active:
            for j in range(layer_ptr[layer] + lane, layer_ptr[layer + 1], width):
                k = bin_perm[j]
                if log_form:
                    own[bin_node[k]] = logaddexp(own[bin_node[k]], x[k])
                else:
                    own[bin_node[k]] += x[k]
        cuda.syncthreads()
    for h in range(up_ptr.shape[0] - 1):  # up: children (summed last to first) are final
        if active:
            for j in range(up_ptr[h] + lane, up_ptr[h + 1], width):
                u = up_nodes[j]
                acc = own[u]
                accm = um[u]
                for e in range(child_ptr[u + 1] - 1, child_ptr[u] - 1, -1):
                    c = kids[e]
                    if log_form:
                        acc = logaddexp(acc, alpha[c] + up[c])
                        if moment:
                            accm = logaddexp(accm, alpha[c] + logaddexp(um[c], w[c] + up[c]))
                    else:
                        acc += alpha[c] * up[c]
                        if moment:
                            accm += alpha[c] * (um[c] + w[c] * up[c])
                up[u] = acc
                um[u] = accm
        cuda.syncthreads()
    for dl in range(down_ptr.shape[0] - 1):  # down: parents at depth dl, children after
        if active:
            for j in range(down_ptr[dl] + lane, down_ptr[dl + 1], width):
                u = down_nodes[j]
                first, last = child_ptr[u], child_ptr[u + 1]
                if log_form:
                    _down_log(u, first, last, kids, alpha, w, up, outside, own, um, om,
                              suf, sufm, moment, ninf)
                else:
                    _down_plain(u, first, last, kids, alpha, w, up, outside, own, um, om,
                                suf, sufm, moment, zero)
        cuda.syncthreads()
    if active:
        for k in range(lane, bin_node.shape[0], width):
            v = bin_node[k]
            if log_form:
                if moment:
                    out[k] = scale + logaddexp(um[v], om[v])
                else:
                    out[k] = scale + logaddexp(up[v], outside[v])
            else:
                out[k] = scale * ((um[v] + om[v]) if moment else (up[v] + outside[v]))
    cuda.syncthreads()


@cuda.jit(device=True)
def _down_plain(u, first, last, kids, alpha, w, up, outside, own, um, om, suf, sufm,
                moment, zero):
    """The children of u: outside = alpha (outside_u + own_u + earlier + later siblings)."""
    after = zero
    afterm = zero
    for e in range(last - 1, first - 1, -1):
        c = kids[e]
        suf[c] = after
        sufm[c] = afterm
        after += alpha[c] * up[c]
        if moment:
            afterm += alpha[c] * (um[c] + w[c] * up[c])
    before = zero
    beforem = zero
    for e in range(first, last):
        c = kids[e]
        mass = outside[u] + own[u] + before + suf[c]
        outside[c] = alpha[c] * mass
        before += alpha[c] * up[c]
        if moment:
            om[c] = alpha[c] * (om[u] + beforem + sufm[c] + w[c] * mass)
            beforem += alpha[c] * (um[c] + w[c] * up[c])


@cuda.jit(device=True)
def _down_log(u, first, last, kids, la, lw, up, outside, own, um, om, suf, sufm, moment,
              ninf):
    """:func:`_down_plain` in the log domain; ninf: −inf in the working dtype."""
    after = ninf
    afterm = ninf
    for e in range(last - 1, first - 1, -1):
        c = kids[e]
        suf[c] = after
        sufm[c] = afterm
        after = logaddexp(after, la[c] + up[c])
        if moment:
            afterm = logaddexp(afterm, la[c] + logaddexp(um[c], lw[c] + up[c]))
    before = ninf
    beforem = ninf
    for e in range(first, last):
        c = kids[e]
        mass = logaddexp(logaddexp(outside[u], own[u]), logaddexp(before, suf[c]))
        outside[c] = la[c] + mass
        before = logaddexp(before, la[c] + up[c])
        if moment:
            inner = logaddexp(logaddexp(om[u], beforem), sufm[c])
            om[c] = la[c] + logaddexp(inner, lw[c] + mass)
            beforem = logaddexp(beforem, la[c] + logaddexp(um[c], lw[c] + up[c]))


# ------------------------------------------------------------------------------- host


def tree_value_grad_cuda(P, Q, c, arrays, rho, out=None, G=None, *, threads_per_block=128,
                         width=None, max_shared=SHARED_BYTES):
    """Values into ``out`` (B,) and projected gradients into ``G`` (B, N) on the GPU; the
    arguments of ``kernels.tree.tree_value_grad`` without the scratch.

    P (B, N), Q (B, N) (or any (B, ·) array, or None, when every row has a class);
    c (B,) int64, −1 for row targets; arrays the tree's host arrays (parent, weight,
    bin_node, count), count None for values only. out / G: host or
    device arrays to fill, or None to allocate like P. No gradient when G is None or has
    no columns. max_shared: dynamic shared memory allowed for the per-row scratch (at most
    SHARED_BYTES; 0 forces the global scratch). Returns (out, G).
    """
    parent, weight, bin_node, count = arrays
    dev_in = on_device(P)
    with CLOCK.phase("to_device"):
        dP = to_device(P)
        B, N = dP.shape
        dQ = dP if Q is None else to_device(Q)
        dc = cached(c, np.int64) if B else dummy(np.int64)
        plan, (dweight,) = device_tree(parent, bin_node, count,
                                       np.asarray(weight, dtype=np.float64))
    o, o_host, g, g_host, want_grad = value_grad_outputs(out, G, B, N, dP.dtype)
    if B:
        nodes = plan.nodes
        threads, width, per_block = launch_shape(max(plan.widest, 1), threads_per_block, width)
        max_shared = min(max_shared, SHARED_BYTES)  # numba-cuda does not opt in to more
        blocks = -(-B // per_block)
        args = (dP, dQ, dc, float(rho), o, g, want_grad, plan.packed, dweight, width)
        shared = (threads + per_block * 2 * nodes) * 8
        if shared <= max_shared:
            with CLOCK.phase("kernel", _tree_shared):
                _tree_shared[blocks, threads, 0, shared](*args)
        else:
            blocks = max(1, min(blocks, SCRATCH_BYTES // (per_block * 2 * nodes * 8)))
            work = work_array(blocks * per_block * 2 * nodes, np.float64)
            with CLOCK.phase("kernel", _tree_global):
                _tree_global[blocks, threads, 0, threads * 8](*args, work)
    with CLOCK.phase("to_host"):
        out = finish(o, o_host, dev_in)
        if want_grad:
            G = finish(g, g_host, dev_in)
    return out, G


def tree_value_cuda(P, Q, c, parent, weight, bin_node, rho, out=None, **kwargs):
    """``out[b] = HEMD^rho(P[b], Q[b])`` on the GPU; see :func:`tree_value_grad_cuda`."""
    return tree_value_grad_cuda(P, Q, c, (parent, weight, bin_node, None), rho, out, None,
                                **kwargs)[0]

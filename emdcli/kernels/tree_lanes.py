"""Tree-space HEMD^rho, LANES rows side by side (CPU, Numba).

``kernels.tree`` runs one row at a time: its post-order pass (``acc[parent] += phi``) and
pre-order pass (``acc[v] += acc[parent]``) are chains of dependent loads and stores. Here a
block of ``LANES`` rows is transposed into tiles (``kernels.tiles``), the node accumulator
is a tile ``A`` (nodes, LANES), and every step of both passes is one short vector
operation over the block's rows. Per row the operations are those of ``kernels.tree`` in
the same order: the same bits. A block with rows marked for the residual pass is done
again at once, in its tiles, with the marked rows' residual taken back (``s_k − r·sp·p_k``,
r summed in bin order: the bits of ``kernels.tree._fix_rows``, which does them one at a
time; soft targets on WordNet mark about 60 % of their rows, and one at a time they took
4 ms of a 512-row batch's 6). With flows asked, marked rows go to ``kernels.flows``.

``tree_lanes(LaneRows(P, Q, c, SP, SQ), (parent, weight, bin_node, count), rho, out, G,
scratch)``:
``tree_value_grad``'s arguments, grouped (``G`` with no columns: values only), with scratch
(chunks, ≥ lanes_width(N, nodes)); the last ``B mod LANES`` rows go through zero-padded
copies. All rows against target rows (c = −1) or all against classes.

``reads``, how the kernel reads the rows P, None (masses, scaled by SP) or:

- a :class:`~.softmax.Softmax`: P holds logits z, whose p = softmax(z) is computed in
  the block's tile (``kernels.softmax``), or already p; the gradient is with respect to p
  or, through the softmax, to z; no scales (SP empty), no flows;
- a :class:`~.rowstats.RowSums`: the l1 normalisation, SP (B,) filled with each row's
  ``1 / Σ_i P[b, i]`` from the tile the block's rows are read into anyway (for the
  residual's bound), the sums and minima written out for the caller's checks.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import jit  # noqa: F401 (before any kernel loads)
from . import threads
from .rowstats import RowSums, sums_mins_lanes
from .scalars import needs_residual_fix, unit_diff
from .softmax import Softmax, gather_dots, gather_tile, softmax_lanes, target_differences
from .tiles import (LANES, LaneRows, _row_pointer, check_tiles, differences_to_lanes,  # noqa: F401
                    differences_to_rows, from_lanes, row_pointers, rule_from_lanes, sign_bits,
                    splat, store_rows, tail_block, to_lanes)
from .tree import path_lengths

_STATE = 6  # rows of the state tile: total, mean, m, sp, sq, rsp


MIN_LANE_ROWS = 2 * LANES  # fewer rows: one at a time is faster (``kernels.tree``)


def use_lanes(b, rho):
    """Whether ``api`` sends a batch of b rows here (rho 1 and 2: other powers go through
    ``kernels.tree``, bound by ``pow``)."""
    return b >= MIN_LANE_ROWS and rho in (1.0, 2.0)


def lanes_width(n, nodes):
    """The scratch row width :func:`tree_lanes` needs (N bins, ``nodes`` nodes)."""
    return (2 * n + nodes + _STATE) * LANES


@njit(cache=True, inline="always")
def _tiles(scratch, n, nodes):
    """``(X, T, A, state)``: tiles (N, LANES), (N, LANES), (nodes, LANES), (6, LANES)."""
    a, b, c = n * LANES, 2 * n * LANES, (2 * n + nodes) * LANES
    return (scratch[:a].reshape((n, LANES)), scratch[a:b].reshape((n, LANES)),
            scratch[b:c].reshape((nodes, LANES)),
            scratch[c:c + _STATE * LANES].reshape((_STATE, LANES)))


def _f64_tile(a):
    return check_tiles(a) and a.dtype == types.float64


@intrinsic
def _add_row(typingctx, A, i, X, k, fresh):
    """``A[i] += X[k]`` over the LANES lanes (tiles (·, LANES) float64); ``fresh``:
    ``A[i] = 0.0 + X[k]`` (A[i] not read)."""
    if not (_f64_tile(A) and _f64_tile(X)):
        return None

    def codegen(context, builder, signature, args):
        a = context.make_array(A)(context, builder, args[0])
        x = context.make_array(X)(context, builder, args[2])
        zero = ir.Constant(ir.VectorType(ir.DoubleType(), 8), None)
        for pa, px in zip(row_pointers(context, builder, A, a, args[1]),
                          row_pointers(context, builder, X, x, args[3])):
            old = builder.select(args[4], zero, builder.load(pa, align=8))
            builder.store(builder.fadd(old, builder.load(px, align=8)), pa, align=8)
        return context.get_dummy_value()

    return types.none(A, types.intp, X, types.intp, types.boolean), codegen


@intrinsic
def _gradient_block(typingctx, A, bin_node, k0, S, G, r0):
    """``G[r0 + r, k0 + k] = A[bin_node[k0 + k], j] − S[1, j]`` with ``j = r0 % LANES + r``
    (cast to G's dtype) for r, k < 8: the gradient, gathered and transposed at once."""
    if not (_f64_tile(A) and _f64_tile(S) and check_tiles(G)):
        return None
    sig = types.none(A, bin_node, types.intp, S, G, types.intp)

    def codegen(context, builder, signature, args):
        a = context.make_array(A)(context, builder, args[0])
        bn = context.make_array(bin_node)(context, builder, args[1])
        m = context.make_array(S)(context, builder, args[3])
        g = context.make_array(G)(context, builder, args[4])
        k0, r0 = args[2], args[5]
        lane = builder.srem(r0, r0.type(LANES))
        mean = builder.load(_row_pointer(context, builder, S, m, lane.type(1), lane), align=8)
        cols = []
        for k in range(8):
            node = builder.load(cgutils.get_item_pointer(context, builder, bin_node, bn,
                                                         [builder.add(k0, k0.type(k))]))
            node = context.cast(builder, node, bin_node.dtype, types.intp)
            ptr = _row_pointer(context, builder, A, a, node, lane)
            cols.append(builder.fsub(builder.load(ptr, align=8), mean))
        store_rows(context, builder, G, g, cols, r0, k0)
        return context.get_dummy_value()

    return sig, codegen


def _up_loop(context, builder, arrays, rho, grad, acc):
    """The loop of :func:`_up_pass` for rho 1.0 or 2.0 and ``grad`` fixed."""
    (A, a), (par_t, par), (w_t, w), (cnt_t, cnt) = arrays
    total, mean = acc
    nodes = cgutils.unpack_tuple(builder, a.shape, 2)[0]
    steps = builder.select(builder.icmp_signed(">", nodes, nodes.type(1)),
                           builder.sub(nodes, nodes.type(1)), nodes.type(0))
    zero = ir.Constant(ir.VectorType(ir.DoubleType(), 8), None)
    with cgutils.for_range(builder, steps) as loop:
        v = builder.sub(builder.sub(nodes, nodes.type(1)), loop.index)  # N−1 … 1
        pv = builder.load(cgutils.get_item_pointer(context, builder, par_t, par, [v]))
        pv = context.cast(builder, pv, par_t.dtype, types.intp)
        wv = builder.load(cgutils.get_item_pointer(context, builder, w_t, w, [v]))
        cv = builder.load(cgutils.get_item_pointer(context, builder, cnt_t, cnt, [v]))
        cv = context.cast(builder, cv, cnt_t.dtype, types.float64)
        rw = builder.fmul(ir.Constant(ir.DoubleType(), rho), wv)
        wv, rw, cv = splat(builder, wv), splat(builder, rw), splat(builder, cv)
        for q, (p_v, p_p) in enumerate(zip(row_pointers(context, builder, A, a, v),
                                           row_pointers(context, builder, A, a, pv))):
            phi = builder.load(p_v, align=8)
            if rho == 2.0:
                power, slope = builder.fmul(phi, phi), phi
            else:
                power = sign_bits(builder, phi, False, 0)  # |phi|
                sign = sign_bits(builder, phi, True, 0x3FF0000000000000)  # copysign(1, phi)
                slope = builder.select(builder.fcmp_unordered("!=", phi, zero), sign, zero)
            builder.store(builder.fadd(builder.load(total[q]), builder.fmul(wv, power)),
                          total[q])
            builder.store(builder.fadd(builder.load(p_p, align=8), phi), p_p, align=8)
            if grad:
                da = builder.fmul(rw, slope)
                builder.store(builder.fadd(builder.load(mean[q]), builder.fmul(da, cv)),
                              mean[q])
                builder.store(da, p_v, align=8)


@intrinsic
def _up_pass(typingctx, A, parent, weight, count, rho, grad, state):
    """The post-order pass over the node tile A (nodes, LANES), rho 1 or 2, running sums in
    registers (``kernels.tree._row_value`` / ``_row_value_grad``'s first loop, per lane,
    same order and roundings): for v = nodes−1 … 1, total += w_v |phi_v|^rho,
    phi_parent += phi_v; with ``grad`` also a_v = (rho w_v) sgn(phi_v)|phi_v|^(rho−1)
    replaces phi_v and mean += a_v count_v. state rows 0, 1 ← total, mean."""
    if not (_f64_tile(A) and _f64_tile(state)):
        return None
    sig = types.none(A, parent, weight, count, types.float64, types.boolean, state)

    def codegen(context, builder, signature, args):
        arrays = [(ty, context.make_array(ty)(context, builder, v))
                  for ty, v in zip((A, parent, weight, count), args[:4])]
        rho, grad = args[4], args[5]
        vec = ir.VectorType(ir.DoubleType(), 8)
        acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, None))
                for _ in range(LANES // 8)] for _ in range(2)]
        two = builder.fcmp_ordered("==", rho, ir.Constant(ir.DoubleType(), 2.0))
        with builder.if_else(two) as (then, otherwise):
            for r, block in ((2.0, then), (1.0, otherwise)):
                with block:
                    with builder.if_else(grad) as (g_on, g_off):
                        with g_on:
                            _up_loop(context, builder, arrays, r, True, acc)
                        with g_off:
                            _up_loop(context, builder, arrays, r, False, acc)
        st = context.make_array(state)(context, builder, args[6])
        zero = ir.Constant(ir.IntType(64), 0)
        for k in range(2):
            for q, ptr in enumerate(row_pointers(context, builder, state, st, zero.type(k))):
                builder.store(builder.load(acc[k][q]), ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _scatter(A, X, bin_node, first, has_bin):
    """``kernels.tree._scatter`` on tiles: A (nodes, LANES) ← the bins' rows of X (N,
    LANES) added in bin order into 0: 0 at the nodes without bins, ``0.0 + s`` for a
    node's first bin (the same bits, −0 included). The lane loop reads its width at run
    time, so LLVM vectorises it (a constant LANES it unrolls into scalar code)."""
    _zero_rows(A, has_bin)
    for k in range(X.shape[0]):
        _add_row(A, bin_node[k], X, k, first[k])


@njit(cache=True, inline="always")
def _zero_rows(A, has_bin):
    """A[v] ← 0 at the nodes v without bins (a run-time width: see :func:`_scatter`)."""
    for v in range(A.shape[0]):
        if not has_bin[v]:
            for j in range(A.shape[1]):
                A[v, j] = 0.0


@njit(cache=True, inline="always")
def _residual_shifts(X, P, c, lo, classes, scales, out):
    """``scales[2, j] = r·sp`` for the block's rows marked ``out < 0`` (0 for the others):
    r summed in bin order from the differences tile X, as ``kernels.tree._residual`` sums
    it (against a class, its bin as ``unit_diff``)."""
    for j in range(LANES):
        rsp = 0.0
        if out[lo + j] < 0.0:
            sp, cj = scales[0, j], c[lo + j] if classes else -1
            r = 0.0
            for k in range(X.shape[0]):
                r += unit_diff(sp, np.float64(P[lo + j, k])) if k == cj else X[k, j]
            rsp = r * sp
        scales[2, j] = rsp


@njit(cache=True, inline="always")
def _block(P, Q, c, SP, SQ, tree, rho, out, G, F, lo, scratch, stats):
    """Rows ``lo … lo+LANES−1`` of ``kernels.tree.tree_value(_grad)``, rho 1 or 2, the
    residual pass included (but with flows: those rows marked ``out = −1``); tree:
    (parent, weight, bin_node, count, depth, first: a node's first bin (N,), has_bin
    (nodes,), one_bin: no node holds two bins, so the differences go straight to the
    node tile, ``0.0 + s``: the scatter's bits, with no tile of their own). F (B,
    nodes−1) with columns (and G without): the flows ``phi_v``, which the post-order pass
    leaves in the node tile, transposed out. stats (2, B), or (2, 0): SP filled from the
    rows' sums first (:class:`.rowstats.RowSums`). G or F None (or without columns): no
    gradients, no flows (None: their code not compiled)."""
    parent, weight, bin_node, count, depth, first, has_bin, one_bin = tree
    n = P.shape[1]
    nodes = parent.shape[0]
    X, T, A, state = _tiles(scratch, n, nodes)
    total, mean, m, scales = state[0], state[1], state[2], state[3:6]
    classes = c[lo] >= 0
    scaled = SP.shape[0] > 0
    if scaled:  # P's tile: the residual's bound (below) and, under sums, the l1 scales
        to_lanes(P, lo, T)
    if stats.shape[1] > 0:
        sums_mins_lanes(T, total, mean)
        for j in range(LANES):
            s = total[j]
            stats[0, lo + j] = s
            stats[1, lo + j] = mean[j]
            SP[lo + j] = 1.0 / s if s != 0.0 else np.inf  # (checked by the caller)
    flows = F is not None and F.shape[1] > 0
    for j in range(LANES):
        scales[0, j] = SP[lo + j] if SP.shape[0] > 0 else 1.0
        scales[1, j] = SQ[lo + j] if SQ.shape[0] > 0 else 1.0
        scales[2, j] = 0.0
    for again in range(2):  # again: the residual pass (rsp 0 in the unmarked rows)
        for j in range(LANES):
            total[j] = mean[j] = m[j] = 0.0
        if again:  # s − rsp·p from the differences in X (P's tile in T): as read again
            rsp = scales[2]
            for k in range(n):
                x, t = X[k], T[k]
                for j in range(X.shape[1]):  # (a run-time width: see _scatter)
                    x[j] -= rsp[j] * t[j]
            _scatter(A, X, bin_node, first, has_bin)
        elif one_bin:
            _zero_rows(A, has_bin)
            differences_to_rows(P, Q, lo, A, scales, not classes, bin_node)
        else:
            differences_to_lanes(P, Q, lo, X, scales, not classes)
            _scatter(A, X, bin_node, first, has_bin)
        if classes:
            for j in range(LANES):
                cj = c[lo + j]
                pc = np.float64(P[lo + j, cj])
                sp, rsp = scales[0, j], scales[2, j]
                A[bin_node[cj], j] += (unit_diff(sp, pc) - rsp * pc) - (sp * pc - rsp * pc)
        if scaled and not again:  # M = sp Σ_k p_k depth_k: the residual's bound
            for k in range(n):
                dk, t = depth[bin_node[k]], T[k]
                for j in range(A.shape[1]):  # (a run-time width: see _scatter)
                    m[j] += t[j] * dk
        _up_pass(A, parent, weight, count, rho, G is not None and G.shape[1] > 0, state)
        if flows and nodes > 1:  # rows 1 … nodes−1 of A: phi of the edges, as a tile
            # (F None, no flows asked: this code is not compiled)
            at = (2 * n + 1) * LANES
            from_lanes(scratch[at:at + (nodes - 1) * LANES].reshape((nodes - 1, LANES)), F,
                       lo)
        marked = False
        for j in range(LANES):
            value = total[j]
            if scaled and not again and needs_residual_fix(A[0, j], value,
                                                           scales[0, j] * m[j], rho):
                value = -1.0
                marked = True
            out[lo + j] = value
        if not marked or flows:
            break
        if one_bin:  # the differences, as the scatter would have read them (rsp 0)
            differences_to_lanes(P, Q, lo, X, scales, not classes)
        _residual_shifts(X, P, c, lo, classes, scales, out)
    if G is not None and G.shape[1] > 0:  # (G None, values only: not compiled)
        for j in range(LANES):
            mean[j] /= n
            A[0, j] = 0.0
        for v in range(1, parent.shape[0]):  # r at node v: the path sum to the root
            _add_row(A, v, A, parent[v], False)
        full = n - n % 8
        for r in range(0, LANES, 8):
            for k0 in range(0, full, 8):
                _gradient_block(A, bin_node, k0, state, G, lo + r)
        for k in range(full, n):
            for j in range(LANES):
                G[lo + j, k] = A[bin_node[k], j] - mean[j]


@njit(cache=True, inline="always")
def _softmax_block(Z, Q, c, SQ, tree, rho, out, G, lo, scratch, logits, chain_rule, scale):
    """Rows ``lo … lo+LANES−1`` of Z, ``logits`` (``p = softmax(z)`` in the tile T, which
    :func:`_block` uses only for scales) or a softmax's output p: its pass on p and the
    gradient with respect to p, or with ``chain_rule`` to z: ``p ⊙ (g − ⟨g, p⟩) · scale``
    before rounding."""
    parent, weight, bin_node, count, depth, first, has_bin, _ = tree
    n = Z.shape[1]
    X, PT, A, state = _tiles(scratch, n, parent.shape[0])
    total, mean = state[0], state[1]
    classes = c[lo] >= 0
    to_lanes(Z, lo, PT)
    if logits:
        softmax_lanes(PT, state[2], state[3])
    if not classes:  # X ← p − sq·q
        to_lanes(Q, lo, X)
        target_differences(X, PT, SQ[lo:lo + LANES])
    _scatter(A, PT if classes else X, bin_node, first, has_bin)
    if classes:  # as in _block, with sp = 1
        for j in range(LANES):
            cj = c[lo + j]
            pc = PT[cj, j]
            A[bin_node[cj], j] += (unit_diff(1.0, pc) - 0.0 * pc) - (pc - 0.0 * pc)
    grad = G.shape[1] > 0
    _up_pass(A, parent, weight, count, rho, grad, state)
    for j in range(LANES):
        out[lo + j] = total[j]
    if not grad:
        return
    for j in range(LANES):
        mean[j] /= n
        A[0, j] = 0.0
    for v in range(1, parent.shape[0]):  # r at node v: the path sum to the root
        _add_row(A, v, A, parent[v], False)
    if not chain_rule:
        gather_tile(X, A, bin_node, mean)  # g_k = r(bin_node k) − mean, as a tile
        from_lanes(X, G, lo)
        return
    gather_dots(X, A, bin_node, mean, PT, state[2])  # g, and ⟨g, p⟩
    rule_from_lanes(X, PT, state[2], G, lo, scale)  # p ⊙ (g − ⟨g, p⟩), on the way out


_NO_STATS = np.empty((2, 0), dtype=np.float64)


@njit(cache=True)
def bin_flags(bin_node, nodes):
    """``(first, has_bin, one_bin)``: first (N,) whether bin k is the first of its node's
    bins, has_bin (nodes,) whether a node holds a bin, one_bin whether none holds two (in
    one loop: numpy's ``unique`` took 20-40 µs a call, 5-10 % of a 512-row batch)."""
    has_bin = np.zeros(nodes, dtype=np.bool_)
    first = np.zeros(bin_node.shape[0], dtype=np.bool_)
    one_bin = True
    for k in range(bin_node.shape[0]):
        v = bin_node[k]
        if has_bin[v]:
            one_bin = False
        else:
            has_bin[v] = True
            first[k] = True
    return first, has_bin, one_bin


def _lanes_batch(rows, tree, rho, out, G, scratch, F, reads=None):
    """:func:`tree_lanes` for B a multiple of LANES, first pass only: runs of blocks on
    threads (``kernels.threads``), one scratch row each."""
    parent, weight, bin_node, count, depth = tree
    flat = (parent, weight, bin_node, count, depth, *bin_flags(bin_node, parent.shape[0]))
    each = max(1, 8192 // (LANES * max(1, parent.shape[0])))
    if isinstance(reads, Softmax):
        P, Q, c, _, SQ = rows
        threads.run(_softmax_runs, P.shape[0] // LANES,
                    (P, Q, c, SQ, flat, rho, out, G, scratch, reads.logits,
                     reads.chain_rule, reads.scale),
                    slots=scratch.shape[0], min_items=each, parallel=_softmax_parallel)
        return
    stats = reads.stats if isinstance(reads, RowSums) else _NO_STATS
    # no gradients or no flows asked: None, a specialisation without their code
    grads, flows = (G if G.shape[1] else None), (F if F.shape[1] else None)
    threads.run(_lanes_runs, rows[0].shape[0] // LANES,
                (*rows, flat, rho, out, grads, flows, scratch, stats), slots=scratch.shape[0],
                min_items=each, parallel=_lanes_parallel)


@njit(cache=True, nogil=True)
def _lanes_runs(P, Q, c, SP, SQ, tree, rho, out, G, F, scratch, stats, first, last, slot):
    """Blocks ``first … last−1`` of :func:`_lanes_batch` (scratch row ``slot``)."""
    for blk in range(first, last):
        _block(P, Q, c, SP, SQ, tree, rho, out, G, F, blk * LANES, scratch[slot], stats)


@njit(cache=True, parallel=True, nogil=True)
def _lanes_parallel(P, Q, c, SP, SQ, tree, rho, out, G, F, scratch, stats, n, parts):
    for k in prange(parts):
        _lanes_runs(P, Q, c, SP, SQ, tree, rho, out, G, F, scratch, stats, k * n // parts,
                    (k + 1) * n // parts, k)


def tree_lanes(rows, arrays, rho, out, G, scratch, F=None, reads=None):
    """HEMD^rho values into out (B,), projected gradients into G (B, N) unless G has no
    columns, LANES rows side by side (see the module's docstring; the same bits as
    ``kernels.tree.tree_value_grad`` / ``tree_value``). rows a :class:`~.tiles.LaneRows`
    (c −1 for row targets), arrays the tree's (parent, weight, bin_node, count). F
    (B, nodes−1), values only (G without columns): also the flows, as
    ``kernels.flows.tree_flows`` gives them. ``reads``: see the module's docstring."""
    P, Q, c, SP, SQ = rows
    parent, weight, bin_node, count = arrays
    b = P.shape[0]
    F = np.empty((b, 0), dtype=out.dtype) if F is None else F
    depth = path_lengths(parent, weight)
    tree = (parent, weight, bin_node, count, depth)
    full = b - b % LANES
    sums = isinstance(reads, RowSums)
    if full:
        _lanes_batch(tuple(a[:full] for a in rows), tree, rho, out[:full], G[:full], scratch,
                     F[:full], reads)  # (stats whole: the tail's type, one compile)
    if full < b:
        m = b - full

        def pad(a, fill):
            return tail_block(a, full, fill)

        g = np.empty((LANES, G.shape[1]), dtype=G.dtype)
        f = np.empty((LANES, F.shape[1]), dtype=F.dtype)
        v = np.empty(LANES, dtype=out.dtype)
        block = (pad(P, 1 if sums else 0), pad(Q, 0), pad(c, c[full]), pad(SP, 1.0),
                 pad(SQ, 1.0))  # (padded rows with mass, under sums)
        tail = RowSums(np.empty((2, LANES))) if sums else reads
        _lanes_batch(block, tree, rho, v, g, scratch[:1], f, tail)
        out[full:] = v[:m]
        G[full:] = g[:m]
        F[full:] = f[:m]
        if sums:
            SP[full:] = block[3][:m]
            reads.stats[:, full:] = tail.stats[:, :m]
    if b and F.shape[1] and (out < 0.0).any():  # the marked rows with their flows, again
        from .flows import tree_flows

        sel = np.flatnonzero(out < 0.0)
        v, f = np.empty(len(sel), dtype=out.dtype), np.empty((len(sel), F.shape[1]), F.dtype)
        part = LaneRows(*(a[sel] if a.shape[0] else a for a in rows))
        tree_flows(part, arrays, rho, v, G[:0], f, np.empty((1, 2 * parent.shape[0])))
        out[sel], F[sel] = v, f


@njit(cache=True, nogil=True)
def _softmax_runs(Z, Q, c, SQ, tree, rho, out, G, scratch, logits, chain_rule, scale,
                  first, last, slot):
    """Blocks ``first … last−1`` under a softmax (:func:`_softmax_block`, scratch row
    ``slot``)."""
    for blk in range(first, last):
        _softmax_block(Z, Q, c, SQ, tree, rho, out, G, blk * LANES, scratch[slot], logits,
                       chain_rule, scale)


@njit(cache=True, parallel=True, nogil=True)
def _softmax_parallel(Z, Q, c, SQ, tree, rho, out, G, scratch, logits, chain_rule, scale, n,
                      parts):
    for k in prange(parts):
        _softmax_runs(Z, Q, c, SQ, tree, rho, out, G, scratch, logits, chain_rule, scale,
                      k * n // parts, (k + 1) * n // parts, k)

"""Rows into lanes and back, and the chain's lane scan (CPU, Numba intrinsics).

The chain and tree kernels run ``LANES`` rows side by side (``kernels.chain_lanes``,
``kernels.tree_lanes``): the pass over the bins (or nodes) is the outer loop, the rows the
inner, vectorised one, on tiles of shape (N, LANES) float64 — row j of a block is column
j of its tile. Numba leaves LLVM's SLP vectoriser off and its loop vectoriser keeps
running sums in memory, so the pieces that decide the speed are written as LLVM IR:

- ``to_lanes(A, lo, X)`` / ``from_lanes(X, A, lo)``: X (N, LANES) ↔ rows lo … lo+LANES−1
  of A (B, N), float32 or float64, by 8 × 8 blocks (8 vector loads, 24 shuffles, 8 vector
  stores; pure data movement, the same bits);
- ``differences_to_lanes``: the same, computing ``kernels.chain``'s exact differences on
  the way; ``gradient_from_lanes``: ``base − T`` on the way out;
- ``lane_scan``: the chain's scan over a tile, its running sums in registers.

Every per-lane operation is the scalar kernel's, in its order (no FMA contraction, no
reassociation): the same bits. A, X C-contiguous.
"""
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import jit  # noqa: F401 (before any kernel loads)
from .scalars import diff

LANES = 32  # rows per block (a multiple of 8)


class LaneRows(NamedTuple):
    """What the lanes drivers read per row: P (B, N), Q (B, N; P again for class
    targets), C (B,) class indices (or none / −1), SP, SQ (B,) row scales (or empty: 1)."""

    P: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    SP: np.ndarray
    SQ: np.ndarray


def tail_block(a, start, fill):
    """Rows ``start…`` of ``a`` (fewer than :data:`LANES`) as one block of LANES rows,
    padded with ``fill`` (a zero-row array, a placeholder, stays as it is)."""
    if a.shape[0] == 0:
        return a
    block = np.full((LANES, *a.shape[1:]), fill, dtype=a.dtype)
    block[:a.shape[0] - start] = a[start:]
    return block
_W = 8  # the transposed sub-block's side


def _transpose(builder, rows):
    """Eight <8 x double> vectors (row r holds elements (r, 0…7)) → eight columns
    (column c holds (0…7, c)), by three rounds of two-source shuffles."""
    labelled = [(v, [(r, c) for c in range(_W)]) for r, v in enumerate(rows)]

    def pick(a, b, want):
        (va, la), (vb, lb) = a, b
        mask = [la.index(x) if x in la else _W + lb.index(x) for x in want]
        m = ir.Constant(ir.VectorType(ir.IntType(32), _W), mask)
        return builder.shuffle_vector(va, vb, m), list(want)

    s1 = {}  # rows 2p, 2p+1; columns of parity e
    for p in range(4):
        for e in range(2):
            want = [(2 * p + k, c) for c in range(e, _W, 2) for k in range(2)]
            s1[p, e] = pick(labelled[2 * p], labelled[2 * p + 1], want)
    s2 = {}  # rows 4q … 4q+3; columns c, c + 4
    for q in range(2):
        for e in range(2):
            for m in range(2):
                cols = (e + 2 * m, e + 2 * m + 4)
                want = [(4 * q + k, c) for c in cols for k in range(4)]
                s2[q, cols[0]] = pick(s1[2 * q, e], s1[2 * q + 1, e], want)
    out = [None] * _W
    for c in range(4):
        for col in (c, c + 4):
            out[col] = pick(s2[0, c], s2[1, c], [(r, col) for r in range(_W)])[0]
    return out


def _row_pointer(context, builder, aryty, ary, r, c):
    """Address of ``A[r, c]`` of a C-contiguous 2-D array, as a pointer to a vector of 8."""
    data = builder.ptrtoint(ary.data, ir.IntType(64))
    stride = cgutils.unpack_tuple(builder, ary.strides, 2)[0]
    size = ir.Constant(ir.IntType(64), context.get_abi_sizeof(
        context.get_data_type(aryty.dtype)))
    offset = builder.add(builder.mul(r, stride), builder.mul(c, size))
    vec = ir.VectorType(context.get_data_type(aryty.dtype), _W)
    return builder.inttoptr(builder.add(data, offset), vec.as_pointer())


def store_rows(context, builder, aty, ary, cols, r0, c0):
    """Eight <8 x double> columns (column k holds rows r0 … r0+7 at column c0 + k of A),
    transposed and stored as A[r0 + r, c0 … c0+7], cast to A's dtype."""
    f32 = ir.VectorType(ir.FloatType(), _W)
    for r, row in enumerate(_transpose(builder, cols)):
        if aty.dtype == types.float32:
            row = builder.fptrunc(row, f32)
        ptr = _row_pointer(context, builder, aty, ary, builder.add(r0, r0.type(r)), c0)
        builder.store(row, ptr, align=4)


def check_tiles(*arrays):
    return all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
               and a.dtype in (types.float32, types.float64) for a in arrays)


@intrinsic
def _block_in(typingctx, A, r0, c0, X, x0, xj):
    """``X[x0 + k, xj + r] = float64(A[r0 + r, c0 + k])`` for r, k < 8."""
    if not (check_tiles(A, X) and X.dtype == types.float64):
        return None
    sig = types.none(A, types.intp, types.intp, X, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a = context.make_array(A)(context, builder, args[0])
        x = context.make_array(X)(context, builder, args[3])
        r0, c0, x0, xj = args[1], args[2], args[4], args[5]
        for k, col in enumerate(_load_block(context, builder, A, a, r0, c0)):
            ptr = _row_pointer(context, builder, X, x, builder.add(x0, x0.type(k)), xj)
            builder.store(col, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _block_out(typingctx, X, x0, xj, A, r0, c0):
    """``A[r0 + r, c0 + k] = X[x0 + k, xj + r]`` (cast to A's dtype) for r, k < 8."""
    if not (check_tiles(A, X) and X.dtype == types.float64):
        return None
    sig = types.none(X, types.intp, types.intp, A, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        x = context.make_array(X)(context, builder, args[0])
        a = context.make_array(A)(context, builder, args[3])
        x0, xj, r0, c0 = args[1], args[2], args[4], args[5]
        cols = []
        for k in range(_W):
            ptr = _row_pointer(context, builder, X, x, builder.add(x0, x0.type(k)), xj)
            cols.append(builder.load(ptr, align=8))
        store_rows(context, builder, A, a, cols, r0, c0)
        return context.get_dummy_value()

    return sig, codegen


def _lane_vector(context, builder, vty, vec_ary, index):
    """``v[index … index+7]`` (the last index runs) of a C-contiguous float64 array as
    <8 x double>."""
    ptr = cgutils.get_item_pointer(context, builder, vty, vec_ary, index)
    vec = ir.VectorType(ir.DoubleType(), _W)
    return builder.load(builder.bitcast(ptr, vec.as_pointer()), align=8)


def _load_block(context, builder, aty, ary, r0, c0):
    """Rows r0 … r0+7, columns c0 … c0+7 of A as eight <8 x double> columns (float32
    widened first: transposed as float32, measured 20 % slower)."""
    f64 = ir.VectorType(ir.DoubleType(), _W)
    rows = []
    for r in range(_W):
        v = builder.load(_row_pointer(context, builder, aty, ary, builder.add(r0, r0.type(r)),
                                      c0), align=4)
        rows.append(v if aty.dtype == types.float64 else builder.fpext(v, f64))
    return _transpose(builder, rows)


@intrinsic
def _block_in_diff(typingctx, P, Q, corner, X, scales, rows, at):
    """``X[c0 + k, r] = s`` for rows r0 + r, columns c0 + k (r, k < 8), ``corner = (r0,
    c0)``, of the differences
    ``s = diff(p, q, sp, sq) − rsp·p`` (target rows) or ``sp·p − rsp·p`` (class targets,
    Q unused): ``kernels.chain._differences``, the same operations vectorised; scales
    (3, LANES) float64 the block's sp, sq, rsp (X's columns r0 % LANES …). ``at`` None,
    or an int array: ``X[at[c0 + k], r] = 0.0 + s`` instead (scattered to rows of X)."""
    if not (check_tiles(P, Q, X) and X.dtype == types.float64
            and isinstance(corner, types.UniTuple) and corner.count == 2
            and isinstance(corner.dtype, types.Integer)):
        return None
    scattered = not isinstance(at, types.NoneType)
    if scattered and not (isinstance(at, types.Array) and at.ndim == 1
                          and isinstance(at.dtype, types.Integer)):
        return None
    sig = types.none(P, Q, corner, X, scales, types.boolean, at)

    def codegen(context, builder, signature, args):
        p = context.make_array(P)(context, builder, args[0])
        q = context.make_array(Q)(context, builder, args[1])
        x = context.make_array(X)(context, builder, args[3])
        sc = context.make_array(scales)(context, builder, args[4])
        r0, c0 = (context.cast(builder, v, corner.dtype, types.intp)
                  for v in cgutils.unpack_tuple(builder, args[2], 2))
        rows = args[5]
        lane = builder.srem(r0, r0.type(LANES))
        spv, sqv, rspv = (_lane_vector(context, builder, scales, sc, [lane.type(k), lane])
                          for k in range(3))
        pcols = _load_block(context, builder, P, p, r0, c0)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(spv.type, [spv.type] * 3), "llvm.fma.v8f64")

        if scattered:
            at_ary = context.make_array(at)(context, builder, args[6])
            zero = ir.Constant(spv.type, None)

        def store(k, s):
            row = builder.add(c0, c0.type(k))
            if scattered:
                row = builder.load(cgutils.get_item_pointer(context, builder, at, at_ary,
                                                            [row]))
                row = context.cast(builder, row, at.dtype, types.intp)
                s = builder.fadd(zero, s)
            ptr = _row_pointer(context, builder, X, x, row, lane)
            builder.store(s, ptr, align=8)

        with builder.if_else(rows) as (with_rows, with_classes):
            with with_rows:
                qcols = _load_block(context, builder, Q, q, r0, c0)
                for k in range(_W):
                    pv, qv = pcols[k], qcols[k]
                    w, v = builder.fmul(spv, pv), builder.fmul(sqv, qv)
                    ew = builder.call(fma, [spv, pv, builder.fneg(w)])  # exact: sp·p − w
                    ev = builder.call(fma, [sqv, qv, builder.fneg(v)])
                    s = builder.fadd(builder.fsub(w, v), builder.fsub(ew, ev))
                    store(k, builder.fsub(s, builder.fmul(rspv, pv)))
            with with_classes:
                for k in range(_W):
                    pv = pcols[k]
                    store(k, builder.fsub(builder.fmul(spv, pv), builder.fmul(rspv, pv)))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _block_out_sub(typingctx, X, x0, base, A, r0):
    """``A[r0 + r, x0 + k] = base[r0 % LANES + r] − X[x0 + k, r0 % LANES + r]`` (cast to
    A's dtype) for r, k < 8."""
    if not (check_tiles(A, X) and X.dtype == types.float64):
        return None
    sig = types.none(X, types.intp, base, A, types.intp)

    def codegen(context, builder, signature, args):
        x = context.make_array(X)(context, builder, args[0])
        ba = context.make_array(base)(context, builder, args[2])
        a = context.make_array(A)(context, builder, args[3])
        x0, r0 = args[1], args[4]
        lane = builder.srem(r0, r0.type(LANES))
        bv = _lane_vector(context, builder, base, ba, [lane])
        cols = []
        for k in range(_W):
            ptr = _row_pointer(context, builder, X, x, builder.add(x0, x0.type(k)), lane)
            cols.append(builder.fsub(bv, builder.load(ptr, align=8)))
        store_rows(context, builder, A, a, cols, r0, x0)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _block_out_rule(typingctx, X, PT, dots, x0, A, r0, scale):
    """``A[r0 + r, x0 + k] = PT[x0 + k, j] · (X[x0 + k, j] − dots[j]) · scale``, j = r0 %
    LANES + r (cast to A's dtype) for r, k < 8: the softmax's chain rule on the way out."""
    if not (check_tiles(A, X, PT) and X.dtype == PT.dtype == types.float64):
        return None
    sig = types.none(X, PT, dots, types.intp, A, types.intp, types.float64)

    def codegen(context, builder, signature, args):
        x = context.make_array(X)(context, builder, args[0])
        pt = context.make_array(PT)(context, builder, args[1])
        dv_ary = context.make_array(dots)(context, builder, args[2])
        a = context.make_array(A)(context, builder, args[4])
        x0, r0 = args[3], args[5]
        lane = builder.srem(r0, r0.type(LANES))
        dv = _lane_vector(context, builder, dots, dv_ary, [lane])
        sv = splat(builder, args[6])
        cols = []
        for k in range(_W):
            row = builder.add(x0, x0.type(k))
            g = builder.load(_row_pointer(context, builder, X, x, row, lane), align=8)
            p = builder.load(_row_pointer(context, builder, PT, pt, row, lane), align=8)
            cols.append(builder.fmul(builder.fmul(p, builder.fsub(g, dv)), sv))
        store_rows(context, builder, A, a, cols, r0, x0)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def differences_to_lanes(P, Q, lo, X, scales, rows):
    """X (N, LANES) ← the differences s of rows lo … lo+LANES−1 (see
    :func:`_block_in_diff`; scales (3, LANES): sp, sq, rsp), transposed."""
    for i in range(_difference_blocks(P, Q, lo, X, scales, rows, None), P.shape[1]):
        _difference_column(P, Q, lo, i, X[i], scales, rows)


@njit(cache=True, inline="always")
def differences_to_rows(P, Q, lo, X, scales, rows, at):
    """:func:`differences_to_lanes` with bin i's differences in row ``at[i]`` of X (plus
    0.0): a scatter of the differences to tree nodes, each row of X given one bin at most
    (the others not written)."""
    for i in range(_difference_blocks(P, Q, lo, X, scales, rows, at), P.shape[1]):
        x = X[at[i]]
        _difference_column(P, Q, lo, i, x, scales, rows)
        for j in range(LANES):
            x[j] = 0.0 + x[j]


@njit(cache=True, inline="always")
def _difference_blocks(P, Q, lo, X, scales, rows, at):
    """The 8 × 8 blocks of :func:`differences_to_lanes` (``at`` None) or
    :func:`differences_to_rows`; returns the first column left (N − N mod 8)."""
    full = P.shape[1] - P.shape[1] % _W
    for r in range(0, LANES, _W):
        for c0 in range(0, full, _W):
            _block_in_diff(P, Q, (lo + r, c0), X, scales, rows, at)
    return full


@njit(cache=True, inline="always")
def _difference_column(P, Q, lo, i, x, scales, rows):
    """x (LANES,) ← column i's differences, one lane at a time (:func:`_block_in_diff`)."""
    sp, sq, rsp = scales[0], scales[1], scales[2]
    for j in range(LANES):
        pi = np.float64(P[lo + j, i])
        if rows:
            x[j] = diff(pi, np.float64(Q[lo + j, i]), sp[j], sq[j]) - rsp[j] * pi
        else:
            x[j] = sp[j] * pi - rsp[j] * pi


@njit(cache=True, inline="always")
def gradient_from_lanes(T, base, A, lo):
    """Rows lo … lo+LANES−1 of A (B, N) ← ``base[j] − T[i, j]`` transposed, in A's dtype."""
    n = A.shape[1]
    full = n - n % _W
    for r in range(0, LANES, _W):
        for c0 in range(0, full, _W):
            _block_out_sub(T, c0, base, A, lo + r)
    for i in range(full, n):
        for j in range(LANES):
            A[lo + j, i] = base[j] - T[i, j]


@njit(cache=True, inline="always")
def rule_from_lanes(GT, PT, dots, A, lo, scale):
    """Rows lo … lo+LANES−1 of A (B, N) ← ``PT[i, j] · (GT[i, j] − dots[j]) · scale``
    transposed, in A's dtype: the softmax's chain rule ``p ⊙ (g − ⟨g, p⟩)`` with g = GT,
    p = PT and dots = ⟨g, p⟩ (:func:`.softmax.offsets_dots`, :func:`.softmax.gather_dots`),
    computed on the way out, times a loss's scale (a mean's 1/B; 1.0 leaves the bits)."""
    n = A.shape[1]
    full = n - n % _W
    for r in range(0, LANES, _W):
        for c0 in range(0, full, _W):
            _block_out_rule(GT, PT, dots, c0, A, lo + r, scale)
    for i in range(full, n):
        for j in range(LANES):
            A[lo + j, i] = PT[i, j] * (GT[i, j] - dots[j]) * scale


@njit(cache=True, inline="always")
def to_lanes(A, lo, X):
    """X (N, LANES) float64 ← rows lo … lo+LANES−1 of A (B, N), transposed."""
    n = A.shape[1]
    full = n - n % _W
    for r in range(0, LANES, _W):  # eight rows at a time, each read in order
        for c0 in range(0, full, _W):
            _block_in(A, lo + r, c0, X, c0, r)
    for i in range(full, n):
        for j in range(LANES):
            X[i, j] = A[lo + j, i]


@njit(cache=True, inline="always")
def from_lanes(X, A, lo):
    """Rows lo … lo+LANES−1 of A (B, N) ← X (N, LANES), transposed, in A's dtype."""
    n = A.shape[1]
    full = n - n % _W
    for r in range(0, LANES, _W):
        for c0 in range(0, full, _W):
            _block_out(X, c0, r, A, lo + r, c0)
    for i in range(full, n):
        for j in range(LANES):
            A[lo + j, i] = X[i, j]


def sign_bits(builder, v, keep_sign, or_bits):
    """``v``'s bits (<8 x double>) masked: the sign bit alone (``keep_sign``) or all but
    it, then or-ed with ``or_bits``: |v| and copysign(1, v) exactly, without libm."""
    i64 = ir.VectorType(ir.IntType(64), _W)
    sign = 1 << 63
    mask = sign if keep_sign else sign - 1
    bits = builder.and_(builder.bitcast(v, i64), ir.Constant(i64, [mask] * _W))
    if or_bits:
        bits = builder.or_(bits, ir.Constant(i64, [or_bits] * _W))
    return builder.bitcast(bits, v.type)


def splat(builder, value):
    vec = ir.VectorType(ir.DoubleType(), _W)
    v = ir.Constant(vec, ir.Undefined)
    for k in range(_W):
        v = builder.insert_element(v, value, ir.Constant(ir.IntType(32), k))
    return v


def _scan_loop(context, builder, tiles, d, steps, rho, grad, acc):
    """The loop of :func:`lane_scan` for a fixed rho (1.0 or 2.0) and ``grad``; acc:
    the allocas (phi, total, weighted, prefix: one per 8 lanes each; count)."""
    (x, X), (t, T) = tiles
    dary, dty = d
    phi, total, weighted, prefix, count = acc
    one = ir.Constant(ir.DoubleType(), 1.0)
    zero_v = ir.Constant(ir.VectorType(ir.DoubleType(), _W), None)
    with cgutils.for_range(builder, steps) as loop:
        i = loop.index
        di = builder.load(cgutils.get_item_pointer(context, builder, dty, dary, [i]))
        rdi = builder.fmul(ir.Constant(ir.DoubleType(), rho), di)
        c = builder.fadd(builder.load(count), one)
        builder.store(c, count)
        di_v, rdi_v, c_v = splat(builder, di), splat(builder, rdi), splat(builder, c)
        for v in range(LANES // _W):
            col = i.type(v * _W)
            ph = builder.fadd(builder.load(phi[v]),
                              builder.load(_row_pointer(context, builder, X, x, i, col), align=8))
            builder.store(ph, phi[v])
            if rho == 2.0:
                power, slope = builder.fmul(ph, ph), ph
            else:
                power = sign_bits(builder, ph, False, 0)  # |phi|
                sign = sign_bits(builder, ph, True, 0x3FF0000000000000)  # copysign(1, phi)
                slope = builder.select(builder.fcmp_unordered("!=", ph, zero_v), sign, zero_v)
            builder.store(builder.fadd(builder.load(total[v]), builder.fmul(di_v, power)),
                          total[v])
            if grad:
                a = builder.fmul(rdi_v, slope)
                builder.store(builder.fadd(builder.load(weighted[v]), builder.fmul(c_v, a)),
                              weighted[v])
                p = builder.load(prefix[v])
                builder.store(p, _row_pointer(context, builder, T, t, i, col), align=8)
                builder.store(builder.fadd(p, a), prefix[v])


@intrinsic
def lane_scan(typingctx, X, T, d, rho, grad, state):
    """The chain's scan over a tile of differences X (N, LANES), rho 1 or 2, its running
    sums held in registers::

        phi_i = Σ_{k≤i} X[k],  total = Σ_{i<N−1} d_i |phi_i|^rho,
        a_i = (rho d_i) sgn(phi_i)|phi_i|^(rho−1),  weighted = Σ_i (i+1) a_i,
        T[i] = Σ_{k<i} a_k (only with ``grad``),  prefix = Σ_i a_i

    per lane, each sum in the order and with the roundings of ``kernels.chain._scan_grad``
    (same bits). state (4, LANES) ← phi_{N−2}, total, weighted, prefix. d (N−1,). T may
    be X itself: each T[i] is written after X[i] is read, and X[N−1] is not written."""
    if not (check_tiles(X, T) and X.dtype == T.dtype == types.float64
            and isinstance(d, types.Array) and d.ndim == 1 and d.dtype == types.float64
            and isinstance(state, types.Array) and state.ndim == 2
            and state.layout == "C" and state.dtype == types.float64):
        return None
    sig = types.none(X, T, d, types.float64, types.boolean, state)

    def codegen(context, builder, signature, args):
        x = context.make_array(X)(context, builder, args[0])
        t = context.make_array(T)(context, builder, args[1])
        dary = context.make_array(d)(context, builder, args[2])
        st = context.make_array(state)(context, builder, args[5])
        rho, grad = args[3], args[4]
        vec = ir.VectorType(ir.DoubleType(), _W)
        zero_v = ir.Constant(vec, None)
        acc = [[cgutils.alloca_once_value(builder, zero_v) for _ in range(LANES // _W)]
               for _ in range(4)]
        count = cgutils.alloca_once_value(builder, ir.Constant(ir.DoubleType(), 0.0))
        n = cgutils.unpack_tuple(builder, x.shape, 2)[0]
        steps = builder.select(builder.icmp_signed(">", n, n.type(0)),
                               builder.sub(n, n.type(1)), n.type(0))
        tiles, dd = ((x, X), (t, T)), (dary, d)
        two = builder.fcmp_ordered("==", rho, ir.Constant(ir.DoubleType(), 2.0))
        with builder.if_else(two) as (then, otherwise):
            for r, block in ((2.0, then), (1.0, otherwise)):
                with block:
                    with builder.if_else(grad) as (g_on, g_off):
                        with g_on:
                            _scan_loop(context, builder, tiles, dd, steps, r, True,
                                       (*acc, count))
                        with g_off:
                            _scan_loop(context, builder, tiles, dd, steps, r, False,
                                       (*acc, count))
        for k in range(4):
            for v in range(LANES // _W):
                ptr = _row_pointer(context, builder, state, st, n.type(k), n.type(v * _W))
                builder.store(builder.load(acc[k][v]), ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen


def row_pointers(context, builder, aty, ary, r):
    """Pointers to row r of a (·, LANES) float64 tile as LANES/8 <8 x double>."""
    return [_row_pointer(context, builder, aty, ary, r, r.type(v * _W))
            for v in range(LANES // _W)]



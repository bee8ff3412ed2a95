"""The softmax of a block's logits, and its chain rule, on lanes tiles (CPU, Numba).

For logits z (one row)::

    p_i = exp(z_i − m) / Σ_k exp(z_k − m),   m = max_k z_k
    ∂E/∂z = p ⊙ (g − ⟨g, p⟩)                 (g = ∂E/∂p; any constant added to g cancels)

Both work on a tile (N, LANES) float64 whose column j is row j of a block
(``kernels.tiles``), so every step is a short vector operation over the block's rows and
the sums run over the bins in order, per row. ``exp`` is written out (:func:`exp_le0`,
within an ulp of libm's; :func:`softmax_lanes` has it in LLVM IR on vectors of 8, the
same bits) because calls into libm do not vectorise; it runs once per logit, fused into
the lanes kernels
(``kernels.chain_lanes``, ``kernels.tree_lanes``), so the distributions never go
through memory. The chain rule's ⟨g, p⟩ is summed as g is formed (:func:`offsets_dots`,
:func:`gather_dots`) and its update written as the tile goes out
(``kernels.tiles.rule_from_lanes``): two passes over the tile, not four.

NaN propagates: a NaN or +inf logit, or a row of only −inf, makes the row's p all NaN
(so its value is NaN); −inf alone is a masked class (p = 0).
"""

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import jit  # noqa: F401 (before any kernel loads)
from .scalars import diff
from .tiles import _W, LANES, _lane_vector, _row_pointer, check_tiles


class Softmax(NamedTuple):
    """What the lanes kernels' rows P hold and what their gradient is taken with respect
    to: ``logits`` (P = z: p = softmax(z) is computed in the tile) or not (P = p, already
    a softmax's output); ``chain_rule``: the gradient with respect to z, ``p ⊙ (g −
    ⟨g, p⟩)``, else to p (g, projected); ``scale`` multiplies that chain rule's gradient
    before it is rounded (a loss's mean, 1/B, fused into the kernel's write; 1.0: the
    gradient's own bits)."""

    logits: bool
    chain_rule: bool
    scale: float = 1.0

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two (Cody–Waite): k·LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10
EXP_MIN = -708.39  # below this exp(r) < 2^-1022: flushed to +0 (see exp_le0)
# exp(f) on |f| ≤ 1.001·ln2/2: Chebyshev fit of degree 11 (mpmath.chebyfit, error
# 3e-18), highest power first; with the reduction, within an ulp of exp
EXP_POLY = (2.511015364692893e-08, 2.763279054211718e-07, 2.7557240604663896e-06,
            2.4801485074105115e-05, 0.00019841269890340666, 0.0013888888952696516,
            0.00833333333331949, 0.04166666666648666, 0.1666666666666668,
            0.5000000000000019, 1.0, 1.0)
C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11 = EXP_POLY


@intrinsic
def _pow2(typingctx, k):
    """``2.0 ** k`` for an integer k in [−1022, 1023], from its bits ``(k + 1023) << 52``."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())

    return sig, codegen


@njit(cache=True, inline="always")
def exp_le0(r):
    """``exp(r)`` for r ≤ 0, −inf and NaN included, within an ulp of libm's, but +0 below
    2^−1022 (no subnormal results: a softmax's masses there are lost against its largest,
    which is 1): r = k ln 2 + f with |f| ≤ ln 2 / 2, exp(f) by :data:`EXP_POLY`, times
    2^k."""
    t = -709.0 if r < -709.0 else r  # NaN stays NaN
    k = math.floor(t * LOG2E + 0.5)
    f = (t - k * LN2_HI) - k * LN2_LO
    e = ((((((((((C0 * f + C1) * f + C2) * f + C3) * f + C4) * f + C5) * f + C6) * f + C7)
            * f + C8) * f + C9) * f + C10) * f + C11
    v = e * _pow2(np.int64(k if k >= -1100.0 else 0.0))  # (NaN: any k; v stays NaN)
    return 0.0 if r < EXP_MIN else v


_VEC = ir.VectorType(ir.DoubleType(), _W)
_I64 = ir.VectorType(ir.IntType(64), _W)


def _splat(x):
    return ir.Constant(_VEC, [float(x)] * _W)


def _exp_vector(builder, r, fma, floor):
    """:func:`exp_le0` of the eight elements of r (<8 x double>), with its operations and
    roundings: FMA where the scalar code is contracted (``t·log2e + ½``, the reduction
    ``t − k·ln2``, Horner), 2^k from the bits of ``k + 2^52 + 1023`` shifted (no
    float → integer conversion, which AVX2 has no vector instruction for)."""
    t = builder.select(builder.fcmp_ordered("<", r, _splat(-709.0)), _splat(-709.0), r)
    k = builder.call(floor, [builder.call(fma, [t, _splat(LOG2E), _splat(0.5)])])
    nk = builder.fneg(k)
    f = builder.call(fma, [nk, _splat(LN2_LO), builder.call(fma, [nk, _splat(LN2_HI), t])])
    e = _splat(EXP_POLY[0])
    for c in EXP_POLY[1:]:
        e = builder.call(fma, [e, f, _splat(c)])
    k = builder.select(builder.fcmp_ordered(">=", k, _splat(-1100.0)), k, _splat(0.0))
    bits = builder.bitcast(builder.fadd(k, _splat(4503599627370496.0 + 1023.0)), _I64)
    v = builder.fmul(e, builder.bitcast(builder.shl(bits, ir.Constant(_I64, [52] * _W)), _VEC))
    return builder.select(builder.fcmp_ordered("<", r, _splat(EXP_MIN)), _splat(0.0), v)


@intrinsic
def softmax_lanes(typingctx, PT, m, s):
    """PT (N, LANES) logits → their softmax, column by column, in place; m, s (LANES,)
    ← the maxima and 1 / the sums. Per element the scalar code's operations, in its order
    (``m = z if z > m``, ``e = exp_le0(z − m)``, ``s += e``, ``p = e · (1/s)``; the test
    suite holds that loop in Numba and compares bits): in LLVM IR, the lanes as <8 x
    double> vectors and the sums in registers (Numba's loop converted exp's 2^k through
    a scalar integer, 2.3× slower)."""
    if not (check_tiles(PT) and PT.dtype == types.float64 and _is_vector(m) and _is_vector(s)):
        return None
    sig = types.none(PT, m, s)

    def codegen(context, builder, signature, args):
        pt, ma, sa = (context.make_array(ty)(context, builder, a)
                      for ty, a in zip((PT, m, s), args))
        n = cgutils.unpack_tuple(builder, pt.shape, 2)[0]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3),
                                             "llvm.fma.v8f64")
        floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC]),
                                               "llvm.floor.v8f64")
        groups = [ir.Constant(ir.IntType(64), v * _W) for v in range(LANES // _W)]

        def row(i):
            return [_row_pointer(context, builder, PT, pt, i, c) for c in groups]

        with builder.if_then(builder.icmp_signed(">", n, n.type(0))):
            top = [cgutils.alloca_once_value(builder, builder.load(p, align=8))
                   for p in row(n.type(0))]
            with cgutils.for_range(builder, n) as loop:  # (row 0 against itself: as it is)
                for acc, p in zip(top, row(loop.index)):
                    z, cur = builder.load(p, align=8), builder.load(acc)
                    builder.store(builder.select(builder.fcmp_ordered(">", z, cur), z, cur), acc)
            tops = [builder.load(a) for a in top]
            sums = [cgutils.alloca_once_value(builder, _splat(0.0)) for _ in groups]
            with cgutils.for_range(builder, n) as loop:
                for acc, mv, p in zip(sums, tops, row(loop.index)):
                    e = _exp_vector(builder, builder.fsub(builder.load(p, align=8), mv), fma,
                                    floor)
                    builder.store(e, p, align=8)
                    builder.store(builder.fadd(builder.load(acc), e), acc)
            inv = [builder.fdiv(_splat(1.0), builder.load(a)) for a in sums]
            with cgutils.for_range(builder, n) as loop:
                for iv, p in zip(inv, row(loop.index)):
                    builder.store(builder.fmul(builder.load(p, align=8), iv), p, align=8)
            for ty, ary, vals in ((m, ma, tops), (s, sa, inv)):
                for c, v in zip(groups, vals):
                    ptr = cgutils.get_item_pointer(context, builder, ty, ary, [c])
                    builder.store(v, builder.bitcast(ptr, _VEC.as_pointer()), align=8)
        return context.get_dummy_value()

    return sig, codegen


def _is_vector(a):
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype == types.float64)


def _dots_step(context, builder, tiles, i, values, acc):
    """Row i of a gradient tile: ``X[i] = values(v, ptr)`` for each vector v of 8 lanes
    (ptr: its place in X), and ``acc[v] += X[i] · PT[i]`` (no FMA)."""
    (x, X), (pt, PT) = tiles
    for v in range(len(acc)):
        col = i.type(v * _W)
        ptr = _row_pointer(context, builder, X, x, i, col)
        g = values(v, ptr)
        builder.store(g, ptr, align=8)
        p = builder.load(_row_pointer(context, builder, PT, pt, i, col), align=8)
        builder.store(builder.fadd(builder.load(acc[v]), builder.fmul(g, p)), acc[v])


def _dots_start(context, builder, base, ba):
    """(the first lane of each vector of 8, base's vectors, zeroed accumulators)."""
    vec = ir.VectorType(ir.DoubleType(), _W)
    groups = [ir.Constant(ir.IntType(64), v * _W) for v in range(LANES // _W)]
    bases = [_lane_vector(context, builder, base, ba, [c]) for c in groups]
    return groups, bases, [cgutils.alloca_once_value(builder, ir.Constant(vec, None))
                           for _ in groups]


def _dots_store(context, builder, dots, da, groups, acc):
    vec = ir.VectorType(ir.DoubleType(), _W)
    for v, col in enumerate(groups):
        ptr = cgutils.get_item_pointer(context, builder, dots, da, [col])
        builder.store(builder.load(acc[v]), builder.bitcast(ptr, vec.as_pointer()), align=8)


@intrinsic
def offsets_dots(typingctx, T, PT, base, last, dots):
    """T (N, LANES) ← ``base − T`` in rows 0 … N−2 and ``last`` in row N−1 (the chain's
    gradient g, as :func:`~.tiles.gradient_from_lanes` writes it; base, last (LANES,)),
    and dots (LANES,) ← ⟨g, p⟩ per column, p = PT, summed over the bins in order from 0
    (no FMA). In LLVM IR, the sums in registers (a Numba loop keeps them in memory)."""
    if not (check_tiles(T, PT) and T.dtype == PT.dtype == types.float64
            and all(_is_vector(a) for a in (base, last, dots))):
        return None
    sig = types.none(T, PT, base, last, dots)

    def codegen(context, builder, signature, args):
        t = context.make_array(T)(context, builder, args[0])
        pt = context.make_array(PT)(context, builder, args[1])
        ba, la, da = (context.make_array(ty)(context, builder, a)
                      for ty, a in zip((base, last, dots), args[2:]))
        n = cgutils.unpack_tuple(builder, t.shape, 2)[0]
        steps = builder.select(builder.icmp_signed(">", n, n.type(0)),
                               builder.sub(n, n.type(1)), n.type(0))
        groups, bases, acc = _dots_start(context, builder, base, ba)
        tiles = ((t, T), (pt, PT))
        with cgutils.for_range(builder, steps) as loop:
            _dots_step(context, builder, tiles, loop.index,
                       lambda v, ptr: builder.fsub(bases[v], builder.load(ptr, align=8)), acc)
        with builder.if_then(builder.icmp_signed(">", n, n.type(0))):
            _dots_step(context, builder, tiles, steps,
                       lambda v, ptr: _lane_vector(context, builder, last, la, [groups[v]]), acc)
        _dots_store(context, builder, dots, da, groups, acc)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def gather_dots(typingctx, X, A, rows, base, PT, dots):
    """X (N, LANES) ← ``A[rows[k]] − base`` for k < N (:func:`gather_tile`: the tree's
    gradient g; A (nodes, LANES)), and dots (LANES,) ← ⟨g, p⟩ per column, p = PT, summed
    over the bins in order from 0 (no FMA), in LLVM IR as :func:`offsets_dots`."""
    if not (check_tiles(X, A, PT) and X.dtype == A.dtype == PT.dtype == types.float64
            and isinstance(rows, types.Array) and rows.ndim == 1
            and isinstance(rows.dtype, types.Integer) and _is_vector(base) and _is_vector(dots)):
        return None
    sig = types.none(X, A, rows, base, PT, dots)

    def codegen(context, builder, signature, args):
        x, a, ra, ba, pt, da = (context.make_array(ty)(context, builder, v)
                                for ty, v in zip((X, A, rows, base, PT, dots), args))
        n = cgutils.unpack_tuple(builder, x.shape, 2)[0]
        groups, bases, acc = _dots_start(context, builder, base, ba)
        with cgutils.for_range(builder, n) as loop:
            k = loop.index
            node = builder.load(cgutils.get_item_pointer(context, builder, rows, ra, [k]))
            node = context.cast(builder, node, rows.dtype, types.intp)

            def values(v, ptr):
                src = _row_pointer(context, builder, A, a, node, groups[v])
                return builder.fsub(builder.load(src, align=8), bases[v])

            _dots_step(context, builder, ((x, X), (pt, PT)), k, values, acc)
        _dots_store(context, builder, dots, da, groups, acc)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def gather_tile(X, A, rows, base):
    """X (N, LANES) ← ``A[rows[k]] − base`` for k < N (the tree's gradient: a bin's node
    minus the mean); A (nodes, LANES), base (LANES,)."""
    n, lanes = X.shape
    for k in range(n):
        a = A[rows[k]]
        for j in range(lanes):
            X[k, j] = a[j] - base[j]


@njit(cache=True, inline="always")
def target_differences(X, PT, sq):
    """X (N, LANES) target masses q → ``p − sq·q`` (``kernels.scalars.diff``), p = PT;
    sq (LANES,) the rows' target scales, or empty (1)."""
    n, lanes = X.shape
    if sq.shape[0] == 0:
        for i in range(n):
            for j in range(lanes):
                X[i, j] = diff(PT[i, j], X[i, j], 1.0, 1.0)
        return
    for i in range(n):
        for j in range(lanes):
            X[i, j] = diff(PT[i, j], X[i, j], 1.0, sq[j])

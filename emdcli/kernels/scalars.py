"""Scalar pieces the chain and tree kernels share (CPU, Numba): ``|phi|^rho`` and its
slope with cheap paths for rho = 1, 2, the exact difference ``sp·p − sq·q`` (FMA), the
residual test (``kernels.chain``'s accuracy note), and a four-way float64 sum."""

import math

from numba import njit, types
from numba.extending import intrinsic

from . import jit  # noqa: F401 (before any kernel loads)
from .accuracy import RESIDUAL_RTOL


@njit(cache=True, inline="always")
def _slope(phi, rho):
    """``sgn(phi) |phi|^(rho−1)`` with ``sgn(0) = 0``; cheap paths for rho = 1, 2."""
    if rho == 1.0:  # branch-free: the sign of a soft row's phi flips unpredictably
        s = math.copysign(1.0, phi)
        return s if phi != 0.0 else 0.0
    if rho == 2.0:
        return phi
    a = abs(phi)
    if a == 0.0:
        return 0.0
    s = a ** (rho - 1.0)
    return s if phi > 0.0 else -s


@njit(cache=True, inline="always")
def _power(phi, rho):
    """``|phi|^rho`` with cheap paths for rho = 1, 2."""
    if rho == 1.0:
        return abs(phi)
    if rho == 2.0:
        return phi * phi
    return abs(phi) ** rho


@njit(cache=True)
def lane_sum(x):
    """``Σ_i x_i`` over four interleaved partial sums (float64)."""
    n = x.shape[0]
    r0 = r1 = r2 = r3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        r0 += x[i]
        r1 += x[i + 1]
        r2 += x[i + 2]
        r3 += x[i + 3]
    for i in range(m, n):
        r0 += x[i]
    return (r0 + r1) + (r2 + r3)


@njit(cache=True, inline="always")
def needs_residual_fix(r, value, length, rho):
    """True when moving every phi by up to |r| could move ``value`` by more than
    ``RESIDUAL_RTOL`` relative: ``rho |r| (length/value)^(1/rho) > RESIDUAL_RTOL`` with
    ``length = Σ d_i`` (chain) or ``M = Σ_k p_k depth_k`` (tree)."""
    e = rho * abs(r) / RESIDUAL_RTOL
    if rho == 1.0:
        bound = e
    elif rho == 2.0:
        bound = e * e
    else:
        bound = e ** rho
    return value < bound * length


@intrinsic
def _fma(typingctx, a, b, c):
    """``a·b + c`` rounded once (LLVM's fma: one instruction where the CPU has FMA)."""
    sig = types.float64(types.float64, types.float64, types.float64)
    return sig, lambda context, builder, signature, args: builder.fma(*args)


@njit(cache=True, inline="always")
def diff(pi, qi, sp, sq):
    """``sp·pi − sq·qi`` with the products' rounding errors added back (exact by FMA):
    rounded once, at the size of the difference, and 0 where the products are equal."""
    w = sp * pi
    v = sq * qi
    return (w - v) + (_fma(sp, pi, -w) - _fma(sq, qi, -v))


@njit(cache=True, inline="always")
def unit_diff(sp, pi):
    """``sp·pi − 1`` (a class bin) rounded once."""
    w = sp * pi
    return (w - 1.0) + _fma(sp, pi, -w)

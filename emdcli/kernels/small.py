"""The chain EMD^rho kernel (:mod:`.chain`) in plain numpy, for small batches.

Loading Numba and its cached machine code costs ~0.5 s per process, far more than the
work of a small file. :func:`chain_small` computes what ``chain_batch`` computes, the
same operations in the same order, so the results are the same bits: every scan is a
sequential ``cumsum`` (as the kernel's loop), and ``diff``'s fused multiply-adds are
replaced by Dekker's exact product error (exact whenever no product over- or underflows,
which :func:`exact_products` checks). rho = 1 and 2 only (``|phi|^rho`` for other rho
goes through ``pow``, which numpy and LLVM need not round alike).
"""

import numpy as np

from .accuracy import RESIDUAL_RTOL

# rows are taken this many values at a time: the temporaries stay in the L2 cache (20 ns
# a value against 32 for 100 000 x 32 rows at once) and memory bounded at any batch size
CHUNK = 1 << 15
_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's splitter for float64
_SAFE = (2.0 ** -900, 2.0 ** 900)  # products and splits stay exact within this range


def exact_products(*arrays):
    """True when every non-zero value (inputs and row scales) lies in ``_SAFE``, where
    :func:`_product_error` is exact."""
    for a in arrays:
        if a.size:
            m = np.abs(a)
            nz = m[m > 0]
            if nz.size and (float(nz.min()) < _SAFE[0] or float(nz.max()) > _SAFE[1]):
                return False
    return True


def _product_error(a, b, p):
    """``a·b − p`` exactly, for ``p = a·b`` rounded (Dekker): the kernel's
    ``fma(a, b, −p)``."""
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _scan(a):
    """Sequential prefix sums along rows (the kernel's ``+=`` loop)."""
    return np.cumsum(a, axis=1)


def _last(a):
    """Sequential row sums (0 for no columns)."""
    return _scan(a)[:, -1] if a.shape[1] else np.zeros(a.shape[0])


def _differences(p, q, c, sp, sq, rsp):
    """``s_j = diff(p_j, q_j, sp, sq) − rsp·p_j`` (B, N); class rows: ``sp·p_j − rsp·p_j``,
    and ``unit_diff(sp, p_c) − rsp·p_c`` at bin c."""
    sp, rsp = sp[:, None], rsp[:, None]
    w = sp * p
    if c is None:
        sq = sq[:, None]
        v = sq * q
        return ((w - v) + (_product_error(sp, p, w) - _product_error(sq, q, v))) - rsp * p
    s = w - rsp * p
    rows = np.arange(p.shape[0])
    pc, wc = p[rows, c], w[rows, c]
    s[rows, c] = ((wc - 1.0) + _product_error(sp[:, 0], pc, wc)) - rsp[:, 0] * pc
    return s


def _lane_sum(d):
    """``kernels.chain.lane_sum``: four interleaved partial sums."""
    n = d.shape[0]
    m = n - n % 4
    r = [float(np.cumsum(d[k:m:4])[-1]) if m else 0.0 for k in range(4)]
    for x in d[m:]:
        r[0] += float(x)
    return (r[0] + r[1]) + (r[2] + r[3])


def _value_scan(s, d, rho):
    phi = _scan(s[:, :-1])
    power = np.abs(phi) if rho == 1.0 else phi * phi
    return _last(d * power), phi


def chain_small(x, t, c, sp, sq, d, rho, want_grad):
    """``chain_batch`` for rho ∈ {1, 2}: x (B, N) stored rows, t (B, N) target rows or
    None with c (B,) int64 classes, sp, sq (B,) float64 row scales or empty (1), d (N−1,).
    Returns values (B,) float64 and the gradient (B, N) float64 or None."""
    b, n = x.shape
    values = np.empty(b)
    g = np.empty((b, n)) if want_grad else None
    step = max(1, CHUNK // max(n, 1))
    with np.errstate(all="ignore"):  # unchecked non-finite rows give nan/inf, as there
        for lo in range(0, b, step):
            hi = min(b, lo + step)
            part = [a[lo:hi] if a is not None and a.shape[0] == b else a for a in (t, c, sp, sq)]
            v, gp = _chain_small(x[lo:hi], *part, d, rho, want_grad)
            values[lo:hi] = v
            if want_grad:
                g[lo:hi] = gp
    return values, g


def _chain_small(x, t, c, sp, sq, d, rho, want_grad):
    scaled = sp.shape[0] > 0  # the kernel takes the residual back only from scaled rows
    ones = np.ones(x.shape[0])
    sp = sp if scaled else ones
    sq = sq if sq.shape[0] and c is None else ones
    p = np.asarray(x, dtype=np.float64)
    q = None if c is not None else np.asarray(t, dtype=np.float64)
    b, n = p.shape
    zero = np.zeros(b)
    s = _differences(p, q, c, sp, sq, zero)
    values, phi = _value_scan(s, d, rho)
    r = (phi[:, -1] if n > 1 else zero) + s[:, -1]
    e = rho * np.abs(r) / RESIDUAL_RTOL
    fix = values < (e if rho == 1.0 else e * e) * _lane_sum(d)
    if scaled and fix.any():  # the kernel's second pass: residual taken back along p's mass
        rows = np.flatnonzero(fix)
        rsp = _last(s[rows]) * sp[rows]
        s[rows] = _differences(p[rows], None if q is None else q[rows],
                               None if c is None else c[rows], sp[rows], sq[rows], rsp)
        values[rows], phi[rows] = _value_scan(s[rows], d, rho)
    if not want_grad:
        return values, None
    slope = np.where(phi != 0.0, np.sign(phi), 0.0) if rho == 1.0 else phi
    a = rho * d * slope
    prefix = _scan(a)
    exclusive = np.concatenate([zero[:, None], prefix[:, :-1]], axis=1)
    total = prefix[:, -1] if n > 1 else zero
    mean = _last(np.arange(1.0, n) * a) / n
    g = np.empty((b, n))
    g[:, :-1] = (total - mean)[:, None] - exclusive
    g[:, -1] = -mean
    return values, g


def row_sums_min(a):
    """:func:`.rowstats.row_sums_min` in numpy: sequential float64 row sums (the same
    bits as the kernel's loop) and row minima."""
    b = a.shape[0]
    sums, mins = np.empty(b), np.empty(b)
    step = max(1, CHUNK // max(a.shape[1], 1))
    for lo in range(0, b, step):
        a64 = np.asarray(a[lo:lo + step], dtype=np.float64)
        sums[lo:lo + step], mins[lo:lo + step] = _last(a64), a64.min(axis=1)
    return sums, mins

"""Chain-space EMD^rho kernels (GPU, numba.cuda): the twin of ``kernels.chain``.

Same mathematics (0-based, ``phi_i = Σ_{j≤i} (p_j − q_j)``, ``i = 0 … N−2``)::

    EMD^rho(p, q) = Σ_i d_i |phi_i|^rho
    a_i = rho d_i sgn(phi_i)|phi_i|^(rho−1),  A = Σ a_i,  S_k = Σ_{i<k} a_i,  T = Σ (i+1) a_i
    g_k = (A − S_k) − T/N    (g_{N−1} = −T/N)

Thread mapping: a *group* of W ≤ 32 lanes (a power of two, inside one warp) owns one
row; a block holds R = threads/W groups and walks the batch with a grid stride. The row
goes by in tiles of W·VEC bins, lane j holding VEC consecutive bins of the tile (the warp
reads whole sectors): a serial scan over its own bins, then a warp-shuffle scan of the
lanes' sums (``warp_scan``: no barrier, no shared memory; the CUDA simulator, which has
no shuffles, runs the same code over a shared-memory stand-in). Small N gets small
groups (W = 1 is one thread per row). One launch does value and gradient: the first
pass stashes S_k (float64, N per group: dynamic shared memory when it fits, else a
global scratch row per group slot), the second writes g. Every lane reads back only the
stash entries it wrote itself, so the second pass needs no barrier. Accumulation is in
float64 whatever the storage dtype, as on the CPU.

Also here, for Sinkhorn (``gpu_sinkhorn``): the chain's Gibbs passes, run by one thread:
``chain_plain`` (``gibbs._chain_plain``'s own source, compiled for the GPU) and
``chain_log`` (``gibbs._chain_log`` transcribed: the CPU's logaddexp is a Numba CPU
function, the GPU's lives in ``gpu_common``).

Host side: :func:`chain_batch_cuda` takes numpy arrays or arrays already on the GPU
(numba device arrays, or anything with ``__cuda_array_interface__``: CuPy, PyTorch)
and answers in kind (the helpers are in ``gpu_common``). Kernels never validate.
"""

import numpy as np
from numba import cuda, float64

from .chain import _power, _slope
from .gibbs import _chain_plain
from .gpu_common import (
    CLOCK, MAX_BLOCK, SCRATCH_BYTES, SHARED_BYTES, cached, dummy, finish, log_, logaddexp,
    on_device,
    to_device, value_grad_outputs, warp_scan, work_array,
)


# ----------------------------------------------------------------------------- device


# |phi|^rho and sgn(phi)|phi|^(rho−1): the CPU kernels' Python source, compiled for the GPU
power = cuda.jit(device=True)(_power.py_func)
slope = cuda.jit(device=True)(_slope.py_func)


VEC = 4  # consecutive bins per lane per tile of the chain kernel (a compile-time constant)
@cuda.jit(device=True)
def _chain_rows(P, Q, C, use_c, d, rho, out, G, want_grad, width, buf, stash, at):
    """All rows of this block's groups; the group's stash is ``stash[at : at + N]``.

    A tile is width·VEC bins; lane j holds bins tile_start + j·VEC … + VEC − 1 (the warp
    reads 4·width consecutive values per row, whole sectors): a serial scan of its VEC
    bins, a warp scan of the lanes' sums, a serial pass for phi, the value and a, and the
    same two scans for S. Each lane stashes and reads back only its own bins' S."""
    tid = cuda.threadIdx.x
    lane = tid % width
    per_block = cuda.blockDim.x // width
    n_rows, n = P.shape[0], P.shape[1]
    tile = width * VEC
    step = cuda.gridDim.x * per_block
    first = cuda.blockIdx.x * per_block  # block-uniform: every shuffle is reached by all
    s = cuda.local.array(VEC, float64)
    a = cuda.local.array(VEC, float64)
    while first < n_rows:
        b = first + tid // width
        live = b < n_rows
        c = -1
        if live and use_c:
            c = C[b]
        carry = 0.0  # phi before this tile
        acarry = 0.0  # S before this tile, A at the end
        total = 0.0
        weighted = 0.0  # T
        for t in range((n - 1 + tile - 1) // tile):  # the N − 1 gaps
            start = t * tile + lane * VEC
            own = 0.0
            for v in range(VEC):
                i = start + v
                if live and i < n - 1:
                    x = float64(P[b, i])
                    if c < 0:
                        x -= float64(Q[b, i])
                    elif i == c:
                        x -= 1.0
                    own += x
                s[v] = own
            incl, sum_tile = warp_scan(buf, tid, lane, width, own)
            before = carry + incl - own
            carry += sum_tile
            own = 0.0
            for v in range(VEC):
                i = start + v
                a[v] = own  # exclusive
                if i < n - 1:
                    phi = before + s[v]
                    total += d[i] * power(phi, rho)
                    if want_grad:
                        av = rho * d[i] * slope(phi, rho)
                        weighted += (i + 1) * av
                        own += av
            if want_grad:
                incl, sum_tile = warp_scan(buf, tid, lane, width, own)
                if live:
                    before = acarry + incl - own
                    for v in range(VEC):
                        i = start + v
                        if i < n - 1:
                            stash[at + i] = before + a[v]
                acarry += sum_tile
        incl, total = warp_scan(buf, tid, lane, width, total)
        if want_grad:
            incl, weighted = warp_scan(buf, tid, lane, width, weighted)
            mean = weighted / n
            base = acarry - mean
            if live:
                for t in range((n + tile - 1) // tile):
                    start = t * tile + lane * VEC
                    for v in range(VEC):
                        i = start + v
                        if i < n - 1:
                            G[b, i] = base - stash[at + i]
                        elif i == n - 1:
                            G[b, i] = -mean
        if live and lane == 0:
            out[b] = total
        first += step


@cuda.jit
def _chain_shared(P, Q, C, use_c, d, rho, out, G, want_grad, width):
    """Stash in dynamic shared memory: threads + R·N float64."""
    dyn = cuda.shared.array(0, dtype=float64)
    at = cuda.blockDim.x + (cuda.threadIdx.x // width) * P.shape[1]
    _chain_rows(P, Q, C, use_c, d, rho, out, G, want_grad, width, dyn, dyn, at)


@cuda.jit
def _chain_global(P, Q, C, use_c, d, rho, out, G, want_grad, width, scratch):
    """Stash in global memory: scratch (grid·R·N,) float64, one N-run per group slot."""
    dyn = cuda.shared.array(0, dtype=float64)
    slot = cuda.blockIdx.x * (cuda.blockDim.x // width) + cuda.threadIdx.x // width
    _chain_rows(P, Q, C, use_c, d, rho, out, G, want_grad, width, dyn, scratch,
                slot * P.shape[1])


# ---------------------------------------------------- Gibbs kernel on a chain (Sinkhorn)


# out = K x or (K ⊙ M) x: the CPU's forward/backward passes, compiled for the GPU (one
# thread; x, out, tmp of length N)
chain_plain = cuda.jit(device=True)(_chain_plain.py_func)


@cuda.jit(device=True)
def chain_log(lx, la, lw, scale, out, moment, tmp, n):
    """out = log(K e^lx) or log((K ⊙ M) e^lx); la = −λd, lw = log d. One thread."""
    tmp[0] = lx[0]
    for i in range(1, n):
        tmp[i] = logaddexp(lx[i], la[i - 1] + tmp[i - 1])
    ninf = log_(scale - scale)  # −inf in the working dtype (a float64 literal would
    if not moment:  # carry float32 work into float64)
        back = ninf
        for i in range(n - 1, -1, -1):
            a = la[i] if i < n - 1 else ninf
            out[i] = scale + logaddexp(tmp[i], a + back)
            back = logaddexp(lx[i], a + back)
        return
    fm = ninf
    out[0] = fm
    for i in range(1, n):
        fm = la[i - 1] + logaddexp(fm, lw[i - 1] + tmp[i - 1])
        out[i] = fm
    back = lx[n - 1]
    bm = ninf
    out[n - 1] = scale + out[n - 1]
    for i in range(n - 2, -1, -1):
        bm = la[i] + logaddexp(bm, lw[i] + back)
        back = logaddexp(lx[i], la[i] + back)
        out[i] = scale + logaddexp(out[i], bm)


# ------------------------------------------------------------------------------- host


def chain_shape(n, threads_per_block, width=None):
    """(threads, lanes per row W, rows per block R) for the chain kernel (threads: the
    largest power of two ≤ threads_per_block and MAX_BLOCK): W the smallest
    power of two with W·VEC ≥ N − 1, at most 32 (a warp) and the threads; or the largest
    power of two ≤ ``width`` (within the same bounds) when given."""
    threads = 1 << (min(max(int(threads_per_block), 1), MAX_BLOCK).bit_length() - 1)
    if width is None:
        width = 1
        while width * VEC < n - 1 and width < 32:
            width *= 2
    width = min(1 << (max(int(width), 1).bit_length() - 1), threads, 32)
    return threads, width, threads // width


def chain_batch_cuda(P, Q, C, d, rho, out=None, G=None, *, threads_per_block=128,
                     width=None, max_shared=SHARED_BYTES):
    """EMD^rho of every row (and gradients) on the GPU; the arguments of
    ``kernels.chain.chain_batch`` without the scratch.

    P (B, N) float32/float64; Q (B, N) target rows, or C (B,) int64 class indices (then
    Q is ignored; pass None or an empty C for rows); d (N−1,) float64 gaps; out (B,) and
    G (B, N): host or device arrays to fill, or None to allocate (on the device when P
    is there, else on the host). No gradient when G is None or has no columns.
    width: lanes per row (≤ 32; default from N); max_shared: dynamic shared memory allowed
    for the stash (at most SHARED_BYTES; 0 forces the global scratch). Returns (out, G).
    """
    dev_in = on_device(P)
    with CLOCK.phase("to_device"):
        dP = to_device(P)
        B, N = dP.shape
        use_c = C is not None and C.shape[0] > 0
        dC = to_device(C, np.int64) if use_c else dummy(np.int64)
        dQ = dP if use_c or Q is None else to_device(Q)
        dd = cached(d, np.float64) if N > 1 else dummy(np.float64)
    o, o_host, g, g_host, want_grad = value_grad_outputs(out, G, B, N, dP.dtype)
    if B:
        threads, width, per_block = chain_shape(N, threads_per_block, width)
        max_shared = min(max_shared, SHARED_BYTES)  # numba-cuda does not opt in to more
        shared = (threads + per_block * N) * 8
        while shared > max_shared and threads > max(width, 64):  # fewer rows per block
            threads //= 2
            per_block = threads // width
            shared = (threads + per_block * N) * 8
        blocks = -(-B // per_block)
        if shared <= max_shared:
            with CLOCK.phase("kernel", _chain_shared):
                _chain_shared[blocks, threads, 0, shared](
                    dP, dQ, dC, use_c, dd, float(rho), o, g, want_grad, width)
        else:
            blocks = max(1, min(blocks, SCRATCH_BYTES // (per_block * N * 8)))
            work = work_array(blocks * per_block * N, np.float64)
            with CLOCK.phase("kernel", _chain_global):
                _chain_global[blocks, threads, 0, threads * 8](
                    dP, dQ, dC, use_c, dd, float(rho), o, g, want_grad, width, work)
    with CLOCK.phase("to_host"):
        out = finish(o, o_host, dev_in)
        if want_grad:
            G = finish(g, g_host, dev_in)
    return out, G

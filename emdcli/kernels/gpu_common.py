"""What every ``gpu_`` kernel module shares (numba.cuda): scans, scalar math, host helpers.

Device side: ``group_scan`` (a block-wide Hillis–Steele scan in shared memory, for groups
that span warps: the tree and Sinkhorn kernels), ``warp_scan`` (warp shuffles, for groups
inside one warp: the chain kernel; the CUDA simulator has no shuffles and runs the same
code over a shared-memory stand-in), and the scalar math of the log-domain Gibbs passes
(``logaddexp``, ``log_``, ``exp_``, ``log1p_``: NumPy's scalar functions in the simulator,
whose Python math raises where the GPU returns ±inf).

Host side: arrays in and out (numpy arrays, or arrays already on the GPU: numba device
arrays, or anything with ``__cuda_array_interface__``: CuPy, PyTorch), small arrays cached
on the device across calls, reusable work arrays, launch shapes, and :data:`CLOCK`, which
books the host launchers' time to copies in, kernels, compilation and copies out when
asked (``emd compute --verbose``, ``emd bench``).
"""

import math
import time
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
from numba import cuda

from ..rows import detached, on_device  # noqa: F401  (on_device: the launchers import it from here)

SHARED_BYTES = 48 * 1024  # dynamic shared memory usable without an opt-in (numba-cuda
# never opts in to more: a launch asking for more fails, so the launchers cap there)
MAX_BLOCK = 512  # threads per block at most: the chain and tree kernels take 81-92
# registers a thread (ptxas, sm_90), too many for 1024 threads in 64 K registers
SCRATCH_BYTES = 1 << 28  # global scratch cap: the grid shrinks (grid stride) to fit it
SIMULATOR = ".simulator" in cuda.jit.__module__



# ------------------------------------------------------------------------------ scans


@cuda.jit(device=True)
def group_scan(buf, tid, lane, width, x):
    """Inclusive and exclusive sums of the float64 ``x`` over the ``width`` lanes of each
    group, and the group total: (incl, excl, total). Every thread of the block must call
    it (it synchronises the block); buf (≥ threads,) float64 shared scratch."""
    buf[tid] = x
    off = 1
    while off < width:
        cuda.syncthreads()
        y = buf[tid - off] if lane >= off else 0.0
        cuda.syncthreads()
        x += y
        buf[tid] = x
        off *= 2
    cuda.syncthreads()
    excl = buf[tid - 1] if lane > 0 else 0.0
    total = buf[tid - lane + width - 1]
    cuda.syncthreads()
    return x, excl, total


FULL_MASK = 0xFFFFFFFF


if SIMULATOR:  # the simulator has no warp shuffles: shared memory stands in for them
    @cuda.jit(device=True)
    def shfl_up(buf, tid, mask, x, off):
        """x of the lane ``off`` below in the warp (own x where there is none)."""
        buf[tid] = x
        cuda.syncthreads()
        y = buf[tid - off] if tid % 32 >= off else x
        cuda.syncthreads()
        return y

    @cuda.jit(device=True)
    def shfl_idx(buf, tid, mask, x, src):
        """x of warp lane ``src``."""
        buf[tid] = x
        cuda.syncthreads()
        y = buf[tid - tid % 32 + src]
        cuda.syncthreads()
        return y
else:
    @cuda.jit(device=True)
    def shfl_up(buf, tid, mask, x, off):
        """x of the lane ``off`` below in the warp (own x where there is none); ``mask``:
        the warp's lanes that exist."""
        return cuda.shfl_up_sync(mask, x, off)

    @cuda.jit(device=True)
    def shfl_idx(buf, tid, mask, x, src):
        """x of warp lane ``src``; ``mask``: the warp's lanes that exist."""
        return cuda.shfl_sync(mask, x, src)


@cuda.jit(device=True)
def warp_scan(buf, tid, lane, width, x):
    """(inclusive sum of the float64 ``x`` over the lanes ≤ ``lane`` of the group, group
    total), for groups of ``width`` ≤ 32 lanes (a power of two) inside one warp: warp
    shuffles, no barrier. Every thread of the warp must call it (the simulator's stand-in
    synchronises the block: there every thread of the block); buf (≥ threads,) float64.
    A block of fewer than 32 threads is one partial warp: the shuffles name only the lanes
    that exist (naming absent lanes is undefined behaviour)."""
    threads = cuda.blockDim.x
    mask = FULL_MASK if threads >= 32 else (1 << threads) - 1
    off = 1
    while off < width:
        y = shfl_up(buf, tid, mask, x, off)
        if lane >= off:
            x += y
        off *= 2
    return x, shfl_idx(buf, tid, mask, x, tid % 32 - lane + width - 1)


# ------------------------------------------------------------------------------- math

# The simulator runs kernels as Python, whose math raises where the GPU returns ±inf:
# there the same device functions use NumPy's scalar functions (same dtype, inf/nan).
if SIMULATOR:
    @cuda.jit(device=True)
    def log_(x):
        with np.errstate(divide="ignore", invalid="ignore"):  # a GPU does not warn
            return np.log(x)

    @cuda.jit(device=True)
    def exp_(x):
        return np.exp(x)

    @cuda.jit(device=True)
    def log1p_(x):
        return np.log1p(x)
else:
    @cuda.jit(device=True)
    def log_(x):
        return math.log(x)

    @cuda.jit(device=True)
    def exp_(x):
        return math.exp(x)

    @cuda.jit(device=True)
    def log1p_(x):
        return math.log1p(x)


@cuda.jit(device=True)
def logaddexp(a, b):
    """log(e^a + e^b), exact at −inf."""
    m = b if b > a else a  # max(a, b), as Python spells it (the CUDA target lacks max)
    if m == -math.inf:
        return m
    return m + log1p_(exp_(-abs(a - b)))


# ------------------------------------------------------------------------------- host


def to_device(x, dtype=None):
    """x as a numba device array: device arrays as they are (a zero-copy view for CuPy /
    PyTorch, detached from autograd), host arrays copied (made contiguous, cast to
    ``dtype`` when given)."""
    x = detached(x)
    if getattr(x, "__cuda_ndarray__", False):
        return x
    if on_device(x):
        # every launch goes to the legacy default stream, ordered after the work of the
        # legacy (1) and per-thread (2) default streams already: the host waits only for
        # an exporter's other stream (a PyTorch side stream, say), not on every call
        stream = x.__cuda_array_interface__.get("stream")
        return cuda.as_cuda_array(x, sync=stream not in (1, 2))
    return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))


_SMALL = OrderedDict()
SMALL_BYTES = 1 << 20


def cached(x, dtype=None):
    """Like :func:`to_device`, but a small host array (a space's gaps or weights, a
    stand-in) is copied once and reused while the same bytes come again: no host →
    device copy per call in a training loop. Kernels never write into these."""
    if on_device(x):
        return to_device(x)
    a = np.ascontiguousarray(x, dtype=dtype)
    if a.nbytes > SMALL_BYTES:
        return cuda.to_device(a)
    key = (a.dtype.str, a.shape, a.tobytes())
    hit = _SMALL.get(key)
    if hit is None:
        hit = _SMALL[key] = cuda.to_device(a)
        while len(_SMALL) > 64:
            _SMALL.popitem(last=False)
    else:
        _SMALL.move_to_end(key)
    return hit


_SCRATCH = {}


def work_array(shape, dtype):
    """A device work array, kept for the next call of the same shape (every launch goes
    to the default stream, so successive kernels never share it at once)."""
    key = (tuple(int(k) for k in np.atleast_1d(shape)), np.dtype(dtype).str)
    hit = _SCRATCH.get(key)
    if hit is None:
        _SCRATCH.clear()  # one at a time: they can be large
        hit = _SCRATCH[key] = cuda.device_array(key[0], dtype=dtype)
    return hit


def dummy(dtype, ndim=1):
    """A one-element device array standing in for an unused argument."""
    return cached(np.zeros((1,) * ndim, dtype=dtype))


def launch_shape(n, threads_per_block, width=None):
    """(threads, group width W, groups per block R = threads / W): threads is the largest
    power of two ≤ threads_per_block and MAX_BLOCK, W the smallest power of two
    ≥ min(n, threads), or the largest ≤ ``width`` when given."""
    threads = 1 << (min(max(int(threads_per_block), 1), MAX_BLOCK).bit_length() - 1)
    if width is None:
        width = 1
        while width < n and width < threads:
            width *= 2
    width = min(1 << (max(int(width), 1).bit_length() - 1), threads)
    return threads, width, threads // width


def output(x, shape, dtype):
    """(device array to write, host array to copy into afterwards or None)."""
    if x is None:
        return cuda.device_array(shape, dtype=dtype), None
    if on_device(x):
        return to_device(x), None
    return cuda.device_array(x.shape, dtype=x.dtype), x


def value_grad_outputs(out, G, B, N, dtype):
    """Device arrays for the values (B,) and, when ``G`` has columns, the gradients (B, N),
    with the host arrays to copy into afterwards: (o, o_host, g, g_host, want_grad)."""
    o, o_host = output(out, B, dtype)
    want_grad = G is not None and G.shape[1] > 0
    if want_grad:
        g, g_host = output(G, (B, N), dtype)
    else:
        g, g_host = dummy(dtype, 2), None
    return o, o_host, g, g_host, want_grad


def finish(dev, host, like_device):
    """Copy ``dev`` into the caller's host array, or hand back the device array (for a
    device input) or a new host copy (for a host input)."""
    if host is not None:
        dev.copy_to_host(host)
        return host
    return dev if like_device else dev.copy_to_host()


PHASES = ("to_device", "compile", "kernel", "to_host")


class PhaseClock:
    """Seconds the host launchers spend in each of :data:`PHASES` while ``on``: copies
    in (small cached arrays included), compilation (a launch that added an overload),
    kernels (launch until the GPU is done), copies out. Timing synchronises the device
    around every phase, so the clock is off unless asked for."""

    def __init__(self):
        self.on = False
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def reset(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def phase(self, name, kernel=None):
        """Book the block's time to ``name``, or to "compile" when ``kernel`` (a
        dispatcher) gained an overload meanwhile."""
        if not self.on:
            yield
            return
        before = len(getattr(kernel, "overloads", ()))
        cuda.synchronize()
        t = time.perf_counter()
        try:
            yield
        finally:
            cuda.synchronize()
            if kernel is not None and len(getattr(kernel, "overloads", ())) > before:
                name = "compile"
            self.seconds[name] += time.perf_counter() - t


CLOCK = PhaseClock()

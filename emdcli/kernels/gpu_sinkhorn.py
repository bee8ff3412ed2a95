"""Sinkhorn distance on the GPU (numba.cuda): the twin of ``kernels.sinkhorn`` + ``gibbs``.

Same algorithm, forms, stopping rule and outputs, row by row::

    u ← 1;  repeat: v = q ⊘ Kᵀu;  err = ‖u ⊙ Kv − p‖₁;  stop if err is not finite, the
    limit is reached or err < tol (tol > 0);  u ← p ⊘ Kv
    SD = Σ u ⊙ ((K ⊙ M) v),  gradient log(u)/λ minus the mean of its finite entries

(the log form runs f = log u, g = log v with logaddexp). The space's Gibbs kernel is the
``gibbs.Gibbs`` namedtuple of ``emdcli.gibbs.gibbs_for``; K x and (K ⊙ M) x are the
CPU's passes, in the working dtype, transcribed:
  chain  forward/backward recurrences, run by lane 0 of the row's group (``gpu_chain``)
  tree   level-synchronous up (by height) and down (by depth) passes over the
         ``gpu_tree`` plan, lanes across the nodes of a level; the outside message of a
         child is the parent's plus its siblings' (prefix/suffix sums), never a difference
  dense  here: one output bin per lane, a serial dot product (log: max, then Σ exp);
         the plain form runs, where CuPy is installed, as the CPU's batched products
         (``kernels.sinkhorn.dense_plain_batch`` on CuPy arrays: cuBLAS), which re-read
         K once per batch rather than once per row
Thread mapping: a group of W lanes per row (chain default W = 1: one thread per row;
tree and dense: up to a block per row), R groups per block; the loop over iterations
stays block-uniform (``syncthreads_or`` over the groups still running) while each row
stops on its own and keeps its u. Per-row vectors u, v, Kᵀu, Kv live in a global scratch
row per group slot; the 7 node-length work rows of the Gibbs passes (as the CPU's
N_SCRATCH) sit in dynamic shared memory when they fit (the tree passes touch them between
every pair of barriers; the WordNet tree fits in float32), else in global memory too.
One kernel per space kind and form (:func:`sinkhorn_kernel`): with the kind and form
compile-time constants the other kinds' code drops out, and with it registers (float32
tree plain: 128 a thread, not 210), so twice the blocks fit an SM.
"""

import math

import numpy as np
from numba import cuda, float32, float64

from .gibbs import CHAIN, DENSE, TREE
from .gpu_chain import chain_log, chain_plain
from .gpu_common import (
    CLOCK, SCRATCH_BYTES, SHARED_BYTES, SIMULATOR, cached, dummy, exp_, finish, group_scan,
    launch_shape, log_, on_device, output, to_device, work_array,
)
from .gpu_tree import device_tree, tree_apply

N_WORK = 7  # the Gibbs passes' work rows (a chain uses the first)
MAX_THREADS = 256  # threads per block at most: the static reduction buffer


# ----------------------------------------------------------------------------- dense


@cuda.jit(device=True)
def _dense_apply(x, out, moment, transpose, log_form, lane, width, mat, mat_t, mat2_t, scale,
                 n):
    """out = K x, Kᵀ x or (K ⊙ M) x (log forms: log of it with e^x), one bin per lane.
    mat = K, mat_t = Kᵀ, mat2_t = (K ⊙ M)ᵀ (log forms: their logs), so that the lanes
    always read a matrix row: out_i = Σ_j A[j, i] x_j."""
    a = mat if transpose else mat_t
    for i in range(lane, n, width):
        if not log_form:
            s = scale - scale
            for j in range(n):
                if moment:
                    s += mat2_t[j, i] * x[j]
                else:
                    s += a[j, i] * x[j]
            out[i] = s
            continue
        zero = scale - scale  # 0 and −inf in the working dtype: float64 literals would
        best = log_(zero)  # make every exp below a float64 one
        for j in range(n):
            t = a[j, i] + x[j] + (mat2_t[j, i] if moment else zero)
            if t > best:
                best = t
        if best == -math.inf:
            out[i] = best
            continue
        s = zero
        for j in range(n):
            s += exp_(a[j, i] + x[j] + (mat2_t[j, i] if moment else zero) - best)
        out[i] = best + log_(s)


# ------------------------------------------------------------------------ the solver


@cuda.jit(device=True)
def _apply(x, out, moment, transpose, log_form, active, lane, width, n, kind, mat, mat_t,
           mat2_t, alpha, w, plan, scale, t):
    """Any space, any form; every thread of the block calls it (it synchronises);
    t (N_WORK·L,) the Gibbs passes' work rows, runs of L ≥ nodes."""
    if kind == TREE:
        tree_apply(x, out, moment, log_form, active, lane, width, alpha, w, plan, scale, t)
        return
    if active:
        if kind == CHAIN:
            if lane == 0:
                if log_form:
                    chain_log(x, alpha, w, scale, out, moment, t[0:n], n)
                else:
                    chain_plain(x, alpha, w, scale, out, moment, t[0:n])
        else:
            _dense_apply(x, out, moment, transpose, log_form, lane, width, mat, mat_t, mat2_t,
                         scale, n)
    cuda.syncthreads()


@cuda.jit(device=True)
def _sinkhorn_rows(P, Q, lam, iters, tol, log_form, want_grad, values, iterations, errors, G,
                   kind, mat, mat_t, mat2_t, alpha, w, plan, scale, width, buf, s, t):
    """Every row of this block's groups; s (4·N,): u, v, Kᵀu, Kv; t (N_WORK·L,): the
    Gibbs passes' work rows, runs of L ≥ nodes; buf (≥ threads,) float64 (reductions).
    (1-D work arrays sliced into runs: a reshape inside a kernel is an out-of-line call.)"""
    tid = cuda.threadIdx.x
    lane = tid % width
    per_block = cuda.blockDim.x // width
    n_rows, n = P.shape[0], P.shape[1]
    u, v, ku, kv = s[0:n], s[n:2 * n], s[2 * n:3 * n], s[3 * n:4 * n]
    step = cuda.gridDim.x * per_block
    first = cuda.blockIdx.x * per_block
    while first < n_rows:
        b = first + tid // width
        live = b < n_rows
        for i in range(lane, n, width):
            u[i] = 0 if log_form else 1
        active = live
        it = 0
        err = 0.0
        cuda.syncthreads()
        while True:
            _apply(u, ku, False, True, log_form, active, lane, width, n, kind, mat, mat_t,
                   mat2_t, alpha, w, plan, scale, t)  # Kᵀu
            if active:
                for j in range(lane, n, width):
                    if log_form:
                        v[j] = log_(Q[b, j]) - ku[j]
                    else:
                        v[j] = Q[b, j] / ku[j]
            cuda.syncthreads()
            _apply(v, kv, False, False, log_form, active, lane, width, n, kind, mat, mat_t,
                   mat2_t, alpha, w, plan, scale, t)  # K v
            e = 0.0
            if active:
                for i in range(lane, n, width):
                    if log_form:
                        e += abs(exp_(float64(u[i] + kv[i])) - float64(P[b, i]))
                    else:
                        e += abs(float64(u[i] * kv[i]) - float64(P[b, i]))
            incl, excl, e = group_scan(buf, tid, lane, width, e)
            if active:
                err = e
                if not math.isfinite(err) or it >= iters or (tol > 0 and err < tol):
                    active = False
                else:
                    for i in range(lane, n, width):
                        if log_form:
                            u[i] = log_(P[b, i]) - kv[i]
                        else:
                            u[i] = P[b, i] / kv[i]
                    it += 1
            if cuda.syncthreads_or(1 if active else 0) == 0:
                break
        _apply(v, kv, True, False, log_form, live, lane, width, n, kind, mat, mat_t, mat2_t,
               alpha, w, plan, scale, t)  # (K ⊙ M) v
        value = 0.0
        if live:
            for i in range(lane, n, width):
                if log_form:
                    value += exp_(float64(u[i] + kv[i]))
                else:
                    value += float64(u[i] * kv[i])
        incl, excl, value = group_scan(buf, tid, lane, width, value)
        if want_grad:
            total = 0.0
            count = 0.0
            if live:
                for i in range(lane, n, width):
                    G[b, i] = (u[i] / lam) if log_form else (log_(u[i]) / lam)
                    gi = G[b, i]
                    if math.isfinite(gi):
                        total += gi
                        count += 1.0
            incl, excl, total = group_scan(buf, tid, lane, width, total)
            incl, excl, count = group_scan(buf, tid, lane, width, count)
            if live and count > 0.0:
                mean = total / count
                for i in range(lane, n, width):
                    G[b, i] -= mean
        if live and lane == 0:
            values[b] = value
            iterations[b] = it
            errors[b] = err
        first += step


def _make_kernel(kind, log_form, dtype, shared):
    """The solver's kernel for one space kind and form, compile-time constants here, so
    that the other kinds' and form's code is not in it: fewer registers (ptxas, sm_90,
    float32 tree plain: 128 a thread instead of 210 for the kernel of every kind), so
    more blocks fit an SM. ``shared``: the N_WORK work rows of each group in dynamic
    shared memory of ``dtype`` (the level-synchronous tree passes touch them between
    every pair of barriers; scratch (slots, 4·N)), else all work in global memory
    (scratch (slots, 4·N + N_WORK·max(N, nodes)): u, v, Kᵀu, Kv, then the work rows)."""
    if shared:
        @cuda.jit
        def _sinkhorn_shared(P, Q, lam, iters, tol, want_grad, values, iterations, errors, G,
                             mat, mat_t, mat2_t, alpha, w, plan, scale, width, scratch, length):
            buf = cuda.shared.array(MAX_THREADS, dtype=float64)
            dyn = cuda.shared.array(0, dtype=dtype)
            group = cuda.threadIdx.x // width
            size = N_WORK * length
            t = dyn[group * size:(group + 1) * size]
            s = scratch[cuda.blockIdx.x * (cuda.blockDim.x // width) + group]
            _sinkhorn_rows(P, Q, lam, iters, tol, log_form, want_grad, values, iterations,
                           errors, G, kind, mat, mat_t, mat2_t, alpha, w, plan, scale, width,
                           buf, s, t)

        return _sinkhorn_shared

    @cuda.jit
    def _sinkhorn_global(P, Q, lam, iters, tol, want_grad, values, iterations, errors, G,
                         mat, mat_t, mat2_t, alpha, w, plan, scale, width, scratch):
        buf = cuda.shared.array(MAX_THREADS, dtype=float64)
        s = scratch[cuda.blockIdx.x * (cuda.blockDim.x // width) + cuda.threadIdx.x // width]
        n4 = 4 * P.shape[1]
        _sinkhorn_rows(P, Q, lam, iters, tol, log_form, want_grad, values, iterations, errors,
                       G, kind, mat, mat_t, mat2_t, alpha, w, plan, scale, width, buf, s[0:n4],
                       s[n4:])

    return _sinkhorn_global


_KERNELS = {}
_NUMBA_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


def sinkhorn_kernel(kind, log_form, dtype, shared):
    """The kernel of :func:`_make_kernel`, made on first use and kept (each compiles on
    its first launch, for the kinds and forms a program uses only)."""
    key = (int(kind), bool(log_form), np.dtype(dtype), bool(shared))
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _KERNELS[key] = _make_kernel(key[0], key[1], _NUMBA_TYPES[key[2]], key[3])
    return kernel


# ------------------------------------------------------------------------------- host


def dense_arrays(g, dtype):
    """(K, Kᵀ, (K ⊙ M)ᵀ) of a dense Gibbs (log forms: their logs) on the device, in the
    layout the dense kernel reads; make them once for a loop of calls."""
    mat = np.asarray(g.mat, dtype=dtype)
    mat2_t = np.ascontiguousarray(np.asarray(g.mat2, dtype=dtype).T)
    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (mat, mat.T, mat2_t))


def cublas():
    """CuPy, when the dense plain form can run as cuBLAS products (CuPy importable, a real
    GPU rather than the simulator), else None."""
    if SIMULATOR:
        return None
    try:
        import cupy
    except Exception:  # not installed, or installed for another CUDA
        return None
    return cupy


def _deliver(cp, x, dest, like_device):
    """The CuPy result ``x`` into ``dest`` (a host or device array, or None: a numba
    device array for a device input, else a new host array)."""
    if dest is None:
        return to_device(x) if like_device else x.get()
    if on_device(dest):
        cp.asarray(dest)[...] = x
    else:
        dest[...] = x.get()
    return dest


def _dense_plain_cublas(cp, P, Q, g, run, outs, dense):
    """The dense plain form as ``kernels.sinkhorn.dense_plain_batch`` (the CPU's BLAS
    batch) on CuPy arrays: the same code, cuBLAS products. Arguments and results as
    :func:`sinkhorn_batch_cuda`."""
    from .sinkhorn import dense_plain_batch

    values, iterations, errors, G = outs

    dev_in = on_device(P)
    with CLOCK.phase("to_device"):
        cP, cQ = cp.asarray(P), cp.asarray(Q)  # zero-copy views of device arrays
        if dense is not None:
            K, KM = cp.asarray(dense[0]), cp.asarray(dense[2]).T
        else:
            K, KM = cp.asarray(g.mat, dtype=cP.dtype), cp.asarray(g.mat2, dtype=cP.dtype)
    with CLOCK.phase("kernel"):
        out = dense_plain_batch(cP, cQ, K, KM, run._replace(log_form=False, dense=True), xp=cp)
    with CLOCK.phase("to_host"):
        got = [_deliver(cp, x, d, dev_in) for x, d in zip(out[:3], (values, iterations, errors))]
        got.append(_deliver(cp, out[3], G, dev_in) if run.gradient else None)
    return tuple(got)


def sinkhorn_batch_cuda(P, Q, g, run, outs=None, *, threads_per_block=128, width=None,
                        dense=None, blas=None, max_shared=SHARED_BYTES):
    """Sinkhorn for every row of P, Q (B, N) on the GPU over the space ``g`` (a
    ``gibbs.Gibbs`` of any kind, as built by ``emdcli.gibbs.gibbs_for`` for P's dtype;
    host arrays; the small ones are copied once per distinct space and reused), with the
    :class:`~emdcli.gibbs.Solve` ``run`` (λ, iterations, tolerance, form, gradient; the
    kernel's kind is g's), as ``kernels.sinkhorn.sinkhorn_batch`` on the CPU.

    outs: (values, iterations, errors, G): values, errors (B,) float64, iterations (B,)
    int64, G (B, N), host or device arrays to fill, each or all None to allocate like P.
    width: lanes per row (default: 1 for a chain, else up to the block). dense:
    :func:`dense_arrays` of g, made once (else per call). blas: for the dense plain form,
    True runs it as cuBLAS products through CuPy (as the CPU runs it as BLAS products),
    False as the Numba kernel here; None (default): CuPy when :func:`cublas` finds it.
    max_shared: dynamic shared memory allowed for the work rows (at most SHARED_BYTES; 0
    keeps them in global memory). Returns (values, iterations, errors, G or None).
    """
    outs = (None,) * 4 if outs is None else tuple(outs)
    if g.kind == DENSE and not run.log_form and blas is not False:
        cp = cublas()
        if cp is None and blas:
            raise RuntimeError("the cuBLAS path needs CuPy on a real GPU")
        if cp is not None:
            return _dense_plain_cublas(cp, P, Q, g, run, outs, dense)
    lam, iters, tol, log_form, want_grad = run.lam, run.iters, run.tol, run.log_form, run.gradient
    values, iterations, errors, G = outs
    dev_in = on_device(P)
    with CLOCK.phase("to_device"):
        dP = to_device(P)
        dQ = to_device(Q)
    B, N = dP.shape
    dt = dP.dtype
    scale = dt.type(g.scale)
    fdum, idum = dummy(dt), dummy(np.int64)
    mat = mat_t = mat2_t = dummy(dt, 2)
    alpha = w = fdum
    packed = idum  # every kind's kernel is typed with the tree's packed plan
    nodes = N
    if g.kind == TREE:
        with CLOCK.phase("to_device"):
            plan, (alpha, w) = device_tree(g.parent, g.bin_node, None, np.asarray(g.alpha, dt),
                                           np.asarray(g.w, dt))
        packed, nodes, widest = plan.packed, plan.nodes, plan.widest
    elif g.kind == CHAIN:
        if N > 1:
            with CLOCK.phase("to_device"):
                alpha, w = cached(g.alpha, dt), cached(g.w, dt)
        widest = 1
        if width is None:  # one thread per row: one warp per block spreads small batches
            threads_per_block = min(threads_per_block, 32)
    else:
        with CLOCK.phase("to_device"):
            mat, mat_t, mat2_t = dense if dense is not None else dense_arrays(g, dt)
        widest = N
    vals, vals_host = output(values, B, np.float64)
    its, its_host = output(iterations, B, np.int64)
    errs, errs_host = output(errors, B, np.float64)
    if want_grad:
        grad, grad_host = output(G, (B, N), dt)
    else:
        grad, grad_host = dummy(dt, 2), None
    if B:
        threads, width, per_block = launch_shape(widest, min(threads_per_block, MAX_THREADS),
                                                 width)
        width_n = max(N, nodes)
        max_shared = min(max_shared, SHARED_BYTES)  # numba-cuda does not opt in to more
        blocks = -(-B // per_block)
        args = (dP, dQ, float(lam), int(iters), float(tol), bool(want_grad), vals, its, errs,
                grad, mat, mat_t, mat2_t, alpha, w, packed, scale, width)
        shared = per_block * N_WORK * width_n * dt.itemsize  # beside the static buffer
        if g.kind == TREE and shared <= max_shared - MAX_THREADS * 8:  # (a chain's one work
            # row is read by one thread, the dense kernel has none: global memory serves)
            blocks = max(1, min(blocks, SCRATCH_BYTES // (per_block * 4 * N * dt.itemsize)))
            work = work_array((blocks * per_block, 4 * N), dt)
            kernel = sinkhorn_kernel(g.kind, log_form, dt, True)
            with CLOCK.phase("kernel", kernel):
                kernel[blocks, threads, 0, shared](*args, work, width_n)
        else:
            slot_bytes = per_block * (4 * N + N_WORK * width_n) * dt.itemsize
            blocks = max(1, min(blocks, SCRATCH_BYTES // slot_bytes))
            work = work_array((blocks * per_block, 4 * N + N_WORK * width_n), dt)
            kernel = sinkhorn_kernel(g.kind, log_form, dt, False)
            with CLOCK.phase("kernel", kernel):
                kernel[blocks, threads, 0, 0](*args, work)
    with CLOCK.phase("to_host"):
        values = finish(vals, vals_host, dev_in)
        iterations = finish(its, its_host, dev_in)
        errors = finish(errs, errs_host, dev_in)
        G = finish(grad, grad_host, dev_in) if want_grad else None
    return values, iterations, errors, G

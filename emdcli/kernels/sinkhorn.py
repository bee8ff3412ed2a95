"""Sinkhorn distance (the paper's Algorithm 1, as in Caffe), batched, per-row stopping.

Plain form, in the working dtype::

    K = exp(−λM − 1), u ← 1
    repeat: v = q ⊘ Kᵀu;  err = ‖u ⊙ Kv − p‖₁;  stop if err < tol;  u ← p ⊘ Kv
    SD = Σ u ⊙ ((K ⊙ M) v),  gradient = log(u)/λ, projected to sum zero

A bin with no predicted mass has u = 0 and gradient −inf (log 0); the projection to sum
zero then runs over the finite entries. ``err`` is the row-marginal error ‖T·1 − p‖₁ of
the plan T = diag(u) K diag(v), whose column marginal is q exactly. ``iterations`` counts
the updates of u; the loop stops at the iteration limit, when err < tol (tol > 0), or when
err is not finite. With tol = 0 err is computed after the last iteration only (so a row
that went non-finite also runs to the limit). The log form
runs the same fixed point on f = log u, g = log v with logsumexp, and is finite for any λ.

Layers: ``_solve_*_row`` serial row solvers over one kind of space
(``gibbs.kind_apply`` / ``kind_log_apply``) → ``_plain_batch`` / ``_log_batch`` (prange
over chunks of rows, one scratch block per chunk), which :func:`sinkhorn_batch` picks by
form and compiles for the space's kind only (``gibbs.specialise``: compiling one form on
one kind of space costs a fraction of compiling them all) →
``dense_plain_batch``: the dense plain form as batched matrix–matrix products (BLAS).
"""

from contextlib import nullcontext

import numpy as np
from numba import njit, prange

from . import jit  # noqa: F401 (before any kernel loads)
from .gibbs import DENSE, kind_apply, kind_log_apply, specialise

N_SCRATCH = 11  # u, v, ku, kv + 7 rows of Gibbs work space


@njit(cache=True, error_model="numpy")
def project_finite(g):
    """Subtract the mean of the finite entries. A bin without predicted mass has
    u = 0 and log(u)/λ = −inf: it stays −inf instead of turning the row into NaN."""
    total = 0.0
    count = 0
    for i in range(g.shape[0]):
        if np.isfinite(g[i]):
            total += g[i]
            count += 1
    if count:
        mean = total / count
        for i in range(g.shape[0]):
            g[i] -= mean


@njit(cache=True, error_model="numpy")
def _solve_plain_row(p, q, g, iters, tol, s):
    """Plain Sinkhorn on one row; s (N_SCRATCH, width) scratch. Returns (iters, err)."""
    n = p.shape[0]
    u, v, ku, kv, work = s[0, :n], s[1, :n], s[2, :n], s[3, :n], s[4:]
    for i in range(n):  # (a loop: a slice assignment compiles a numpy routine)
        u[i] = 1
    it = 0
    while True:
        kind_apply(u, g, ku, False, work)  # Kᵀu (K is symmetric)
        for j in range(n):
            v[j] = q[j] / ku[j]
        kind_apply(v, g, kv, False, work)  # K v
        err = 0.0
        if tol > 0 or it >= iters:  # with tol = 0 the error matters only at the end
            for i in range(n):
                err += abs(np.float64(u[i] * kv[i]) - np.float64(p[i]))
        if not np.isfinite(err) or it >= iters or (tol > 0 and err < tol):
            return it, err
        for i in range(n):
            u[i] = p[i] / kv[i]
        it += 1


@njit(cache=True, error_model="numpy")
def _finish_plain_row(lam, g, s, grad, want_grad, n):
    """SD = Σ u ⊙ ((K ⊙ M) v) and the projected gradient log(u)/λ into ``grad``."""
    u, v, km, work = s[0, :n], s[1, :n], s[3, :n], s[4:]
    kind_apply(v, g, km, True, work)
    value = 0.0
    for i in range(n):
        value += np.float64(u[i] * km[i])
    if want_grad:
        for i in range(n):
            grad[i] = np.log(u[i]) / lam
        project_finite(grad)
    return value


@njit(cache=True, error_model="numpy")
def _solve_log_row(p, q, g, iters, tol, s):
    """Log-domain Sinkhorn on one row (f = log u, g = log v). Returns (iters, err)."""
    n = p.shape[0]
    f, gv, kt, kv, work = s[0, :n], s[1, :n], s[2, :n], s[3, :n], s[4:]
    for i in range(n):
        f[i] = 0
    it = 0
    while True:
        kind_log_apply(f, g, kt, False, work, True)  # log Kᵀu
        for j in range(n):
            gv[j] = np.log(q[j]) - kt[j]
        kind_log_apply(gv, g, kv, False, work, False)  # log K v
        err = 0.0
        if tol > 0 or it >= iters:
            for i in range(n):
                err += abs(np.exp(np.float64(f[i] + kv[i])) - np.float64(p[i]))
        if not np.isfinite(err) or it >= iters or (tol > 0 and err < tol):
            return it, err
        for i in range(n):
            f[i] = np.log(p[i]) - kv[i]
        it += 1


@njit(cache=True, error_model="numpy")
def _finish_log_row(lam, g, s, grad, want_grad, n):
    """SD = Σ exp(f + log((K ⊙ M) e^g)) and the projected gradient f/λ."""
    f, gv, km, work = s[0, :n], s[1, :n], s[3, :n], s[4:]
    kind_log_apply(gv, g, km, True, work, False)
    value = 0.0
    for i in range(n):
        value += np.exp(np.float64(f[i] + km[i]))
    if want_grad:
        for i in range(n):
            grad[i] = f[i] / lam
        project_finite(grad)
    return value


@njit(cache=True, parallel=True, error_model="numpy")
def _plain_batch(P, Q, g, lam, iters, tol, want_grad, values, iterations, errors, G, scratch):
    """The plain form of :func:`sinkhorn_batch` (g: a specialised chain or tree Gibbs)."""
    n_rows = P.shape[0]
    n_chunks = min(scratch.shape[0], n_rows)
    for ch in prange(n_chunks):
        s = scratch[ch]
        for b in range(ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks):
            it, err = _solve_plain_row(P[b], Q[b], g, iters, tol, s)
            values[b] = _finish_plain_row(lam, g, s, G[b], want_grad, P.shape[1])
            iterations[b] = it
            errors[b] = err


@njit(cache=True, parallel=True, error_model="numpy")
def _log_batch(P, Q, g, lam, iters, tol, want_grad, values, iterations, errors, G, scratch):
    """The log form of :func:`sinkhorn_batch` (g: a specialised Gibbs of any kind)."""
    n_rows = P.shape[0]
    n_chunks = min(scratch.shape[0], n_rows)
    for ch in prange(n_chunks):
        s = scratch[ch]
        for b in range(ch * n_rows // n_chunks, (ch + 1) * n_rows // n_chunks):
            it, err = _solve_log_row(P[b], Q[b], g, iters, tol, s)
            values[b] = _finish_log_row(lam, g, s, G[b], want_grad, P.shape[1])
            iterations[b] = it
            errors[b] = err


def sinkhorn_batch(P, Q, g, run, out, scratch):
    """Sinkhorn for every row of P, Q (B, N) over the space ``g`` (a ``gibbs.Gibbs``), with
    the parameters of ``run`` (an ``emdcli.gibbs.Solve``: lam, iters, tol, log_form,
    gradient).

    out: (values, iterations, errors, G), filled in: values, errors (B,) float64;
    iterations (B,) int64; G (B, N) with the gradient; scratch (chunks, N_SCRATCH, width):
    rows are split into ``chunks`` contiguous runs.
    The plain form takes a chain or a tree (the dense plain form is
    :func:`dense_plain_batch`). Numba compiles one driver per form, dtype and kind of
    space (``gibbs.specialise``), each with only that space's passes.
    """
    g = specialise(g)
    if run.log_form:
        driver = _log_batch
    elif g.kind == DENSE:
        raise ValueError("the dense plain form is dense_plain_batch (batched BLAS products)")
    else:
        driver = _plain_batch
    driver(P, Q, g, run.lam, run.iters, run.tol, run.gradient, *out, scratch)


def dense_plain_batch(P, Q, K, KM, run, xp=np):
    """The plain form with a dense K (N, N) as batched matrix products, per-row stopping;
    ``run`` an ``emdcli.gibbs.Solve`` (lam, iters, tol, gradient are read).

    The rows still running are kept packed together (re-packed only when some stop), so
    each iteration is two matrix products and a few in-place element-wise passes.
    ``xp``: the array module of P, Q, K, KM: numpy (BLAS on the CPU) or CuPy (cuBLAS on the
    GPU; the same code). Returns (values (B,) float64, iterations (B,) int64, errors (B,)
    float64, G or None), arrays of ``xp``.
    """
    lam, iters, tol, want_grad = run.lam, run.iters, run.tol, run.gradient
    B = P.shape[0]
    U, V = xp.ones_like(P), xp.empty_like(P)
    iterations = xp.zeros(B, dtype=np.int64)
    errors = xp.full(B, np.inf)
    idx = xp.arange(B)
    Ua, Pa, Qa = U.copy(), P, Q
    Va, KVa, tmp = xp.empty_like(P), xp.empty_like(P), xp.empty_like(P)
    it = 0
    quiet = np.errstate(divide="ignore", invalid="ignore", over="ignore") if xp is np else nullcontext()
    with quiet:
        while idx.size:
            xp.divide(Qa, Ua @ K, out=Va)  # v = q ⊘ Kᵀu
            xp.matmul(Va, K.T, out=KVa)  # K v
            if tol > 0 or it >= iters:  # with tol = 0 the error matters only at the end
                xp.multiply(Ua, KVa, out=tmp)
                tmp -= Pa
                xp.abs(tmp, out=tmp)
                err = tmp.sum(axis=1, dtype=np.float64)
                stop = ~xp.isfinite(err) | (it >= iters) | (err < tol)
            else:
                stop = xp.zeros(idx.size, dtype=bool)
            if stop.any():  # file the finished rows, pack the rest
                done = idx[stop]
                U[done], V[done], errors[done] = Ua[stop], Va[stop], err[stop]
                keep = ~stop
                idx = idx[keep]
                Ua, Pa, Qa, KVa = Ua[keep], Pa[keep], Qa[keep], KVa[keep]
                Va, tmp = xp.empty_like(Ua), xp.empty_like(Ua)
            xp.divide(Pa, KVa, out=Ua)
            iterations[idx] += 1
            it += 1
        values = (U * (V @ KM.T)).sum(axis=1, dtype=np.float64)
        G = None
        if want_grad:
            G = xp.log(U) / U.dtype.type(lam)
            finite = xp.isfinite(G)
            mean = xp.where(finite, G, 0).sum(axis=1) / xp.maximum(finite.sum(axis=1), 1)
            G -= mean[:, None].astype(G.dtype)
    return values, iterations, errors, G

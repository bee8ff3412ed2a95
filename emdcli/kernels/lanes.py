"""Plain-form Sinkhorn on chains and trees, LANES rows at a time (CPU, Numba).

The chain and tree passes are serial recurrences: one row keeps a core waiting on
floating-point latency. Running ``LANES`` rows side by side in the innermost loop turns
every step into a short vector operation over independent rows, which the compiler
vectorises. The arithmetic is that of ``kernels.gibbs`` (same operations, same dtype).
Rows stop independently: a lane that has converged keeps its u while the others go on.

Arrays: X, OUT (N, LANES); work (7, nodes, LANES) (the tree's up, outside, own, moment
and sibling sums), u/v/ku/kv (N, LANES).

:func:`sinkhorn_lanes` compiles its driver for one kind of space at a time
(``gibbs.specialise``): a chain's job compiles the chain's lane passes only.
"""

import numpy as np
from numba import njit, prange
from numba.extending import overload

from . import jit  # noqa: F401 (before any kernel loads)
from .gibbs import CHAIN, TREE, _static_kind, specialise
from .sinkhorn import project_finite

LANES = 32


@njit(cache=True, error_model="numpy")
def _chain_lanes(X, alpha, w, scale, OUT, moment, tmp):
    """OUT = K X (or (K ⊙ M) X) on a chain, per lane; tmp (N, LANES) scratch."""
    L = X.shape[1]  # LANES, read at run time: LLVM vectorises the lane loops then
    n = X.shape[0]
    zero = scale - scale  # 0 in the working dtype (a literal 0 would promote float32)
    for j in range(L):
        tmp[0, j] = X[0, j]
    for i in range(1, n):
        for j in range(L):
            tmp[i, j] = X[i, j] + alpha[i - 1] * tmp[i - 1, j]
    back = np.empty(LANES, dtype=X.dtype)
    for j in range(L):
        back[j] = zero
    if not moment:
        for i in range(n - 1, -1, -1):
            a = alpha[i] if i < n - 1 else zero
            for j in range(L):
                OUT[i, j] = scale * (tmp[i, j] + a * back[j])
                back[j] = X[i, j] + a * back[j]
        return
    fm = np.empty(LANES, dtype=X.dtype)
    bm = np.empty(LANES, dtype=X.dtype)
    for j in range(L):
        fm[j] = zero
        bm[j] = zero
        OUT[0, j] = zero
    for i in range(1, n):
        for j in range(L):
            fm[j] = alpha[i - 1] * (fm[j] + w[i - 1] * tmp[i - 1, j])
            OUT[i, j] = fm[j]
    for j in range(L):
        back[j] = X[n - 1, j]
        OUT[n - 1, j] = scale * OUT[n - 1, j]
    for i in range(n - 2, -1, -1):
        for j in range(L):
            bm[j] = alpha[i] * (bm[j] + w[i] * back[j])
            back[j] = X[i, j] + alpha[i] * back[j]
            OUT[i, j] = scale * (OUT[i, j] + bm[j])


@njit(cache=True, error_model="numpy")
def _tree_lanes(X, g, OUT, moment, work):
    """OUT = K X (or (K ⊙ M) X) on a tree, per lane; see ``gibbs._tree_plain``."""
    L = X.shape[1]  # (LANES: see _chain_lanes)
    parent, alpha, w, kids = g.parent, g.alpha, g.w, g.child_idx
    zero = g.scale - g.scale
    up, outside, own, um, om, suf, sufm = (
        work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    )
    # up starts as own: the bins are added to both (an array-to-array slice assignment
    # would compile numpy's broadcasting, error messages and all)
    own[:] = zero
    up[:] = zero
    if moment:
        um[:] = zero
    for k in range(X.shape[0]):
        v = g.bin_node[k]
        for j in range(L):
            own[v, j] += X[k, j]
            up[v, j] += X[k, j]
    for v in range(parent.shape[0] - 1, 0, -1):
        pv, a, wv = parent[v], alpha[v], w[v]
        for j in range(L):
            up[pv, j] += a * up[v, j]
        if moment:
            for j in range(L):
                um[pv, j] += a * (um[v, j] + wv * up[v, j])
    for j in range(L):
        outside[0, j] = zero
        om[0, j] = zero
    after = np.empty(LANES, dtype=X.dtype)
    afterm = np.empty(LANES, dtype=X.dtype)
    for u in range(parent.shape[0]):
        first, last = g.child_ptr[u], g.child_ptr[u + 1]
        if first == last:
            continue
        for j in range(L):
            after[j] = zero
            afterm[j] = zero
        for e in range(last - 1, first - 1, -1):
            c = kids[e]
            a, wc = alpha[c], w[c]
            for j in range(L):
                suf[c, j] = after[j]
                after[j] += a * up[c, j]
            if moment:
                for j in range(L):
                    sufm[c, j] = afterm[j]
                    afterm[j] += a * (um[c, j] + wc * up[c, j])
        # reuse after/afterm as the running sums over the earlier siblings
        for j in range(L):
            after[j] = zero
            afterm[j] = zero
        for e in range(first, last):
            c = kids[e]
            a, wc = alpha[c], w[c]
            for j in range(L):
                mass = outside[u, j] + own[u, j] + after[j] + suf[c, j]
                outside[c, j] = a * mass
                if moment:
                    om[c, j] = a * (om[u, j] + afterm[j] + sufm[c, j] + wc * mass)
                    afterm[j] += a * (um[c, j] + wc * up[c, j])
                after[j] += a * up[c, j]
    for k in range(X.shape[0]):
        v = g.bin_node[k]
        for j in range(L):
            if moment:
                OUT[k, j] = g.scale * (um[v, j] + om[v, j])
            else:
                OUT[k, j] = g.scale * (up[v, j] + outside[v, j])


def _apply(X, g, OUT, moment, work):
    """OUT = K X (or (K ⊙ M) X) per lane; the space's passes are chosen when the caller
    is compiled, from the class of ``g`` (``gibbs.specialise``)."""
    if g.kind == CHAIN:
        _chain_lanes(X, g.alpha, g.w, g.scale, OUT, moment, work[0])
    else:
        _tree_lanes(X, g, OUT, moment, work)


@overload(_apply)
def _apply_impl(X, g, OUT, moment, work):
    kind = _static_kind(g)
    if kind == CHAIN:
        def chain(X, g, OUT, moment, work):
            _chain_lanes(X, g.alpha, g.w, g.scale, OUT, moment, work[0])
        return chain
    if kind == TREE:  # moment as a constant: the tree's passes test it inside their loops
        def tree(X, g, OUT, moment, work):
            if moment:
                _tree_lanes(X, g, OUT, True, work)
            else:
                _tree_lanes(X, g, OUT, False, work)
        return tree
    if kind is None:  # a plain Gibbs: decide at run time
        def any_kind(X, g, OUT, moment, work):
            if g.kind == CHAIN:
                _chain_lanes(X, g.alpha, g.w, g.scale, OUT, moment, work[0])
            else:
                _tree_lanes(X, g, OUT, moment, work)
        return any_kind
    return None


@njit(cache=True, error_model="numpy")
def _block(P, Q, lo, m, g, lam, iters, tol, want_grad, values, iterations, errors, G, s):
    """Rows lo … lo+m−1 (m ≤ LANES) as lanes; s (4 + 7, width, LANES) scratch."""
    L = s.shape[2]  # LANES, read at run time (see _chain_lanes)
    n = P.shape[1]
    u, v, ku, kv, work = s[0, :n], s[1, :n], s[2, :n], s[3, :n], s[4:]
    pl = np.empty((n, LANES), dtype=P.dtype)
    ql = np.empty((n, LANES), dtype=P.dtype)
    for j in range(L):
        r = lo + min(j, m - 1)  # idle lanes repeat the last row; their results are dropped
        for i in range(n):
            pl[i, j] = P[r, i]
            ql[i, j] = Q[r, i]
    one = g.scale / g.scale  # 1 in the working dtype
    for i in range(n):
        for j in range(L):
            u[i, j] = one
    active = np.empty(LANES, dtype=np.bool_)
    its = np.empty(LANES, dtype=np.int64)
    err = np.empty(LANES)
    for j in range(L):
        active[j] = True
        its[j] = 0
        err[j] = 0.0
    it = 0
    while True:
        _apply(u, g, ku, False, work)  # Kᵀu (K is symmetric)
        for i in range(n):
            for j in range(L):
                v[i, j] = ql[i, j] / ku[i, j]
        _apply(v, g, kv, False, work)
        if tol > 0 or it >= iters:  # with tol = 0 the error matters only at the end
            for j in range(L):
                err[j] = 0.0
            for i in range(n):
                for j in range(L):
                    err[j] += abs(np.float64(u[i, j] * kv[i, j]) - np.float64(pl[i, j]))
        running = False
        for j in range(L):
            stop = not np.isfinite(err[j]) or it >= iters or (tol > 0 and err[j] < tol)
            if active[j] and stop:
                active[j] = False
                if j < m:
                    errors[lo + j] = err[j]
                    iterations[lo + j] = its[j]
            running |= active[j]
        if not running:
            break
        for i in range(n):
            for j in range(L):
                if active[j]:
                    u[i, j] = pl[i, j] / kv[i, j]
        for j in range(L):
            if active[j]:
                its[j] += 1
        it += 1
    # v = q ⊘ Kᵀu from each lane's final u (lanes that stopped early kept theirs)
    _apply(u, g, ku, False, work)
    for i in range(n):
        for j in range(L):
            v[i, j] = ql[i, j] / ku[i, j]
    _apply(v, g, kv, True, work)  # (K ⊙ M) v
    for j in range(m):
        total = 0.0
        for i in range(n):
            total += np.float64(u[i, j] * kv[i, j])
        values[lo + j] = total
        if want_grad:
            for i in range(n):
                G[lo + j, i] = np.log(u[i, j]) / lam
            project_finite(G[lo + j])


def sinkhorn_lanes(P, Q, g, run, out, scratch):
    """Plain Sinkhorn for every row, LANES rows per block, blocks in parallel.

    P, Q (B, N); g a chain or tree ``gibbs.Gibbs``; run an ``emdcli.gibbs.Solve`` (lam,
    iters, tol, gradient); out (values, iterations, errors, G), filled in: values, errors
    (B,) float64, iterations (B,) int64, G (B, N) with the gradient; scratch (chunks, 11,
    width, LANES).
    """
    _lanes_batch(P, Q, specialise(g), run.lam, run.iters, run.tol, run.gradient, *out,
                 scratch)


@njit(cache=True, parallel=True, error_model="numpy")
def _lanes_batch(P, Q, g, lam, iters, tol, want_grad, values, iterations, errors, G, scratch):
    """:func:`sinkhorn_lanes` for a specialised chain or tree Gibbs."""
    n_rows = P.shape[0]
    n_blocks = (n_rows + LANES - 1) // LANES
    n_chunks = min(scratch.shape[0], n_blocks)
    for ch in prange(n_chunks):
        for blk in range(ch * n_blocks // n_chunks, (ch + 1) * n_blocks // n_chunks):
            lo = blk * LANES
            _block(P, Q, lo, min(LANES, n_rows - lo), g, lam, iters, tol, want_grad,
                   values, iterations, errors, G, scratch[ch])

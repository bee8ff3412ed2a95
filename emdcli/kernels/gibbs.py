"""Applying the Gibbs kernel ``K = exp(−λM − 1)`` of a space to a vector (Numba).

For a chain or a tree, ``exp(−λ · path length)`` is a product of per-edge factors
``alpha_e = exp(−λ w_e)``, so ``K x`` and ``(K ⊙ M) x`` take O(N) forward/backward passes
(chain) or O(nodes) up/down passes (tree) instead of an O(N²) product. Each has a plain
form (values, in the dtype of the arrays, to reproduce float32 behaviour) and a log form
(``log(K exp(lx))``, via logaddexp; finite for any λ).

The space travels as a :data:`Gibbs` namedtuple of arrays:
  kind      0 dense, 1 chain, 2 tree
  mat       dense: K (plain) or −λM − 1 (log), (N, N); else (1, 1) unused
  mat2      dense: K ⊙ M (plain) or log M (log); else unused
  alpha     chain (N−1,) / tree (nodes,): exp(−λ w) (plain) or −λ w (log)
  w         the gaps / edge weights (plain) or their logs (log), same shape as alpha
  parent, child_ptr, child_idx, bin_node   tree structure (CSR children, in file order)
  scale     exp(−1) (plain) or −1 (log), in the working dtype

In the tree's down pass the mass arriving at a child from outside its subtree is formed
from the parent's outside message plus the siblings' up messages (prefix and suffix
sums over the children), never by subtracting the child's own contribution.

Compile time: :func:`apply` and :func:`log_apply` branch on ``g.kind`` at run time, so
compiling them compiles every space's passes. The solvers instead take the Gibbs of one
kind (:func:`specialise`: a :class:`ChainGibbs`, :class:`TreeGibbs` or :class:`DenseGibbs`,
the same fields under a class Numba types apart) and call :func:`kind_apply` /
:func:`kind_log_apply`, which pick the space's passes when the solver is compiled: a
log-domain Sinkhorn on a chain compiles the chain's log passes and nothing else.
"""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.extending import overload

from . import jit  # noqa: F401 (before any kernel loads)

DENSE, CHAIN, TREE = 0, 1, 2
Gibbs = namedtuple(
    "Gibbs", "kind mat mat2 alpha w parent child_ptr child_idx bin_node scale"
)


class DenseGibbs(Gibbs):
    """A :data:`Gibbs` known (to Numba, by its class) to be dense."""

    __slots__ = ()


class ChainGibbs(Gibbs):
    """A :data:`Gibbs` known to be a chain's."""

    __slots__ = ()


class TreeGibbs(Gibbs):
    """A :data:`Gibbs` known to be a tree's."""

    __slots__ = ()


KIND_CLASSES = {DENSE: DenseGibbs, CHAIN: ChainGibbs, TREE: TreeGibbs}
_CLASS_KINDS = {cls: kind for kind, cls in KIND_CLASSES.items()}


def specialise(g):
    """``g`` as the Gibbs class of its kind (no copy: the same arrays), so that the
    solvers compiled for it hold only that space's passes."""
    cls = KIND_CLASSES[int(g.kind)]
    return g if type(g) is cls else cls(*g)


def _static_kind(g):
    """The kind a Numba tuple type stands for (a specialised Gibbs), else None."""
    return _CLASS_KINDS.get(getattr(g, "instance_class", None))


@njit(cache=True, inline="always", error_model="numpy")
def logaddexp(a, b):
    """log(e^a + e^b), exact at −inf."""
    m = max(a, b)
    if m == -np.inf:
        return m
    return m + np.log1p(np.exp(-abs(a - b)))


# ----------------------------------------------------------------------------- chain


@njit(cache=True, error_model="numpy")
def _chain_plain(x, alpha, w, scale, out, moment, tmp):
    """out = K x, or (K ⊙ M) x when ``moment``; tmp (N,) scratch."""
    n = x.shape[0]
    zero = scale - scale  # 0 in the working dtype (a literal 0 would promote float32)
    tmp[0] = x[0]  # F_i = Σ_{j≤i} x_j Π alpha
    for i in range(1, n):
        tmp[i] = x[i] + alpha[i - 1] * tmp[i - 1]
    if not moment:
        back = zero
        for i in range(n - 1, -1, -1):
            a = alpha[i] if i < n - 1 else zero
            out[i] = scale * (tmp[i] + a * back)
            back = x[i] + a * back
        return
    fm = zero  # forward moment FM_i
    out[0] = fm
    for i in range(1, n):
        fm = alpha[i - 1] * (fm + w[i - 1] * tmp[i - 1])
        out[i] = fm
    back = x[n - 1]  # B_{i+1}
    bm = zero  # BM_{i+1}
    out[n - 1] = scale * out[n - 1]
    for i in range(n - 2, -1, -1):
        bm = alpha[i] * (bm + w[i] * back)
        back = x[i] + alpha[i] * back
        out[i] = scale * (out[i] + bm)


@njit(cache=True, error_model="numpy")
def _chain_log(lx, la, lw, scale, out, moment, tmp):
    """out = log(K e^lx) or log((K ⊙ M) e^lx); la = −λd, lw = log d."""
    n = lx.shape[0]
    tmp[0] = lx[0]
    for i in range(1, n):
        tmp[i] = logaddexp(lx[i], la[i - 1] + tmp[i - 1])
    ninf = -np.inf
    if not moment:
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


# ------------------------------------------------------------------------------ tree


@njit(cache=True, error_model="numpy")
def _tree_plain(x, g, out, moment, work):
    """out = K x, or (K ⊙ M) x when ``moment``, on a tree; work (7, nodes) scratch.

    up[v] = Σ_{bins b below v} x_b Π alpha (path v→b); outside[v] the same over bins
    outside v's subtree; um/om the same weighted by the path length.
    """
    parent, alpha, w, kids = g.parent, g.alpha, g.w, g.child_idx
    zero = g.scale - g.scale  # 0 in the working dtype
    up, outside, own, um, om, suf, sufm = (
        work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    )
    for v in range(parent.shape[0]):  # (loops: a slice assignment compiles a numpy routine)
        own[v] = zero
    for k in range(x.shape[0]):
        own[g.bin_node[k]] += x[k]
    for v in range(parent.shape[0]):
        up[v] = own[v]
        um[v] = zero
    for v in range(parent.shape[0] - 1, 0, -1):  # up pass: children before parents
        up[parent[v]] += alpha[v] * up[v]
        if moment:
            um[parent[v]] += alpha[v] * (um[v] + w[v] * up[v])
    outside[0] = zero
    om[0] = zero
    for u in range(parent.shape[0]):  # down pass: parents before children
        first, last = g.child_ptr[u], g.child_ptr[u + 1]
        after = zero  # Σ over the later siblings, kept on each child
        afterm = zero
        for e in range(last - 1, first - 1, -1):
            c = kids[e]
            suf[c] = after
            sufm[c] = afterm
            after += alpha[c] * up[c]
            if moment:
                afterm += alpha[c] * (um[c] + w[c] * up[c])
        before = zero
        beforem = zero
        for e in range(first, last):
            c = kids[e]
            mass = outside[u] + own[u] + before + suf[c]
            outside[c] = alpha[c] * mass
            before += alpha[c] * up[c]
            if moment:
                om[c] = alpha[c] * (om[u] + beforem + sufm[c] + w[c] * mass)
                beforem += alpha[c] * (um[c] + w[c] * up[c])
    for k in range(x.shape[0]):
        v = g.bin_node[k]
        out[k] = g.scale * ((um[v] + om[v]) if moment else (up[v] + outside[v]))


@njit(cache=True, error_model="numpy")
def _tree_log(lx, g, out, moment, work):
    """The log form of :func:`_tree_plain`: alpha = −λw, w = log w, products → sums."""
    parent, la, lw, kids = g.parent, g.alpha, g.w, g.child_idx
    ninf = -np.inf
    up, outside, own, um, om, suf, sufm = (
        work[0], work[1], work[2], work[3], work[4], work[5], work[6]
    )
    for v in range(parent.shape[0]):
        own[v] = ninf
    for k in range(lx.shape[0]):
        own[g.bin_node[k]] = logaddexp(own[g.bin_node[k]], lx[k])
    for v in range(parent.shape[0]):
        up[v] = own[v]
        um[v] = ninf
    for v in range(parent.shape[0] - 1, 0, -1):
        pv = parent[v]
        up[pv] = logaddexp(up[pv], la[v] + up[v])
        if moment:
            um[pv] = logaddexp(um[pv], la[v] + logaddexp(um[v], lw[v] + up[v]))
    outside[0] = ninf
    om[0] = ninf
    for u in range(parent.shape[0]):
        first, last = g.child_ptr[u], g.child_ptr[u + 1]
        after = ninf
        afterm = ninf
        for e in range(last - 1, first - 1, -1):
            c = kids[e]
            suf[c] = after
            sufm[c] = afterm
            after = logaddexp(after, la[c] + up[c])
            if moment:
                afterm = logaddexp(afterm, la[c] + logaddexp(um[c], lw[c] + up[c]))
        before = ninf
        beforem = ninf
        for e in range(first, last):
            c = kids[e]
            mass = logaddexp(logaddexp(outside[u], own[u]), logaddexp(before, suf[c]))
            outside[c] = la[c] + mass
            before = logaddexp(before, la[c] + up[c])
            if moment:
                inner = logaddexp(logaddexp(om[u], beforem), sufm[c])
                om[c] = la[c] + logaddexp(inner, lw[c] + mass)
                beforem = logaddexp(beforem, la[c] + logaddexp(um[c], lw[c] + up[c]))
    for k in range(lx.shape[0]):
        v = g.bin_node[k]
        if moment:
            out[k] = g.scale + logaddexp(um[v], om[v])
        else:
            out[k] = g.scale + logaddexp(up[v], outside[v])


# ----------------------------------------------------------------------------- dense


@njit(cache=True, error_model="numpy")
def _dense_log(lx, g, out, moment):
    """out_i = log Σ_j exp(L_ij + lx_j) with L = −λM − 1 (plus log M, ``mat2``, for the
    moment)."""
    lk, lm = g.mat, g.mat2
    n = lk.shape[0]
    for i in range(n):
        best = -np.inf
        for j in range(n):
            t = lk[i, j] + lx[j] + (lm[i, j] if moment else 0.0)
            best = max(best, t)
        if best == -np.inf:
            out[i] = best
            continue
        s = 0.0
        for j in range(n):
            s += np.exp(lk[i, j] + lx[j] + (lm[i, j] if moment else 0.0) - best)
        out[i] = best + np.log(s)


# ------------------------------------------------------------------------- dispatch


@njit(cache=True, error_model="numpy")
def apply(x, g, out, moment, work, transpose):
    """out = K x (= Kᵀ x, K being symmetric) or the moment (K ⊙ M) x on a chain or a tree,
    plain form. The dense plain form is the batched BLAS product in ``kernels.sinkhorn``."""
    if g.kind == CHAIN:
        _chain_plain(x, g.alpha, g.w, g.scale, out, moment, work[0])
    else:
        _tree_plain(x, g, out, moment, work)


@njit(cache=True, error_model="numpy")
def log_apply(lx, g, out, moment, work, transpose):
    """out = log(K e^lx) (or with Kᵀ, or the moment) for any kind of space, log form."""
    if g.kind == CHAIN:
        _chain_log(lx, g.alpha, g.w, g.scale, out, moment, work[0])
    elif g.kind == TREE:
        _tree_log(lx, g, out, moment, work)
    elif transpose:
        _dense_log_t(lx, g, out)
    else:
        _dense_log(lx, g, out, moment)


@njit(cache=True, error_model="numpy")
def _dense_log_t(lx, g, out):
    """out_j = log Σ_i exp(L_ij + lx_i)."""
    lk = g.mat
    n = lk.shape[0]
    for j in range(n):
        best = -np.inf
        for i in range(n):
            best = max(best, lk[i, j] + lx[i])
        if best == -np.inf:
            out[j] = best
            continue
        s = 0.0
        for i in range(n):
            s += np.exp(lk[i, j] + lx[i] - best)
        out[j] = best + np.log(s)


# ------------------------------------------------------------- dispatch when compiled


def kind_apply(x, g, out, moment, work):
    """:func:`apply` for a Gibbs of one kind (see :func:`specialise`), the space's passes
    chosen when the caller is compiled (plain form: chains and trees; the overload below
    is what compiled callers get)."""
    apply(x, g, out, moment, work, False)


def kind_log_apply(lx, g, out, moment, work, transpose):
    """:func:`log_apply` for a Gibbs of one kind, chosen when the caller is compiled."""
    log_apply(lx, g, out, moment, work, transpose)


@overload(kind_apply)
def _kind_apply_impl(x, g, out, moment, work):
    kind = _static_kind(g)
    if kind == CHAIN:
        def chain(x, g, out, moment, work):
            _chain_plain(x, g.alpha, g.w, g.scale, out, moment, work[0])
        return chain
    if kind == TREE:  # moment as a constant: the tree's passes test it inside their loops
        def tree(x, g, out, moment, work):
            if moment:
                _tree_plain(x, g, out, True, work)
            else:
                _tree_plain(x, g, out, False, work)
        return tree
    if kind is None:  # a plain Gibbs: the run-time dispatch
        def any_kind(x, g, out, moment, work):
            apply(x, g, out, moment, work, False)
        return any_kind
    return None  # dense plain: the batched BLAS form, not a row solver


@overload(kind_log_apply)
def _kind_log_apply_impl(lx, g, out, moment, work, transpose):
    kind = _static_kind(g)
    if kind == CHAIN:
        def chain(lx, g, out, moment, work, transpose):
            _chain_log(lx, g.alpha, g.w, g.scale, out, moment, work[0])
        return chain
    if kind == TREE:
        def tree(lx, g, out, moment, work, transpose):
            if moment:
                _tree_log(lx, g, out, True, work)
            else:
                _tree_log(lx, g, out, False, work)
        return tree
    if kind == DENSE:
        def dense(lx, g, out, moment, work, transpose):
            if transpose:
                _dense_log_t(lx, g, out)
            else:
                _dense_log(lx, g, out, moment)
        return dense

    def any_kind(lx, g, out, moment, work, transpose):
        log_apply(lx, g, out, moment, work, transpose)
    return any_kind

"""The Gibbs kernel ``K = exp(−λM − 1)`` of a space, as the arrays the Sinkhorn kernels
take (CPU and GPU alike): built here, below both the public :mod:`emdcli.sinkhorn` and the
device dispatch in :mod:`emdcli.gpu`, so neither imports the other."""

from typing import NamedTuple

import numpy as np

from .spaces import Chain, Ground


class Solve(NamedTuple):
    """One Sinkhorn run's parameters, as the row solvers (CPU and GPU) take them: the
    paper's λ, the iteration limit, the tolerance, the form, the dense N × N kernel or
    the structured one, and whether the gradient is wanted."""

    lam: float
    iters: int
    tol: float
    log_form: bool
    dense: bool
    gradient: bool


def gibbs_for(space, lam, dtype, log_form, dense=False):
    """The space's Gibbs kernel as a ``kernels.gibbs.Gibbs`` of arrays in ``dtype``.

    dense: use the full matrix M even for a chain or tree (the reference form).
    """
    from .kernels.gibbs import CHAIN, DENSE, TREE, Gibbs

    dt = np.dtype(dtype).type
    none_f = np.zeros(1, dtype=dt)
    none_i = np.zeros(1, dtype=np.int64)
    scale = dt(-1.0) if log_form else dt(np.exp(-1.0))
    if dense or isinstance(space, Ground):
        M = space.matrix if isinstance(space, Ground) else space.ground_matrix()
        with np.errstate(divide="ignore"):
            if log_form:
                mat, mat2 = (-lam * M - 1.0).astype(dt), np.log(M).astype(dt)
            else:
                mat = np.exp((-lam * M - 1.0).astype(dt))
                mat2 = mat * M.astype(dt)
        return Gibbs(DENSE, mat, mat2, none_f, none_f, none_i, none_i, none_i, none_i, scale)
    no_mat = np.zeros((1, 1), dtype=dt)
    if isinstance(space, Chain):
        edge = space.gaps
        kind, parent, ptr, kids, bin_node = CHAIN, none_i, none_i, none_i, none_i
    else:
        edge = space.weight
        kind, parent, bin_node = TREE, space.parent, space.bin_node
        ptr, kids = children_csr(space.parent)
    with np.errstate(divide="ignore"):
        if log_form:
            alpha, w = (-lam * edge).astype(dt), np.log(edge).astype(dt)
        else:
            alpha, w = np.exp((-lam * edge).astype(dt)), edge.astype(dt)
    return Gibbs(kind, no_mat, no_mat, alpha, w, parent, ptr, kids, bin_node, scale)


def children_csr(parent):
    """(child_ptr (nodes+1,), child_idx): the children of u are
    ``child_idx[child_ptr[u]:child_ptr[u+1]]``, in node (= file) order."""
    kids = np.flatnonzero(parent >= 0)
    order = np.argsort(parent[kids], kind="stable")
    ptr = np.zeros(parent.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(parent[kids], minlength=parent.shape[0]), out=ptr[1:])
    return ptr, kids[order].astype(np.int64)

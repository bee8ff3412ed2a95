"""Arguments, spaces and reductions of :func:`emdcli.torch.emd_loss` / ``EMDLoss``."""

import math
import numbers
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import EMDInputError
from ..rows import NORMALIZE
from ..spaces import Chain, Ground, Tree
from ._eager import ReducedEMD, reduce_rows
from ._ops import emd_value_grad, space_from

REDUCTIONS = ("mean", "sum", "none")
COMPUTED = (torch.float32, torch.float64)  # float16 / bfloat16 compute in float32


@dataclass(frozen=True)
class LossOptions:
    """The loss's settings, checked once (:meth:`checked`)."""

    rho: float = 2.0
    normalize: str = "softmax"
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    ce_weight: float = 0.0

    @classmethod
    def checked(cls, rho, normalize, reduction, ignore_index, label_smoothing, ce_weight):
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
        smoothing = _number(label_smoothing, "label_smoothing")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        weight = _number(ce_weight, "ce_weight")
        if not (weight >= 0.0 and math.isfinite(weight)):
            raise ValueError(f"ce_weight must be a finite number >= 0, got {ce_weight!r}")
        rho_ = _number(rho, "rho")
        if not (rho_ >= 1.0 and math.isfinite(rho_)):
            raise ValueError(f"rho must be a finite number >= 1, got {rho!r}")
        return cls(rho_, normalize, reduction, int(ignore_index), smoothing, weight)


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LossSpace:
    """A validated space as the operator takes it: ``kind`` and CPU ``tensors``
    (chain (positions,), tree (parent, weight, bin_node, count), ground (matrix,));
    ``n`` bins, or None with no tensors for the unit chain of the input's width."""

    kind: str
    tensors: tuple
    n: int | None
    spaces: dict = field(default_factory=dict, compare=False, repr=False)

    def for_width(self, n):
        """The operator's (kind, tensors) for rows of ``n`` bins."""
        if self.n is None:
            return "chain", [torch.arange(n, dtype=torch.float64)]
        if self.n != n:
            raise EMDInputError(
                f"the {self.kind} has {self.n} bins but input has {n} columns",
                source=self.kind, hint="the space needs one bin per column of input",
            )
        return self.kind, list(self.tensors)

    def host(self, n):
        """The :class:`Chain`, :class:`Tree` or :class:`Ground` for rows of ``n`` bins,
        made once per width (eager steps; a graph traces :meth:`for_width` instead)."""
        sp = self.spaces.get(n)
        if sp is None:
            sp = self.spaces[n] = space_from(*self.for_width(n))
        return sp


def _host(value):
    """A tensor argument as a numpy array (any device); anything else as it is."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _tensors(*arrays):
    return tuple(torch.from_numpy(np.array(a)) for a in arrays)  # own copies, writable


def resolve_space(positions=None, tree=None, ground=None, rho=2.0):
    """The :class:`LossSpace` of at most one of ``positions`` (N,) increasing, ``tree``
    (a :class:`Tree` or a tree file's path) or ``ground`` (an (N, N) matrix or
    :class:`Ground`; rho = 1 only). None of them: the unit chain."""
    given = [name for name, v in (("positions", positions), ("tree", tree), ("ground", ground))
             if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of positions, tree and ground, got {' and '.join(given)}")
    if tree is not None:
        if isinstance(tree, (str, os.PathLike)):
            from ..treefiles import load_tree

            tree = load_tree(tree)
        if not isinstance(tree, Tree):
            raise ValueError(f"tree must be an emdcli Tree or a tree file's path, got {type(tree).__name__}")
        return LossSpace("tree", _tensors(tree.parent, tree.weight, tree.bin_node, tree.count),
                         tree.n)
    if ground is not None:
        g = ground if isinstance(ground, Ground) else Ground.from_matrix(_host(ground), "ground")
        if rho != 1.0:
            raise ValueError(f"a ground matrix supports only rho = 1 (the exact EMD), got rho = {rho}"
                             "; EMD^rho for rho > 1 needs positions or a tree")
        return LossSpace("ground", _tensors(g.matrix), g.n)
    if positions is not None:
        chain = positions if isinstance(positions, Chain) else Chain.from_positions(_host(positions))
        return LossSpace("chain", _tensors(chain.positions), chain.n)
    return LossSpace("chain", (), None)


def _validated(value, kind):
    return value is None or isinstance(value, kind)


_WHY_EAGER = ("emd_loss validates a space given as data (positions, ground matrix, tree path) "
              "eagerly; under fullgraph give an emdcli Chain, Tree or Ground, or use EMDLoss")
try:
    _resolve_eagerly = torch.compiler.disable(resolve_space, reason=_WHY_EAGER)
except TypeError:  # an older torch takes no reason
    _resolve_eagerly = torch.compiler.disable(resolve_space)


def space_of(positions, tree, ground, rho):
    """:func:`resolve_space`, kept out of ``torch.compile`` graphs where it must read data
    (spaces that are already emdcli objects are traced: only tensors are made)."""
    if (_validated(positions, Chain) and _validated(tree, Tree) and _validated(ground, Ground)):
        return resolve_space(positions, tree, ground, rho)
    return _resolve_eagerly(positions, tree, ground, rho)


def _check_tensors(input, target, space, opts):
    """Shapes, dtypes and devices (metadata only: nothing waits for the data)."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        bad = "input" if not isinstance(input, torch.Tensor) else "target"
        raise ValueError(f"{bad} must be a torch.Tensor")
    if input.dim() != 2:
        raise ValueError(f"input must be (B, N): B rows of N classes, got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"input must be floating point (logits or probabilities), got {input.dtype}")
    if target.device != input.device:
        raise ValueError(f"target is on {target.device} but input is on {input.device}")
    b, n = input.shape
    if target.dim() == 1:
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"a 1-D target holds class indices and must be integer, got {target.dtype}")
        if target.shape[0] != b:
            raise ValueError(f"target has {target.shape[0]} class indices but input has {b} rows")
    elif target.dim() == 2:
        if tuple(target.shape) != (b, n):
            raise ValueError(f"target rows have shape {tuple(target.shape)} but input has {(b, n)}")
        if not target.is_floating_point():
            raise ValueError("a (B, N) target holds distributions and must be floating point, "
                             f"got {target.dtype}")
        if space.kind == "ground":
            raise ValueError("a ground matrix takes class-index targets (B,) only")
        if target.requires_grad:
            raise ValueError("target requires grad, but emd_loss differentiates with respect to "
                             "input only; pass target.detach()")
    else:
        raise ValueError("target must be (B,) class indices or (B, N) distributions, "
                         f"got shape {tuple(target.shape)}")
    if space.kind == "ground" and opts.label_smoothing > 0.0:
        raise ValueError("label_smoothing makes soft targets, which a ground matrix does not take")


def _ignores(t, ignore_index, n):
    """Whether a class index of t (B,) int64, a CPU tensor, is ``ignore_index``: one
    reduction and no (B,) temporary when that is below 0 (the default −100) or ≥ n."""
    a = t.numpy()
    if a.size == 0:
        return False
    if ignore_index < 0:
        return bool(a.min() <= ignore_index)
    if ignore_index >= n:
        return bool(a.max() >= ignore_index)
    return bool((a == ignore_index).any())


def _log_probs(x, normalize):
    """log p (B, N) of the normalised rows (zero masses give a large negative, not -inf)."""
    if normalize == "softmax":
        return torch.log_softmax(x, dim=1)
    p = x / x.sum(dim=1, keepdim=True) if normalize == "l1" else x
    return torch.log(p.clamp_min(torch.finfo(x.dtype).tiny))


def _cross_entropy(x, t, classes, opts):
    """Per-row cross entropy ``−Σ_j q_j log p_j`` (B,), q the target distribution (classes
    smoothed as ``torch.nn.functional.cross_entropy`` does; rows t already smoothed)."""
    logp = _log_probs(x, opts.normalize)
    if not classes:
        q = t if opts.normalize == "none" else t / t.sum(dim=1, keepdim=True)
        return -(q * logp).sum(dim=1)
    c = t.clamp(0, x.shape[1] - 1)  # a bad index raised (CPU) or gave NaN (CUDA) already
    nll = -logp.gather(1, c.unsqueeze(1)).squeeze(1)
    eps = opts.label_smoothing
    return nll if eps == 0.0 else (1.0 - eps) * nll - eps * logp.mean(dim=1)


def loss(input, target, space, opts):
    """The loss of (B, N) ``input`` against ``target`` (see :func:`emdcli.torch.emd_loss`)."""
    _check_tensors(input, target, space, opts)
    n = input.shape[1]
    graph = torch.compiler.is_compiling()
    x = (input if input.dtype in COMPUTED else input.float()).contiguous()
    classes = target.dim() == 1
    eps = opts.label_smoothing
    if classes:
        t = target.long()
        if not graph and input.device.type == "cpu" and not _ignores(t, opts.ignore_index, n):
            keep = None  # nothing ignored: no masks (each a (B,) temporary)
        else:  # (on CUDA and in graphs: masked, no data-dependent branch)
            keep = t != opts.ignore_index
            t = torch.where(keep, t, 0)
        t = t.contiguous()
        smoothing = eps
    else:
        t = target.to(x.dtype)
        if eps > 0.0:  # (1 − ε) q + ε/N, at q's mass
            t = (1.0 - eps) * t + (eps / n) * t.sum(dim=1, keepdim=True)
        t, smoothing, keep = t.contiguous(), 0.0, None
    if graph:  # the custom operators: one opaque node in the graph
        kind, tensors = space.for_width(n)
        rows, _ = emd_value_grad(x, t, tensors, kind, opts.rho, opts.normalize, smoothing)
        if keep is not None:
            rows = torch.where(keep, rows, 0.0)
        total = reduce_rows(rows, keep, opts.reduction)
    else:  # eager: one autograd node (emdcli.torch._eager)
        op = (space.host(n), opts.rho, opts.normalize, smoothing)
        total = ReducedEMD.apply(x, t, keep, op, opts.reduction)
    if opts.ce_weight > 0.0:
        ce = _cross_entropy(x, t, classes, opts)
        if keep is not None:
            ce = torch.where(keep, ce, 0.0)
        total = total + opts.ce_weight * reduce_rows(ce, keep, opts.reduction)
    return total.to(input.dtype)

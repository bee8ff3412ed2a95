"""PyTorch losses over emdcli's exact EMD kernels (``pip install 'emdcli[torch]'``).

:func:`emd_loss` and :class:`EMDLoss` are shaped like ``torch.nn.CrossEntropyLoss``:
``input`` (B, N) logits (or probabilities with ``normalize="l1"``/``"none"``), ``target``
(B,) class indices or (B, N) distributions. Per row, with p the normalised input and q
the (smoothed) target::

    loss = EMD^rho(p, q) + ce_weight · CE(p, q)

EMD^rho on a chain (``positions``, default 0…N−1), a tree (``tree``: HEMD^rho) or a
ground matrix (``ground``, class targets, rho = 1). rho = 2 is the relaxed EMD² loss;
``ce_weight`` > 0 gives the paper's EMD² + CE. One kernel call computes the values and
the gradient with respect to ``input``; backward multiplies it by ``grad_output``.

>>> import torch, emdcli.torch as et
>>> logits = torch.zeros(2, 4, requires_grad=True)
>>> loss = et.emd_loss(logits, torch.tensor([0, 3]))
>>> loss.backward()
>>> round(loss.item(), 4)
0.875

CPU tensors are read in place by the Numba kernels (validated: NaN logits, a class out
of range raise :class:`emdcli.EMDInputError`, a ValueError); CUDA tensors are computed
by the numba.cuda kernels in torch's stream order, with no host synchronisation (and so
no data checks: such rows give NaN losses). float16/bfloat16 compute in float32. Under
``torch.compile`` the loss calls ``torch.library`` custom operators, so
``torch.compile(fullgraph=True)`` keeps them; in eager mode the same kernel call is one
autograd node with the mask and the reduction (:mod:`emdcli.torch._eager`).
"""

import torch

if not hasattr(torch.library, "custom_op"):  # pragma: no cover - old torch
    raise ImportError(f"emdcli.torch needs torch >= 2.4 (torch.library.custom_op), found {torch.__version__}")

from ._loss import LossOptions, loss, resolve_space, space_of

__all__ = ["EMDLoss", "emd_loss"]


def emd_loss(input, target, *, positions=None, tree=None, ground=None, rho=2.0,
             normalize="softmax", reduction="mean", ignore_index=-100, label_smoothing=0.0,
             ce_weight=0.0):
    """EMD^rho loss (+ ``ce_weight`` · cross entropy) of ``input`` (B, N) against
    ``target`` (B,) class indices or (B, N) distributions.

    positions: (N,) strictly increasing bin positions (a chain; default 0…N−1);
    tree: an :class:`emdcli.spaces.Tree` or a tree file's path (bins in column order);
    ground: an (N, N) ground matrix (class targets, rho = 1). At most one of the three.
    normalize: ``"softmax"`` (input are logits), ``"l1"`` or ``"none"`` (probabilities).
    reduction: ``"mean"`` over the rows not ignored, ``"sum"``, or ``"none"`` (B,).
    ignore_index: class-index rows with this target add 0 and are not counted.
    label_smoothing: ε, the target becomes ``(1 − ε) q + ε/N`` (both terms).
    Returns a scalar (or (B,)) in input's dtype.
    """
    opts = LossOptions.checked(rho, normalize, reduction, ignore_index, label_smoothing,
                               ce_weight)
    return loss(input, target, space_of(positions, tree, ground, opts.rho), opts)


class EMDLoss(torch.nn.Module):
    """:func:`emd_loss` as a module; the space is validated once, here.

    >>> criterion = EMDLoss(positions=[0.0, 1.0, 3.0], ce_weight=0.5)
    >>> criterion(torch.zeros(1, 3), torch.tensor([2])).item() > 0
    True
    """

    def __init__(self, *, positions=None, tree=None, ground=None, rho=2.0,
                 normalize="softmax", reduction="mean", ignore_index=-100,
                 label_smoothing=0.0, ce_weight=0.0):
        super().__init__()
        self.options = LossOptions.checked(rho, normalize, reduction, ignore_index,
                                           label_smoothing, ce_weight)
        self.space = resolve_space(positions, tree, ground, self.options.rho)

    def forward(self, input, target):
        return loss(input, target, self.space, self.options)

    def extra_repr(self):
        o = self.options
        bins = "" if self.space.n is None else f", bins={self.space.n}"
        return (f"space={self.space.kind}{bins}, rho={o.rho}, normalize={o.normalize!r}, "
                f"reduction={o.reduction!r}, ignore_index={o.ignore_index}, "
                f"label_smoothing={o.label_smoothing}, ce_weight={o.ce_weight}")

"""The EMD part of :func:`emdcli.torch.emd_loss` outside ``torch.compile``: one autograd node.

Per row ``v_b = EMD^rho(p_b, q_b)`` with its input gradient ``g_b`` (one kernel call,
:func:`._ops.space_value_grad`), the ignored rows masked (``keep``, class targets) and the
reduction applied::

    mean  Σ_b keep_b v_b / Σ_b keep_b      sum  Σ_b keep_b v_b      none  keep_b v_b

and backward ``∂L/∂input_b = s_b · g_b`` with ``s_b = keep_b · grad_output (/ Σ keep)``.
On the CPU with no row ignored and a scalar loss, the forward's g comes scaled by
``1/B`` (``mean``: in the lanes kernels' write, else in place while it is in cache), and a
backward with ``grad_output = 1`` (a plain ``loss.backward()``) returns it as it is: no
(B, N) pass and no fresh buffer there;
the reduction is a float64 sum of the values on the host.
The same values and gradients as the custom operators (:mod:`._ops`) and the torch ops
around them, which graphs traced by ``torch.compile`` keep; in eager mode their Python
dispatch and the mask's and reduction's own nodes cost about a millisecond a step (a
third of a 512 × 1000 chain step on one core), so the loss calls this Function there.
"""

import math

import numpy as np
import torch

from ._ops import ONCE, scale_grad, space_value_grad


def reduce_rows(rows, keep, reduction):
    """The rows' values (B,), masked already, reduced: ``mean`` over the kept rows (all
    rows when ``keep`` is None), ``sum``, or ``none``."""
    if reduction == "sum":
        return rows.sum()
    if reduction == "mean":
        return rows.sum() / keep.sum() if keep is not None else rows.mean()
    return rows


class ReducedEMD(torch.autograd.Function):
    """``apply(input (B, N), target, keep (B,) bool or None, op, reduction)``: the reduced
    EMD^rho loss; op = (space, rho, normalize, smoothing) of
    :func:`._ops.space_value_grad`."""

    @staticmethod
    def forward(ctx, input, target, keep, op, reduction):
        ctx.count = (keep.sum() if keep is not None else input.shape[0]) \
            if reduction == "mean" else None
        ctx.scaled = keep is None and reduction != "none" and input.device.type == "cpu"
        scale = 1.0 / ctx.count if ctx.scaled and ctx.count else 1.0  # g / B, as backward's
        values, g = space_value_grad(input, target, *op, grad_scale=scale)  # g · (1 / B)
        if keep is not None:
            values = torch.where(keep, values, 0.0)
        ctx.save_for_backward(g, keep, input)
        if ctx.scaled:  # (B,) float values on the host: summed there, in float64
            total = float(values.numpy().sum(dtype=np.float64))
            if ctx.count is not None:
                total = total / ctx.count if ctx.count else math.nan
            return torch.tensor(total, dtype=values.dtype)
        return reduce_rows(values, keep, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        g, keep, input = ctx.saved_tensors
        scale = grad_output  # 0-d (mean, sum: one scale for every row) or (B,)
        if ctx.scaled:  # g is ∂L/∂input for grad_output = 1 already
            if not torch.is_grad_enabled() and float(grad_output) == 1.0:
                return g, None, None, None, None
        elif ctx.count is not None:
            scale = scale / ctx.count
        if keep is not None:
            scale = torch.where(keep, scale, 0.0)
        if torch.is_grad_enabled():  # create_graph: a product whose own backward raises
            return _Once.apply(scale, g, input), None, None, None, None
        return scale_grad(scale, g), None, None, None, None


class _Once(torch.autograd.Function):
    """``scale[:, None] · g``, recorded under ``create_graph`` (linked to ``input``, which
    it does not read) so that differentiating the gradient raises instead of giving 0."""

    @staticmethod
    def forward(ctx, scale, g, input):
        return scale_grad(scale, g)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(ONCE)

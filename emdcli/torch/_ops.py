"""The custom operators behind :func:`emdcli.torch.emd_loss`.

``emdcli::emd_value_grad(input (B, N), target, space, kind, rho, normalize, smoothing)
→ (values (B,), grad (B, N))``: EMD^rho of every row and its gradient with respect to
the raw ``input`` (the chain rule through the normalisation), one kernel call for both.
``emdcli::emd_scale_grad(grad_values (B,), grad (B, N)) → grad_values[:, None] · grad``
is its backward; differentiating that raises (the loss is once differentiable).

Both are ``torch.library.custom_op`` operators with fake implementations, so
``torch.compile`` graphs keep them as single opaque nodes; eager steps call their bodies,
:func:`value_grad` and :func:`scale_grad`, from one autograd node
(:mod:`emdcli.torch._eager`). The space travels as a
``kind`` ("chain", "tree", "ground") and a list of CPU tensors (:func:`space_from`).
CPU tensors are read by the Numba kernels through zero-copy numpy views, CUDA tensors
go to the numba.cuda kernels (:mod:`emdcli.torch._device`).
"""

import math

import numpy as np
import torch

from ..errors import EMDInputError
from ..spaces import Chain, Ground, Tree
from . import _buffers

KINDS = ("chain", "tree", "ground")
SOURCES = {"pred": "input"}  # the API's names for the inputs, as torch users know them


def space_from(kind, tensors):
    """The :class:`Chain`, :class:`Tree` or :class:`Ground` carried by ``tensors``
    (validated when they were made: :func:`emdcli.torch._loss.space_tensors`):
    chain (positions,), tree (parent, weight, bin_node, count), ground (matrix,)."""
    arrays = [t.detach().cpu().numpy() for t in tensors]
    if kind == "chain":
        return Chain(arrays[0])
    if kind == "tree":
        parent, weight, bin_node, count = arrays
        return Tree((), parent, weight, bin_node, count, np.empty(0, dtype=np.int64))
    if kind == "ground":
        return Ground(arrays[0])
    raise ValueError(f"space kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _renamed(error):
    """The API's error with its ``source`` named as in the loss (``pred`` → ``input``)."""
    return EMDInputError(error.message, source=SOURCES.get(error.source, error.source),
                         row=error.row, column=error.column, hint=error.hint)


def _smoothed_classes(c, n, smoothing, dtype):
    """Rows ``(1 − ε)·onehot(c) + ε/N`` (B, N) for valid class indices c (B,)."""
    q = np.full((c.shape[0], n), smoothing / n, dtype=dtype)
    q[np.arange(c.shape[0]), c] += 1.0 - smoothing
    return q


def _cpu_value_grad(x, t, sp, rho, normalize, smoothing, scale=1.0):
    """:func:`emdcli.emd` on zero-copy views of CPU tensors; values and the input gradient
    (times ``scale``) come back as new tensors of x's dtype. Validates (one pass): bad
    rows raise."""
    from .. import api, rows

    xa = x.detach().numpy()
    ta = t.detach().numpy()
    dtype = "float32" if xa.dtype == np.float32 else "float64"
    if normalize == "softmax" and ta.ndim == 1 and smoothing == 0.0:
        return _softmax_classes(x, ta, sp, (rho, scale), dtype)
    try:
        if ta.ndim == 1 and smoothing > 0.0:
            c = rows.prepare_classes(ta, xa.shape[0], xa.shape[1], check=True)
            ta = _smoothed_classes(c, xa.shape[1], smoothing, xa.dtype)
        values, g = api.emd(xa, ta, space=sp, rho=rho, normalize=normalize, dtype=dtype,
                            gradient=True, grad_wrt="input", check=True, out=_outputs(x))
    except EMDInputError as e:
        raise _renamed(e) from None
    return torch.from_numpy(values), torch.from_numpy(_times(g, scale))


def _times(g, scale):
    """g ← g · scale in place, in g's dtype (where no kernel has fused it)."""
    if scale != 1.0:
        np.multiply(g, g.dtype.type(scale), out=g)
    return g


def _outputs(x):
    """(values (B,), gradient (B, N)) arrays of x's dtype, reused (:mod:`emdcli.torch.
    _buffers`: a (B,) array is 400 KB at B = 100 000, fresh pages each step)."""
    dtype = x.detach().numpy().dtype
    return _buffers.empty((x.shape[0],), dtype), _buffers.empty(x.shape, dtype)


STEPS_KEPT = 16
_STEPS = {}  # (id(space), rho, shape, logits) → (space, api.LanesStep)


def _step(sp, rho, shape, logits):
    """:func:`emdcli.api.softmax_step`, made once per space, rho and batch shape (the
    space kept with it, so that its id stays its own); None, not kept, while the lanes
    kernels do not take such rows (the numpy twins' small batches, other rho)."""
    key = (id(sp), rho, tuple(shape), logits)
    hit = _STEPS.get(key)
    if hit is not None and hit[0] is sp:
        return hit[1]
    from .. import api

    step = api.softmax_step(sp, rho, tuple(shape), logits)
    if step is not None:
        while len(_STEPS) >= STEPS_KEPT:
            _STEPS.pop(next(iter(_STEPS)), None)
        _STEPS[key] = (sp, step)
    return step


def _softmax_classes(x, c, sp, rho_scale, dtype):
    """The common training case, logits against class indices: one kernel pass computes
    the values and the gradient through the softmax, ``p ⊙ (g − ⟨g, p⟩)``, times scale
    (``rho_scale`` = (rho, scale)), in the lanes kernels' tiles where they run. float32:
    the softmax in torch (:func:`api.emd_softmax`; torch's float32 exp is the faster),
    float64: in the kernels (:func:`api.emd` with
    ``normalize="softmax"``; torch's float64 softmax of narrow rows is slow: 20 ms for
    100 000 × 32 on one core). Validates the classes, and the logits through the values: a
    NaN or +inf logit makes its row's value NaN (−inf is a masked logit, as in torch)."""
    from .. import api, rows

    rho, scale = rho_scale
    try:
        c = rows.prepare_classes(c, x.shape[0], x.shape[1], check=True)
    except EMDInputError as e:
        raise _renamed(e) from None
    if dtype == "float32":  # p into a reused buffer (no fresh pages), its gradient over it
        p = _buffers.empty(x.shape, np.float32)
        torch.ops.aten._softmax.out(x.detach(), 1, False, out=torch.from_numpy(p))
        values, g = _buffers.empty((x.shape[0],), np.float32), p
        step = _step(sp, rho, x.shape, False)
        if step is not None:
            step(p, c, values, g, scale)
        else:
            api.emd_softmax(p, c, space=sp, rho=rho, dtype=dtype, out=(values, g))
            _times(g, scale)
    else:
        values, g = _outputs(x)
        step = _step(sp, rho, x.shape, True)
        if step is not None:
            step(x.detach().numpy(), c, values, g, scale)
        else:
            api.emd(x.detach().numpy(), c, space=sp, rho=rho, normalize="softmax", dtype=dtype,
                    gradient=True, grad_wrt="input", check=False, out=(values, g))
            _times(g, scale)
    if not math.isfinite(values.sum(dtype=np.float64)) and not np.isfinite(values).all():
        _raise_bad_logits(x, values)  # (one pass, the sum, when all is well)
    return torch.from_numpy(values), torch.from_numpy(g)


def _raise_bad_logits(x, values):
    """The error for the first logit that is NaN or +inf (or a row of only −inf); with
    finite logits, for the first row whose value overflowed."""
    bad = torch.isnan(x) | (x == float("inf"))
    bad |= (x == float("-inf")).all(dim=1, keepdim=True)
    if not bool(bad.any()):
        r = int(np.flatnonzero(~np.isfinite(values))[0])
        raise EMDInputError(f"the loss is {values[r]}: it overflows {values.dtype}",
                            source="input", row=r,
                            hint="the positions or tree weights are too large for this dtype")
    r, col = (int(i) for i in bad.nonzero()[0])
    raise EMDInputError(f"value is {float(x[r, col])}", source="input", row=r, column=col,
                        hint="logits must be finite (−inf masks a class, but not all of a row)")


def value_grad(input, target, space, kind, rho, normalize, smoothing):
    """(values (B,), d values / d input (B, N)) of EMD^rho on the space (``kind`` and its
    tensors); ``target`` (B,) int64 class indices (smoothed into rows when ``smoothing``
    > 0) or (B, N) rows of input's dtype. input float32/float64, C-contiguous. The body of
    :func:`emd_value_grad`."""
    return space_value_grad(input, target, space_from(kind, space), rho, normalize, smoothing)


def space_value_grad(input, target, sp, rho, normalize, smoothing, *, grad_scale=1.0):
    """:func:`value_grad` on ``sp``, the :class:`Chain`, :class:`Tree` or :class:`Ground`
    itself (what eager callers pass: ``emdcli.torch._eager``, made once per space); on the
    CPU the gradient comes times ``grad_scale`` (fused into the kernel where it can be)."""
    if input.device.type == "cpu":
        return _cpu_value_grad(input, target, sp, rho, normalize, smoothing, grad_scale)
    if grad_scale != 1.0:
        raise ValueError("grad_scale is taken on the CPU only")
    if input.device.type == "cuda":
        from ._device import cuda_value_grad

        return cuda_value_grad(input, target, sp, rho, normalize, smoothing)
    raise ValueError(f"emd_loss runs on CPU and CUDA tensors, not on {input.device.type}")


@torch.library.custom_op("emdcli::emd_value_grad", mutates_args=())
def emd_value_grad(input: torch.Tensor, target: torch.Tensor, space: list[torch.Tensor],
                   kind: str, rho: float, normalize: str,
                   smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`value_grad` as an operator (what ``torch.compile`` graphs call)."""
    return value_grad(input, target, space, kind, rho, normalize, smoothing)


@emd_value_grad.register_fake
def _(input, target, space, kind, rho, normalize, smoothing):
    return input.new_empty(input.shape[0]), torch.empty_like(input)


def _setup_value_grad(ctx, inputs, output):
    # grad stays a differentiable output: under create_graph its product with grad_values
    # is recorded, and differentiating that product raises (not a silent zero Hessian)
    ctx.save_for_backward(output[1])
    ctx.space_len = len(inputs[2])


def _backward_value_grad(ctx, grad_values, grad_g):
    (g,) = ctx.saved_tensors
    return (emd_scale_grad(grad_values, g), None, [None] * ctx.space_len, None, None, None,
            None)


torch.library.register_autograd("emdcli::emd_value_grad", _backward_value_grad,
                                setup_context=_setup_value_grad)


def scale_grad(grad_values, grad):
    """``grad_values[:, None] · grad`` (B, N), or ``grad_values · grad`` for a scalar
    (0-d) one (on the CPU into a reused buffer, :mod:`emdcli.torch._buffers`)."""
    scale = grad_values if grad_values.dim() == 0 else grad_values.unsqueeze(1)
    if grad.device.type != "cpu" or grad_values.dtype != grad.dtype:
        return grad * scale
    out = torch.from_numpy(_buffers.empty(grad.shape, grad.detach().numpy().dtype))
    return torch.mul(grad, scale, out=out)


@torch.library.custom_op("emdcli::emd_scale_grad", mutates_args=())
def emd_scale_grad(grad_values: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """:func:`scale_grad` as an operator: the backward of ``emd_value_grad``."""
    return scale_grad(grad_values, grad)


@emd_scale_grad.register_fake
def _(grad_values, grad):
    return torch.empty_like(grad)


ONCE = ("emd_loss is differentiable once: its backward saves the gradient, not the "
        "Hessian, so double backward (create_graph=True through the loss) is not supported")


def _no_double_backward(ctx, grad):
    raise RuntimeError(ONCE)


torch.library.register_autograd("emdcli::emd_scale_grad", _no_double_backward)

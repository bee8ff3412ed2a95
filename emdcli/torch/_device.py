"""``emd_value_grad`` on CUDA tensors: the normalisation and its chain rule in torch, the
EMD^rho and its distribution gradient in the numba.cuda kernels (``emdcli.gpu``).

Everything stays on the device and nothing waits for the host: no checks that need the
data (NaN logits give NaN losses; an out-of-range class index gives a NaN loss for its
row instead of reading out of bounds). The kernels launch on the CUDA default stream
(their scratch buffers are shared on that assumption); when torch's current stream is
another one, the default stream first waits for it and it then waits for the default
stream — device-side event waits, no host synchronisation.
"""

import torch

from ..spaces import Chain, Ground


def normalised(x, normalize):
    """(p (B, N), row sums s (B, 1) or None): ``softmax``, ``l1`` (p = x / s) or ``none``."""
    if normalize == "softmax":
        return torch.softmax(x, dim=1), None
    if normalize == "l1":
        s = x.sum(dim=1, keepdim=True)
        return x / s, s
    return x, None


def input_grad(g, p, s, normalize):
    """Chain rule from the distribution gradient g to the raw input:
    softmax ``p ⊙ (g − ⟨g, p⟩)``, l1 ``(g − ⟨g, p⟩) / s``, none ``g``."""
    if normalize == "none":
        return g
    centred = g - (g * p).sum(dim=1, keepdim=True)
    return p * centred if normalize == "softmax" else centred / s


def targets(t, n, normalize, smoothing, dtype):
    """(kind, q, bad): class indices (B,) int64 clamped into range (``bad`` marks the rows
    that were not), smoothed into rows when ``smoothing`` > 0; or rows (B, N)
    l1-normalised unless ``none``."""
    if t.dim() == 1:
        bad = (t < 0) | (t >= n)
        c = t.clamp(0, n - 1)
        if smoothing <= 0.0:
            return "classes", c, bad
        q = torch.full((t.shape[0], n), smoothing / n, dtype=dtype, device=t.device)
        q.scatter_add_(1, c.unsqueeze(1), q.new_full((t.shape[0], 1), 1.0 - smoothing))
        return "rows", q, bad
    q = t if normalize == "none" else t / t.sum(dim=1, keepdim=True)
    return "rows", q, None


def value_grad(x, t, sp, rho, normalize, smoothing, launch):
    """(values (B,), input gradient (B, N)) with ``launch(p, kind, q, space, rho, values,
    g)`` filling values and the projected distribution gradient g in place (the GPU
    launchers of ``emdcli.gpu``); a ground matrix is its closed form in torch."""
    p, s = normalised(x, normalize)
    kind, q, bad = targets(t, x.shape[1], normalize, smoothing, x.dtype)
    if isinstance(sp, Ground):  # class targets only (checked by the loss)
        d = torch.tensor(sp.matrix, dtype=x.dtype, device=x.device)
        col = d.t()[q]  # D[:, c] per row
        values = (p * col).sum(dim=1)
        g = col - col.mean(dim=1, keepdim=True)
    else:
        values = x.new_empty(x.shape[0])
        g = torch.empty_like(x)
        launch(p.contiguous(), kind, q.contiguous(), sp, rho, values, g)
    grad = input_grad(g, p, s, normalize)
    if bad is not None:
        values = values.masked_fill(bad, float("nan"))
        grad = grad.masked_fill(bad.unsqueeze(1), float("nan"))
    return values, grad


def launch_on_stream(p, kind, q, sp, rho, values, g):
    """The numba.cuda chain/tree launcher on CUDA tensors, ordered after the work already
    queued on torch's current stream and before the work queued on it afterwards."""
    from .. import gpu

    cuda = gpu._cuda()
    current = torch.cuda.current_stream(p.device)
    default = torch.cuda.default_stream(p.device)
    side = current != default
    if side:
        default.wait_stream(current)
    run = gpu.chain_cuda if isinstance(sp, Chain) else gpu.tree_cuda
    with cuda.gpus[p.device.index]:
        run(p, kind, q, sp, rho, values, g)
    if side:
        current.wait_stream(default)


_READY = []  # numba.cuda found usable once: not asked again on every call


def cuda_value_grad(x, t, sp, rho, normalize, smoothing):
    """:func:`value_grad` on CUDA tensors with :func:`launch_on_stream`."""
    if not _READY:
        from .. import gpu

        gpu.require_cuda("emd_loss on a CUDA tensor: numba.cuda", hint="pip install numba-cuda")
        _READY.append(True)
    return value_grad(x, t, sp, rho, normalize, smoothing, launch_on_stream)

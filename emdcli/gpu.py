"""GPU dispatch: whether CUDA can run, and the host calls behind ``device="cuda"``.

``chain_cuda`` / ``tree_cuda`` take distributions (``api._chain`` / ``api._tree`` without
the row scales: ``api.emd`` materialises the normalised rows for the GPU), and
``sinkhorn_cuda`` those of ``sinkhorn._structured`` (plus the dense plain form, which the
CPU runs as BLAS products), so the public functions switch device with one branch each.
numba.cuda is imported on first use here, never when emdcli is imported.
Arrays may be numpy arrays (results come back as numpy) or already on the GPU (numba
device arrays, CuPy, PyTorch CUDA tensors: results stay on the device).
"""

import os
import sys
from contextlib import contextmanager

import numpy as np

from .errors import EMDInputError

THREADS_PER_BLOCK = 128


def _simulator_requested():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


def _cuda():
    """numba.cuda, honouring NUMBA_ENABLE_CUDASIM even when it was set after Numba's
    configuration was first read (numba.cuda picks its mode once, when first imported)."""
    if "numba.cuda" not in sys.modules and _simulator_requested():
        from numba.core import config

        config.reload_config()
    from numba import cuda

    return cuda


def cuda_available():
    """True when kernels can run: a usable NVIDIA GPU (driver and device found), or the
    CUDA simulator with ``NUMBA_ENABLE_CUDASIM=1``. Never raises."""
    return unavailable_reason() is None


def unavailable_reason():
    """None when CUDA can run, else one line saying why not."""
    try:
        cuda = _cuda()
    except Exception as exc:  # numba built without CUDA support, broken install, ...
        return f"numba.cuda cannot be imported ({type(exc).__name__}: {exc})"
    if ".simulator" in cuda.jit.__module__:
        return None if _simulator_requested() else "NUMBA_ENABLE_CUDASIM is no longer set"
    try:
        if cuda.is_available():
            return None
        err = cuda.cuda_error()
    except Exception as exc:
        err = exc
    detail = str(err).strip().splitlines()[0] if err and str(err).strip() else "no CUDA driver or device"
    return f"no usable NVIDIA GPU: {detail}"


def require_cuda(flag="device", hint="use device cpu, or auto to fall back to it"):
    """Raise :class:`EMDInputError` (exit 2 in the CLI) when CUDA cannot run; ``flag``
    names the option in the message."""
    reason = unavailable_reason()
    if reason is not None:
        raise EMDInputError(f"{flag} cuda is not available: {reason}", hint=hint)


def resolve_device(device):
    """``"cpu"``, ``"cuda"`` or ``"auto"`` → ``"cpu"`` / ``"cuda"`` (checking CUDA)."""
    if device not in ("cpu", "cuda", "auto"):
        raise EMDInputError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        require_cuda()
    return device


@contextmanager
def clock_phases():
    """Clock the GPU launchers while inside: yields a dict of seconds per phase
    (``to_device``, ``compile``, ``kernel``, ``to_host``), filled as calls run. Each phase
    synchronises the GPU, so use it to see where time goes, not in a training loop."""
    _cuda()
    from .kernels.gpu_common import CLOCK

    CLOCK.reset()
    CLOCK.on = True
    try:
        yield CLOCK.seconds
    finally:
        CLOCK.on = False


def chain_cuda(p, kind, q, chain, rho, values, g, threads_per_block=THREADS_PER_BLOCK):
    """EMD^rho on a chain: ``api._chain`` on the GPU, for rows p, q that are already
    distributions (unit row scales). kind ``"rows"`` (q (B, N)) or
    ``"classes"`` (q (B,) int64); values (B,) and g (B, N) or None are filled in place
    (None: allocated like p). Returns (values, g)."""
    _cuda()
    from .kernels.gpu_chain import chain_batch_cuda

    classes = q if kind == "classes" else None
    return chain_batch_cuda(p, q if kind == "rows" else None, classes, chain.gaps, rho,
                            values, g, threads_per_block=threads_per_block)


def tree_cuda(p, kind, q, tree, rho, values, g, threads_per_block=THREADS_PER_BLOCK):
    """HEMD^rho on a tree: ``api._tree`` on the GPU (arguments as :func:`chain_cuda`)."""
    _cuda()
    from .kernels.gpu_tree import tree_value_grad_cuda

    b = p.shape[0]
    if kind == "classes":
        c, q = q, None
    else:
        c = np.full(b, -1, dtype=np.int64)
    arrays = (tree.parent, tree.weight, tree.bin_node, tree.count if g is not None else None)
    return tree_value_grad_cuda(p, q, c, arrays, rho, values, g,
                                threads_per_block=threads_per_block)


def sinkhorn_cuda(p, q, sp, run, dt, threads_per_block=THREADS_PER_BLOCK):
    """``sinkhorn._structured`` on the GPU, for every space, form and kernel (dense plain
    too) of the :class:`~emdcli.gibbs.Solve` ``run``: q (B, N) rows (one-hot rows for class
    targets). Returns (values (B,) float64, iterations (B,) int64, errors (B,) float64,
    G (B, N) or None)."""
    _cuda()
    from .gibbs import gibbs_for
    from .kernels.gpu_sinkhorn import sinkhorn_batch_cuda

    g = gibbs_for(sp, run.lam, dt, run.log_form, dense=run.dense)
    return sinkhorn_batch_cuda(p, q, g, run, threads_per_block=threads_per_block)


def emd_on_device(pred, target, space, rho=1.0, gradient=False,
                  threads_per_block=THREADS_PER_BLOCK):
    """EMD^rho of rows already on the GPU, results left there (no transfer): values (B,),
    or (values, gradients (B, N)). No validation and no normalisation: pred (B, N) must
    hold distributions, target (B, N) too or (B,) integer class indices; space a Chain or
    a Tree. For the training loop that ``emdcli.emd(..., check=False)`` would serve."""
    from .kernels.gpu_common import to_device
    from .spaces import Chain, Tree

    cuda = _cuda()
    p, q = to_device(pred), to_device(target)
    kind = "classes" if len(q.shape) == 1 else "rows"
    g = cuda.device_array(p.shape, dtype=p.dtype) if gradient else None
    if isinstance(space, Chain):
        values, g = chain_cuda(p, kind, q, space, rho, None, g, threads_per_block)
    elif isinstance(space, Tree):
        values, g = tree_cuda(p, kind, q, space, rho, None, g, threads_per_block)
    else:
        raise EMDInputError("a ground matrix has no GPU kernel for the EMD",
                            hint="use a chain or a tree, or device cpu")
    return (values, g) if gradient else values

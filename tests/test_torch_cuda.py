"""``emdcli.torch`` on the GPU path.

Simulated (CI): torch has no CUDA tensors here, so the device path
(``emdcli.torch._device.value_grad``: the normalisation and its chain rule in torch, the
numba.cuda chain/tree kernels) runs on CPU tensors with a launcher that hands the
kernels numpy views of them, in the CUDA simulator (set just long enough to import
numba.cuda, as ``test_gpu`` does). It must give what the CPU operator gives.
Real (a GPU with a CUDA build of torch): ``emd_loss`` on CUDA tensors against the CPU, on
a side stream too; skipped with the reason otherwise.
"""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import emdcli.torch as et  # noqa: E402
from emdcli.spaces import Chain, Ground, Tree  # noqa: E402
from emdcli.torch import _device, _ops  # noqa: E402

TPB = 4  # threads per block in the simulator: several blocks and lanes, few threads


def _simulated_cuda():
    """numba.cuda in simulator mode, or None when it was already imported for real."""
    if "numba.cuda" in sys.modules:
        from numba import cuda

        return cuda if ".simulator" in cuda.jit.__module__ else None
    from numba.core import config

    before = os.environ.get("NUMBA_ENABLE_CUDASIM")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    config.reload_config()
    try:
        from numba import cuda
    finally:
        if before is None:
            del os.environ["NUMBA_ENABLE_CUDASIM"]
        else:
            os.environ["NUMBA_ENABLE_CUDASIM"] = before
        config.reload_config()
    return cuda


def host_launch(p, kind, q, sp, rho, values, g):
    """The GPU launchers on numpy views of CPU tensors (filled in place)."""
    from emdcli import gpu

    run = gpu.chain_cuda if isinstance(sp, Chain) else gpu.tree_cuda
    run(p.numpy(), kind, q.numpy(), sp, rho, values.numpy(), g.numpy(), threads_per_block=TPB)


def spaces(rng, n):
    parents = [None, "v0", "v1"] + [f"v{rng.integers(0, v)}" for v in range(3, 8)]
    tree = Tree.from_edges([f"v{v}" for v in range(8)], parents, rng.uniform(0.5, 2.0, 8),
                           bins=[f"v{k}" for k in (1, 3, 4, 6, 7)[:n]])
    chain = Chain.from_positions(np.cumsum(rng.uniform(0.2, 2.0, n)))
    d = rng.uniform(0.5, 3.0, (n, n))
    np.fill_diagonal(d, 0.0)
    return {"chain": chain, "tree": tree, "ground": Ground.from_matrix(d)}


CASES = [  # (space, normalize, target: classes / smoothed classes / rows, dtype)
    ("chain", "softmax", "classes", torch.float64),
    ("chain", "l1", "smoothed", torch.float64),
    ("chain", "none", "rows", torch.float64),
    ("chain", "softmax", "rows", torch.float32),
    ("tree", "softmax", "smoothed", torch.float64),
    ("tree", "l1", "rows", torch.float32),
    ("tree", "none", "classes", torch.float64),
    ("ground", "softmax", "classes", torch.float64),
    ("ground", "none", "classes", torch.float32),
]


@pytest.fixture
def simulator():
    """numba.cuda in the simulator, NUMBA_ENABLE_CUDASIM=1 visible to emdcli.gpu meanwhile."""
    cuda = _simulated_cuda()
    if cuda is None:
        pytest.skip("numba.cuda was imported for a real GPU: the simulator cannot be used")
    before = os.environ.get("NUMBA_ENABLE_CUDASIM")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        with np.errstate(all="ignore"):
            yield cuda
    finally:
        if before is None:
            del os.environ["NUMBA_ENABLE_CUDASIM"]
        else:
            os.environ["NUMBA_ENABLE_CUDASIM"] = before


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
def test_device_path_in_the_simulator_matches_the_cpu_operator(simulator):
    rng = np.random.default_rng(7)
    b, n = 3, 5
    for kind, normalize, target, dtype in CASES:
        sp = spaces(rng, n)[kind]
        x = torch.tensor(rng.uniform(0.2, 1.0, (b, n)), dtype=dtype)
        if normalize == "none":
            x = x / x.sum(1, keepdim=True)
        t, eps = torch.from_numpy(rng.integers(0, n, b)), 0.2 if target == "smoothed" else 0.0
        if target == "rows":
            t = torch.tensor(rng.uniform(0.1, 1.0, (b, n)), dtype=dtype)
            t = t / t.sum(1, keepdim=True)
        rho = 1.0 if kind == "ground" else 2.0
        name = "positions" if kind == "chain" else kind
        tensors = et._loss.resolve_space(**{name: sp}, rho=rho).tensors
        want = _ops.emd_value_grad(x, t, list(tensors), kind, rho, normalize, eps)
        got = _device.value_grad(x, t, sp, rho, normalize, eps, host_launch)
        tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
        for a, w in zip(got, want):
            assert a.dtype == dtype
            torch.testing.assert_close(a, w, **tol, msg=lambda m: f"{kind} {normalize} {target}: {m}")
    values, grad = _device.value_grad(x, torch.tensor([0, 5, -1]), spaces(rng, n)["chain"],
                                      2.0, "softmax", 0.0, host_launch)
    assert torch.isfinite(values[0]) and torch.isnan(values[1:]).all()  # out of range: NaN
    assert torch.isnan(grad[1:]).all() and torch.isfinite(grad[0]).all()


def _real_gpu_reason():
    if not torch.cuda.is_available():
        return "torch has no CUDA device here (a CPU build, or no GPU)"
    from emdcli import gpu

    return gpu.unavailable_reason()


@pytest.mark.skipif(_real_gpu_reason() is not None, reason=str(_real_gpu_reason()))
@pytest.mark.parametrize("space", ["chain", "tree"])
def test_cuda_tensors_match_the_cpu(space):
    rng = np.random.default_rng(3)
    b, n = 257, 5
    sp = spaces(rng, n)[space]
    kw = {"positions": sp} if space == "chain" else {"tree": sp}
    x = torch.tensor(rng.normal(size=(b, n)), requires_grad=True)
    c = torch.from_numpy(rng.integers(0, n, b))
    c[3] = -100
    q = torch.tensor(rng.uniform(0.1, 1.0, (b, n)))
    xc = x.detach().cuda().requires_grad_(True)
    for t, opts in ((c, {"ce_weight": 0.5, "label_smoothing": 0.1}), (c, {}), (q, {"rho": 1.0})):
        want = et.emd_loss(x, t, **kw, **opts)
        g_want, = torch.autograd.grad(want, x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # torch's current stream is a side stream
            got = et.emd_loss(xc, t.cuda(), **kw, **opts)
            g_got, = torch.autograd.grad(got, xc)
        torch.cuda.current_stream().wait_stream(side)
        assert got.device.type == "cuda" and g_got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want)
        torch.testing.assert_close(g_got.cpu(), g_want)
    half = et.emd_loss(xc.detach().half(), c.cuda(), **kw)
    assert half.dtype == torch.float16
    bad = et.emd_loss(xc.detach(), torch.full((b,), n, device="cuda"), reduction="none", **kw)
    assert torch.isnan(bad).all()

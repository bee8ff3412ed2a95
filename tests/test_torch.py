"""``emdcli.torch``: the losses against pure-torch references and ``emdcli.emd``.

The references are written here in plain torch autograd, independent of the kernels:
the chain EMD^rho through ``torch.cumsum``, the tree HEMD^rho through an explicit dense
subtree-mass matrix A (nodes × bins, ``A_vk = [bin k lies under v]``), the ground
matrix's class form ``Σ_i p_i D_ic``, and the cross entropy through
``torch.nn.functional.cross_entropy`` (softmax) or ``−Σ q log p``. Every option goes
through ``torch.autograd.gradcheck`` in float64 on small shapes (``normalize="none"``
behind a softmax, since its gradient is projected onto the simplex); values and
gradients are compared with the reference, and values with ``emdcli.emd``.
"""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import emdcli  # noqa: E402
import emdcli.torch as et  # noqa: E402
from emdcli.spaces import Chain, Tree  # noqa: E402

B, N = 4, 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch and one Numba thread: these shapes are tiny, and on a shared machine a
    parallel region's wake-up costs more than the work (milliseconds per call)."""
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("torch",) + key).encode()))


def random_tree(rng, nodes=9, n_bins=N):
    """A random tree whose bins sit on leaves and internal nodes alike."""
    parents = [None, "v0", "v1"] + [f"v{rng.integers(0, v)}" for v in range(3, nodes)]
    weights = rng.uniform(0.5, 2.0, nodes)
    others = rng.choice(np.arange(2, nodes), n_bins - 1, replace=False)
    bins = [f"v{k}" for k in rng.permutation(np.r_[1, others])]  # v1 is internal
    return Tree.from_edges([f"v{v}" for v in range(nodes)], parents, weights, bins=bins)


def subtree_matrix(tree):
    """A (nodes, N) float64: 1 where bin k lies in the subtree of node v."""
    a = np.zeros((tree.n_nodes, tree.n))
    for k, v in enumerate(tree.bin_node):
        while v >= 0:
            a[v, k] = 1.0
            v = tree.parent[v]
    return torch.from_numpy(a)


# ----------------------------------------------------------------------- references


def ref_chain(positions, rho):
    d = torch.diff(torch.tensor(np.array(positions, dtype=np.float64)))

    def distance(p, q):
        phi = torch.cumsum(p - q, dim=1)[:, :-1]
        return (d * phi.abs() ** rho).sum(dim=1)

    return distance


def ref_tree(tree, rho):
    a, w = subtree_matrix(tree), torch.from_numpy(tree.weight)

    def distance(p, q):
        phi = (p - q) @ a.T
        return (w * phi.abs() ** rho).sum(dim=1)

    return distance


def ref_ground(matrix):
    d = torch.as_tensor(matrix, dtype=torch.float64)

    def distance(p, q):  # q one-hot rows
        return (p * (q @ d.T)).sum(dim=1)

    return distance


def ref_loss(x, target, distance, *, normalize="softmax", reduction="mean",
             ignore_index=-100, label_smoothing=0.0, ce_weight=0.0, rho=None):
    """The loss in plain torch: distance(p, q) + ce_weight · CE, then the reduction
    (rho is the distance's own)."""
    n = x.shape[1]
    p = {"softmax": lambda: torch.softmax(x, 1), "l1": lambda: x / x.sum(1, keepdim=True),
         "none": lambda: x}[normalize]()
    classes = target.dim() == 1
    if classes:
        keep = target != ignore_index
        q = F.one_hot(torch.where(keep, target, 0), n).to(x.dtype)
    else:
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        q = target / target.sum(1, keepdim=True) if normalize != "none" else target
    q = (1 - label_smoothing) * q + label_smoothing / n
    rows = distance(p, q)
    if ce_weight:
        if normalize == "softmax":
            ce = F.cross_entropy(x, target if classes else q, reduction="none",
                                 ignore_index=ignore_index,
                                 label_smoothing=label_smoothing if classes else 0.0)
        else:
            ce = -(q * torch.log(p)).sum(1)
        rows = rows + ce_weight * ce
    rows = torch.where(keep, rows, 0.0)
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / keep.sum()


# --------------------------------------------------------------------------- inputs


def inputs(rng, normalize, soft, b=B, n=N, dtype=torch.float64):
    """(input requiring grad, target): logits, or positive masses (l1), or logits that
    the test passes through a softmax first (none)."""
    if normalize == "l1":
        x = rng.uniform(0.2, 1.0, (b, n))
    else:
        x = rng.normal(0.0, 1.0, (b, n))
    x = torch.tensor(x, dtype=dtype, requires_grad=True)
    if soft:
        t = torch.tensor(rng.uniform(0.05, 1.0, (b, n)), dtype=dtype)
        if normalize == "none":
            t = t / t.sum(1, keepdim=True)
    else:
        t = torch.from_numpy(rng.integers(0, n, b))
    return x, t


def check_against_reference(x, t, distance, kwargs, space, fast=True):
    """gradcheck our loss (``fast``: along a random direction, torch's fast mode) and
    compare its value and gradient with the reference."""
    normalize = kwargs.get("normalize", "softmax")
    pre = (lambda z: torch.softmax(z, 1)) if normalize == "none" else (lambda z: z)

    def ours(z):
        return et.emd_loss(pre(z), t, **space, **kwargs)

    def ref(z):
        return ref_loss(pre(z), t, distance, **kwargs)

    assert torch.autograd.gradcheck(ours, (x,), eps=1e-6, atol=1e-6, fast_mode=fast)
    got, want = ours(x), ref(x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    seed = torch.ones_like(got) if got.dim() else torch.tensor(1.0, dtype=got.dtype)
    g_got, = torch.autograd.grad(got, x, seed)
    g_want, = torch.autograd.grad(want, x, seed)
    torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10)


OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"ce_weight": 0.7, "reduction": "sum"},
    {"ce_weight": 0.5, "label_smoothing": 0.1},
]
NORMALIZE = ["softmax", "l1", "none"]


CASES = [(nz, soft, rho) for nz in NORMALIZE for soft in (False, True) for rho in (2.0, 1.0)]


@pytest.mark.parametrize("normalize, soft, rho", CASES + [("softmax", False, 1.5),
                                                          ("l1", True, 3.0)])
def test_chain_gradcheck_against_cumsum_reference(normalize, soft, rho):
    rng = rng_for("chain", normalize, soft, rho)
    positions = np.cumsum(rng.uniform(0.2, 2.0, N))
    for i, opts in enumerate(OPTIONS):
        x, t = inputs(rng, normalize, soft)
        kwargs = dict(opts, normalize=normalize, rho=rho)
        space = {"positions": positions} if i % 2 else {"positions": Chain.from_positions(positions)}
        check_against_reference(x, t, ref_chain(positions, rho), kwargs, space, fast=i > 0)


def test_default_chain_is_unit_positions():
    rng = rng_for("unit")
    x, t = inputs(rng, "softmax", False)
    check_against_reference(x, t, ref_chain(np.arange(N), 2.0), {}, {})


@pytest.mark.parametrize("normalize, soft, rho", CASES + [("softmax", True, 1.5)])
def test_tree_gradcheck_against_subtree_matrix_reference(normalize, soft, rho):
    rng = rng_for("tree", normalize, soft, rho)
    for i, opts in enumerate(OPTIONS):
        tree = random_tree(rng)
        assert any(np.isin(tree.bin_node, tree.parent))  # some bin on an internal node
        x, t = inputs(rng, normalize, soft)
        kwargs = dict(opts, normalize=normalize, rho=rho)
        check_against_reference(x, t, ref_tree(tree, rho), kwargs, {"tree": tree}, fast=i > 0)


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_ground_matrix_gradcheck_class_targets(normalize):
    rng = rng_for("ground", normalize)
    for i, opts in enumerate(OPTIONS):
        if opts.get("label_smoothing"):
            continue
        d = rng.uniform(0.5, 3.0, (N, N))
        np.fill_diagonal(d, 0.0)
        x, t = inputs(rng, normalize, False)
        kwargs = dict(opts, normalize=normalize, rho=1.0)
        check_against_reference(x, t, ref_ground(d), kwargs, {"ground": d}, fast=i > 0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_ignore_index_rows_add_nothing_and_are_not_counted(reduction, smoothing):
    rng = rng_for("ignore", reduction, smoothing)
    x, _ = inputs(rng, "softmax", False, b=6)
    t = torch.tensor([0, -100, 4, 2, -100, 1])
    kwargs = {"reduction": reduction, "label_smoothing": smoothing, "ce_weight": 0.3}
    check_against_reference(x, t, ref_chain(np.arange(N), 2.0), kwargs, {})
    kept = t != -100
    rows = et.emd_loss(x, t, reduction="none", label_smoothing=smoothing, ce_weight=0.3)
    assert (rows[~kept] == 0).all()
    if reduction == "mean":
        mean = et.emd_loss(x, t, label_smoothing=smoothing, ce_weight=0.3)
        torch.testing.assert_close(mean, rows[kept].mean())
    grad, = torch.autograd.grad(et.emd_loss(x, t, reduction=reduction), x,
                                torch.ones(6, dtype=x.dtype) if reduction == "none" else None)
    assert (grad[~kept] == 0).all()
    custom = et.emd_loss(x.detach(), torch.where(kept, t, 3), ignore_index=3, reduction="none")
    assert (custom[~kept] == 0).all()
    beyond = et.emd_loss(x.detach(), torch.where(kept, t, N), ignore_index=N, reduction="none")
    assert (beyond[~kept] == 0).all() and torch.equal(beyond[kept], custom[kept])


@pytest.mark.parametrize("shape", [(7, N), (3000, 24)])  # (the second past the twins)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_backward_scales_by_grad_output_and_a_retained_graph_accumulates(reduction, dtype,
                                                                         shape):
    """The CPU step's gradient comes scaled by 1/B from the forward and is returned as it
    is for grad_output 1: any other grad_output, and a second backward through a retained
    graph, still give the exact product and sum."""
    rng = rng_for("scaled", reduction)
    x, t = inputs(rng, "softmax", False, b=shape[0], n=shape[1], dtype=dtype)
    x = x.detach().requires_grad_()
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    ref, = torch.autograd.grad(et.emd_loss(x, t, reduction=reduction), x)
    loss = et.emd_loss(x, t, reduction=reduction)
    (2.5 * loss).backward(retain_graph=True)
    torch.testing.assert_close(x.grad, 2.5 * ref, rtol=tol, atol=0.0)
    loss.backward(retain_graph=True)
    torch.testing.assert_close(x.grad, 3.5 * ref, rtol=tol, atol=0.0)
    loss.backward()
    torch.testing.assert_close(x.grad, 4.5 * ref, rtol=tol, atol=0.0)
    x.grad = None
    et.emd_loss(x, t, reduction=reduction).backward()
    assert torch.equal(x.grad, ref)


@pytest.mark.parametrize("space", ["chain", "tree"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mean_gradient_scaled_in_the_kernels_write_is_the_rows_gradient_over_b(space, dtype,
                                                                              monkeypatch):
    """Batches the lanes kernels take (here 3001 × 40) get the mean's 1/B inside the
    kernel's write of the gradient: the same gradient as the rows' (reduction none, no
    scale) over B."""
    from emdcli import api

    rng = rng_for("fused", space, str(dtype))
    b, n = 3001, 40
    kwargs = {"tree": random_tree(rng, nodes=60, n_bins=n)} if space == "tree" else {}
    x, t = inputs(rng, "softmax", False, b=b, n=n, dtype=dtype)
    scales, call = [], api.LanesStep.__call__

    def spy(self, z, c, values, g, scale=1.0):
        scales.append(scale)
        return call(self, z, c, values, g, scale)

    monkeypatch.setattr(api.LanesStep, "__call__", spy)
    mean, = torch.autograd.grad(et.emd_loss(x, t, **kwargs), x)
    rows_, = torch.autograd.grad(et.emd_loss(x, t, reduction="none", **kwargs), x,
                                 torch.ones(b, dtype=dtype))
    assert scales == [1.0 / b, 1.0]
    tol = 1e-15 if dtype == torch.float64 else 1e-7
    torch.testing.assert_close(mean, rows_ / b, rtol=tol, atol=tol * float(rows_.abs().max()) / b)


def test_all_rows_ignored_mean_is_nan_like_cross_entropy():
    x = torch.zeros(2, 3, requires_grad=True)
    t = torch.tensor([-100, -100])
    assert torch.isnan(et.emd_loss(x, t)) and torch.isnan(F.cross_entropy(x, t))


def test_ce_weight_adds_torch_cross_entropy():
    rng = rng_for("ce")
    x, t = inputs(rng, "softmax", False)
    for eps in (0.0, 0.25):
        emd = et.emd_loss(x, t, label_smoothing=eps)
        both = et.emd_loss(x, t, label_smoothing=eps, ce_weight=2.0)
        ce = F.cross_entropy(x, t, label_smoothing=eps)
        torch.testing.assert_close(both, emd + 2.0 * ce)
    _, q = inputs(rng, "softmax", True)
    q = q / q.sum(1, keepdim=True)
    diff = et.emd_loss(x, q, ce_weight=1.0) - et.emd_loss(x, q)
    torch.testing.assert_close(diff, F.cross_entropy(x, q))


# ------------------------------------------------------------ values, dtypes, module


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("rho", [1.0, 2.0, 3.0])
def test_values_equal_emdcli_emd(normalize, rho):
    rng = rng_for("values", normalize, rho)
    positions = np.cumsum(rng.uniform(0.2, 2.0, N))
    tree = random_tree(rng)
    x, q = inputs(rng, normalize, True)
    x = x.detach()
    if normalize == "none":
        x = torch.softmax(x, 1)
    c = torch.from_numpy(rng.integers(0, N, B))
    for space, kw in ((Chain.from_positions(positions), {"positions": positions}),
                      (tree, {"tree": tree})):
        for t in (q, c):
            got = et.emd_loss(x, t, rho=rho, normalize=normalize, reduction="none", **kw)
            want = emdcli.emd(x.numpy(), t.numpy(), space=space, rho=rho, normalize=normalize)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)
    if rho == 2.0:
        got = et.emd_loss(x, c, normalize=normalize, reduction="none")
        np.testing.assert_allclose(got.numpy(), emdcli.emd2(x.numpy(), c.numpy(), normalize=normalize))


def test_float32_agrees_with_float64():
    rng = rng_for("f32")
    tree = random_tree(rng, nodes=20, n_bins=12)
    for kw in ({"positions": np.cumsum(rng.uniform(0.5, 1.5, 12))}, {"tree": tree}):
        for soft in (False, True):
            x64, t = inputs(rng, "softmax", soft, b=8, n=12)
            x32 = x64.detach().float().requires_grad_(True)
            t32 = t.float() if soft else t
            l64, l32 = et.emd_loss(x64, t, ce_weight=0.5, **kw), et.emd_loss(x32, t32, ce_weight=0.5, **kw)
            assert l32.dtype == torch.float32
            g64, = torch.autograd.grad(l64, x64)
            g32, = torch.autograd.grad(l32, x32)
            torch.testing.assert_close(l32.double(), l64, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_batches_through_the_kernels_softmax_match_the_reference(rho):
    """Batches past the small-batch path: the softmax (float64) or its chain rule
    (float32, softmax in torch) run inside the lanes kernels; both against the reference,
    soft targets and classes, reduction none, ignore_index, a chain and a tree."""
    rng = rng_for("kernel-softmax", rho)
    tree = random_tree(rng, nodes=40, n_bins=24)
    positions = np.cumsum(rng.uniform(0.5, 1.5, 24))
    for space, distance in (({"positions": positions}, ref_chain(positions, rho)),
                            ({"tree": tree}, ref_tree(tree, rho))):
        for soft in (False, True):
            x64, t = inputs(rng, "softmax", soft, b=3000, n=24)
            if not soft:
                t[::7] = -100
            want = ref_loss(x64, t, distance, reduction="none")
            g_want, = torch.autograd.grad(want.sum(), x64)
            for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
                x = x64.detach().to(dtype).requires_grad_(True)
                got = et.emd_loss(x, t.to(dtype) if soft else t, rho=rho, reduction="none",
                                  **space)
                g_got, = torch.autograd.grad(got.sum(), x)
                torch.testing.assert_close(got.double(), want.detach(), rtol=tol, atol=tol)
                torch.testing.assert_close(g_got.double(), g_want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32_and_return_their_dtype(dtype):
    rng = rng_for("half", str(dtype))
    x, t = inputs(rng, "softmax", False, dtype=dtype)
    loss = et.emd_loss(x, t, ce_weight=0.5)
    assert loss.dtype == dtype
    loss.backward()
    assert x.grad.dtype == dtype
    x32 = x.detach().float().requires_grad_(True)
    ref = et.emd_loss(x32, t, ce_weight=0.5)
    ref.backward()
    tol = 1e-2 if dtype == torch.float16 else 3e-2
    torch.testing.assert_close(loss.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad.float(), x32.grad.to(dtype).float(), rtol=tol, atol=tol)
    rows = et.emd_loss(x.detach(), t.float().new_ones(B, N).to(dtype), reduction="none")
    assert rows.dtype == dtype and rows.shape == (B,)


def test_module_matches_function_and_reads_a_tree_file(tmp_path):
    rng = rng_for("module")
    tree = random_tree(rng)
    path = tmp_path / "tree.csv"
    lines = ["node,parent,weight"] + [
        f"{tree.names[v]},{tree.names[tree.parent[v]] if v else ''},{float(tree.weight[v])!r}"
        for v in range(tree.n_nodes)]
    path.write_text("\n".join(lines) + "\n")
    from emdcli.treefiles import load_tree

    file_tree = load_tree(path, bins=tree.bin_names)
    x, t = inputs(rng, "softmax", False)
    kwargs = {"rho": 1.5, "ce_weight": 0.2, "label_smoothing": 0.05}
    criterion = et.EMDLoss(tree=file_tree, **kwargs)
    assert "space=tree, bins=5" in repr(criterion)
    torch.testing.assert_close(criterion(x, t), et.emd_loss(x, t, tree=tree, **kwargs))
    leaf_tree = load_tree(path)
    by_path = et.EMDLoss(tree=str(path))
    assert by_path.space.n == leaf_tree.n


def test_training_moves_mass_toward_the_target():
    torch.manual_seed(0)
    n, b = 8, 64
    feats = torch.randn(b, 6)
    target = (feats[:, 0] * 2 + 4).clamp(0, n - 1).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, n))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    criterion = et.EMDLoss(ce_weight=0.1)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = criterion(model(feats), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    with torch.no_grad():
        p = torch.softmax(model(feats), 1)
    expected = (p * torch.arange(n)).sum(1)
    assert (expected - target).abs().mean() < 1.0


def test_torch_compile_fullgraph_matches_eager():
    rng = rng_for("compile")
    tree = random_tree(rng)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, N))
    criterion = et.EMDLoss(tree=tree, ce_weight=0.3, label_smoothing=0.1)

    def step(x, t):
        return (criterion(model(x), t) + et.emd_loss(model(x), t, ignore_index=1)
                + 0.5 * et.emd_loss(model(x), t, reduction="none", ignore_index=2).sum()
                + et.emd_loss(model(x), t, reduction="sum", ce_weight=0.2))

    x, t = torch.randn(6, 3), torch.tensor([0, 1, 4, 2, 3, 1])
    eager = step(x, t)
    g_eager = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = compiled(x, t)
    g_got = torch.autograd.grad(got, list(model.parameters()))
    torch.testing.assert_close(got, eager)
    for a, b in zip(g_got, g_eager):
        torch.testing.assert_close(a, b)


def test_double_backward_is_a_clear_error():
    x, t = inputs(rng_for("double"), "softmax", False)
    grad, = torch.autograd.grad(et.emd_loss(x, t), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(grad.sum(), x)


def test_import_emdcli_does_not_import_torch():
    code = ("import sys, numpy as np, emdcli, emdcli.api, emdcli.spaces, emdcli.rows, emdcli.gpu; "
            "emdcli.emd(np.ones((1, 3)), np.array([0])); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_training_example_runs_and_the_loss_drops(capsys):
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md")).read()
    section = readme.split("### Training with PyTorch", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    losses = [float(line.split()[3]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) == 5 and losses[-1] < 0.3 * losses[0]

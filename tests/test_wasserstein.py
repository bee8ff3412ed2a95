"""W_p^p on the line (quantile form) against POT, SciPy and our EMD; its gradient by
finite differences along mass-conserving directions; the CLI metric."""

import subprocess
import sys

import numpy as np
import pytest

import emdcli
from emdcli.errors import EMDInputError
from emdcli.wasserstein import wasserstein

ot = pytest.importorskip("ot")


def _case(seed, b=6, n=9, zeros=False):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.random(n) + 0.05) * 3
    p, q = rng.random((b, n)), rng.random((b, n))
    if zeros:
        p[:, ::3] = 0.0
        q[:, 1::4] = 0.0
    return x, p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True), rng.integers(0, n, b)


@pytest.mark.parametrize("power", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("zeros", [False, True])
def test_equals_pot(power, zeros):
    x, p, q, c = _case(int(power * 10) + zeros, zeros=zeros)
    got = wasserstein(p, q, positions=x, p=power)
    want = [ot.wasserstein_1d(x, x, p[i], q[i], p=power) for i in range(len(p))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    onehot = np.eye(len(x))[c]
    got = wasserstein(p, c, positions=x, p=power)
    want = [ot.wasserstein_1d(x, x, p[i], onehot[i], p=power) for i in range(len(p))]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _walk_reference(a, b, x, power):
    """The merge of the two CDFs in plain Python, one row: W_p^p and the projected
    potentials of a (the kernels' operations in the kernels' order)."""
    n = len(x)
    cost = lambda i, j: abs(x[i] - x[j]) ** power
    i = j = 0
    fa, fb, t, total = a[0], b[0], 0.0, 0.0
    c = cost(0, 0)
    phi, psi, g = 0.0, c, np.zeros(n)
    while True:
        top = min(fa, fb)
        if top > t:
            total += (top - t) * c
            t = top
        if i == n - 1 and j == n - 1:
            break
        if j == n - 1 or (i < n - 1 and fa <= fb):
            i += 1
            fa += a[i]
            c = cost(i, j)
            phi = g[i] = c - psi
        else:
            j += 1
            fb += b[j]
            c = cost(i, j)
            psi = c - phi
    return total, g - g[1:].sum() / n


@pytest.mark.parametrize("power", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_rows_side_by_side_and_costs_table(power, n):
    """Four rows merged side by side, the rest one at a time, the N × N cost table (other
    p, enough rows) or pow at each step (too few rows): W_p^p and the potentials are
    those of a plain walk, to rounding, whatever the batch; and each row's values do not
    depend on the rows beside it (the same bits alone)."""
    rng = np.random.default_rng(n)
    b = 4 * 5 + 3
    x = np.cumsum(rng.random(n) + 0.1)
    p, q = rng.random((b, n)), rng.random((b, n))
    if n > 2:  # zero masses, rows still with mass
        p[:, ::4] = 0.0
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    v, g = wasserstein(p, q, positions=x, p=power, gradient=True, normalize="none")
    for r in range(b):
        want_v, want_g = _walk_reference(p[r], q[r], x, power)
        np.testing.assert_allclose(v[r], want_v, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(g[r], want_g, rtol=1e-12, atol=1e-13 * max(1.0, abs(want_g).max()))
    for r in (0, 5, b - 1):  # alone: one row at a time, and (other p) no table
        v1, g1 = wasserstein(p[r:r + 1], q[r:r + 1], positions=x, p=power, gradient=True,
                             normalize="none")
        np.testing.assert_array_equal(v1, v[r:r + 1])
        np.testing.assert_array_equal(g1, g[r:r + 1])
    np.testing.assert_array_equal(wasserstein(p, q, positions=x, p=power, normalize="none"), v)


def test_p1_is_the_emd_and_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    x, p, q, c = _case(3)
    w = wasserstein(p, q, positions=x, p=1)
    np.testing.assert_allclose(w, emdcli.emd(p, q, positions=x), rtol=1e-13)
    np.testing.assert_allclose(w, [scipy_stats.wasserstein_distance(x, x, p[i], q[i])
                                   for i in range(len(p))], rtol=1e-13)
    np.testing.assert_allclose(wasserstein(p, c, positions=x, p=1),
                               emdcli.emd(p, c, positions=x), rtol=1e-13)


def test_differs_from_emd_rho():
    """W_2^2 integrates squared quantile gaps over the mass, EMD² squared CDF gaps over x."""
    p, q = np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 1.0]])
    assert wasserstein(p, q, p=2)[0] == 4.0  # all mass moves 2: 2²
    assert emdcli.emd2(p, q)[0] == 2.0  # |ΔCDF| = 1 over two unit gaps


@pytest.mark.parametrize("power", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("target", ["rows", "classes"])
def test_gradient_by_finite_differences(power, target):
    x, p, q, c = _case(7)
    t = q if target == "rows" else c
    _, g = wasserstein(p, t, positions=x, p=power, normalize="none", gradient=True)
    np.testing.assert_allclose(g.sum(1), 0, atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(3):
        d = rng.normal(size=p.shape)
        d -= d.mean(1, keepdims=True)  # mass-conserving
        h = 1e-6
        f = lambda s: wasserstein(p + s * d, t, positions=x, p=power, normalize="none", check=False)
        fd = (f(h) - f(-h)) / (2 * h)
        np.testing.assert_allclose((g * d).sum(1), fd, rtol=1e-5, atol=1e-8)


def test_float32_gradient_wrt_input_and_bad_input():
    x, p, q, c = _case(9)
    v64 = wasserstein(p, q, positions=x, p=2)
    v32 = wasserstein(p.astype(np.float32), q, positions=x, p=2, dtype="float32")
    assert v32.dtype == np.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    _, gz = wasserstein(np.log(p), c, positions=x, p=2, normalize="softmax", gradient=True,
                        grad_wrt="input")
    _, gp = wasserstein(p, c, positions=x, p=2, gradient=True)
    np.testing.assert_allclose(gz, p * (gp - (gp * p).sum(1, keepdims=True)), atol=1e-12)
    with pytest.raises(EMDInputError, match="p must be a finite number >= 1"):
        wasserstein(p, q, p=0.5)
    from emdcli.spaces import Tree

    tree = Tree.from_edges(list("rab"), ["", "r", "r"])
    with pytest.raises(EMDInputError, match="on the line"):
        wasserstein(p[:, :2], q[:, :2], space=tree, p=2)


def test_cli_metric(tmp_path):
    x, p, q, c = _case(11, b=50)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", c)
    np.savetxt(tmp_path / "x.txt", x)

    def emd(*args):
        return subprocess.run([sys.executable, "-m", "emdcli.cli", "compute", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    r = emd(tmp_path / "p.npy", tmp_path / "c.npy", "--positions", tmp_path / "x.txt",
            "--metric", "wasserstein", "--p", "1.5", "-q")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "row,wasserstein_p"
    got = np.array([float(ln.split(",")[1]) for ln in lines[1:]])
    np.testing.assert_array_equal(got, wasserstein(p, c, positions=x, p=1.5))
    for args, needle in ((["--metric", "wasserstein"], "needs --p"),
                         (["--p", "2"], "--p applies only to --metric wasserstein"),
                         (["--metric", "wasserstein", "--p", "2", "--rho", "2"], "--rho does not apply"),
                         (["--metric", "wasserstein", "--p", "2", "--tree", tmp_path / "t.csv"],
                          "defined on the line")):
        r = emd(tmp_path / "p.npy", tmp_path / "c.npy", *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

"""The softmax inside the lanes kernels (``kernels.softmax``): its exponential against
libm's, and the chain and tree kernels under a softmax — logits in, or a softmax's
output in — against the softmax in numpy, the kernels on the distributions and the
chain rule in numpy, and the obviously-correct references of ``tests/naive.py``;
``emdcli.emd(normalize="softmax")`` and ``emdcli.api.emd_softmax`` on batches large
enough to take that path, NaN and −inf logits, the ``out`` arrays, and the torch
operators' reused buffers.
"""

import numpy as np
import pytest
from numba import njit

import emdcli
from emdcli import api, rows
from emdcli.errors import EMDInputError
from emdcli.kernels import softmax as sm
from emdcli.kernels.chain_lanes import LaneRows, chain_lanes, lanes_width
from emdcli.spaces import Ground, Tree

import naive


@njit(cache=True)
def _exp_all(r, out):
    for i in range(r.shape[0]):
        out[i] = sm.exp_le0(r[i])


def test_exp_within_an_ulp_of_libm():
    r = -np.concatenate([np.linspace(0.0, 708.39, 400_001), np.geomspace(1e-300, 1.0, 10_001),
                         np.random.default_rng(0).exponential(5.0, 100_000)])
    r = r[r >= sm.EXP_MIN]
    out = np.empty_like(r)
    _exp_all(r, out)
    ref = np.exp(r)
    ulps = np.abs(out - ref) / np.spacing(ref)
    assert ulps.max() <= 1.0
    assert out[r == 0.0].tolist() == [1.0] * int((r == 0.0).sum())


def test_exp_special_values():
    r = np.array([-np.inf, np.nan, -0.0, -708.4, -745.0, -1e308, -np.finfo(float).tiny])
    out = np.empty_like(r)
    _exp_all(r, out)
    assert out[0] == 0.0 and np.isnan(out[1]) and out[2] == 1.0
    assert out[3] == out[4] == out[5] == 0.0  # below 2^-1022: flushed to +0
    assert out[6] == 1.0


@njit(cache=True, fastmath={"contract"})
def _softmax_loop(PT, m, s):
    """The tile softmax as a Numba loop over exp_le0 (FMA contraction inside the
    exponential only): what kernels.softmax.softmax_lanes computes in LLVM IR."""
    n, lanes = PT.shape
    for j in range(lanes):
        m[j] = PT[0, j]
        s[j] = 0.0
    for i in range(1, n):
        for j in range(lanes):
            z = PT[i, j]
            m[j] = z if z > m[j] else m[j]
    for i in range(n):
        for j in range(lanes):
            e = sm.exp_le0(PT[i, j] - m[j])
            PT[i, j] = e
            s[j] += e
    for j in range(lanes):
        s[j] = 1.0 / s[j]
    for i in range(n):
        for j in range(lanes):
            PT[i, j] *= s[j]


@njit(cache=True)
def _softmax_tile(PT, m, s):
    sm.softmax_lanes(PT, m, s)


def test_tile_softmax_gives_the_scalar_loops_bits():
    """softmax_lanes (vectors of 8 in IR) == the loop over exp_le0, bit for bit: logits of
    every scale, −inf (masked classes, a whole column), NaN and +inf (NaN columns)."""
    rng = np.random.default_rng(7)
    for trial in range(120):
        n = int(rng.integers(1, 700)) if trial else 1
        z = rng.standard_normal((n, 32)) * rng.choice([1e-3, 1.0, 10.0, 300.0, 2000.0])
        for every, value in ((4, -np.inf), (7, np.nan), (9, np.inf)):
            if trial % every == 1:
                z[rng.integers(0, n, 3), rng.integers(0, 32, 3)] = value
        if trial % 10 == 3:
            z[:, 5] = -np.inf
        a, b = z.copy(), z.copy()
        m1, s1, m2, s2 = (np.full(32, 7.0) for _ in range(4))
        _softmax_loop(a, m1, s1)
        _softmax_tile(b, m2, s2)
        for x, y in ((a, b), (m1, m2), (s1, s2)):
            np.testing.assert_array_equal(x.view(np.int64), y.view(np.int64))
    rows_ = rng.standard_normal((50, 32))
    p = rows_.copy()
    _softmax_tile(p, np.empty(32), np.empty(32))
    np.testing.assert_allclose(p, rows.softmax(rows_.T).T, rtol=1e-15, atol=0)


def _softmax_rows(seed, b, n, dtype, scale=3.0):
    rng = np.random.default_rng(seed)
    z = (scale * rng.standard_normal((b, n))).astype(dtype)
    return rng, z


def _reference(z, q, c, d, rho, chain_rule):
    """numpy softmax (float64), the naive chain EMD^rho and its gradient, numpy chain rule."""
    p = rows.softmax(z.astype(np.float64))
    x = np.concatenate([[0.0], np.cumsum(d)])
    values, grads = [], []
    for i in range(z.shape[0]):
        qi = np.eye(z.shape[1])[c[i]] if c is not None else q[i] / q[i].sum()
        values.append(naive.emd_rho(p[i], qi, x, rho))
        grads.append(naive.emd_rho_grad(p[i], qi, x, rho))
    g = np.array(grads)
    if chain_rule:
        g = p * (g - (g * p).sum(axis=1, keepdims=True))
    return np.array(values), g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rho", [1.0, 2.0])
@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("b,n", [(32, 2), (70, 13), (97, 8), (33, 101)])
def test_chain_lanes_under_a_softmax(dtype, rho, classes, b, n):
    rng, z = _softmax_rows(b * 100 + n, b, n, dtype)
    q = (rng.random((b, n)) + 1e-3).astype(dtype)
    c = rng.integers(0, n, b)
    d = np.diff(np.cumsum(rng.random(n) + 0.1))
    sq = 1.0 / q.sum(axis=1, dtype=np.float64)
    tol = 1e-12 if dtype == np.float64 else 3e-6
    for logits in (True, False):
        x = z if logits else rows.softmax(z.astype(np.float64)).astype(dtype)
        for chain_rule in (False, True):
            out = np.full(b, np.nan, dtype=dtype)
            G = np.full((b, n), np.nan, dtype=dtype)
            lane_rows = LaneRows(x, x if classes else q, c if classes else np.empty(0, np.int64),
                                 np.empty(0), np.empty(0) if classes else sq)
            mode = sm.Softmax(logits, chain_rule)
            chain_lanes(lane_rows, d, rho, out, G, np.empty((3, lanes_width(n, mode))), mode)
            v0, g0 = _reference(z, None if classes else q, c if classes else None, d, rho,
                                chain_rule)
            np.testing.assert_allclose(out, v0, rtol=tol, atol=tol)
            np.testing.assert_allclose(G, g0, rtol=tol, atol=tol * np.abs(g0).max())


def _random_tree(seed, nodes, n_bins):
    rng = np.random.default_rng(seed)
    parent = np.array([-1] + [int(rng.integers(0, v)) for v in range(1, nodes)])
    weight = np.concatenate([[0.0], rng.random(nodes - 1) + 0.1])
    bins = rng.choice(nodes, size=n_bins, replace=False)  # internal nodes too
    tree = Tree.from_edges([str(v) for v in range(nodes)],
                           [""] + [str(u) for u in parent[1:]], weight,
                           bins=[str(v) for v in bins])
    up = {v: (None if v == 0 else int(parent[v])) for v in range(nodes)}  # naive's form
    return tree, up, dict(enumerate(weight)), [int(v) for v in bins]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rho", [1.0, 2.0])
@pytest.mark.parametrize("classes", [False, True])
def test_tree_under_a_softmax_against_the_naive_tree(dtype, rho, classes):
    tree, parent, weight, bins = _random_tree(7, 40, 25)
    b, n = 3000, 25  # past rows.SMALL_ELEMENTS: the lanes kernels' softmax
    rng, z = _softmax_rows(11, b, n, dtype)
    t = rng.integers(0, n, b) if classes else (rng.random((b, n)) + 1e-3).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 3e-6
    for wrt in ("distribution", "input"):
        v, g = emdcli.emd(z, t, space=tree, rho=rho, normalize="softmax", dtype=dtype.__name__,
                          gradient=True, grad_wrt=wrt)
        p = rows.softmax(z.astype(np.float64))
        for i in range(0, b, 97):
            qi = np.eye(n)[t[i]] if classes else t[i] / t[i].sum()
            gi = naive.hemd_grad(p[i], qi, parent, weight, bins, rho)
            if wrt == "input":
                gi = p[i] * (gi - gi @ p[i])
            assert v[i] == pytest.approx(naive.hemd(p[i], qi, parent, weight, bins, rho),
                                         rel=tol, abs=tol)
            np.testing.assert_allclose(g[i], gi, rtol=tol, atol=tol * np.abs(gi).max())


@pytest.mark.parametrize("n", [32, 300])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_emd_softmax_matches_the_distribution_path(n, dtype):
    b = 4000 if n == 32 else 400
    rng, z = _softmax_rows(3, b, n, dtype)
    c = rng.integers(0, n, b)
    q = rng.random((b, n))
    tol = 1e-12 if dtype == "float64" else 3e-6
    for t in (c, q):
        for rho in (1.0, 2.0):
            v, g = emdcli.emd(z, t, rho=rho, normalize="softmax", dtype=dtype, gradient=True,
                              grad_wrt="input")
            p = rows.softmax(z.astype(np.float64))
            v0, g0 = emdcli.emd(p, t, rho=rho, normalize="none" if t is c else "l1",
                                gradient=True)
            g0 = rows.input_gradient(g0, p, rows.unit_scale(), "softmax")
            np.testing.assert_allclose(v, v0, rtol=tol, atol=tol)
            np.testing.assert_allclose(g, g0, rtol=tol, atol=tol * np.abs(g0).max())
            assert np.array_equal(emdcli.emd(z, t, rho=rho, normalize="softmax", dtype=dtype),
                                  v)  # values alone: the same bits
            pz = p.astype(dtype)  # a softmax's output in: the gradient through it
            v1, g1 = api.emd_softmax(pz, t if t is c else q / q.sum(axis=1, keepdims=True),
                                     rho=rho, dtype=dtype)
            np.testing.assert_allclose(v1, v0, rtol=10 * tol, atol=10 * tol)
            np.testing.assert_allclose(g1, g0, rtol=10 * tol, atol=10 * tol * np.abs(g0).max())


def test_emd_softmax_where_the_lanes_do_not_run():
    """Small batches, a ground matrix, rho 3: the chain rule in numpy, the same answer."""
    rng, z = _softmax_rows(5, 40, 6, np.float64)
    p = rows.softmax(z)
    c = rng.integers(0, 6, 40)
    D = np.abs(np.subtract.outer(np.arange(6.0), np.arange(6.0)))
    for kw in ({"rho": 2.0}, {"rho": 3.0}, {"space": Ground.from_matrix(D)}):
        v, g = api.emd_softmax(p, c, **kw)
        v0, g0 = emdcli.emd(z, c, normalize="softmax", gradient=True, grad_wrt="input", **kw)
        np.testing.assert_allclose(v, v0, rtol=1e-13)
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", ["chain lanes", "tree lanes", "small", "ground"])
def test_emd_softmax_writes_its_gradient_over_p(case):
    """out's gradient array may be p itself (what emdcli.torch passes): the same values and
    the same bits of the gradient as into a separate array, on every path."""
    b, n = (40, 6) if case in ("small", "ground") else (2048 + 17, 33)  # (past the twins)
    rng, z = _softmax_rows(11, b, n, np.float32)
    p = rows.softmax(z.astype(np.float64)).astype(np.float32)
    c = rng.integers(0, n, b)
    kw = {"rho": 2.0, "dtype": "float32"}
    if case == "tree lanes":
        kw["space"] = _random_tree(12, 50, n)[0]
    if case == "ground":
        kw = {"dtype": "float32",
              "space": Ground.from_matrix(np.abs(np.subtract.outer(np.arange(n), np.arange(n))))}
    v0, g0 = api.emd_softmax(p, c, **kw)
    over = p.copy()
    v, g = api.emd_softmax(over, c, out=(np.empty(b, np.float32), over), **kw)
    assert g is over and np.array_equal(v, v0) and np.array_equal(g, g0)


def test_nan_and_masked_logits_in_the_kernels():
    rng, z = _softmax_rows(9, 4096, 32, np.float64)
    z[3, 5] = -np.inf  # masked: p = 0 there, the row finite
    z[7, 2], z[9, 4], z[11, :] = np.nan, np.inf, -np.inf
    for dtype in ("float32", "float64"):
        v, g = emdcli.emd(z.astype(dtype), np.zeros(4096, np.int64), rho=2.0,
                          normalize="softmax", dtype=dtype, gradient=True, grad_wrt="input",
                          check=False)
        assert np.isnan(v[[7, 9, 11]]).all() and np.isnan(g[[7, 9, 11]]).all()
        assert np.isfinite(np.delete(v, [7, 9, 11])).all() and np.isfinite(g[3]).all()
        assert g[3, 5] == 0.0
    with pytest.raises(EMDInputError, match="row 3, column 5"):
        emdcli.emd(z, np.zeros(4096, np.int64), normalize="softmax")


def test_out_arrays():
    rng, z = _softmax_rows(2, 3000, 32, np.float32)
    c = rng.integers(0, 32, 3000)
    out = (np.empty(3000, np.float32), np.empty((3000, 32), np.float32))
    v, g = emdcli.emd(z, c, normalize="softmax", dtype="float32", gradient=True,
                      grad_wrt="input", out=out)
    assert v is out[0] and g is out[1]
    v0, g0 = emdcli.emd(z, c, normalize="softmax", dtype="float32", gradient=True,
                        grad_wrt="input")
    assert np.array_equal(v, v0) and np.array_equal(g, g0)
    v = emdcli.emd(z, c, normalize="softmax", dtype="float32", out=(out[0], None))
    assert v is out[0] and np.array_equal(v, v0)
    l1 = np.abs(z) + 0.1
    _, g = emdcli.emd(l1, c, dtype="float32", gradient=True, grad_wrt="input", out=out)
    assert g is out[1] and np.array_equal(g, emdcli.emd(l1, c, dtype="float32", gradient=True,
                                                         grad_wrt="input")[1])
    for bad in ((np.empty(3000), out[1]), (out[0], np.empty((3000, 31), np.float32)),
                (out[0], np.empty((32, 3000), np.float32).T)):
        with pytest.raises(EMDInputError, match="out arrays"):
            emdcli.emd(l1, c, dtype="float32", gradient=True, out=bad)


def test_torch_buffers_are_reused_only_when_free():
    torch = pytest.importorskip("torch")
    from emdcli.torch import _buffers

    a = _buffers.empty((5, 7), np.float32)
    first = id(a)  # (the pool keeps it alive, so the id stays its own)
    t = torch.from_numpy(a)
    view = t[1:]
    del a
    b = _buffers.empty((5, 7), np.float32)
    assert id(b) != first  # still referred to, by t and its view
    del t
    c = _buffers.empty((5, 7), np.float32)
    assert id(c) not in (first, id(b))  # the view still holds it; b is held here
    del view
    assert id(_buffers.empty((5, 7), np.float32)) == first  # free now: handed out again
    assert _buffers.empty((5, 7), np.float64).dtype == np.float64

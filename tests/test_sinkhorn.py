"""The Sinkhorn distance (SPEC.md section 1, "Sinkhorn distance (SD)") at the library level.

References:
- POT's ``ot.sinkhorn2(p, q, M, reg=1/λ)`` run to a tight threshold (the converged SD) and
  POT's plan ``ot.sinkhorn`` (the entropic objective, for finite differences);
- ``naive.sinkhorn_alg1``: the paper's Algorithm 1 transcribed literally for one row
  (``iterations`` counts the updates of u, so with ``tol=0`` a run of ``iters`` must equal
  ``sinkhorn_alg1(..., iters)`` in value *and* gradient);
- the exact EMD (``emdcli.emd``) for the large-λ and one-hot cases;
- the kernels against each other: structured (chain forward/backward, tree up/down passes)
  against the dense matrix of the same space, the log form against the plain form, a row
  in a batch against the same row alone.

Spaces: chains with random (non-uniform) positions and unit chains, random trees (random
parents, file order shuffled, real weights with some zero-cost edges, bins on the leaves or
on a random mix of internal nodes and leaves, the root included), random ground matrices
(metric and non-metric, asymmetric), and the sample WordNet tree.
"""

import os
import sys
import zlib

import numpy as np
import ot
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emdcli
from emdcli import EMDInputError, rows
from emdcli.sinkhorn import CONVERGED_TOL, SinkhornResult, check_params, sinkhorn
from emdcli.spaces import Chain, Ground, Tree
from emdcli.treefiles import load_tree, read_bins

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive  # noqa: E402
from common import WORDNET, IMAGENET_BINS, IMAGENET_PRED  # noqa: E402


SPACE_KINDS = ["chain", "chain-unit", "tree-leaves", "tree-mixed", "ground-metric", "ground-odd"]
STRUCTURED_KINDS = SPACE_KINDS[:4]  # the spaces with a structured (O(N)) Gibbs kernel
FORMS = ["plain", "log"]
KERNELS = ["structured", "dense", "auto"]
LAMS = [0.5, 2.0, 8.0]
B = 4


# ----------------------------------------------------------------------------- helpers


def rng_for(*key):
    """A reproducible generator per test case."""
    return np.random.default_rng(zlib.crc32(repr(("sinkhorn",) + key).encode()))


def random_tree(rng, n_nodes, bins="leaves"):
    """Random parents (bushy or path-like), random node names, a shuffled file order,
    real weights in [0.1, 2] with about one edge in six of cost 0, and bins on the
    leaves (file order) or on a random mix of nodes (internal ones and the root too)."""
    style = rng.uniform()
    up = [-1] + [i - 1 if rng.uniform() < 0.6 * style else int(rng.integers(0, i))
                 for i in range(1, n_nodes)]
    names = [f"v{i}_{int(rng.integers(0, 10**6))}" for i in range(n_nodes)]
    w = np.where(rng.uniform(size=n_nodes) < 1 / 6, 0.0, rng.uniform(0.1, 2.0, n_nodes))
    order = rng.permutation(n_nodes)
    nodes = [names[i] for i in order]
    parents = [names[up[i]] if up[i] >= 0 else "" for i in order]
    weights = [0.0 if up[i] < 0 else float(w[i]) for i in order]
    chosen = None
    if bins == "mixed":
        k = int(rng.integers(max(2, n_nodes // 2), n_nodes + 1))
        chosen = [nodes[i] for i in rng.permutation(n_nodes)[:k]]
        chosen[0] = names[0]  # the root carries a bin
        chosen = list(dict.fromkeys(chosen))
    return Tree.from_edges(nodes, parents, weights, bins=chosen)


def make_space(kind, rng, n=None):
    """(space, ground matrix M) of a kind in SPACE_KINDS."""
    if kind == "chain":
        n = n or int(rng.integers(5, 13))
        space = Chain.from_positions(np.cumsum(rng.uniform(0.1, 1.5, n)) - 3.0)
    elif kind == "chain-unit":
        space = Chain.uniform(n or int(rng.integers(5, 13)))
    elif kind in ("tree-leaves", "tree-mixed"):
        while True:
            space = random_tree(rng, n or int(rng.integers(6, 16)), kind.split("-")[1])
            on_internal = (space.count[space.bin_node] > 1).any()
            if space.n >= 3 and (on_internal or kind == "tree-leaves"):
                break
    elif kind == "ground-metric":
        n = n or int(rng.integers(5, 13))
        pts = rng.normal(size=(n, 2)) * 2.0
        space = Ground.from_matrix(np.linalg.norm(pts[:, None] - pts[None, :], axis=2))
    elif kind == "ground-odd":  # asymmetric, breaks the triangle inequality, zero off-diagonals
        n = n or int(rng.integers(5, 13))
        m = rng.uniform(0.0, 4.0, (n, n)) * (rng.uniform(size=(n, n)) < 0.9)
        np.fill_diagonal(m, 0.0)
        space = Ground.from_matrix(m)
    else:
        raise ValueError(kind)
    M = space.matrix if isinstance(space, Ground) else space.ground_matrix()
    return space, np.asarray(M, dtype=np.float64)


def dists(rng, b, n, alpha=1.0):
    """b random distributions over n bins (Dirichlet(alpha), no exact zeros)."""
    x = rng.dirichlet(np.full(n, alpha), b) + 1e-6
    return x / x.sum(axis=1, keepdims=True)


def kernels_for(space):
    return ["dense", "auto"] if isinstance(space, Ground) else KERNELS


def pot_sd(p, q, M, lam):
    """POT's converged Sinkhorn distance, row by row (reg = 1/λ)."""
    out = []
    for a, b in zip(p, q):
        v = ot.sinkhorn2(a, b, M, reg=1.0 / lam, stopThr=1e-14, numItermax=200_000)
        out.append(float(v))
    return np.array(out)


def check_invariants(r, iters, tol, b, n, dtype=np.float64, gradient=False):
    """Shapes, dtypes and the meaning of the per-row report, for any run."""
    assert isinstance(r, SinkhornResult)
    assert r.values.shape == (b,) and r.values.dtype == dtype
    assert r.iterations.shape == (b,) and r.iterations.dtype == np.int64
    assert r.converged.shape == (b,) and r.converged.dtype == np.bool_
    assert r.errors.shape == (b,)
    assert ((r.iterations >= 0) & (r.iterations <= iters)).all(), r.iterations
    if gradient:
        assert r.gradient.shape == (b, n) and r.gradient.dtype == dtype
    else:
        assert r.gradient is None
    judged = tol if tol > 0 else CONVERGED_TOL
    c = r.converged
    # converged ⇒ finite value, finite error below the threshold (never silently wrong)
    assert np.isfinite(r.values[c]).all() and (r.errors[c] < judged).all()
    # not finite ⇒ not converged
    assert not c[~np.isfinite(r.values)].any()
    if tol > 0:
        # a row stopped before the limit only because it converged or broke down
        early = r.iterations < iters
        assert (c[early] | ~np.isfinite(r.errors[early]) | ~np.isfinite(r.values[early])).all()


# ------------------------------------------------------------ converged SD equals POT


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_converged_sd_equals_pot_sinkhorn2(kind, lam, form):
    """Converged SD = ot.sinkhorn2(p, q, M, reg=1/λ) on chains, trees and ground matrices,
    for every kernel that applies (auto = structured for chains and trees, dense for M)."""
    rng = rng_for("pot", kind, lam, form)
    space, M = make_space(kind, rng)
    n = space.n
    p, q = dists(rng, B, n, 0.7), dists(rng, B, n, 1.5)
    ref = pot_sd(p, q, M, lam)
    assert np.isfinite(ref).all()
    for kernel in kernels_for(space):
        r = sinkhorn(p, q, lam=lam, iters=100_000, tol=1e-12, form=form, space=space,
                     kernel=kernel, gradient=True)
        check_invariants(r, 100_000, 1e-12, B, n, gradient=True)
        assert r.converged.all(), (kernel, r.errors, r.iterations)
        np.testing.assert_allclose(r.values, ref, rtol=1e-8, atol=1e-11, err_msg=kernel)
        # the gradient is the projected dual potential: sums to zero
        np.testing.assert_allclose(r.gradient.sum(axis=1), 0.0, atol=1e-10)


def test_converged_sd_equals_pot_on_non_uniform_positions_argument():
    """``positions=`` is the same chain as ``space=Chain.from_positions(...)``."""
    rng = rng_for("positions")
    x = np.cumsum(rng.uniform(0.2, 2.0, 9))
    p, q = dists(rng, B, 9), dists(rng, B, 9)
    a = sinkhorn(p, q, lam=1.5, positions=x, iters=50_000, tol=1e-12)
    b = sinkhorn(p, q, lam=1.5, space=Chain.from_positions(x), iters=50_000, tol=1e-12)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(a.values, pot_sd(p, q, naive.chain_ground(x), 1.5), rtol=1e-8)


# ------------------------------------------------- a fixed iteration count = Algorithm 1


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_fixed_iterations_equal_naive_algorithm_1(kind, kernel, form):
    """tol = 0 runs exactly ``iters`` updates of u: value and gradient equal the literal
    transcription of Algorithm 1 with the same count, for every space × kernel × form."""
    rng = rng_for("alg1", kind, kernel, form)
    space, M = make_space(kind, rng)
    n = space.n
    if isinstance(space, Ground) and kernel == "structured":
        with pytest.raises(EMDInputError, match="structured"):
            sinkhorn(dists(rng, 1, n), dists(rng, 1, n), lam=1.0, space=space, kernel=kernel)
        return
    p, q = dists(rng, B, n, 0.5), dists(rng, B, n, 2.0)
    for lam in (0.7, 3.0):
        for iters in (1, 2, 7, 40):
            r = sinkhorn(p, q, lam=lam, iters=iters, tol=0, form=form, space=space,
                         kernel=kernel, gradient=True)
            check_invariants(r, iters, 0, B, n, gradient=True)
            assert (r.iterations == iters).all(), r.iterations
            for i in range(B):
                value, grad = naive.sinkhorn_alg1(p[i], q[i], M, lam, iters)
                np.testing.assert_allclose(r.values[i], value, rtol=1e-12, atol=1e-14,
                                           err_msg=f"lam={lam} iters={iters} row {i}")
                np.testing.assert_allclose(r.gradient[i], grad, rtol=1e-10, atol=1e-12,
                                           err_msg=f"lam={lam} iters={iters} row {i}")
            # with tol = 0, convergence is judged at CONVERGED_TOL on the final error
            np.testing.assert_array_equal(r.converged, r.errors < CONVERGED_TOL)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 9),
    lam=st.floats(0.05, 20.0),
    iters=st.integers(1, 30),
    form=st.sampled_from(FORMS),
    kernel=st.sampled_from(["structured", "dense"]),
    tree=st.booleans(),
)
def test_fixed_iterations_equal_naive_algorithm_1_hypothesis(seed, n, lam, iters, form, kernel,
                                                              tree):
    """Random small chains and trees (one bin and two bins included)."""
    rng = np.random.default_rng(seed)
    if tree:
        space = random_tree(rng, n + 2, "mixed")
    else:
        space = Chain.from_positions(np.cumsum(rng.uniform(0.05, 1.0, n)))
    M = space.ground_matrix()
    n = space.n
    p, q = dists(rng, 2, n, 0.8), dists(rng, 2, n, 0.8)
    r = sinkhorn(p, q, lam=lam, iters=iters, tol=0, form=form, space=space, kernel=kernel,
                 gradient=True)
    assert (r.iterations == iters).all()
    for i in range(2):
        value, grad = naive.sinkhorn_alg1(p[i], q[i], M, lam, iters)
        if not np.isfinite(value) or not np.isfinite(grad).all():
            continue  # the plain form may under/overflow at large λ·M; checked elsewhere
        np.testing.assert_allclose(r.values[i], value, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r.gradient[i], grad, rtol=1e-8, atol=1e-10)


def test_a_single_bin_is_distance_zero():
    p = np.array([[2.0], [0.5]])
    for form in FORMS:
        for kernel in ("structured", "dense"):
            r = sinkhorn(p, np.array([0, 0]), lam=3.0, form=form, kernel=kernel, gradient=True)
            np.testing.assert_array_equal(r.values, 0.0)
            np.testing.assert_array_equal(r.gradient, 0.0)
            assert r.converged.all()


# ----------------------------------------------------------- structured ≡ dense (same M)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", STRUCTURED_KINDS)
def test_structured_equals_dense_float64(kind, form):
    """Chain/tree passes against the N × N matrix of the same space, and against a Ground
    space built from that matrix: values, gradients, iteration counts, flags, errors."""
    rng = rng_for("sd", kind, form)
    space, M = make_space(kind, rng)
    n = space.n
    p, q = dists(rng, 6, n, 0.4), dists(rng, 6, n, 1.0)
    ground = Ground.from_matrix(M)
    for lam in (0.3, 2.0, 9.0):
        kw = dict(lam=lam, iters=3000, tol=1e-10, form=form, gradient=True)
        s = sinkhorn(p, q, space=space, kernel="structured", **kw)
        d = sinkhorn(p, q, space=space, kernel="dense", **kw)
        g = sinkhorn(p, q, space=ground, **kw)
        a = sinkhorn(p, q, space=space, **kw)  # auto
        for other, name in ((d, "dense"), (g, "ground")):
            np.testing.assert_allclose(s.values, other.values, rtol=1e-11, atol=1e-14, err_msg=name)
            np.testing.assert_allclose(s.gradient, other.gradient, rtol=1e-9, atol=1e-11,
                                       err_msg=name)
            np.testing.assert_array_equal(s.iterations, other.iterations, err_msg=name)
            np.testing.assert_array_equal(s.converged, other.converged, err_msg=name)
            np.testing.assert_allclose(s.errors, other.errors, rtol=1e-5, atol=1e-13)
        for field in ("values", "iterations", "converged", "errors", "gradient"):
            np.testing.assert_array_equal(getattr(a, field), getattr(s, field), err_msg=field)
        assert len(set(s.iterations.tolist())) > 1 or lam == 0.3, s.iterations


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", STRUCTURED_KINDS)
def test_structured_equals_dense_float32(kind, form):
    """The same in float32, to float32 rounding: a fixed iteration count gives equal counts;
    with a tolerance, the stopping iteration may move by a step or two near the threshold."""
    rng = rng_for("sd32", kind, form)
    space, M = make_space(kind, rng)
    n = space.n
    p, q = dists(rng, 6, n, 0.5), dists(rng, 6, n, 1.0)
    for lam in (0.5, 3.0):
        kw = dict(lam=lam, form=form, gradient=True, dtype="float32")
        s = sinkhorn(p, q, space=space, kernel="structured", iters=60, tol=0, **kw)
        d = sinkhorn(p, q, space=space, kernel="dense", iters=60, tol=0, **kw)
        check_invariants(s, 60, 0, 6, n, np.float32, True)
        check_invariants(d, 60, 0, 6, n, np.float32, True)
        np.testing.assert_array_equal(s.iterations, d.iterations)
        np.testing.assert_allclose(s.values, d.values, rtol=2e-5)
        scale = np.abs(d.gradient).max()
        np.testing.assert_allclose(s.gradient, d.gradient, atol=2e-5 * max(scale, 1.0))
        ref = sinkhorn(p, q, space=space, iters=60, tol=0, form=form, lam=lam)
        np.testing.assert_allclose(s.values, ref.values, rtol=5e-5)
        s = sinkhorn(p, q, space=space, kernel="structured", iters=2000, tol=1e-5, **kw)
        d = sinkhorn(p, q, space=space, kernel="dense", iters=2000, tol=1e-5, **kw)
        assert np.abs(s.iterations - d.iterations).max() <= 2, (s.iterations, d.iterations)
        np.testing.assert_allclose(s.values, d.values, rtol=1e-4)
        assert s.converged.all() and d.converged.all()


# ------------------------------------------------------------------- log ≡ plain (finite)


@pytest.mark.parametrize("kernel", ["structured", "dense"])
@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_log_form_equals_plain_form_where_plain_is_finite(kind, kernel):
    """float64, λ from gentle to where the plain form's K underflows: wherever the plain
    form gives a finite converged value, the log form gives the same value. While K has
    no underflowed entries (λ·max M < 700) also the same gradient, iteration count and
    flag; beyond that the plain form solves with a truncated K (as Algorithm 1 does in
    float64) whose value, potentials and iteration counts differ from the exact K's."""
    rng = rng_for("logplain", kind, kernel)
    space, M = make_space(kind, rng)
    if isinstance(space, Ground) and kernel == "structured":
        return
    n = space.n
    p, q = dists(rng, 6, n, 0.3), dists(rng, 6, n, 1.0)
    compared = 0
    for lam in (0.2, 1.0, 5.0, 30.0, 200.0):
        kw = dict(lam=lam, iters=2000, tol=1e-9, space=space, kernel=kernel, gradient=True)
        pl = sinkhorn(p, q, form="plain", **kw)
        lg = sinkhorn(p, q, form="log", **kw)
        check_invariants(lg, 2000, 1e-9, 6, n, gradient=True)
        assert np.isfinite(lg.values).all(), (lam, lg.values)
        ok = np.isfinite(pl.values) & np.isfinite(pl.gradient).all(axis=1) & pl.converged
        if lam * M.max() > 700:
            continue  # the plain K has underflowed entries: another problem (docstring)
        compared += ok.sum()
        np.testing.assert_allclose(lg.values[ok], pl.values[ok], rtol=1e-9, atol=1e-12)
        assert lg.converged[ok].all()
        np.testing.assert_allclose(lg.gradient[ok], pl.gradient[ok], rtol=1e-7, atol=1e-9)
        np.testing.assert_array_equal(lg.iterations[ok], pl.iterations[ok])
    assert compared >= 12


def test_log_form_equals_plain_form_at_fixed_iterations_float32():
    rng = rng_for("logplain32")
    space, _ = make_space("tree-mixed", rng)
    p, q = dists(rng, 5, space.n), dists(rng, 5, space.n)
    kw = dict(lam=2.0, iters=30, tol=0, space=space, dtype="float32", gradient=True)
    pl = sinkhorn(p, q, form="plain", **kw)
    lg = sinkhorn(p, q, form="log", **kw)
    np.testing.assert_allclose(lg.values, pl.values, rtol=2e-5)
    np.testing.assert_allclose(lg.gradient, pl.gradient, atol=2e-5)


# ---------------------------------------------------------------- float32 at a large λ


def test_float32_large_lambda_on_a_chain_plain_breaks_log_holds():
    """30 bins at spacing 8/29, λ = 100 (λ·M up to 800): the plain float32 Gibbs kernel
    underflows, so most rows break down (reported: not converged, never a silent value);
    the log form stays finite and within 2 % of the exact EMD."""
    rng = rng_for("chain32")
    n = 30
    space = Chain.from_positions(np.linspace(0.0, 8.0, n))
    p = 0.8 * rng.dirichlet(np.ones(n), 8) + 0.2 / n  # soft rows
    q = 0.8 * rng.dirichlet(np.ones(n), 8) + 0.2 / n
    exact = emdcli.emd(p, q, space=space)
    for kernel in ("structured", "dense"):
        kw = dict(lam=100.0, iters=5000, tol=1e-5, space=space, kernel=kernel, dtype="float32")
        pl = sinkhorn(p, q, form="plain", **kw)
        lg = sinkhorn(p, q, form="log", **kw)
        check_invariants(pl, 5000, 1e-5, 8, n, np.float32)
        check_invariants(lg, 5000, 1e-5, 8, n, np.float32)
        assert (~pl.converged).sum() >= 5, (kernel, pl.values, pl.converged)
        assert not np.isfinite(pl.values).all()
        assert np.isfinite(lg.values).all()
        np.testing.assert_allclose(lg.values, exact, rtol=0.02)
        # where the plain form did converge, it agrees with the log form
        c = pl.converged
        np.testing.assert_allclose(pl.values[c], lg.values[c], rtol=1e-3)


@pytest.mark.parametrize("lam", [50.0, 100.0])
def test_float32_large_lambda_on_a_unit_chain_plain_fails_every_row(lam):
    """Unit gaps, λ ≥ 50: every off-diagonal of the float32 K is (nearly) zero; every plain
    row is non-finite and flagged, every log row is finite (slow to converge, but honest)."""
    rng = rng_for("unit32", lam)
    n = 30
    p, q = dists(rng, 4, n), dists(rng, 4, n)
    pl = sinkhorn(p, q, lam=lam, iters=300, tol=1e-6, form="plain", dtype="float32")
    lg = sinkhorn(p, q, lam=lam, iters=300, tol=1e-6, form="log", dtype="float32")
    assert not np.isfinite(pl.values).any() and not pl.converged.any()
    assert np.isfinite(lg.values).all() and (lg.values > 0).all()
    # the log form in float32 follows float64 Algorithm 1 (a faithful, not a fixed-up, SD)
    lg32 = sinkhorn(p, q, lam=lam, iters=300, tol=0, form="log", dtype="float32")
    M = Chain.uniform(n).ground_matrix()
    for i in range(4):
        value, _ = naive.sinkhorn_alg1(p[i], q[i], M, lam, 300)
        np.testing.assert_allclose(lg32.values[i], value, rtol=1e-3)


@pytest.fixture(scope="module")
def wordnet():
    return load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))


@pytest.fixture(scope="module")
def imagenet_rows():
    t = pq.read_table(IMAGENET_PRED).slice(0, 3)
    p = np.array(t.column("probs").to_pylist(), dtype=np.float64)
    labels = np.array(t.column("label").to_pylist(), dtype=np.int64)
    return p, labels


@pytest.mark.parametrize("lam", [50.0, 100.0])
def test_float32_large_lambda_on_the_wordnet_tree(wordnet, imagenet_rows, lam):
    """The paper's setting: 1000 ImageNet classes on WordNet (edge weights 1), float32,
    label-smoothed targets. Plain: K's off-diagonals underflow, every row NaN and flagged.
    Log: finite and within 1 % of the exact tree EMD after 500 iterations."""
    p, labels = imagenet_rows
    n = wordnet.n
    q = np.full_like(p, 0.1 / n)
    q[np.arange(len(labels)), labels] += 0.9
    exact = emdcli.emd(p, q, space=wordnet)
    kw = dict(lam=lam, iters=500, tol=1e-6, space=wordnet, dtype="float32")
    pl = sinkhorn(p, q, form="plain", **kw)
    lg = sinkhorn(p, q, form="log", **kw)
    check_invariants(pl, 500, 1e-6, 3, n, np.float32)
    check_invariants(lg, 500, 1e-6, 3, n, np.float32)
    assert not pl.converged.any() and not np.isfinite(pl.values).any()
    assert np.isfinite(lg.values).all()
    np.testing.assert_allclose(lg.values, exact, rtol=0.01)


def test_wordnet_class_targets_equal_the_exact_emd(wordnet, imagenet_rows):
    """One-hot targets: the plan after one update puts every p_i on the target column, so
    SD = Σ p_i M_ic = the exact EMD for any λ (log form, float64, λ = 100)."""
    p, labels = imagenet_rows
    r = sinkhorn(p, labels, lam=100.0, iters=50, tol=1e-9, form="log", space=wordnet)
    assert r.converged.all() and (r.iterations == 1).all()
    np.testing.assert_allclose(r.values, emdcli.emd(p, labels, space=wordnet), rtol=1e-10)


# ----------------------------------------------------------------- zeros in the targets


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", SPACE_KINDS)
def test_one_hot_and_class_index_targets(kind, form):
    """Zero target entries: finite results; class indices ≡ one-hot rows (values,
    gradients, counts, flags); and SD equals the exact EMD Σ p_i M_ic after one update."""
    rng = rng_for("onehot", kind, form)
    space, M = make_space(kind, rng)
    n = space.n
    p = dists(rng, 5, n, 0.8)
    c = rng.integers(0, n, 5)
    onehot = np.eye(n)[c]
    for kernel in kernels_for(space):
        for lam in (0.5, 4.0):
            kw = dict(lam=lam, iters=200, tol=1e-10, form=form, space=space, kernel=kernel,
                      gradient=True)
            a = sinkhorn(p, c, **kw)
            b = sinkhorn(p, onehot, **kw)
            check_invariants(a, 200, 1e-10, 5, n, gradient=True)
            for field in ("values", "iterations", "converged", "errors", "gradient"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field),
                                              err_msg=field)
            assert np.isfinite(a.values).all() and np.isfinite(a.gradient).all()
            assert a.converged.all() and (a.iterations == 1).all(), a.iterations
            exact = np.array([naive.onehot_emd(p[i], c[i], M)[0] for i in range(5)])
            np.testing.assert_allclose(a.values, exact, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(a.values, pot_sd(p, onehot, M, lam), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ["chain", "tree-mixed", "ground-metric"])
def test_sparse_soft_targets_equal_pot(kind, form):
    """Targets with several exact zeros (not one-hot) converge to POT's value."""
    rng = rng_for("sparse", kind, form)
    space, M = make_space(kind, rng)
    n = space.n
    p = dists(rng, 4, n)
    q = dists(rng, 4, n) * (rng.uniform(size=(4, n)) < 0.5)
    q[:, 0] += 0.1
    q /= q.sum(axis=1, keepdims=True)
    r = sinkhorn(p, q, lam=2.0, iters=100_000, tol=1e-12, form=form, space=space, gradient=True)
    assert r.converged.all() and np.isfinite(r.gradient).all()
    np.testing.assert_allclose(r.values, pot_sd(p, q, M, 2.0), rtol=1e-8)


def test_zero_targets_in_float32_and_at_large_lambda_log_form():
    rng = rng_for("zeros32")
    space, M = make_space("tree-leaves", rng)
    p = dists(rng, 4, space.n)
    c = rng.integers(0, space.n, 4)
    r = sinkhorn(p, c, lam=60.0, iters=100, tol=1e-5, form="log", space=space,
                 dtype="float32", gradient=True)
    assert np.isfinite(r.values).all() and np.isfinite(r.gradient).all()
    exact = emdcli.emd(p, c, space=space)
    np.testing.assert_allclose(r.values, exact, rtol=1e-4)


# --------------------------------------------------------------------- per-row stopping


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kernel", ["structured", "dense"])
def test_rows_stop_independently(kernel, form):
    """tol > 0: rows take different numbers of iterations (≤ iters); converged rows have
    errors < tol; rows that hit the limit are flagged; each row equals itself run alone,
    and equals a tol = 0 run of exactly its own iteration count."""
    rng = rng_for("perrow", kernel, form)
    space, M = make_space("tree-mixed", rng)
    n = space.n
    # rows of very different difficulty: near-equal pairs stop fast, far ones slowly
    p = dists(rng, 8, n, 0.3)
    q = dists(rng, 8, n, 0.3)
    q[:3] = 0.9 * p[:3] + 0.1 * q[:3]
    iters, tol = 150, 1e-9
    kw = dict(lam=3.0, tol=tol, form=form, space=space, kernel=kernel, gradient=True)
    r = sinkhorn(p, q, iters=iters, **kw)
    check_invariants(r, iters, tol, 8, n, gradient=True)
    assert len(set(r.iterations.tolist())) >= 3, r.iterations
    assert r.converged.any() and (r.iterations < iters).any()
    assert (r.errors[r.converged] < tol).all()
    assert (r.iterations[~r.converged] == iters).all()
    assert (r.errors[~r.converged] >= tol).all()
    for i in range(8):
        alone = sinkhorn(p[i:i + 1], q[i:i + 1], iters=iters, **kw)
        assert alone.iterations[0] == r.iterations[i]
        assert alone.converged[0] == r.converged[i]
        np.testing.assert_allclose(alone.values[0], r.values[i], rtol=1e-13)
        np.testing.assert_allclose(alone.gradient[0], r.gradient[i], rtol=1e-11, atol=1e-13)
        fixed = sinkhorn(p[i:i + 1], q[i:i + 1], lam=3.0, iters=max(int(r.iterations[i]), 1),
                         tol=0, form=form, space=space, kernel=kernel)
        if r.iterations[i] >= 1:
            np.testing.assert_allclose(fixed.values[0], r.values[i], rtol=1e-13)
        value, _ = naive.sinkhorn_alg1(p[i], q[i], M, 3.0, int(r.iterations[i]))
        np.testing.assert_allclose(r.values[i], value, rtol=1e-11)


def test_structured_rows_in_a_batch_are_bitwise_their_own_runs():
    """The structured solver is serial per row: batch position and batch size change
    nothing, not even the last bit (rows of many chunks over the threads)."""
    rng = rng_for("bitwise")
    space, _ = make_space("chain", rng)
    p, q = dists(rng, 37, space.n, 0.5), dists(rng, 37, space.n, 0.5)
    for form in FORMS:
        kw = dict(lam=2.5, iters=400, tol=1e-10, form=form, space=space, gradient=True)
        whole = sinkhorn(p, q, **kw)
        part = sinkhorn(p[11:20], q[11:20], **kw)
        np.testing.assert_array_equal(part.values, whole.values[11:20])
        np.testing.assert_array_equal(part.iterations, whole.iterations[11:20])
        np.testing.assert_array_equal(part.gradient, whole.gradient[11:20])


# -------------------------------------------------------------- gradients and the input


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("normalize", ["softmax", "l1"])
@pytest.mark.parametrize("kind", ["chain", "tree-mixed", "ground-odd"])
def test_input_gradient_is_the_chain_rule_of_the_distribution_gradient(kind, normalize):
    """grad_wrt="input" = rows.input_gradient(distribution gradient): the Jacobian of the
    normalisation applied to the projected potential (exactly)."""
    rng = rng_for("chainrule", kind, normalize)
    space, _ = make_space(kind, rng)
    n = space.n
    raw = rng.normal(size=(B, n)) if normalize == "softmax" else rng.uniform(0.1, 3.0, (B, n))
    q = dists(rng, B, n)
    for form in FORMS:
        kw = dict(lam=2.0, iters=5000, tol=1e-12, form=form, space=space, normalize=normalize,
                  gradient=True)
        d = sinkhorn(raw, q, **kw)
        i = sinkhorn(raw, q, grad_wrt="input", **kw)
        p = rows.prepare_pred(raw, normalize, np.float64)
        g = d.gradient
        centred = g - (g * p).sum(axis=1, keepdims=True)
        expect = p * centred if normalize == "softmax" else centred / raw.sum(axis=1, keepdims=True)
        np.testing.assert_array_equal(i.values, d.values)
        np.testing.assert_allclose(i.gradient, expect, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["chain", "tree-mixed", "ground-metric"])
def test_input_gradient_matches_finite_differences_of_the_entropic_objective(kind):
    """Why not finite differences of SD itself: log(u)/λ is the gradient of the *entropic*
    OT value L = ⟨T, M⟩ + (1/λ) Σ T log T (the dual optimum), not of SD = ⟨T, M⟩, which
    differs by O(1/λ). So: (a) central differences of L (from POT's converged plan) w.r.t.
    the logits match the returned input gradient tightly (λ = 1, 4); (b) those of SD only
    roughly (direction within a few degrees at λ = 20)."""
    rng = rng_for("fd", kind)
    space, M = make_space(kind, rng, n=6)
    n = space.n
    z = rng.normal(size=n)
    q = dists(rng, 1, n)[0]
    h = 1e-5
    for lam in (1.0, 4.0, 20.0):
        r = sinkhorn(z[None], q[None], lam=lam, iters=100_000, tol=1e-13, form="log",
                     space=space, normalize="softmax", gradient=True, grad_wrt="input")
        assert r.converged.all()
        g = r.gradient[0]

        def entropic(zz):
            T = ot.sinkhorn(_softmax(zz), q, M, reg=1.0 / lam, stopThr=1e-14, numItermax=50_000)
            return float((T * M).sum() + np.sum(T * np.log(T)) / lam)

        def sd(zz):
            return float(sinkhorn(zz[None], q[None], lam=lam, iters=100_000, tol=1e-13,
                                  form="log", space=space, normalize="softmax").values[0])

        if lam < 20.0:  # (POT's loop is slow at large λ)
            fd_l = np.array([(entropic(z + h * e) - entropic(z - h * e)) / (2 * h)
                             for e in np.eye(n)])
            np.testing.assert_allclose(g, fd_l, atol=1e-7 * max(1.0, np.abs(g).max()))
        else:
            fd_sd = np.array([(sd(z + h * e) - sd(z - h * e)) / (2 * h) for e in np.eye(n)])
            cos = fd_sd @ g / (np.linalg.norm(fd_sd) * np.linalg.norm(g))
            assert cos > 0.99, cos


def test_distribution_gradient_is_projected_and_finite():
    rng = rng_for("proj")
    space, _ = make_space("tree-leaves", rng)
    p, q = dists(rng, B, space.n), dists(rng, B, space.n)
    for form in FORMS:
        r = sinkhorn(p, q, lam=4.0, form=form, space=space, gradient=True, iters=3000)
        assert np.isfinite(r.gradient).all()
        np.testing.assert_allclose(r.gradient.sum(axis=1), 0.0, atol=1e-12)
        r32 = sinkhorn(p, q, lam=4.0, form=form, space=space, gradient=True, iters=3000,
                       tol=1e-5, dtype="float32")
        np.testing.assert_allclose(r32.gradient, r.gradient, atol=1e-4)


# ---------------------------------------------------------------------------- bad input


GOOD = dict(lam=1.0, iters=10, tol=1e-9, form="plain", kernel="auto")
BAD_PARAMS = [
    ("lam", 0.0), ("lam", -1.0), ("lam", np.nan), ("lam", np.inf), ("lam", -np.inf),
    ("lam", "ten"), ("lam", None),
    ("iters", 0), ("iters", -5), ("iters", 2.5), ("iters", 10.0), ("iters", True),
    ("iters", "10"), ("iters", None),
    ("tol", -1e-9), ("tol", np.nan), ("tol", np.inf), ("tol", "small"),
    ("form", "bad"), ("form", "Plain"), ("form", None),
    ("kernel", "bad"), ("kernel", "Dense"),
]


@pytest.mark.parametrize("name,value", BAD_PARAMS, ids=[f"{n}={v!r}" for n, v in BAD_PARAMS])
def test_bad_parameters_raise(name, value):
    p, q = np.ones((2, 4)), np.array([0, 3])
    kw = {**GOOD, name: value}
    with pytest.raises(EMDInputError):
        sinkhorn(p, q, **kw)
    with pytest.raises(EMDInputError):
        check_params(kw["lam"], kw["iters"], kw["tol"], kw["form"], kw["kernel"])


def test_good_parameter_edge_values_are_accepted():
    p, q = np.ones((2, 4)), np.array([0, 3])
    sinkhorn(p, q, lam=1e-3, iters=1, tol=0)
    sinkhorn(p, q, lam=np.float32(2), iters=np.int64(3), tol=np.float64(1e-3))
    assert check_params(2, np.int32(5), 0, "log", "dense") == (2.0, 5, 0.0)


def test_bad_spaces_and_options_raise():
    p, q = np.ones((2, 4)), np.array([0, 3])
    with pytest.raises(EMDInputError, match="N × N"):
        sinkhorn(p, q, lam=1.0, space=Ground.from_matrix(np.zeros((4, 3))))
    with pytest.raises(EMDInputError, match="N × N"):
        Ground.from_matrix(np.zeros(4))
    five = Ground.from_matrix(1.0 - np.eye(5))
    with pytest.raises(EMDInputError, match="5 bins"):
        sinkhorn(p, q, lam=1.0, space=five)
    four = Ground.from_matrix(1.0 - np.eye(4))
    with pytest.raises(EMDInputError, match="structured"):
        sinkhorn(p, q, lam=1.0, space=four, kernel="structured")
    for kernel in ("auto", "dense"):
        sinkhorn(p, q, lam=1.0, space=four, kernel=kernel)
    with pytest.raises(EMDInputError):
        sinkhorn(p, q, lam=1.0, positions=[0, 1, 2])
    with pytest.raises(EMDInputError):
        sinkhorn(p, q, lam=1.0, grad_wrt="logits", gradient=True)
    with pytest.raises(EMDInputError):
        sinkhorn(p, q, lam=1.0, dtype="float16")
    with pytest.raises(EMDInputError):
        sinkhorn(p, q, lam=1.0, normalize="max")
    with pytest.raises(EMDInputError):
        sinkhorn(p, np.array([0, 4]), lam=1.0)  # class out of range
    with pytest.raises(EMDInputError):
        sinkhorn(-p, q, lam=1.0)
    with pytest.raises(EMDInputError):
        sinkhorn(p, np.ones((2, 4)) * [1, 1, 1, 2], lam=1.0, normalize="none")


def test_an_empty_batch_gives_empty_results():
    for form in FORMS:
        for kernel in ("structured", "dense"):
            r = sinkhorn(np.zeros((0, 5)), np.zeros((0, 5)), lam=2.0, form=form, kernel=kernel,
                         gradient=True)
            check_invariants(r, 100, 1e-9, 0, 5, gradient=True)
            r = sinkhorn(np.zeros((0, 5)), np.zeros(0, dtype=np.int64), lam=2.0, form=form,
                         kernel=kernel)
            check_invariants(r, 100, 1e-9, 0, 5)


# ------------------------------------------------------------------ known inconsistencies


@pytest.mark.parametrize("form", FORMS)
def test_converged_flag_does_not_depend_on_asking_for_the_gradient(form):
    rng = rng_for("zero-pred", form)
    p = dists(rng, 4, 8)
    p[:, 2] = 0.0
    c = rng.integers(0, 8, 4)
    without = sinkhorn(p, c, lam=3.0, iters=500, form=form)
    with_grad = sinkhorn(p, c, lam=3.0, iters=500, form=form, gradient=True)
    np.testing.assert_array_equal(without.values, with_grad.values)
    assert without.converged.all()
    np.testing.assert_array_equal(with_grad.converged, without.converged)


def test_float32_log_form_converges_with_the_default_tol_on_an_easy_problem():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6), 5), rng.dirichlet(np.ones(6), 5)
    plain = sinkhorn(p, q, lam=2.0, iters=1000, dtype="float32", form="plain")
    log = sinkhorn(p, q, lam=2.0, iters=1000, dtype="float32", form="log")
    np.testing.assert_allclose(log.values, plain.values, rtol=1e-6)  # same answer …
    assert plain.converged.sum() >= 4
    assert log.converged.sum() >= plain.converged.sum()  # … but reported as not converged


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["chain", "tree"])
def test_lane_solver_equals_the_row_solver(kind, dtype):
    """Batches of at least LANES rows run LANES rows side by side (kernels.lanes); each row
    must come out as it does alone (the one-row solver), including rows that stop early
    and a last, partly filled block."""
    from emdcli.kernels.lanes import LANES

    rng = np.random.default_rng(7)
    b = 2 * LANES + 5
    if kind == "chain":
        space = Chain.from_positions(np.cumsum(rng.uniform(0.2, 1.0, 9)))
    else:
        space = random_tree(rng, 12, bins="all")
    n = space.n
    P = rng.random((b, n)) + 0.05
    Q = rng.random((b, n)) ** 2 + 1e-3
    lam = np.where(np.arange(b) % 3 == 0, 8.0, 1.0)  # rows converge at different speeds
    for lam_value in (1.0, 8.0):
        rows_ = np.flatnonzero(lam == lam_value)
        together = sinkhorn(P[rows_], Q[rows_], lam=lam_value, iters=300, tol=1e-7,
                            space=space, dtype=dtype, gradient=True)
        if len(rows_) < LANES:
            continue
        for k, r in enumerate(rows_[: LANES + 3]):
            alone = sinkhorn(P[r:r + 1], Q[r:r + 1], lam=lam_value, iters=300, tol=1e-7,
                             space=space, dtype=dtype, gradient=True)
            assert together.iterations[k] == alone.iterations[0]
            assert together.converged[k] == alone.converged[0]
            np.testing.assert_array_equal(together.values[k], alone.values[0])
            np.testing.assert_array_equal(together.gradient[k], alone.gradient[0])
    full = sinkhorn(P, Q, lam=1.0, iters=300, tol=1e-7, space=space, dtype=dtype)
    assert len(full.values) == b and np.isfinite(full.values).all()


def test_the_solvers_compile_one_kind_of_space(tmp_path):
    """With a cold Numba cache, a log-domain Sinkhorn on a chain compiles the chain's log
    passes and none of the tree's, the dense ones or the plain form's (the cold compile
    was 3× longer when every space's passes were compiled for every job)."""
    import json
    import subprocess

    code = """
import json
import numpy as np
from emdcli.kernels import gibbs, sinkhorn as ks
from emdcli.sinkhorn import sinkhorn
r = sinkhorn(np.full((2, 5), 0.2), np.array([1, 3]), lam=2.0, iters=5, form="log")
names = ["_chain_log", "_tree_log", "_dense_log", "_dense_log_t", "_chain_plain", "_tree_plain",
         "apply", "log_apply"]
out = {n: len(getattr(gibbs, n).signatures) for n in names}
out["_plain_batch"] = len(ks._plain_batch.signatures)
out["finite"] = bool(np.isfinite(r.values).all())
print(json.dumps(out))
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got.pop("finite") and got.pop("_chain_log") == 1
    assert got == dict.fromkeys(got, 0)


def test_specialised_gibbs_share_the_arrays():
    from emdcli.kernels.gibbs import CHAIN, DENSE, TREE, ChainGibbs, DenseGibbs, TreeGibbs, specialise
    from emdcli.gibbs import gibbs_for

    tree = Tree.from_edges(list("rabc"), ["", "r", "r", "a"])
    for g, cls in ((gibbs_for(Chain.uniform(4), 2.0, np.float64, True), ChainGibbs),
                   (gibbs_for(tree, 2.0, np.float32, False), TreeGibbs),
                   (gibbs_for(tree, 2.0, np.float64, True, dense=True), DenseGibbs)):
        s = specialise(g)
        assert type(s) is cls and s.kind in (CHAIN, TREE, DENSE)
        assert all(a is b for a, b in zip(s, g)) and specialise(s) is s

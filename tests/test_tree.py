"""Tree spaces (HEMD^rho) and ground matrices at the library level.

References: POT's exact LP (``ot.emd2``) with a path-distance matrix built naively from
explicit path-to-root sets (``naive.tree_path_matrix``), the explicit subtree sums and
path sums of ``naive.hemd`` / ``naive.hemd_grad`` (SPEC.md section 1), central finite
differences along mass-conserving directions, and the chain kernels (a chain is a path).
"""

import os
import sys
import zlib
from dataclasses import dataclass

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emdcli import Chain, EMDInputError, emd, emd2
from emdcli.spaces import Ground, Tree
from emdcli.treefiles import load_tree, read_bins

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive  # noqa: E402
from common import dists, onehot, WORDNET, IMAGENET_BINS, IMAGENET_PRED  # noqa: E402


RHOS = [1.0, 1.5, 2.0, 3.0]
BIN_KINDS = ["leaves", "leaves-shuffled", "all", "some-internal", "subset"]
WEIGHT_KINDS = ["int", "real"]
SEEDS = range(12)
BATCH = 3


# ----------------------------------------------------------------------------- helpers


def rng_for(*key):
    """A reproducible generator per test case."""
    return np.random.default_rng(zlib.crc32(repr(("tree",) + key).encode()))


@dataclass
class RandomTree:
    tree: Tree
    parent: dict  # name -> parent name (None for the root)
    weight: dict  # name -> edge weight (non-root nodes)
    bins: list  # bin nodes in bin order
    file_nodes: list  # nodes in file order
    file_parents: list
    file_weights: list

    @property
    def n(self):
        return len(self.bins)


def random_tree(rng, n_nodes=None, weights="real", bins="leaves", shuffle_file=True):
    """A random rooted tree: random parent choices (a mix of bushy and path-like), node
    names not in any order, nodes written in a random file order (parents may come after
    their children), integer (0 allowed) or real weights, and bins on the leaves (file
    order, or shuffled via ``bins=``), on every node, on the leaves plus some internal nodes,
    or on a random subset of nodes."""
    if n_nodes is None:
        n_nodes = int(rng.integers(1, 16))
    style = rng.uniform()
    up = [-1]
    for i in range(1, n_nodes):
        if rng.uniform() < style * 0.7:  # path-like growth
            up.append(i - 1)
        else:
            up.append(int(rng.integers(0, i)))
    labels = [f"{chr(97 + int(rng.integers(0, 26)))}{i}_{int(rng.integers(0, 1000))}" for i in range(n_nodes)]
    if weights == "int":
        w = [float(rng.integers(0, 5)) for _ in range(n_nodes)]
    else:
        w = [float(rng.uniform(0.05, 3.0)) for _ in range(n_nodes)]
    w[0] = 0.0
    parent = {labels[i]: (labels[up[i]] if up[i] >= 0 else None) for i in range(n_nodes)}
    weight = {labels[i]: w[i] for i in range(1, n_nodes)}
    order = rng.permutation(n_nodes) if shuffle_file else np.arange(n_nodes)
    file_nodes = [labels[i] for i in order]
    file_parents = [parent[v] for v in file_nodes]
    file_weights = [weight.get(v, 0.0) for v in file_nodes]
    has_child = {v: False for v in labels}
    for v in labels:
        if parent[v] is not None:
            has_child[parent[v]] = True
    leaves = [v for v in file_nodes if not has_child[v]]
    internal = [v for v in file_nodes if has_child[v]]
    if bins == "leaves":
        chosen, explicit = leaves, False
    elif bins == "leaves-shuffled":
        chosen, explicit = [leaves[i] for i in rng.permutation(len(leaves))], True
    elif bins == "all":
        chosen, explicit = [file_nodes[i] for i in rng.permutation(n_nodes)], True
    elif bins == "some-internal":
        extra = [v for v in internal if rng.uniform() < 0.5]
        pool = leaves + extra
        chosen, explicit = [pool[i] for i in rng.permutation(len(pool))], True
    elif bins == "subset":
        k = int(rng.integers(1, n_nodes + 1))
        chosen, explicit = [file_nodes[i] for i in rng.permutation(n_nodes)[:k]], True
    else:
        raise ValueError(bins)
    tree = Tree.from_edges(
        file_nodes, [p if p is not None else "" for p in file_parents], file_weights,
        bins=chosen if explicit else None,
    )
    return RandomTree(tree, parent, weight, chosen, file_nodes, file_parents, file_weights)


def scale_of(rt):
    return max(1.0, sum(rt.weight.values()))


def subtree_counts(rt):
    """{v: number of bins in the subtree of v} for the non-root nodes."""
    paths = [naive.tree_path_to_root(rt.parent, b) for b in rt.bins]
    return {v: sum(v in path for path in paths) for v in rt.parent if rt.parent[v] is not None}


def far_from_kinks(rt, p, q, margin=1e-3):
    """True if every φ̃_v that can move (0 < bins below v < N) is at least ``margin`` from 0."""
    counts = subtree_counts(rt)
    phi = naive.tree_phi(p, q, rt.parent, rt.bins)
    return all(abs(phi[v]) > margin for v, k in counts.items() if 0 < k < rt.n and rt.weight[v] > 0)


def kink_free_rows(rng, rt, b):
    """(p, q) rows summing to one whose φ̃ stay away from 0 (rows are redrawn until so)."""
    n = rt.n
    ps, qs = [], []
    while len(ps) < b:
        p, q = dists(rng, 1, n)[0], dists(rng, 1, n)[0]
        if far_from_kinks(rt, p, q):
            ps.append(p)
            qs.append(q)
    return np.array(ps), np.array(qs)


def tree_cases():
    for seed in SEEDS:
        for bins in BIN_KINDS:
            yield seed, WEIGHT_KINDS[seed % 2], bins


CASES = list(tree_cases())


# ----------------------------------------------------------------------------- the tree itself


@pytest.mark.parametrize("seed,weights,bins", CASES)
def test_bins_and_ground_matrix_match_naive_path_matrix(seed, weights, bins):
    rt = random_tree(rng_for("gm", seed, bins), weights=weights, bins=bins)
    assert rt.tree.bin_names == rt.bins
    assert rt.tree.n == len(rt.bins)
    d = rt.tree.ground_matrix()
    want = naive.tree_path_matrix(rt.parent, rt.weight, rt.bins)
    assert d.shape == (rt.n, rt.n)
    np.testing.assert_allclose(d, want, rtol=1e-12, atol=1e-12 * scale_of(rt))
    assert np.all(np.diag(d) == 0.0)
    np.testing.assert_allclose(d, d.T, rtol=0, atol=1e-12 * scale_of(rt))


@pytest.mark.parametrize("seed", range(6))
def test_default_bins_are_the_leaves_in_file_order_and_flattening_invariants(seed):
    rt = random_tree(rng_for("flat", seed), n_nodes=int(rng_for("n", seed).integers(2, 30)))
    t = rt.tree
    has_child = {p for p in rt.parent.values() if p is not None}
    assert t.bin_names == [v for v in rt.file_nodes if v not in has_child]
    # every parent precedes its children, the root is first, weights follow the nodes
    assert t.parent[0] == -1
    assert all(0 <= t.parent[v] < v for v in range(1, t.n_nodes))
    for v in range(1, t.n_nodes):
        assert rt.parent[t.names[v]] == t.names[t.parent[v]]
        assert t.weight[v] == rt.weight[t.names[v]]
    assert sorted(t.names) == sorted(rt.file_nodes)
    assert [rt.file_nodes[i] for i in t.file_index] == list(t.names)
    counts = subtree_counts(rt)
    for v in range(1, t.n_nodes):
        assert t.count[v] == counts[t.names[v]]
    assert t.count[0] == t.n


@pytest.mark.parametrize("seed", range(4))
def test_with_bins_and_in_file_order(seed):
    rt = random_tree(rng_for("wb", seed), n_nodes=12, bins="leaves")
    t = rt.tree
    rng = rng_for("wb-order", seed)
    pick = [t.names[i] for i in rng.permutation(t.n_nodes)[:5]]
    t2 = t.with_bins(pick)
    assert t2.bin_names == pick
    np.testing.assert_allclose(
        t2.ground_matrix(), naive.tree_path_matrix(rt.parent, rt.weight, pick), atol=1e-12
    )
    ordered = t.in_file_order(pick)
    assert ordered == [v for v in rt.file_nodes if v in pick]
    with pytest.raises(EMDInputError, match="nope"):
        t.in_file_order(pick + ["nope"])


def test_parents_none_or_empty_and_default_weights():
    a = Tree.from_edges(["r", "a", "b"], [None, "r", "r"])
    b = Tree.from_edges(["r", "a", "b"], ["", "r", "r"], [0, 1, 1])
    assert a.bin_names == b.bin_names == ["a", "b"]
    np.testing.assert_array_equal(a.ground_matrix(), [[0, 2], [2, 0]])
    np.testing.assert_array_equal(a.ground_matrix(), b.ground_matrix())


def test_single_node_tree_is_one_bin():
    t = Tree.from_edges(["r"], [""])
    assert t.n == 1 and t.bin_names == ["r"]
    v, g = emd(np.array([[2.0]]), np.array([[1.0]]), space=t, gradient=True)
    assert v[0] == 0.0 and g[0, 0] == 0.0


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("seed,weights,bins", CASES)
def test_rho1_matches_exact_lp(seed, weights, bins):
    rng = rng_for("lp", seed, bins)
    rt = random_tree(rng, weights=weights, bins=bins)
    p, q = dists(rng, BATCH, rt.n), dists(rng, BATCH, rt.n)
    got = emd(p, q, space=rt.tree)
    assert got.shape == (BATCH,) and got.dtype == np.float64
    m = naive.tree_path_matrix(rt.parent, rt.weight, rt.bins)
    for b in range(BATCH):
        want = ot.emd2(p[b], q[b], m)
        assert got[b] == pytest.approx(want, rel=1e-9, abs=1e-12 * scale_of(rt))


@pytest.mark.parametrize("seed,weights,bins", CASES[::2])
def test_rho1_class_targets_match_exact_lp_and_closed_form(seed, weights, bins):
    rng = rng_for("lp-class", seed, bins)
    rt = random_tree(rng, weights=weights, bins=bins)
    p = dists(rng, BATCH, rt.n)
    c = rng.integers(0, rt.n, BATCH)
    got = emd(p, c, space=rt.tree)
    m = naive.tree_path_matrix(rt.parent, rt.weight, rt.bins)
    q = onehot(c, rt.n)
    for b in range(BATCH):
        tol = 1e-12 * scale_of(rt)
        assert got[b] == pytest.approx(ot.emd2(p[b], q[b], m), rel=1e-9, abs=tol)
        value, grad = naive.onehot_emd(p[b], c[b], m)
        assert got[b] == pytest.approx(value, rel=1e-9, abs=tol)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("seed,weights,bins", CASES[::3])
def test_values_and_gradients_match_naive_subtree_and_path_sums(seed, weights, bins, rho):
    rng = rng_for("naive", seed, bins, rho)
    rt = random_tree(rng, weights=weights, bins=bins)
    p, q = kink_free_rows(rng, rt, BATCH)
    v, g = emd(p, q, space=rt.tree, rho=rho, gradient=True)
    assert g.shape == (BATCH, rt.n)
    tol = 1e-11 * scale_of(rt)
    for b in range(BATCH):
        assert v[b] == pytest.approx(
            naive.hemd(p[b], q[b], rt.parent, rt.weight, rt.bins, rho), rel=1e-9, abs=tol
        )
        np.testing.assert_allclose(
            g[b], naive.hemd_grad(p[b], q[b], rt.parent, rt.weight, rt.bins, rho),
            rtol=1e-9, atol=tol,
        )
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12 * scale_of(rt) * rt.n)
    # gradient=False gives the same values
    np.testing.assert_array_equal(emd(p, q, space=rt.tree, rho=rho), v)


def test_values_and_gradient_on_a_hand_made_tree():
    """r ─1─ x ─2─ a, x ─1─ b, r ─3─ c; p = (½, ½, 0), q = (0, 0, 1)."""
    t = Tree.from_edges(["r", "x", "a", "b", "c"], ["", "r", "x", "x", "r"], [0, 1, 2, 1, 3])
    assert t.bin_names == ["a", "b", "c"]
    p, q = np.array([[0.5, 0.5, 0.0]]), np.array([[0.0, 0.0, 1.0]])
    # φ̃: x = 1, a = ½, b = ½, c = −1 → EMD = 1·1 + 2·½ + 1·½ + 3·1 = 5.5
    v, g = emd(p, q, space=t, gradient=True)
    assert v[0] == pytest.approx(5.5)
    # r = (1 + 2, 1 + 1, −3) = (3, 2, −3), mean 2/3
    np.testing.assert_allclose(g[0], np.array([3.0, 2.0, -3.0]) - 2.0 / 3.0)
    # EMD²: 1·1 + 2·¼ + 1·¼ + 3·1 = 4.75
    assert emd2(p, q, space=t)[0] == pytest.approx(4.75)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("seed", range(8))
def test_gradient_matches_finite_differences_along_mass_directions(seed, rho):
    rng = rng_for("fd", seed, rho)
    rt = random_tree(rng, weights=WEIGHT_KINDS[seed % 2], bins=BIN_KINDS[seed % len(BIN_KINDS)])
    n = rt.n
    for target in ("rows", "classes"):
        if target == "rows":
            p, q = kink_free_rows(rng, rt, 2)
            tq = q
        else:
            c = rng.integers(0, n, 2)
            p = None
            while p is None or not all(far_from_kinks(rt, p[b], onehot(c, n)[b]) for b in range(2)):
                p = dists(rng, 2, n)
            tq = c
        v, g = emd(p, tq, space=rt.tree, rho=rho, normalize="none", gradient=True)
        h = 1e-6
        for k in range(n):
            e = -np.full(n, 1.0 / n)
            e[k] += 1.0
            up = emd(p + h * e, tq, space=rt.tree, rho=rho, normalize="none")
            down = emd(p - h * e, tq, space=rt.tree, rho=rho, normalize="none")
            fd = (up - down) / (2 * h)
            # the directional derivative along e_k is g·e_k = g_k (g sums to zero)
            np.testing.assert_allclose(g[:, k], fd, rtol=1e-5, atol=1e-6 * scale_of(rt))
        np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12 * scale_of(rt) * n)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("seed,weights,bins", CASES[1::3])
def test_class_targets_equal_onehot_rows(seed, weights, bins, rho):
    rng = rng_for("onehot", seed, bins, rho)
    rt = random_tree(rng, weights=weights, bins=bins)
    p = dists(rng, 4, rt.n)
    c = rng.integers(0, rt.n, 4)
    v1, g1 = emd(p, c, space=rt.tree, rho=rho, gradient=True)
    v2, g2 = emd(p, onehot(c, rt.n), space=rt.tree, rho=rho, gradient=True)
    tol = 1e-12 * scale_of(rt)
    np.testing.assert_allclose(v1, v2, rtol=1e-12, atol=tol)
    if far_from_kinks(rt, p[0], onehot(c, rt.n)[0], 1e-9):
        np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=tol)
    # and the naive subtree sums agree for class targets too
    for b in range(4):
        want = naive.hemd(p[b], onehot(c, rt.n)[b], rt.parent, rt.weight, rt.bins, rho)
        assert v1[b] == pytest.approx(want, rel=1e-9, abs=tol)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("seed", range(6))
def test_float32_close_to_float64(seed, rho):
    rng = rng_for("f32", seed, rho)
    rt = random_tree(rng, n_nodes=int(rng.integers(2, 40)), weights=WEIGHT_KINDS[seed % 2],
                     bins=BIN_KINDS[seed % len(BIN_KINDS)])
    p, q = kink_free_rows(rng, rt, BATCH)
    v64, g64 = emd(p, q, space=rt.tree, rho=rho, gradient=True)
    v32, g32 = emd(p.astype(np.float32), q.astype(np.float32), space=rt.tree, rho=rho,
                   dtype="float32", gradient=True)
    assert v32.dtype == np.float32 and g32.dtype == np.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-4, atol=1e-5 * scale_of(rt))
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4 * scale_of(rt))
    c = rng.integers(0, rt.n, BATCH)
    v64c, g64c = emd(p, c, space=rt.tree, rho=rho, gradient=True)
    v32c, g32c = emd(p, c, space=rt.tree, rho=rho, gradient=True, dtype="float32")
    np.testing.assert_allclose(v32c, v64c, rtol=1e-4, atol=1e-5 * scale_of(rt))


def test_tree_width_mismatch_is_an_input_error():
    t = Tree.from_edges(["r", "a", "b"], ["", "r", "r"], source="t.csv")
    with pytest.raises(EMDInputError, match="2 bins but the rows have 3") as info:
        emd(np.ones((1, 3)), np.array([0]), space=t)
    assert info.value.source == "t.csv"


# ----------------------------------------------------------------------------- chain = path


def path_tree(x, root_at_end=False):
    """The chain at positions x as a path tree with bins on every node, in order."""
    n = len(x)
    names = [f"v{i}" for i in range(n)]
    gaps = np.diff(x)
    if not root_at_end:
        parents = [""] + names[:-1]
        weights = [0.0] + list(gaps)
    else:
        parents = names[1:] + [""]
        weights = list(gaps) + [0.0]
    order = np.random.default_rng(n).permutation(n)  # file order does not matter
    return Tree.from_edges(
        [names[i] for i in order], [parents[i] for i in order], [weights[i] for i in order],
        bins=names,
    )


@pytest.mark.parametrize("root_at_end", [False, True])
@pytest.mark.parametrize("rho", RHOS + [3.7])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 20])
def test_chain_equals_path_tree(n, rho, root_at_end):
    rng = rng_for("path", n, rho, root_at_end)
    x = np.concatenate([[rng.uniform(-3, 3)], rng.uniform(0.05, 3.0, n - 1)]).cumsum()
    chain = Chain.from_positions(x)
    tree = path_tree(x, root_at_end)
    np.testing.assert_allclose(tree.ground_matrix(), chain.ground_matrix(), atol=1e-12)
    p, q = dists(rng, 4, n), dists(rng, 4, n)
    vc, gc = emd(p, q, space=chain, rho=rho, gradient=True)
    vt, gt = emd(p, q, space=tree, rho=rho, gradient=True)
    tol = 1e-12 * max(1.0, x[-1] - x[0])
    np.testing.assert_allclose(vt, vc, rtol=1e-10, atol=tol)
    np.testing.assert_allclose(gt, gc, rtol=1e-9, atol=1e-10 * max(1.0, x[-1] - x[0]))
    c = rng.integers(0, n, 4)
    vc, gc = emd(p, c, space=chain, rho=rho, gradient=True)
    vt, gt = emd(p, c, space=tree, rho=rho, gradient=True)
    np.testing.assert_allclose(vt, vc, rtol=1e-10, atol=tol)
    np.testing.assert_allclose(gt, gc, rtol=1e-9, atol=1e-10 * max(1.0, x[-1] - x[0]))


# ----------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def trees_and_rows(draw, n_rows=2, max_nodes=12):
    """A tree drawn node by node (random parents, weights in [0, 10]), bins on a drawn
    non-empty subset of the nodes in a drawn order, and ``n_rows`` rows with positive mass."""
    n_nodes = draw(st.integers(1, max_nodes))
    names = [f"n{i}" for i in range(n_nodes)]
    parent = {names[0]: None}
    weight = {}
    for i in range(1, n_nodes):
        parent[names[i]] = names[draw(st.integers(0, i - 1))]
        weight[names[i]] = draw(st.one_of(st.integers(0, 5).map(float), st.floats(0.0, 10.0)))
    perm = draw(st.permutations(names))
    k = draw(st.integers(1, n_nodes))
    bins = list(perm[:k])
    tree = Tree.from_edges(
        names, [parent[v] or "" for v in names], [weight.get(v, 0.0) for v in names], bins=bins
    )
    mass = st.one_of(st.just(0.0), st.floats(1e-6, 1.0))
    rows = []
    for _ in range(n_rows):
        row = np.array(draw(st.lists(mass, min_size=k, max_size=k)))
        if row.sum() <= 1e-6:
            row[draw(st.integers(0, k - 1))] = 1.0
        rows.append(row)
    return tree, parent, weight, bins, rows


@SETTINGS
@given(trees_and_rows(), st.sampled_from(RHOS))
def test_property_matches_naive_and_is_non_negative(data, rho):
    tree, parent, weight, bins, (a, b) = data
    v = emd(a[None], b[None], space=tree, rho=rho)[0]
    assert v >= 0.0
    want = naive.hemd(a / a.sum(), b / b.sum(), parent, weight, bins, rho)
    assert v == pytest.approx(want, rel=1e-9, abs=1e-12 * max(1.0, sum(weight.values())))


@SETTINGS
@given(trees_and_rows(n_rows=1))
def test_property_rho1_equals_lp(data):
    tree, parent, weight, bins, (a,) = data
    rng = np.random.default_rng(len(bins))
    b = rng.uniform(0.0, 1.0, len(bins)) + 1e-3
    p, q = a / a.sum(), b / b.sum()
    v = emd(p[None], q[None], space=tree)[0]
    m = naive.tree_path_matrix(parent, weight, bins)
    assert v == pytest.approx(ot.emd2(p, q, m), rel=1e-8, abs=1e-10 * max(1.0, sum(weight.values())))


@SETTINGS
@given(trees_and_rows(n_rows=3))
def test_property_rho1_symmetric_and_triangle(data):
    tree, parent, weight, bins, (a, b, c) = data
    scale = max(1.0, sum(weight.values()))

    def d(x, y):
        return emd(x[None], y[None], space=tree)[0]

    assert d(a, b) == pytest.approx(d(b, a), rel=1e-12, abs=1e-12 * scale)
    assert d(a, c) <= d(a, b) + d(b, c) + 1e-12 * scale
    assert d(a, a) == 0.0


# ----------------------------------------------------------------------------- the sample tree


@pytest.fixture(scope="module")
def wordnet():
    return load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))


def test_sample_wordnet_tree_shape(wordnet):
    s = wordnet.stats()
    assert (s["nodes"], s["leaves"], s["bins"], s["max_bin_distance"]) == (1371, 1000, 1000, 19.0)
    hops = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS), weight_column="wordnet_hops")
    assert hops.stats()["max_bin_distance"] == 26.0
    assert wordnet.bin_names == read_bins(IMAGENET_BINS)


def test_sample_wordnet_predictions_match_lp_and_closed_form(wordnet):
    import pyarrow.parquet as pq

    table = pq.read_table(IMAGENET_PRED).slice(0, 40)
    probs = np.asarray(table.column("probs").combine_chunks().flatten()).reshape(-1, 1000)
    labels = table.column("label").to_numpy().astype(np.int64)
    d = wordnet.ground_matrix()
    v = emd(probs, labels, space=wordnet)
    p = probs.astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(v, np.einsum("bi,ib->b", p, d[:, labels]), rtol=1e-9, atol=1e-12)
    for b in range(3):
        q = np.zeros(1000)
        q[labels[b]] = 1.0
        assert v[b] == pytest.approx(ot.emd2(p[b], q, d), rel=1e-7, abs=1e-9)
    # soft targets through the LP on two rows
    for b in range(2):
        q = p[b + 5]
        assert emd(p[b][None], q[None], space=wordnet)[0] == pytest.approx(
            ot.emd2(p[b], q, d, numItermax=1_000_000), rel=1e-7, abs=1e-9
        )


# ----------------------------------------------------------------------------- ground matrices


def metric_matrix(rng, n, kind):
    """A random metric: Euclidean distances between random points, or the shortest-path
    metric of a random weighted complete graph (so triangle-tight in places)."""
    if kind == "euclid":
        pts = rng.normal(size=(n, 3))
        return np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    w = rng.uniform(0.1, 5.0, (n, n))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0.0)
    for k in range(n):  # Floyd–Warshall
        w = np.minimum(w, w[:, k : k + 1] + w[k : k + 1, :])
    return w


@pytest.mark.parametrize("kind", ["euclid", "graph"])
@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_ground_class_targets_closed_form_and_lp(n, kind):
    rng = rng_for("ground-class", n, kind)
    d = metric_matrix(rng, n, kind)
    ground = Ground.from_matrix(d)
    assert ground.notes == ()
    p = dists(rng, 4, n)
    c = rng.integers(0, n, 4)
    v, g = emd(p, c, space=ground, gradient=True)
    for b in range(4):
        want, want_g = naive.onehot_emd(p[b], c[b], d)
        assert v[b] == pytest.approx(want, rel=1e-12, abs=1e-14)
        assert v[b] == pytest.approx(ot.emd2(p[b], onehot(c, n)[b], d), rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(g[b], d[:, c[b]] - d[:, c[b]].mean(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g[b], want_g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12 * max(1.0, d.max()) * n)
    # one-hot rows take the same closed form
    v2, g2 = emd(p, onehot(c, n), space=ground, gradient=True)
    np.testing.assert_allclose(v2, v, rtol=1e-12)
    np.testing.assert_allclose(g2, g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["euclid", "graph"])
@pytest.mark.parametrize("n", [2, 5, 12])
def test_ground_soft_targets_match_lp_and_gradient_is_a_subgradient(n, kind):
    rng = rng_for("ground-soft", n, kind)
    d = metric_matrix(rng, n, kind)
    ground = Ground.from_matrix(d)
    p, q = dists(rng, 3, n), dists(rng, 3, n)
    v, g = emd(p, q, space=ground, gradient=True)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-9 * max(1.0, d.max()) * n)
    for b in range(3):
        assert v[b] == pytest.approx(ot.emd2(p[b], q[b], d), rel=1e-9, abs=1e-12)
        # W(·, q) is convex and the dual potential is a subgradient on the simplex
        for _ in range(5):
            p2 = dists(rng, 1, n)[0]
            w2 = ot.emd2(p2, q[b], d)
            assert w2 >= v[b] + g[b] @ (p2 - p[b]) - 1e-9 * max(1.0, d.max())


def test_ground_matches_tree_and_chain_spaces():
    rt = random_tree(rng_for("ground-tree"), n_nodes=10, bins="some-internal")
    ground = Ground.from_matrix(rt.tree.ground_matrix())
    rng = rng_for("ground-tree-rows")
    p, q = dists(rng, 3, rt.n), dists(rng, 3, rt.n)
    np.testing.assert_allclose(emd(p, q, space=ground), emd(p, q, space=rt.tree), rtol=1e-9, atol=1e-12)
    c = rng.integers(0, rt.n, 3)
    vg, gg = emd(p, c, space=ground, gradient=True)
    vt, gt = emd(p, c, space=rt.tree, gradient=True)
    np.testing.assert_allclose(vg, vt, rtol=1e-9, atol=1e-12)
    if all(far_from_kinks(rt, p[b], onehot(c, rt.n)[b], 1e-9) for b in range(3)):
        np.testing.assert_allclose(gg, gt, rtol=1e-9, atol=1e-12)
    x = np.cumsum(rng.uniform(0.1, 2, 6))
    p6 = dists(rng, 2, 6)
    c6 = rng.integers(0, 6, 2)
    np.testing.assert_allclose(
        emd(p6, c6, space=Ground.from_matrix(naive.chain_ground(x))), emd(p6, c6, positions=x),
        rtol=1e-12,
    )


def test_ground_float32():
    rng = rng_for("ground-f32")
    d = metric_matrix(rng, 8, "euclid")
    p = dists(rng, 3, 8)
    c = rng.integers(0, 8, 3)
    v64, g64 = emd(p, c, space=Ground.from_matrix(d), gradient=True)
    v32, g32 = emd(p, c, space=Ground.from_matrix(d), gradient=True, dtype="float32")
    assert v32.dtype == np.float32 and g32.dtype == np.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "matrix,what",
    [
        (np.zeros((2, 3)), "N × N"),
        (np.zeros(4), "N × N"),
        (np.zeros((2, 2, 2)), "N × N"),
        (np.array([[0.0, -1.0], [1.0, 0.0]]), "negative"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "not finite"),
        (np.array([[0.0, 1.0], [np.inf, 0.0]]), "not finite"),
        (np.array([[0.0, 1.0], [1.0, 0.5]]), "diagonal"),
    ],
)
def test_bad_ground_matrices(matrix, what):
    with pytest.raises(EMDInputError, match=what):
        Ground.from_matrix(matrix, source="D.npy")


def test_bad_ground_matrix_locates_the_entry():
    d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, -3.0], [2.0, 1.0, 0.0]])
    with pytest.raises(EMDInputError) as info:
        Ground.from_matrix(d, source="D.npy")
    assert (info.value.source, info.value.row, info.value.column) == ("D.npy", 1, 2)


def test_empty_ground_matrix_is_an_input_error():
    with pytest.raises(EMDInputError):
        Ground.from_matrix(np.zeros((0, 0)), source="D.npy")


def test_asymmetric_and_triangle_violating_matrices_are_noted_but_computed():
    asym = np.array([[0.0, 1.0, 1.0], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    g = Ground.from_matrix(asym)
    assert any("symmetric" in n for n in g.notes)
    tri = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 1.0], [5.0, 1.0, 0.0]])
    g2 = Ground.from_matrix(tri)
    assert len(g2.notes) == 1 and "triangle" in g2.notes[0]
    p = np.array([[0.2, 0.3, 0.5]])
    assert emd(p, np.array([2]), space=g2)[0] == pytest.approx(0.2 * 5 + 0.3 * 1)
    assert emd(p, np.array([0]), space=g)[0] == pytest.approx(0.3 * 2 + 0.5 * 1)


@pytest.mark.parametrize("rho", [1.5, 2.0])
def test_ground_refuses_rho_other_than_one(rho):
    g = Ground.from_matrix(naive.chain_ground([0, 1, 2]))
    with pytest.raises(EMDInputError, match="rho = 1"):
        emd(np.ones((1, 3)), np.array([1]), space=g, rho=rho)
    with pytest.raises(EMDInputError, match="rho = 1"):
        emd2(np.ones((1, 3)), np.array([1]), space=g)


def test_ground_width_mismatch():
    g = Ground.from_matrix(naive.chain_ground([0, 1, 2]), source="D.npy")
    with pytest.raises(EMDInputError, match="3 bins but the rows have 4"):
        emd(np.ones((1, 4)), np.array([1]), space=g)


def test_soft_targets_without_pot_suggest_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # "import ot" now raises ImportError
    g = Ground.from_matrix(naive.chain_ground([0, 1, 2]))
    p = np.array([[0.2, 0.3, 0.5]])
    with pytest.raises(EMDInputError) as info:
        emd(p, np.array([[0.5, 0.25, 0.25]]), space=g)
    assert "POT" in str(info.value)
    assert "emdcli[lp]" in str(info.value)
    # class targets and one-hot rows need no LP
    assert emd(p, np.array([0]), space=g)[0] == pytest.approx(0.3 + 1.0)
    assert emd(p, np.array([[1.0, 0.0, 0.0]]), space=g)[0] == pytest.approx(0.3 + 1.0)

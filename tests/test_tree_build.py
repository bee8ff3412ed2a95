"""Trees built from ground matrices (``emdcli.treebuild``, ``emd tree build``): neighbour
joining recovers tree metrics (random trees, WordNet), linkage recovers ultrametrics, the
distortion figures, and every output format read back through ``--tree``."""

import csv
import io
import os
import sys
import zlib

import numpy as np
import pytest

from emdcli import EMDInputError, build_tree, emd
from emdcli.cli import app
from emdcli.spaces import Tree
from emdcli.treebuild import distortion, spearman, write_tree
from emdcli.treefiles import load_tree, read_bins

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import cli_bad, cli_ok, cli_runner, run_cli, dists  # noqa: E402

DATA = os.path.join(HERE, os.pardir, "emdcli", "data")
WORDNET = os.path.join(DATA, "imagenet_wordnet_tree.csv")
IMAGENET_BINS = os.path.join(DATA, "imagenet_bins.txt")


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("tree-build",) + key).encode()))


def random_tree(rng, leaves):
    """A random rooted tree: internal nodes of any degree (unary ones too), random weights."""
    nodes, parents, weights, internal = ["r"], [""], [0.0], ["r"]
    for i in range(leaves):
        p = internal[rng.integers(len(internal))]
        if rng.random() < 0.45:
            name = f"i{len(internal)}"
            nodes.append(name)
            parents.append(p)
            weights.append(float(rng.uniform(0.05, 3)))
            internal.append(name)
            p = name
        nodes.append(f"L{i}")
        parents.append(p)
        weights.append(float(rng.uniform(0.05, 3)))
    return Tree.from_edges(nodes, parents, weights)


def assert_reproduces(tree, d, rtol=1e-9):
    t = tree.ground_matrix()
    np.testing.assert_allclose(t, d, rtol=rtol, atol=rtol * d.max())


def hemd_agrees(a, b, rng, rows=64):
    p, q = dists(rng, rows, a.n), dists(rng, rows, a.n)
    np.testing.assert_allclose(emd(p, q, space=a), emd(p, q, space=b), rtol=1e-9)
    c = rng.integers(0, a.n, rows)
    np.testing.assert_allclose(emd(p, c, space=a), emd(p, c, space=b), rtol=1e-9)


# ----------------------------------------------------------------------------- neighbour joining


@pytest.mark.parametrize("seed", range(5))
def test_nj_recovers_random_trees(seed):
    rng = rng_for("random", seed)
    original = random_tree(rng, 30)
    d = original.ground_matrix()
    built = build_tree(d)
    assert built.n == 30 and built.bin_names == [str(i) for i in range(30)]
    assert (built.weight >= 0).all()
    assert_reproduces(built, d)
    hemd_agrees(original, built, rng)
    stats = distortion(built, d)
    assert stats["max_rel_error"] < 1e-9 and stats["spearman"] == pytest.approx(1.0)


def test_nj_recovers_wordnet():
    original = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    d = original.ground_matrix()
    built = build_tree(d, classes=original.bin_names)
    assert built.bin_names == original.bin_names
    assert_reproduces(built, d)
    hemd_agrees(original, built, rng_for("wordnet"))
    # multifurcations come back whole (zero-length internal edges are contracted)
    assert built.n_nodes <= original.n_nodes + 1


def test_midpoint_root_and_root_at_a_class():
    rng = rng_for("roots")
    d = random_tree(rng, 12).ground_matrix()
    built = build_tree(d)
    depth, _ = built.depth()
    assert depth[built.bin_node].max() == pytest.approx(d.max() / 2, rel=1e-12)
    at = build_tree(d, root="5")
    assert_reproduces(at, d)
    leaf = at.bin_node[5]
    assert at.parent[leaf] == 0 and at.weight[leaf] == 0.0  # joined to the root by 0
    assert build_tree(d, root=5).names == at.names  # an index works too
    with pytest.raises(EMDInputError, match="no class named 'x'"):
        build_tree(d, root="x")


def test_nj_on_a_non_tree_metric_clamps_and_stays_valid():
    rng = rng_for("noise")
    x = rng.standard_normal((25, 3))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))  # Euclidean: not a tree metric
    built = build_tree(d)
    assert (built.weight >= 0).all() and built.n == 25
    stats = distortion(built, d)
    assert 0 < stats["mean_rel_error"] < 1 and stats["spearman"] > 0.5
    junk = rng.uniform(0, 1, (30, 30)) ** 4  # far from any metric: the triangle inequality fails
    junk = junk + junk.T
    np.fill_diagonal(junk, 0)
    built = build_tree(junk)
    assert (built.weight >= 0).all() and np.isfinite(distortion(built, junk)["mean_rel_error"])


def test_small_cases():
    one = build_tree(np.zeros((1, 1)))
    assert one.n == 1 and one.n_nodes == 1
    two = build_tree(np.array([[0, 3.0], [3.0, 0]]))
    assert_reproduces(two, np.array([[0, 3.0], [3.0, 0]]))
    three = build_tree(np.array([[0, 1, 2], [1, 0, 2], [2, 2, 0.0]]))
    assert_reproduces(three, np.array([[0, 1, 2], [1, 0, 2], [2, 2, 0.0]]))
    zero = build_tree(np.zeros((3, 3)))  # identical classes: all zero-length edges
    assert not zero.ground_matrix().any()
    for t in (two, three, zero):
        assert t.stats()["bins_on_internal_nodes"] == 0 and t.names[0] == "_root"


def test_nj_1000_classes_is_fast_enough():
    import time

    d = load_tree(WORDNET).ground_matrix()
    t = time.perf_counter()
    build_tree(d)
    assert time.perf_counter() - t < 6  # 3 s on an idle core (benchmarks/bench_spaces.py)


# ----------------------------------------------------------------------------- linkage


def ultrametric(rng, n):
    """D of random nested clusters merged at increasing heights."""
    clusters = [[i] for i in range(n)]
    d, h = np.zeros((n, n)), 0.0
    while len(clusters) > 1:
        i, j = sorted(rng.choice(len(clusters), 2, replace=False))
        h += float(rng.uniform(0.1, 1.0))
        for a in clusters[i]:
            for b in clusters[j]:
                d[a, b] = d[b, a] = h
        clusters[i] += clusters.pop(j)
    return d


@pytest.mark.parametrize("method", ["average", "complete"])
def test_linkage_reproduces_an_ultrametric(method):
    pytest.importorskip("scipy")
    rng = rng_for("ultra", method)
    d = ultrametric(rng, 40)
    built = build_tree(d, method=method)
    assert_reproduces(built, d, rtol=1e-12)
    assert (built.weight >= 0).all() and built.names[0] == "_root"
    nj = build_tree(d)  # an ultrametric is a tree metric too
    assert_reproduces(nj, d)


def test_ward_builds_a_valid_tree():
    pytest.importorskip("scipy")
    d = ultrametric(rng_for("ward"), 20)
    built = build_tree(d, method="ward")
    assert built.n == 20 and (built.weight >= 0).all()
    assert distortion(built, d)["spearman"] > 0.5
    with pytest.raises(EMDInputError, match="root applies to method 'nj'"):
        build_tree(d, method="average", root="3")


def test_linkage_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.cluster.hierarchy", None)
    with pytest.raises(EMDInputError, match="needs SciPy") as info:
        build_tree(np.array([[0, 1.0], [1.0, 0]]), method="average")
    assert "pip install 'emdcli[tree]'" in str(info.value)


# ----------------------------------------------------------------------------- distortion


def test_distortion_hand_checked():
    # star: a─1, b─2, c─3, d─0.5 from the root; T_ab=3 T_ac=4 T_ad=1.5 T_bc=5 T_bd=2.5 T_cd=3.5
    tree = Tree.from_edges(["r", "a", "b", "c", "d"], ["", "r", "r", "r", "r"], [0, 1, 2, 3, 0.5])
    d = np.array([[0, 2, 4, 0], [2, 0, 10, 2.5], [4, 10, 0, 7], [0, 2.5, 7, 0.0]])
    s = distortion(tree, d)
    # relative errors over the pairs with D > 0: ab .5, ac 0, bc .5, bd 0, cd .5; ad: D = 0
    assert s["pairs"] == 6 and s["zero_pairs"] == 1 and s["zero_pairs_max_tree"] == 1.5
    assert s["mean_rel_error"] == pytest.approx(0.3, rel=1e-15)
    assert s["max_rel_error"] == 0.5
    # ranks T [3,5,1,6,2,4], D [2,4,1,6,3,5]: 1 − 6·4 / (6·35)
    assert s["spearman"] == pytest.approx(31 / 35, rel=1e-14)


def test_spearman_ties_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = rng_for("ties")
    a, b = rng.integers(0, 5, 200).astype(float), rng.integers(0, 7, 200).astype(float)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_bad_ground_matrices():
    with pytest.raises(EMDInputError, match="not symmetric"):
        build_tree(np.array([[0, 1.0], [2.0, 0]]))
    with pytest.raises(EMDInputError, match="diagonal"):
        build_tree(np.array([[1.0, 1.0], [1.0, 0]]))
    with pytest.raises(EMDInputError, match="negative"):
        build_tree(np.array([[0, -1.0], [-1.0, 0]]))
    with pytest.raises(EMDInputError, match="N × N"):
        build_tree(np.ones((2, 3)))
    with pytest.raises(EMDInputError, match="unknown method"):
        build_tree(np.zeros((2, 2)), method="upgma")
    with pytest.raises(EMDInputError, match="3 class names for 2 classes"):
        build_tree(np.zeros((2, 2)), classes=["a", "b", "c"])
    with pytest.raises(EMDInputError, match="appears twice"):
        build_tree(np.zeros((2, 2)), classes=["a", "a"])
    with pytest.raises(EMDInputError, match="has the name ' a'"):
        build_tree(np.zeros((2, 2)), classes=[" a", "b"])


# ----------------------------------------------------------------------------- files


NAMES = ["plain", "with space", "comma,here", "quote'in", "(paren)", "colon:semi;", "_n1", "_root",
         "tab\tless", "ünïcode"]


@pytest.mark.parametrize("ext", ["csv", "nwk", "json"])
def test_every_format_reads_back_in_class_order(tmp_path, ext):
    names = [n for n in NAMES if "\t" not in n]
    d = random_tree(rng_for("files"), len(names)).ground_matrix()
    built = build_tree(d, classes=names)
    path = tmp_path / f"t.{ext}"
    bins = write_tree(built, path)
    if ext != "nwk":
        assert bins is None  # the leaves are in class order in the file
    back = load_tree(path, bins=read_bins(bins) if bins else None)
    assert back.bin_names == names
    np.testing.assert_allclose(back.ground_matrix(), built.ground_matrix(), rtol=1e-15, atol=1e-15)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_internal_names_avoid_class_names():
    built = build_tree(random_tree(rng_for("names"), 10).ground_matrix(),
                       classes=["_n1", "_root", "a", "b", "c", "d", "e", "f", "g", "h"])
    assert built.names[0] == "__root" and len(set(built.names)) == built.n_nodes


# ----------------------------------------------------------------------------- CLI


run, ok, bad_cli = run_cli, cli_ok, cli_bad


def values(stdout):
    rows = list(csv.reader(io.StringIO(stdout)))[1:]
    return np.array([float(r[1]) for r in rows])


@pytest.fixture
def ground(tmp_path):
    rng = rng_for("cli")
    original = random_tree(rng, 12)
    d = original.ground_matrix()
    np.save(tmp_path / "D.npy", d)
    (tmp_path / "classes.txt").write_text("\n".join(f"class {i}" for i in range(12)) + "\n")
    p = dists(rng, 40, 12)
    np.save(tmp_path / "pred.npy", p)
    np.save(tmp_path / "labels.npy", rng.integers(0, 12, 40))
    return tmp_path, original, d


def test_cli_every_format_goes_into_compute(ground):
    tmp, original, d = ground
    p = np.load(tmp / "pred.npy")
    c = np.load(tmp / "labels.npy")
    want = emd(p, c, space=original)
    for ext in ("csv", "nwk", "json"):
        out = tmp / f"tree.{ext}"
        r = ok("tree", "build", "--ground", tmp / "D.npy", "-o", out, "--classes", tmp / "classes.txt")
        assert "wrote a tree of 12 leaves" in r.stderr
        line = [ln for ln in r.stderr.splitlines() if ln.startswith("distortion: ")][0]
        assert "pairs=66" in line and "spearman=1.0" in line
        extra = []
        if "tree.bins.txt" in r.stderr:
            extra = ["--bins", tmp / "tree.bins.txt"]
            assert read_bins(tmp / "tree.bins.txt") == [f"class {i}" for i in range(12)]
        got = values(ok("compute", tmp / "pred.npy", tmp / "labels.npy", "--tree", out, *extra,
                        "--quiet", "-f", "csv").stdout)
        np.testing.assert_allclose(got, want, rtol=1e-9)
        described = ok("tree", out, *extra, "--list-bins").stdout.splitlines()
        assert described == [f"class {i}" for i in range(12)]


def test_cli_methods_and_root(ground):
    pytest.importorskip("scipy")
    tmp, _, d = ground
    for method in ("average", "complete", "ward"):
        ok("tree", "build", "--ground", tmp / "D.npy", "-o", tmp / f"{method}.csv", "--method", method)
        assert load_tree(tmp / f"{method}.csv").n == 12
    ok("tree", "build", "--ground", tmp / "D.npy", "-o", tmp / "r.csv", "--root", "4")
    t = load_tree(tmp / "r.csv")
    assert t.weight[t.bin_node[4]] == 0.0 and t.parent[t.bin_node[4]] == 0
    np.testing.assert_allclose(t.ground_matrix(), d, rtol=1e-9, atol=1e-12)


def test_cli_from_features(tmp_path):
    rng = rng_for("features")
    means = rng.standard_normal((5, 3)) * 4
    y = np.repeat(np.arange(5), 10)
    x = means[y] + rng.standard_normal((50, 3)) * 0.1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    r = ok("tree", "build", tmp_path / "x.npy", tmp_path / "y.npy", "-o", tmp_path / "t.json",
           "--metric", "cosine")
    assert "distortion: pairs=10" in r.stderr
    assert load_tree(tmp_path / "t.json").bin_names == [str(i) for i in range(5)]


def test_cli_errors_leave_nothing(ground):
    tmp, _, d = ground
    D = tmp / "D.npy"
    bad_cli(tmp, "tree", "build", "-o", tmp / "t.csv", needles=["give either --ground"])
    bad_cli(tmp, "tree", "build", tmp / "pred.npy", "--ground", D, "-o", tmp / "t.csv",
            needles=["give either --ground"])
    bad_cli(tmp, "tree", "build", "--ground", D, "-o", tmp / "t.txt", needles=["t.txt: a tree is written as"])
    bad_cli(tmp, "tree", "build", "--ground", D, "-o", tmp / "no" / "t.csv", needles=["does not exist"])
    bad_cli(tmp, "tree", "build", "--ground", D, "-o", tmp / "t.csv", "--root", "zz",
            needles=["--root: no class named 'zz'"])
    bad_cli(tmp, "tree", "build", "--ground", tmp / "missing.npy", "-o", tmp / "t.csv",
            needles=["missing.npy: no such ground-matrix file"])
    asym = d.copy()
    asym[0, 1] += 1
    np.save(tmp / "asym.npy", asym)
    bad_cli(tmp, "tree", "build", "--ground", tmp / "asym.npy", "-o", tmp / "t.csv",
            needles=["asym.npy: the ground matrix is not symmetric"])
    (tmp / "few.txt").write_text("a\nb\n")
    bad_cli(tmp, "tree", "build", "--ground", D, "-o", tmp / "t.csv", "--classes", tmp / "few.txt",
            needles=["few.txt: 2 class names for 12 classes"])
    bad_cli(tmp, "tree", "build", "--ground", D, "-o", tmp / "t.csv", "--method", "average",
            "--root", "1", needles=["root applies to method 'nj'"])


def test_tree_describe_is_unchanged_and_build_has_help():
    r = ok("tree", WORDNET)
    assert "nodes: 1371" in r.stdout
    for words in (["tree", "build"], ["tree"]):
        h = cli_runner().invoke(app, [*words, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert h.exit_code == 0 and all(len(line) <= 80 for line in h.stdout.splitlines())
        assert "emd tree build" in h.stdout
    assert "Usage: emd tree build [OPTIONS] [FEATURES] [LABELS]" in cli_runner().invoke(
        app, ["tree", "build", "--help"]).stdout


def test_one_class_distortion_is_quiet(recwarn):
    from emdcli.treebuild import spearman

    assert np.isnan(spearman([1.0], [2.0])) and np.isnan(spearman([], []))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]

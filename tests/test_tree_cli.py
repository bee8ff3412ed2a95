"""``emd tree`` and ``emd compute --tree/--bins/--ground`` from the command line.

Runs the Typer app in-process with ``typer.testing.CliRunner`` (stdout and stderr are
captured separately) and checks the results against the library (:func:`emdcli.emd`) and
POT. Bad input must exit with code 2 and exactly one line on stderr, no traceback.
"""

import csv
import io
import os
import sys
import zlib

import numpy as np
import ot
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emdcli import emd
from emdcli.treefiles import load_tree, read_bins

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import naive  # noqa: E402
from common import cli_ok, run_cli  # noqa: E402
from test_treefiles import MALFORMED  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, os.pardir))
SAMPLE = os.path.join(ROOT, "sample_data")
WORDNET = os.path.join(SAMPLE, "imagenet_wordnet_tree.csv")
IMAGENET_BINS = os.path.join(SAMPLE, "imagenet_bins.txt")
IMAGENET_PRED = os.path.join(SAMPLE, "imagenet_pred.parquet")


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("tree-cli",) + key).encode()))


run, ok = run_cli, cli_ok


def bad(*args, needles=()):
    """Exit 2, nothing on stdout, one ``emd: error:`` line on stderr containing ``needles``."""
    r = run(*args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stdout == ""
    assert r.stderr.startswith("emd: error: "), r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.endswith("\n"), r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    return r.stderr


def read_csv_rows(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def values_of(r, column=1):
    header, rows = read_csv_rows(r.stdout)
    return header, np.array([float(row[column]) for row in rows]), [row[0] for row in rows]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


# A small tree used throughout: r ─1─ x ─2─ a, x ─0.5─ b, x ─1─ y, r ─3─ c, c ─1─ d, c ─1─ e
SMALL_CSV = """node,parent,weight,hops,comment
r,,,0,root
x,r,1,2,inner
a,x,2,1,leaf
b,x,0.5,1,leaf
y,x,1,4,inner node as a leaf
c,r,3,1,inner
d,c,1,1,leaf
e,c,1,2,leaf
"""
SMALL_LEAVES = ["a", "b", "y", "d", "e"]


@pytest.fixture
def small(tmp_path):
    return write(tmp_path / "small.csv", SMALL_CSV)


def dists(rng, b, n):
    a = rng.uniform(0.05, 1.0, (b, n)) ** 2
    return a / a.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- emd tree


def stats_of(stdout):
    out = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def test_tree_command_on_the_sample_wordnet_tree():
    s = stats_of(ok("tree", WORDNET).stdout)
    assert s["nodes"] == "1371"
    assert s["leaves"] == "1000"
    assert s["bins"] == "1000"
    assert float(s["max_bin_distance"]) == 19.0
    hops = stats_of(ok("tree", WORDNET, "--tree-weights", "wordnet_hops").stdout)
    assert float(hops["max_bin_distance"]) == 26.0
    assert hops["nodes"] == "1371" and hops["leaves"] == "1000"


def test_tree_command_list_bins():
    leaves = load_tree(WORDNET).bin_names
    r = ok("tree", WORDNET, "--list-bins")
    assert r.stdout.splitlines() == leaves
    r = ok("tree", WORDNET, "--bins", IMAGENET_BINS, "--list-bins")
    assert r.stdout.splitlines() == read_bins(IMAGENET_BINS)
    assert sorted(leaves) == sorted(read_bins(IMAGENET_BINS))


def test_tree_command_ground_out(tmp_path):
    out = tmp_path / "D.npy"
    r = ok("tree", WORDNET, "--bins", IMAGENET_BINS, "--ground-out", out)
    d = np.load(out)
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    assert d.shape == (1000, 1000)
    np.testing.assert_array_equal(d, tree.ground_matrix())
    assert d.max() == 19.0
    assert "1000 × 1000" in r.stderr and str(out) in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["D.npy"]  # no temporary left behind


def test_tree_command_ground_out_of_a_small_tree_matches_naive(tmp_path, small):
    out = tmp_path / "D.npy"
    ok("tree", small, "--ground-out", out)
    parent = {"r": None, "x": "r", "a": "x", "b": "x", "y": "x", "c": "r", "d": "c", "e": "c"}
    weight = {"x": 1, "a": 2, "b": 0.5, "y": 1, "c": 3, "d": 1, "e": 1}
    np.testing.assert_allclose(np.load(out), naive.tree_path_matrix(parent, weight, SMALL_LEAVES))
    hops = {"x": 2, "a": 1, "b": 1, "y": 4, "c": 1, "d": 1, "e": 2}
    ok("tree", small, "--ground-out", out, "--tree-weights", "hops")
    np.testing.assert_allclose(np.load(out), naive.tree_path_matrix(parent, hops, SMALL_LEAVES))


def test_tree_command_describes_a_small_tree(small, tmp_path):
    s = stats_of(ok("tree", small).stdout)
    assert s["nodes"] == "8" and s["leaves"] == "5" and s["internal"] == "3"
    assert s["root"] == "r"
    assert float(s["max_bin_distance"]) == 2 + 1 + 3 + 1  # a … d
    assert s["bins_on_internal_nodes"] == "0"
    assert s["bin_order"].startswith("a, b, y, d, e")
    bins = write(tmp_path / "bins.txt", "x\nc\na\n")
    s = stats_of(ok("tree", small, "--bins", bins).stdout)
    assert s["bins"] == "3" and s["bins_on_internal_nodes"] == "2"
    assert float(s["max_bin_distance"]) == 2 + 1 + 3


@pytest.mark.parametrize(
    "name,text",
    [
        ("t.nwk", "((a:2,b:0.5,y:1)x:1,(d:1,e:1)c:3)r;"),
        ("t.json", '{"r": null, "x": ["r", 1], "a": ["x", 2], "b": ["x", 0.5], "y": "x", '
                   '"c": ["r", 3], "d": "c", "e": "c"}'),
        ("n.json", '{"name": "r", "children": [{"name": "x", "children": [{"name": "a", "weight": 2},'
                   ' {"name": "b", "weight": 0.5}, {"name": "y"}]}, {"name": "c", "weight": 3, '
                   '"children": [{"name": "d"}, {"name": "e"}]}]}'),
    ],
)
def test_tree_command_reads_every_format_alike(tmp_path, small, name, text):
    path = write(tmp_path / name, text)
    assert ok("tree", path, "--list-bins").stdout.splitlines() == SMALL_LEAVES
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    ok("tree", path, "--ground-out", a)
    ok("tree", small, "--ground-out", b)
    np.testing.assert_array_equal(np.load(a), np.load(b))
    assert stats_of(ok("tree", path).stdout) == stats_of(ok("tree", small).stdout)


def test_tree_command_bad_options(tmp_path, small):
    bad("tree", small, "--ground-out", tmp_path / "D.txt", needles=[".npy"])
    bad("tree", small, "--tree-weights", "depth", needles=["'depth'", small])
    bad("tree", tmp_path / "missing.csv", needles=["no such tree file"])
    bad("tree", small, "--bins", tmp_path / "missing.txt", needles=["bins file"])
    assert not (tmp_path / "D.txt").exists()


def test_tree_command_list_bins_with_ground_out_still_writes_the_matrix(tmp_path, small):
    out = tmp_path / "D.npy"
    r = ok("tree", small, "--list-bins", "--ground-out", out)
    assert r.stdout.splitlines() == SMALL_LEAVES
    assert out.exists()


def test_tree_weights_with_a_newick_tree_is_refused(tmp_path):
    path = write(tmp_path / "t.nwk", "(a:2,b:1)r;")
    bad("tree", path, "--tree-weights", "hops")


# ----------------------------------------------------------------------------- malformed trees


def _malformed_files(tmp_path, name, text, bins):
    tree = write(tmp_path / name, text)
    bins_file = write(tmp_path / "bins.txt", "\n".join(bins) + "\n") if bins else None
    return tree, bins_file


@pytest.mark.parametrize("name,text,bins,needles", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_tree_exits_2_with_one_line(tmp_path, name, text, bins, needles):
    tree, bins_file = _malformed_files(tmp_path, name, text, bins)
    extra = ["--bins", bins_file] if bins_file else []
    msg = bad("tree", tree, *extra, needles=needles)
    assert tree in msg
    pred = tmp_path / "p.npy"
    np.save(pred, np.full((2, 3), 1 / 3))
    np.save(tmp_path / "c.npy", np.array([0, 1]))
    out = tmp_path / "out.csv"
    msg = bad("compute", pred, tmp_path / "c.npy", "--tree", tree, *extra, "-o", out, needles=needles)
    assert tree in msg
    assert not out.exists()


def test_bin_count_that_differs_from_the_prediction_width(tmp_path, small):
    pred = tmp_path / "p.npy"
    np.save(pred, np.full((2, 4), 0.25))
    np.save(tmp_path / "c.npy", np.array([0, 1]))
    bad("compute", pred, tmp_path / "c.npy", "--tree", small, needles=["5 bins", "have 4", small])
    bins = write(tmp_path / "bins.txt", "a\nb\nc\n")
    bad("compute", pred, tmp_path / "c.npy", "--tree", small, "--bins", bins,
        needles=["3 bins", "have 4"])
    # a Parquet list column of the wrong width
    pq.write_table(pa.table({"probs": pa.array(list(np.full((2, 4), 0.25)), pa.list_(pa.float64())),
                             "label": [0, 1]}), tmp_path / "p.parquet")
    bad("compute", tmp_path / "p.parquet", "--target-column", "label", "--tree", small,
        needles=["5 bins", "have 4"])


def test_space_options_that_conflict(tmp_path, small):
    pred = tmp_path / "p.npy"
    np.save(pred, np.full((2, 5), 0.2))
    np.save(tmp_path / "c.npy", np.array([0, 1]))
    np.save(tmp_path / "D.npy", naive.chain_ground(range(5)))
    c = tmp_path / "c.npy"
    bad("compute", pred, c, "--tree", small, "--ground", tmp_path / "D.npy", needles=["--ground"])
    bad("compute", pred, c, "--tree", small, "--positions", "0,1,2,3,4", needles=["--positions"])
    bad("compute", pred, c, "--bins", write(tmp_path / "b.txt", "a\n"), needles=["--bins needs --tree"])
    bad("compute", pred, c, "--tree-weights", "hops", needles=["--tree-weights needs --tree"])


# ----------------------------------------------------------------------------- compute --tree


@pytest.mark.parametrize("metric,rho", [("emd", 1.0), ("emd2", 2.0), ("emd-rho", 1.5), ("emd-rho", 3.0)])
@pytest.mark.parametrize("target", ["classes", "rows"])
def test_compute_tree_matches_the_library(tmp_path, small, metric, rho, target):
    rng = rng_for("compute", metric, rho, target)
    p = rng.uniform(0.0, 2.0, (7, 5))
    t = rng.integers(0, 5, 7) if target == "classes" else rng.uniform(0.0, 1.0, (7, 5))
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    extra = ["--rho", rho] if metric == "emd-rho" else []
    grad = tmp_path / "g.npy"
    r = ok("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--tree", small, "-m", metric, *extra,
           "-f", "csv", "-g", grad, "--quiet")
    header, values, ids = values_of(r)
    assert header == ["row", metric.replace("-", "_")]
    assert ids == [str(i) for i in range(7)]
    want, want_g = emd(p, t, space=load_tree(small), rho=rho, gradient=True)
    np.testing.assert_array_equal(values, want)
    np.testing.assert_array_equal(np.load(grad), want_g)
    assert r.stderr == ""


def test_compute_tree_weights_and_bins(tmp_path, small):
    rng = rng_for("weights-bins")
    p = dists(rng, 5, 3)
    c = rng.integers(0, 3, 5)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", c)
    bins = write(tmp_path / "bins.txt", "# internal nodes too\nc\na\nx\n")
    r = ok("compute", tmp_path / "p.npy", tmp_path / "c.npy", "--tree", small, "--bins", bins,
           "--tree-weights", "hops", "-f", "csv", "-q")
    tree = load_tree(small, bins=["c", "a", "x"], weight_column="hops")
    np.testing.assert_array_equal(values_of(r)[1], emd(p, c, space=tree))
    parent = {"r": None, "x": "r", "a": "x", "b": "x", "y": "x", "c": "r", "d": "c", "e": "c"}
    hops = {"x": 2, "a": 1, "b": 1, "y": 4, "c": 1, "d": 1, "e": 2}
    m = naive.tree_path_matrix(parent, hops, ["c", "a", "x"])
    for b in range(5):
        q = np.zeros(3)
        q[c[b]] = 1
        assert values_of(r)[1][b] == pytest.approx(ot.emd2(p[b], q, m), rel=1e-9)


def test_compute_with_newick_and_json_trees_alike(tmp_path, small):
    rng = rng_for("formats")
    p, q = dists(rng, 6, 5), dists(rng, 6, 5)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    nwk = write(tmp_path / "t.tree", "((a:2,'b':0.5[half],y)x:1,(d,e)c:3)[root]r;")
    js = write(tmp_path / "t.json", '{"x": ["r", 1], "a": ["x", 2], "b": ["x", 0.5], "y": "x", '
                                    '"c": ["r", 3], "d": "c", "e": "c"}')
    outs = [values_of(ok("compute", tmp_path / "p.npy", tmp_path / "q.npy", "--tree", t, "-m", "emd2",
                         "-f", "csv", "-q"))[1] for t in (small, nwk, js)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


# ----------------------------------------------------------------------------- name matching


def _named_parquet(path, p, names, order, *, label=None, soft=None, ids=None, extra=None,
                   mixed=False):
    """One numeric column per bin (``names[j]`` holds ``p[:, j]``), written in ``order``;
    ``mixed``: every other column float32 (p must then be exact in float32)."""
    cols = {}
    if ids is not None:
        cols["image"] = pa.array(ids)
    for j in order:
        cols[names[j]] = pa.array(p[:, j], pa.float32() if (mixed and j % 2) else pa.float64())
    if label is not None:
        cols["label"] = pa.array(label, pa.int32())
    if soft is not None:
        cols["target"] = pa.array(list(soft), pa.list_(pa.float64()))
    if extra:
        cols.update(extra)
    pq.write_table(pa.table(cols), path)
    return str(path)


@pytest.mark.parametrize("rho_args", [["-m", "emd"], ["-m", "emd2"], ["-m", "emd-rho", "--rho", "1.5"]])
def test_shuffled_parquet_columns_are_matched_by_name(tmp_path, small, rho_args):
    rng = rng_for("shuffled", *rho_args)
    tree = load_tree(small)
    names = tree.bin_names
    p = dists(rng, 9, 5).astype(np.float32).astype(np.float64)  # exact in float32 columns
    label = rng.integers(0, 5, 9)
    rho = float(rho_args[-1]) if len(rho_args) == 4 else (2.0 if rho_args[1] == "emd2" else 1.0)
    want, want_g = emd(p, label, space=tree, rho=rho, gradient=True)
    results = []
    for k, order in enumerate([range(5), rng.permutation(5), rng.permutation(5)[::-1]]):
        path = _named_parquet(tmp_path / f"p{k}.parquet", p, names, list(order), label=label,
                              ids=[f"img{i}" for i in range(9)], mixed=True)
        grad = tmp_path / f"g{k}.npy"
        r = ok("compute", path, "--tree", small, "--target-column", "label", "--id-column", "image",
               *rho_args, "-g", grad, "-f", "csv", "-q")
        header, values, ids = values_of(r)
        assert ids == [f"img{i}" for i in range(9)]
        np.testing.assert_allclose(values, want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.load(grad), want_g, rtol=1e-12, atol=1e-15)
        results.append((values, np.load(grad)))
    for values, g in results[1:]:  # every column order gives exactly the same numbers
        np.testing.assert_array_equal(values, results[0][0])
        np.testing.assert_array_equal(g, results[0][1])


def test_shuffled_parquet_columns_with_soft_targets_and_separate_target_file(tmp_path, small):
    rng = rng_for("soft")
    tree = load_tree(small)
    names = tree.bin_names
    p, q = dists(rng, 6, 5), dists(rng, 6, 5)
    want, want_g = emd(p, q, space=tree, rho=2.0, gradient=True)
    order = rng.permutation(5)
    # the target as a list column (in tree bin order) in the same file
    path = _named_parquet(tmp_path / "p.parquet", p, names, list(order), soft=q)
    grad = tmp_path / "g.npy"
    r = ok("compute", path, "--tree", small, "-m", "emd2", "-g", grad, "-f", "csv", "-q")
    np.testing.assert_allclose(values_of(r)[1], want, rtol=1e-12)
    np.testing.assert_allclose(np.load(grad), want_g, rtol=1e-12, atol=1e-15)
    # the target in its own Parquet file, with named columns in another shuffled order
    pred = _named_parquet(tmp_path / "p2.parquet", p, names, list(order))
    targ = _named_parquet(tmp_path / "q2.parquet", q, names, list(rng.permutation(5)))
    r = ok("compute", pred, targ, "--tree", small, "-m", "emd2", "-g", grad, "-f", "csv", "-q")
    np.testing.assert_allclose(values_of(r)[1], want, rtol=1e-12)
    np.testing.assert_allclose(np.load(grad), want_g, rtol=1e-12, atol=1e-15)
    # the target as .npy rows: taken to be in the tree's bin order
    np.save(tmp_path / "q.npy", q)
    r = ok("compute", pred, tmp_path / "q.npy", "--tree", small, "-m", "emd2", "-f", "csv", "-q")
    np.testing.assert_allclose(values_of(r)[1], want, rtol=1e-12)


def test_named_target_columns_are_matched_even_when_predictions_are_npy(tmp_path, small):
    rng = rng_for("npy-pred")
    tree = load_tree(small)
    p, q = dists(rng, 4, 5), dists(rng, 4, 5)
    np.save(tmp_path / "p.npy", p)
    targ = _named_parquet(tmp_path / "q.parquet", q, tree.bin_names, [4, 2, 0, 3, 1])
    r = run("compute", tmp_path / "p.npy", targ, "--tree", small, "-f", "csv", "-q")
    assert r.exit_code == 0
    np.testing.assert_allclose(values_of(r)[1], emd(p, q, space=tree), rtol=1e-12)


def test_with_bins_the_bin_order_follows_the_bins_file(tmp_path, small):
    rng = rng_for("bins-order")
    bins_order = ["e", "y", "a", "d", "b"]
    bins = write(tmp_path / "bins.txt", "\n".join(bins_order) + "\n")
    tree = load_tree(small, bins=bins_order)
    p = dists(rng, 5, 5)  # columns of p follow bins_order
    label = rng.integers(0, 5, 5)  # class indices index into bins_order
    want, want_g = emd(p, label, space=tree, gradient=True)
    path = _named_parquet(tmp_path / "p.parquet", p, bins_order, [3, 0, 4, 1, 2], label=label)
    grad = tmp_path / "g.npy"
    r = ok("compute", path, "--tree", small, "--bins", bins, "--target-column", "label", "-g", grad,
           "-f", "csv", "-q")
    np.testing.assert_allclose(values_of(r)[1], want, rtol=1e-12)
    np.testing.assert_allclose(np.load(grad), want_g, rtol=1e-12, atol=1e-15)
    # class c is bins_order[c]: the EMD equals Σ_i p_i D_{i,c} in that order
    d = tree.ground_matrix()
    np.testing.assert_allclose(values_of(r)[1], np.einsum("bi,ib->b", p, d[:, label]), rtol=1e-12)
    # without --bins the same columns are put in the tree file's order (a, b, y, d, e)
    tree2 = load_tree(small)
    perm = [bins_order.index(v) for v in tree2.bin_names]
    r = ok("compute", path, "--tree", small, "--target-column", "label", "-f", "csv", "-q")
    np.testing.assert_allclose(values_of(r)[1], emd(p[:, perm], label, space=tree2), rtol=1e-12)


def test_named_columns_may_put_bins_on_internal_nodes(tmp_path, small):
    rng = rng_for("internal")
    cols = ["c", "a", "x", "e"]  # x and c are internal
    p = dists(rng, 4, 4)
    label = rng.integers(0, 4, 4)
    path = _named_parquet(tmp_path / "p.parquet", p, cols, [0, 1, 2, 3], label=label)
    r = ok("compute", path, "--tree", small, "--target-column", "label", "-f", "csv", "-q")
    file_order = ["x", "a", "c", "e"]  # the nodes' order in the tree file
    tree = load_tree(small, bins=file_order)
    perm = [cols.index(v) for v in file_order]
    np.testing.assert_allclose(values_of(r)[1], emd(p[:, perm], label, space=tree), rtol=1e-12)


def test_a_column_that_is_not_a_node_exits_2(tmp_path, small):
    rng = rng_for("stray")
    names = load_tree(small).bin_names
    p = dists(rng, 3, 5)
    path = _named_parquet(tmp_path / "p.parquet", p, names, [1, 0, 2, 3, 4], label=[0, 1, 2],
                          extra={"score": pa.array([1.0, 2.0, 3.0])})
    out = tmp_path / "o.csv"
    bad("compute", path, "--tree", small, "--target-column", "label", "-o", out, needles=["'score'"])
    assert not out.exists()
    bins = write(tmp_path / "bins.txt", "\n".join(names) + "\n")
    bad("compute", path, "--tree", small, "--bins", bins, "--target-column", "label",
        needles=["'score'"])
    # a bins file that names fewer nodes than there are columns
    bins = write(tmp_path / "bins4.txt", "\n".join(names[:4]) + "\n")
    path2 = _named_parquet(tmp_path / "p2.parquet", p, names, [1, 0, 2, 3, 4], label=[0, 1, 2])
    bad("compute", path2, "--tree", small, "--bins", bins, "--target-column", "label",
        needles=[f"'{names[4]}'"])


def test_a_column_that_is_not_a_node_is_reported_against_the_parquet_file(tmp_path, small):
    names = load_tree(small).bin_names
    path = _named_parquet(tmp_path / "p.parquet", np.full((2, 5), 0.2), names, range(5), label=[0, 1],
                          extra={"score": pa.array([1.0, 2.0])})
    msg = bad("compute", path, "--tree", small, "--target-column", "label")
    assert msg.startswith(f"emd: error: {path}")


# ----------------------------------------------------------------------------- --ground


def _ground_inputs(tmp_path, n=6, kind="classes"):
    rng = rng_for("ground", n, kind)
    pts = rng.normal(size=(n, 2))
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    p = dists(rng, 5, n)
    t = rng.integers(0, n, 5) if kind == "classes" else dists(rng, 5, n)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "D.npy", d)
    return p, t, d


def test_ground_class_targets_closed_form(tmp_path):
    p, c, d = _ground_inputs(tmp_path)
    grad = tmp_path / "g.npy"
    r = ok("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "D.npy",
           "-g", grad, "-f", "csv", "-q")
    values = values_of(r)[1]
    assert r.stderr == ""
    for b in range(5):
        q = np.zeros(6)
        q[c[b]] = 1
        assert values[b] == pytest.approx(ot.emd2(p[b], q, d), rel=1e-9)
        assert values[b] == pytest.approx(p[b] @ d[:, c[b]], rel=1e-12)
    np.testing.assert_allclose(np.load(grad), d[:, c].T - d[:, c].T.mean(axis=1, keepdims=True),
                               rtol=1e-12, atol=1e-14)
    # the same matrix as a CSV file (with a header line)
    text = ",".join(f"b{i}" for i in range(6)) + "\n" + "\n".join(
        ",".join(repr(float(v)) for v in row) for row in d) + "\n"
    r2 = ok("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground",
            write(tmp_path / "D.csv", text), "-f", "csv", "-q")
    np.testing.assert_array_equal(values_of(r2)[1], values)


def test_ground_soft_targets_use_the_lp(tmp_path):
    p, q, d = _ground_inputs(tmp_path, kind="rows")
    r = ok("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "D.npy",
           "-f", "csv", "-q")
    for b, v in enumerate(values_of(r)[1]):
        assert v == pytest.approx(ot.emd2(p[b], q[b], d), rel=1e-9, abs=1e-12)


def test_ground_soft_targets_without_pot_exit_2(tmp_path, monkeypatch):
    _ground_inputs(tmp_path, kind="rows")
    monkeypatch.setitem(sys.modules, "ot", None)
    bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "D.npy",
        needles=["POT", "emdcli[lp]"])
    # class targets still work
    _ground_inputs(tmp_path, kind="classes")
    ok("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "D.npy", "-q")


@pytest.mark.parametrize(
    "matrix,needles",
    [
        (np.zeros((6, 5)), ["N × N"]),
        (np.zeros(6), ["N × N"]),
        (np.where(np.eye(6) > 0, 0.0, -1.0), ["negative", "row 0, column 1"]),
        (np.where(np.eye(6) > 0, 0.0, np.nan), ["not finite", "row 0, column 1"]),
        (np.ones((6, 6)), ["diagonal", "row 0, column 0"]),
    ],
)
def test_bad_ground_matrices_exit_2(tmp_path, matrix, needles):
    _ground_inputs(tmp_path)
    np.save(tmp_path / "bad.npy", matrix)
    out = tmp_path / "o.csv"
    msg = bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "bad.npy",
              "-o", out, needles=needles)
    assert str(tmp_path / "bad.npy") in msg
    assert not out.exists()


def test_ground_matrix_of_the_wrong_size_and_unreadable_files(tmp_path):
    _ground_inputs(tmp_path)
    np.save(tmp_path / "d5.npy", naive.chain_ground(range(5)))
    bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "d5.npy",
        needles=["5 bins but the rows have 6"])
    bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "none.npy",
        needles=["no such ground-matrix file"])
    bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground",
        write(tmp_path / "d.csv", "0,1\n1,zero\n"), needles=["cannot read the ground matrix"])


@pytest.mark.parametrize("value,shown", [(-1.0, "(-1.0)"), (np.nan, "(nan)")])
def test_bad_ground_matrix_message_prints_plain_numbers(tmp_path, value, shown):
    _ground_inputs(tmp_path)
    np.save(tmp_path / "bad.npy", np.where(np.eye(6) > 0, 0.0, value))
    msg = bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "bad.npy",
              needles=[shown])
    assert "np.float64" not in msg


def test_empty_ground_matrix_exits_2(tmp_path):
    _ground_inputs(tmp_path)
    np.save(tmp_path / "empty.npy", np.zeros((0, 0)))
    bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "empty.npy")


@pytest.mark.parametrize("kind", ["asymmetric", "triangle"])
def test_odd_ground_matrices_warn_but_compute(tmp_path, kind):
    p, c, d = _ground_inputs(tmp_path, n=3)
    if kind == "asymmetric":
        m = np.array([[0.0, 1.0, 2.0], [1.5, 0.0, 1.0], [2.0, 1.0, 0.0]])
    else:
        m = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 1.0], [5.0, 1.0, 0.0]])
    np.save(tmp_path / "odd.npy", m)
    r = ok("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "odd.npy",
           "-f", "csv", "-q")
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emd: warning: "), r.stderr
    assert ("symmetric" if kind == "asymmetric" else "triangle") in lines[0]
    assert str(tmp_path / "odd.npy") in lines[0]
    np.testing.assert_allclose(values_of(r)[1], np.einsum("bi,ib->b", p, m[:, c]), rtol=1e-12)


@pytest.mark.parametrize("metric", [["-m", "emd2"], ["-m", "emd-rho", "--rho", "1.5"]])
def test_ground_with_rho_other_than_one_exits_2(tmp_path, metric):
    _ground_inputs(tmp_path)
    bad("compute", tmp_path / "p.npy", tmp_path / "t.npy", "--ground", tmp_path / "D.npy", *metric,
        needles=["rho = 1"])


# ----------------------------------------------------------------------------- the README example


def test_readme_example_runs_and_matches_the_library(monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["compute", "sample_data/imagenet_pred.parquet", "--tree", "sample_data/imagenet_wordnet_tree.csv",
            "--bins", "sample_data/imagenet_bins.txt", "--target-column", "label", "--id-column", "image"]
    r = ok(*args, "-m", "emd2")
    header, values, ids = values_of(r)
    assert header == ["image", "emd2"]
    table = pq.read_table(IMAGENET_PRED)
    assert ids == table.column("image").to_pylist()
    probs = np.asarray(table.column("probs").combine_chunks().flatten()).reshape(-1, 1000)
    labels = table.column("label").to_numpy()
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    np.testing.assert_array_equal(values, emd(probs, labels, space=tree, rho=2.0))
    # (first, on a cold Numba cache, the compile notice: the test may run first)
    said = [line for line in r.stderr.splitlines() if not line.startswith("emd: compiling")]
    assert said[0].startswith("emd2: count=512 ")

    r1 = ok(*args, "-m", "emd", "-q")
    v1 = values_of(r1)[1]
    np.testing.assert_array_equal(v1, emd(probs, labels, space=tree))
    d = tree.ground_matrix()
    p = probs.astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    for b in (0, 1, 2, 100, 511):
        q = np.zeros(1000)
        q[labels[b]] = 1.0
        assert v1[b] == pytest.approx(ot.emd2(p[b], q, d), rel=1e-7, abs=1e-9)

"""Flows and transport plans: ``emdcli.flows``, ``emdcli.plan``, ``emd compute --flows
--plan``.

References: the flows' defining sums (``naive.tree_phi``, a cumulative sum on a chain),
``Σ w|flow|^rho`` against the EMD kernels (bit for bit: the flows kernels run the same
passes), plans' costs against POT's exact LP (``ot.emd2``) with the naive path metric,
and their marginals against p and q.
"""

import os
import sys

import numpy as np
import ot
import pyarrow.parquet as pq
import pytest

import emdcli
from emdcli import emd
from emdcli.spaces import Chain, Tree
from emdcli.transport import flow_names, flow_weights
from emdcli.treefiles import load_tree, read_bins

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive  # noqa: E402
from common import IMAGENET_BINS, IMAGENET_PRED, WORDNET, cli_runner, dists  # noqa: E402
from test_tree import random_tree, rng_for  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(IMAGENET_PRED))


def _targets(rng, kind, b, n):
    if kind == "classes":
        return rng.integers(0, n, b)
    return dists(rng, b, n)


# ------------------------------------------------------------------------------ flows


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["rows", "classes"])
@pytest.mark.parametrize("rho", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("b,n", [(3, 1), (5, 2), (7, 9), (130, 40)])
def test_chain_flows_are_the_cdf_differences_and_give_emd_bits(dtype, kind, rho, b, n):
    rng = rng_for("chain-flows", dtype, kind, rho, b, n)
    x = np.cumsum(rng.uniform(0.1, 2.0, n))
    p = rng.uniform(0.0, 1.0, (b, n))
    q = _targets(rng, kind, b, n)
    values, f, g = emdcli.flows(p, q, positions=x, rho=rho, dtype=dtype, gradient=True)
    v0, g0 = emd(p, q, positions=x, rho=rho, dtype=dtype, gradient=True)
    assert values.dtype == f.dtype == np.dtype(dtype) and f.shape == (b, n - 1)
    np.testing.assert_array_equal(values, v0)
    np.testing.assert_array_equal(g, g0)
    pn = p / p.sum(1, keepdims=True)
    qn = np.eye(n)[q] if kind == "classes" else q / q.sum(1, keepdims=True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(f, np.cumsum(pn - qn, axis=1)[:, :-1], rtol=tol, atol=tol)
    w = np.diff(x)
    np.testing.assert_allclose((w * np.abs(f.astype(float)) ** rho).sum(1), values, rtol=tol * 10)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("rho", [1.0, 2.0, 3.0])
def test_tree_flows_are_subtree_sums_and_give_emd_bits(seed, rho):
    rng = rng_for("tree-flows", seed, rho)
    rt = random_tree(rng, n_nodes=int(rng.integers(2, 25)), bins="some-internal")
    t = rt.tree
    b = 70  # ≥ 64 rows: the EMD goes through the lanes kernel, the same bits
    p = dists(rng, b, t.n)
    for q in (dists(rng, b, t.n), rng.integers(0, t.n, b)):
        values, f, g = emdcli.flows(p, q, space=t, rho=rho, gradient=True)
        v0, g0 = emd(p, q, space=t, rho=rho, gradient=True)
        np.testing.assert_array_equal(values, v0)
        np.testing.assert_array_equal(g, g0)
        assert f.shape == (b, t.n_nodes - 1)
        names = flow_names(t)
        qrows = np.eye(t.n)[q] if q.ndim == 1 else q
        for r in (0, b - 1):
            phi = naive.tree_phi(p[r], qrows[r], rt.parent, rt.bins)
            np.testing.assert_allclose(f[r], [phi[v] for v in names], atol=1e-14)
        np.testing.assert_allclose((flow_weights(t) * np.abs(f) ** rho).sum(1), values,
                                   rtol=1e-12)


def test_path_tree_flows_equal_chain_flows():
    """A path whose root is the last bin: the subtree of bin i's node is bins 0 … i, so
    its edge carries the chain's phi_i."""
    rng = rng_for("path")
    n = 12
    names = [f"b{i}" for i in range(n)]
    w = rng.uniform(0.5, 2.0, n - 1)
    tree = Tree.from_edges(names, [names[i + 1] for i in range(n - 1)] + [""],
                           list(w) + [0.0], bins=names)
    x = np.concatenate([[0.0], np.cumsum(w)])
    p, q = dists(rng, 9, n), dists(rng, 9, n)
    _, f_chain = emdcli.flows(p, q, positions=x)
    _, f_tree = emdcli.flows(p, q, space=tree)
    by_name = dict(zip(flow_names(tree), f_tree.T))
    np.testing.assert_allclose(np.stack([by_name[v] for v in names[:-1]], 1), f_chain,
                               atol=1e-15)
    assert flow_names(Chain.from_positions(x))[0] == f"0..{emdcli.report.format_float(x[1])}"


def test_wordnet_flows_residual_rows():
    """Wide soft rows (the residual correction may run) keep the EMD's bits."""
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    rng = rng_for("wordnet-flows")
    p = rng.uniform(0, 1, (40, tree.n)).astype(np.float32)
    q = rng.uniform(0, 1, (40, tree.n)).astype(np.float32)
    for dtype in ("float32", "float64"):
        values, f = emdcli.flows(p, q, space=tree, dtype=dtype)
        np.testing.assert_array_equal(values, emd(p, q, space=tree, dtype=dtype))
        assert f.dtype == np.dtype(dtype)


def test_flows_refuse_a_ground_matrix():
    with pytest.raises(emdcli.EMDInputError, match="chain or a tree"):
        emdcli.flows(np.eye(3), np.arange(3), space=emdcli.spaces.Ground.from_matrix(
            1.0 - np.eye(3)))


# ------------------------------------------------------------------------------ plans


def _check_plan(plan, p, q, M, b, n, max_entries):
    p = p / p.sum(1, keepdims=True)
    q = np.eye(n)[q] if q.ndim == 1 else q / q.sum(1, keepdims=True)
    assert np.all(np.diff(plan.row) >= 0) and np.all(plan.mass > 0)
    for r in range(b):
        T = plan.dense(r, n)
        np.testing.assert_allclose(T.sum(1), p[r], atol=1e-13)
        np.testing.assert_allclose(T.sum(0), q[r], atol=1e-13)
        np.testing.assert_allclose((T * M).sum(), ot.emd2(p[r], q[r], M), rtol=1e-9, atol=1e-13)
        assert (plan.row == r).sum() <= max_entries


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["rows", "classes"])
def test_chain_plan_is_monotone_sparse_and_optimal(seed, kind):
    rng = rng_for("chain-plan", seed, kind)
    n = int(rng.integers(1, 30))
    x = np.cumsum(rng.uniform(0.1, 3.0, n))
    p = rng.uniform(0, 1, (6, n)) * (rng.uniform(size=(6, n)) < 0.7)  # zeros too
    p[:, 0] += 0.1
    q = _targets(rng, kind, 6, n)
    if kind == "rows":
        q = q * (rng.uniform(size=q.shape) < 0.7)
        q[:, -1] += 0.1
    plan = emdcli.plan(p, q, positions=x)
    _check_plan(plan, p, q, naive.chain_ground(x), 6, n, 2 * n - 1)
    for r in range(6):  # monotone: sources and targets never decrease along a row
        sel = plan.row == r
        assert np.all(np.diff(plan.source[sel]) >= 0) and np.all(np.diff(plan.target[sel]) >= 0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", ["rows", "classes"])
def test_tree_plan_is_optimal(seed, kind):
    rng = rng_for("tree-plan", seed, kind)
    rt = random_tree(rng, n_nodes=int(rng.integers(1, 20)),
                     bins=["leaves", "all", "some-internal"][seed % 3])
    n = rt.tree.n
    p = dists(rng, 5, n)
    q = _targets(rng, kind, 5, n)
    plan = emdcli.plan(p, q, space=rt.tree)
    M = naive.tree_path_matrix(rt.parent, rt.weight, rt.bins)
    _check_plan(plan, p, q, M, 5, n, 2 * n)


def test_wordnet_plan_float32_against_pot():
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    rng = rng_for("wordnet-plan")
    p = rng.uniform(0, 1, (3, tree.n)).astype(np.float32)
    q = rng.uniform(0, 1, (3, tree.n)).astype(np.float32)
    plan = emdcli.plan(p, q, space=tree, dtype="float32")
    assert plan.mass.dtype == np.float32 and len(plan.row) <= 3 * 2 * tree.n
    M = tree.ground_matrix()
    values = emd(p, q, space=tree)
    for r in range(3):
        T = plan.dense(r, tree.n).astype(np.float64)
        np.testing.assert_allclose((T * M).sum(), values[r], rtol=1e-5)


# --------------------------------------------------------------------------------- CLI


def _compute(args):
    from emdcli.cli import app

    return cli_runner().invoke(app, ["compute", *args])


def test_cli_flows_and_plan_on_the_wordnet_sample(tmp_path):
    args = [IMAGENET_PRED, "--tree", WORDNET, "--bins", IMAGENET_BINS, "--target-column",
            "label", "--id-column", "image", "-q"]
    f, pl, out = tmp_path / "f.parquet", tmp_path / "plan.parquet", tmp_path / "emd.parquet"
    r = _compute([*args, "--flows", str(f), "--plan", str(pl), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    plain = tmp_path / "plain.parquet"
    assert _compute([*args, "-o", str(plain)]).exit_code == 0
    values = pq.read_table(out).column("emd").to_numpy()
    np.testing.assert_array_equal(values, pq.read_table(plain).column("emd").to_numpy())
    flows = pq.read_table(f)
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    assert flows.column_names == ["image", *flow_names(tree)]
    F = np.stack([flows.column(c).to_numpy() for c in flows.column_names[1:]], 1)
    np.testing.assert_allclose((np.abs(F) * flow_weights(tree)).sum(1), values, rtol=1e-12)
    plan = pq.read_table(pl)
    assert plan.column_names == ["image", "source", "target", "mass"]
    first = plan.filter(plan.column("image").to_numpy(zero_copy_only=False) == "val_00000")
    src = first.column("source").to_pylist()
    assert set(src) <= set(tree.bin_names)
    D = tree.ground_matrix()
    pos = {v: i for i, v in enumerate(tree.bin_names)}
    cost = sum(m * D[pos[a], pos[b]] for a, b, m in zip(
        src, first.column("target").to_pylist(), first.column("mass").to_pylist()))
    np.testing.assert_allclose(cost, values[0], rtol=1e-12)


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_cli_flows_on_a_chain_in_batches(tmp_path, fmt):
    rng = rng_for("cli-chain")
    p, c = dists(rng, 50, 8), rng.integers(0, 8, 50)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", c)
    r = _compute([str(tmp_path / "p.npy"), str(tmp_path / "c.npy"), "--positions",
                  "0,1,2,4,8,16,32,64", "--metric", "emd2", "--flows",
                  str(tmp_path / f"f.{fmt}"), "--plan", str(tmp_path / "pl.parquet"), "-q",
                  "-f", "csv", "--dtype", "float32", "--batch-size", "7"])
    assert r.exit_code == 0, r.stderr
    if fmt == "npy":
        f = np.load(tmp_path / "f.npy")
    else:
        t = pq.read_table(tmp_path / "f.parquet")
        assert t.column_names == ["row", "0..1", "1..2", "2..4", "4..8", "8..16", "16..32",
                                  "32..64"]
        assert t.column("row").to_pylist() == list(range(50))
        f = np.stack([t.column(k).to_numpy() for k in t.column_names[1:]], 1)
    assert f.shape == (50, 7) and f.dtype == np.float32
    _, ref = emdcli.flows(p, c, positions=[0, 1, 2, 4, 8, 16, 32, 64], dtype="float32")
    np.testing.assert_array_equal(f, ref)
    plan = pq.read_table(tmp_path / "pl.parquet")
    assert plan.column("target").to_pylist()[:8] == [int(c[0])] * 8  # a class target: p_k → c


@pytest.mark.parametrize("extra,message", [
    (["--metric", "sinkhorn", "--lam", "2", "--flows", "F.npy"], "--flows needs the exact EMD"),
    (["--plan", "P.npy"], "--plan is written to .parquet files"),
    (["--flows", "F.csv"], "--flows is written to .npy or .parquet files"),
    (["--flows", "F.npy", "--gradient", "F.npy"], "--gradient and --flows name the same file"),
    (["--flows", "F.npy", "--device", "cuda"], "--flows needs the exact EMD"),
    (["--plan", "P.parquet", "-o", "out/"], "--plan writes one file"),
])
def test_cli_flow_option_errors(tmp_path, extra, message):
    np.save(tmp_path / "p.npy", np.ones((4, 3)))
    np.save(tmp_path / "c.npy", np.arange(4) % 3)
    os.chdir(tmp_path)
    r = _compute(["p.npy", "c.npy", *extra])
    assert r.exit_code == 2
    assert message in r.stderr and r.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "p.npy"]


def test_cli_flows_bad_row_leaves_nothing(tmp_path):
    p = np.ones((300, 3))
    p[200, 1] = np.nan
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", np.arange(300) % 3)
    r = _compute([str(tmp_path / "p.npy"), str(tmp_path / "c.npy"), "--batch-size", "64",
                  "--flows", str(tmp_path / "f.parquet"), "--plan", str(tmp_path / "pl.parquet"),
                  "-o", str(tmp_path / "o.csv")])
    assert r.exit_code == 2 and "row 200" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "p.npy"]


def test_compile_notice_names_the_flows_kernels(monkeypatch):
    from emdcli import warmup

    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")  # the serial kernels only

    points = warmup.entry_points("tree", "float32", extras=("flows", "plan"), gradient=True)
    assert points[-1] == ("flows", "_tree_runs", None)
    assert warmup.entry_points("tree", "float32", extras=("flows",))[-1] == (  # values only:
        "tree_lanes", "_lanes_runs", f"{warmup.TREE_VALUES}, {warmup.FLOWS}")  # lanes' flows
    assert warmup.entry_points("chain", "float64", extras=("flows",))[-1] == (
        "flows", "_chain_runs", None)
    assert warmup.describe("tree", "float64", extras=("flows", "plan")) == \
        "float64 trees with flows and plans"
    assert "transport-float64" in warmup.ALL_GROUPS


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_tree_lanes_flows_equal_the_row_kernel(dtype, rho):
    """Values only, ≥ 64 rows: the flows come out of the lanes kernel's node tile (with a
    partial last block, and rows the residual pass redoes)."""
    from emdcli.api import _chunk_scratch, prepare
    from emdcli.kernels.flows import tree_flows
    from emdcli.kernels.tiles import LaneRows
    from emdcli.transport import value_flows

    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    rng = rng_for("lanes-flows", dtype, rho)
    p = rng.uniform(0, 1, (100, tree.n))
    near = p.copy()  # every 7th row nearly p itself: the residual pass redoes those rows
    near[::7] *= 1 + 1e-12 * rng.standard_normal((15, tree.n))
    near[1::7] = rng.uniform(0, 1, (15, tree.n))
    for q in (near, rng.uniform(0, 1, (100, tree.n)).astype(np.float32),
              rng.integers(0, tree.n, 100)):
        dt = np.dtype(dtype).type
        batch = prepare(p, q, "l1", dt, True)
        values, f, _ = value_flows(batch, tree, rho, dt)
        x, sx, kind, t, st = batch
        c, t = (t, x) if kind == "classes" else (np.full(100, -1), t)
        v0, f0 = np.empty(100, dtype=dt), np.empty((100, tree.n_nodes - 1), dtype=dt)
        tree_flows(LaneRows(x, t, c, sx, st), (tree.parent, tree.weight, tree.bin_node, tree.count),
                   rho, v0, np.empty((100, 0), dtype=dt), f0, _chunk_scratch(2 * tree.n_nodes, 100))
        np.testing.assert_array_equal(values, v0)
        np.testing.assert_array_equal(f, f0)
        np.testing.assert_array_equal(values, emd(p, q, space=tree, rho=rho, dtype=dtype))


@pytest.mark.parametrize("space", [[], ["--positions", "0,1,3"], ["--tree", "TREE"]])
def test_cli_flows_and_plan_of_no_rows(tmp_path, space):
    """An input without rows still gets typed, empty flows and plan files."""
    tree = tmp_path / "t.csv"
    tree.write_text("node,parent\nr,\na,r\nb,r\nc,r\n")
    space = [str(tree) if a == "TREE" else a for a in space]
    np.save(tmp_path / "p.npy", np.zeros((0, 3)))
    np.save(tmp_path / "q.npy", np.zeros((0, 3)))
    r = _compute([str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), *space, "-q",
                  "--flows", str(tmp_path / "f.parquet"), "--plan", str(tmp_path / "pl.parquet"),
                  "-o", str(tmp_path / "o.csv")])
    assert r.exit_code == 0, r.stderr
    flows = pq.read_table(tmp_path / "f.parquet")
    assert flows.num_rows == 0 and len(flows.column_names) == (4 if space and space[0] == "--tree" else 3)
    plan = pq.read_table(tmp_path / "pl.parquet")
    assert plan.num_rows == 0 and plan.column_names == ["row", "source", "target", "mass"]
    if space and space[0] == "--tree":
        assert str(plan.schema.field("source").type).startswith("dictionary")

"""``emd compute --metric sinkhorn`` end to end (in-process, ``typer.testing.CliRunner``).

The CLI prints floats at full precision, so its values must read back to the library's
(:func:`emdcli.sinkhorn.sinkhorn`) values exactly, in float64 and float32; iteration
counts and convergence flags must be the library's too. Output files keep proper types
(Parquet bool / int64 columns, a structured ``.npy``), gradients equal the library's, the
summary reports ``not_converged=K``, and every kind of bad Sinkhorn option exits with
code 2 and one line on stderr.
"""

import csv
import io
import json
import os
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from common import cli_runner

from emdcli.cli import app
from emdcli.sinkhorn import sinkhorn
from emdcli.spaces import Chain, Ground
from emdcli.treefiles import load_tree, read_bins

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, os.pardir, "sample_data")
WORDNET = os.path.join(SAMPLE, "imagenet_wordnet_tree.csv")
IMAGENET_BINS = os.path.join(SAMPLE, "imagenet_bins.txt")
IMAGENET_PRED = os.path.join(SAMPLE, "imagenet_pred.parquet")

B, N = 7, 6
COLUMNS = ["row", "sinkhorn", "sinkhorn_iterations", "sinkhorn_converged"]
RUNNER = cli_runner()


# ----------------------------------------------------------------------------- helpers


def invoke(*args):
    return RUNNER.invoke(app, ["compute", *map(str, args)])


def ok(*args):
    r = invoke(*args)
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


def bad(*args, needles=()):
    """Exit 2, nothing on stdout, one ``emd: error:`` line on stderr, no traceback."""
    r = invoke(*args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("emd: error: "), lines[0]
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read_csv(text):
    table = list(csv.reader(io.StringIO(text)))
    header, body = table[0], table[1:]
    assert all(len(r) == len(header) for r in body), table
    return header, body


def columns_of(text, dtype=np.float64):
    """CSV stdout → (header, values, iterations, converged) as arrays."""
    header, body = read_csv(text)
    values = np.array([dtype(r[1]) for r in body], dtype=dtype)
    iterations = np.array([int(r[2]) for r in body], dtype=np.int64)
    flags = [r[3] for r in body]
    assert set(flags) <= {"true", "false"}, flags
    converged = np.array([f == "true" for f in flags])
    return header, values, iterations, converged


def summary_fields(stderr):
    line = [ln for ln in stderr.splitlines() if ln.startswith("sinkhorn:")]
    assert len(line) == 1, stderr
    return dict(kv.split("=", 1) for kv in line[0].split()[1:])


def assert_same(a, b):
    """Exactly equal, NaN equal to NaN."""
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Inputs in one folder: raw masses (not normalised), soft targets with a zero, class
    indices, logits, chain positions, a small tree with bins on internal nodes, a ground."""
    folder = tmp_path_factory.mktemp("sk")
    rng = np.random.default_rng(zlib.crc32(b"sinkhorn-cli"))
    p = rng.uniform(0.05, 3.0, (B, N))
    q = rng.dirichlet(np.full(N, 0.8), B)
    q[2, 4] = 0.0
    c = rng.integers(0, N, B).astype(np.int64)
    logits = rng.normal(size=(B, N)) * 2
    x = np.cumsum(rng.uniform(0.2, 1.5, N))
    pts = rng.normal(size=(N, 2))
    ground = np.linalg.norm(pts[:, None] - pts[None, :], axis=2)
    files = {}
    for name, a in (("p", p), ("q", q), ("c", c), ("logits", logits), ("x", x), ("g", ground),
                    ("g_wrong_n", 1.0 - np.eye(N + 1)), ("g_not_square", np.ones((N, N - 1)))):
        files[name] = folder / f"{name}.npy"
        np.save(files[name], a)
    tree_csv = folder / "tree.csv"
    # root r; a, b under r; bins on r (the root), a (internal), and the leaves
    tree_csv.write_text(
        "node,parent,weight\nr,,0\na,r,0.7\nb,r,1.3\na1,a,0.4\na2,a,2.1\nb1,b,0.9\n"
    )
    bins = folder / "bins.txt"
    bins.write_text("a1\nr\nb1\na\na2\nb\n")
    tree = load_tree(str(tree_csv), bins=read_bins(str(bins)))
    assert tree.n == N
    return dict(p=p, q=q, c=c, logits=logits, x=x, ground=ground, files=files, folder=folder,
                tree_csv=tree_csv, bins=bins, tree=tree)


def space_args(d, kind):
    """(CLI arguments, library space) for a space kind."""
    if kind == "chain":
        return [], Chain.uniform(N)
    if kind == "positions":
        return ["--positions", d["files"]["x"]], Chain.from_positions(d["x"])
    if kind == "tree":
        return ["--tree", d["tree_csv"], "--bins", d["bins"]], d["tree"]
    return ["--ground", d["files"]["g"]], Ground.from_matrix(d["ground"])


# --------------------------------------------------------------- values = the library


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("target", ["q", "c"])
@pytest.mark.parametrize("form", ["plain", "log"])
@pytest.mark.parametrize("kind", ["chain", "positions", "tree", "ground"])
def test_csv_values_equal_the_library(d, kind, form, target, dtype):
    args, space = space_args(d, kind)
    kernels = ["auto", "dense"] if kind == "ground" else ["auto", "structured", "dense"]
    for kernel in kernels:
        r = ok(d["files"]["p"], d["files"][target], "--metric", "sinkhorn", "--lam", 3,
               "--iters", 25, "--tol", 1e-9, "--sinkhorn-form", form, "--sinkhorn-kernel", kernel,
               "--dtype", dtype, "-f", "csv", *args)
        dt = np.dtype(dtype).type
        header, values, its, conv = columns_of(r.stdout, dt)
        assert header == COLUMNS
        lib = sinkhorn(d["p"], d[target], lam=3.0, iters=25, tol=1e-9, form=form, kernel=kernel,
                       space=space, dtype=dtype)
        assert_same(values, lib.values)
        assert_same(its, lib.iterations)
        assert_same(conv, lib.converged)
        fields = summary_fields(r.stderr)
        k = int((~lib.converged).sum())
        assert fields.get("not_converged") == (str(k) if k else None), r.stderr
        assert fields["count"] == str(B)


def test_converged_prints_true_and_false_and_iterations_vary(d):
    """A budget that some rows meet and some don't: both flags appear, the iteration
    column is per row, and ``not_converged`` counts the false ones."""
    r = ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 4, "--iters", 60,
           "-f", "csv")
    header, values, its, conv = columns_of(r.stdout)
    assert header == COLUMNS
    assert conv.any() and not conv.all(), (its, conv)
    assert len(set(its.tolist())) > 1 and its.max() == 60
    assert (its[~conv] == 60).all()
    assert summary_fields(r.stderr)["not_converged"] == str(int((~conv).sum()))
    body = r.stdout.splitlines()[1:]
    assert all(line.endswith((",true", ",false")) for line in body), body


def test_softmax_logits_and_grad_wrt_input(d, tmp_path):
    """--normalize softmax --grad-wrt input: values and the gradient file equal the library."""
    g = tmp_path / "g.npy"
    r = ok(d["files"]["logits"], d["files"]["c"], "--metric", "sinkhorn", "--lam", 2,
           "--iters", 500, "--sinkhorn-form", "log", "--normalize", "softmax",
           "--grad-wrt", "input", "-g", g, "-f", "csv", "-q")
    assert r.stderr == ""
    lib = sinkhorn(d["logits"], d["c"], lam=2.0, iters=500, form="log", normalize="softmax",
                   gradient=True, grad_wrt="input")
    _, values, its, conv = columns_of(r.stdout)
    assert_same(values, lib.values)
    assert_same(np.load(g), lib.gradient)


# ------------------------------------------------------------------------ output files


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parquet_output_has_typed_columns(d, tmp_path, dtype):
    out = tmp_path / "out.parquet"
    ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 4, "--iters", 60,
       "--dtype", dtype, "-o", out)
    t = pq.read_table(out)
    assert t.column_names == COLUMNS
    value_type = pa.float64() if dtype == "float64" else pa.float32()
    assert t.schema.field("sinkhorn").type == value_type
    assert t.schema.field("sinkhorn_iterations").type == pa.int64()
    assert t.schema.field("sinkhorn_converged").type == pa.bool_()
    lib = sinkhorn(d["p"], d["q"], lam=4.0, iters=60, dtype=dtype)
    assert_same(t.column("sinkhorn").to_numpy(), lib.values)
    assert_same(t.column("sinkhorn_iterations").to_numpy(), lib.iterations)
    assert_same(t.column("sinkhorn_converged").to_numpy(zero_copy_only=False), lib.converged)
    assert lib.converged.any() and not lib.converged.all()
    assert t.column("row").to_pylist() == list(range(B))


def test_npy_output_is_a_structured_array_with_three_fields(d, tmp_path):
    out = tmp_path / "out.npy"
    ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 4, "--iters", 60,
       "--sinkhorn-form", "log", "-o", out)
    a = np.load(out)
    assert a.shape == (B,)
    assert a.dtype.names == ("sinkhorn", "sinkhorn_iterations", "sinkhorn_converged")
    assert a.dtype["sinkhorn"] == np.float64
    assert a.dtype["sinkhorn_iterations"] == np.int64
    assert a.dtype["sinkhorn_converged"] == np.bool_
    lib = sinkhorn(d["p"], d["q"], lam=4.0, iters=60, form="log")
    assert_same(a["sinkhorn"], lib.values)
    assert_same(a["sinkhorn_iterations"], lib.iterations)
    assert_same(a["sinkhorn_converged"], lib.converged)


def test_jsonl_output_has_json_booleans_and_integers(d, tmp_path):
    out = tmp_path / "out.jsonl"
    ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 4, "--iters", 60,
       "-o", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    lib = sinkhorn(d["p"], d["q"], lam=4.0, iters=60)
    assert [list(r) for r in rows] == [COLUMNS] * B
    assert [r["sinkhorn_converged"] for r in rows] == lib.converged.tolist()
    assert [r["sinkhorn_iterations"] for r in rows] == lib.iterations.tolist()
    assert all(type(r["sinkhorn_converged"]) is bool for r in rows)
    assert_same([r["sinkhorn"] for r in rows], lib.values)


@pytest.mark.parametrize("gext", [".npy", ".parquet"])
@pytest.mark.parametrize("kind", ["chain", "tree", "ground"])
def test_gradient_file_equals_the_library(d, tmp_path, kind, gext):
    args, space = space_args(d, kind)
    g = tmp_path / f"g{gext}"
    ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 2.5, "--iters", 300,
       "-g", g, "-o", tmp_path / "out.csv", *args)
    lib = sinkhorn(d["p"], d["q"], lam=2.5, iters=300, space=space, gradient=True)
    if gext == ".npy":
        grad = np.load(g)
    else:
        t = pq.read_table(g)
        grad = np.array(t.column("gradient").to_pylist())
    assert grad.shape == (B, N)
    assert_same(grad, lib.gradient)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)


def test_batches_do_not_change_per_row_results(d):
    """--batch-size 2: each row stops on its own, whatever batch it is in."""
    args = [d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 4, "--iters", 60,
            "-f", "csv", "-q"]
    for kernel in ("structured", "dense"):
        whole = columns_of(ok(*args, "--sinkhorn-kernel", kernel).stdout)
        parts = columns_of(ok(*args, "--sinkhorn-kernel", kernel, "--batch-size", 2).stdout)
        np.testing.assert_allclose(parts[1], whole[1], rtol=1e-13)
        assert_same(parts[2], whole[2])
        assert_same(parts[3], whole[3])


# -------------------------------------------------------------- large λ, float32, summary


def test_summary_reports_not_converged_for_float32_plain_at_large_lambda(d, tmp_path):
    """λ = 100 on a unit chain in float32: the plain form breaks down on every row; the
    rows say so (nan/inf, false) and the summary says not_converged=B. The log form of the
    same run is finite."""
    r = ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 100,
           "--iters", 200, "--dtype", "float32", "-f", "csv")
    _, values, its, conv = columns_of(r.stdout, np.float32)
    assert not conv.any() and not np.isfinite(values).any()
    fields = summary_fields(r.stderr)
    assert fields["not_converged"] == str(B)
    assert fields["count"] == str(B)
    lib = sinkhorn(d["p"], d["q"], lam=100.0, iters=200, dtype="float32")
    assert_same(values, lib.values)
    assert_same(its, lib.iterations)
    r = ok(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 100,
           "--iters", 200, "--dtype", "float32", "--sinkhorn-form", "log", "-f", "csv")
    _, values, _, _ = columns_of(r.stdout, np.float32)
    assert np.isfinite(values).all()


def test_summary_omits_not_converged_when_every_row_converged(d):
    r = ok(d["files"]["p"], d["files"]["c"], "--metric", "sinkhorn", "--lam", 2, "-f", "csv")
    _, _, _, conv = columns_of(r.stdout)
    assert conv.all()
    assert "not_converged" not in summary_fields(r.stderr)


@pytest.fixture(scope="module")
def imagenet_small(tmp_path_factory):
    """The first 3 rows of the sample ImageNet predictions (probs list column + label)."""
    folder = tmp_path_factory.mktemp("inet")
    t = pq.read_table(IMAGENET_PRED).slice(0, 3)
    path = folder / "small.parquet"
    pq.write_table(t, path)
    p = np.array(t.column("probs").to_pylist(), dtype=np.float64)
    labels = np.array(t.column("label").to_pylist(), dtype=np.int64)
    return path, p, labels


@pytest.mark.parametrize("form", ["plain", "log"])
def test_wordnet_tree_float32_large_lambda(imagenet_small, form):
    path, p, labels = imagenet_small
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    r = ok(path, "--tree", WORDNET, "--bins", IMAGENET_BINS, "--pred-column", "probs",
           "--target-column", "label", "--id-column", "image", "--metric", "sinkhorn",
           "--lam", 100, "--iters", 100, "--tol", 1e-5, "--dtype", "float32",
           "--sinkhorn-form", form, "-f", "csv")
    header, values, its, conv = columns_of(r.stdout, np.float32)
    assert header == ["image", *COLUMNS[1:]]
    lib = sinkhorn(p, labels, lam=100.0, iters=100, tol=1e-5, form=form, space=tree,
                   dtype="float32")
    assert_same(values, lib.values)
    assert_same(its, lib.iterations)
    assert_same(conv, lib.converged)
    fields = summary_fields(r.stderr)
    if form == "plain":
        assert not np.isfinite(values).any() and fields["not_converged"] == "3"
    else:
        assert np.isfinite(values).all()


# --------------------------------------------------------------------------- bad input


BAD_OPTIONS = {
    "lam_zero": (["--lam", "0"], ["lam"]),
    "lam_negative": (["--lam", "-2"], ["lam"]),
    "lam_nan": (["--lam", "nan"], ["lam"]),
    "lam_inf": (["--lam", "inf"], ["lam"]),
    "iters_zero": (["--lam", "1", "--iters", "0"], ["iters"]),
    "iters_negative": (["--lam", "1", "--iters", "-3"], ["iters"]),
    "tol_negative": (["--lam", "1", "--tol", "-1e-9"], ["tol"]),
    "tol_inf": (["--lam", "1", "--tol", "inf"], ["tol"]),
    "no_lam": ([], ["--lam"]),
    "rho_with_sinkhorn": (["--lam", "1", "--rho", "1"], ["--rho"]),
    "rho2_with_sinkhorn": (["--lam", "1", "--rho", "2"], ["--rho"]),
    "ground_wrong_n": (["--lam", "1", "--ground", "{g_wrong_n}"], ["g_wrong_n.npy"]),
    "ground_not_square": (["--lam", "1", "--ground", "{g_not_square}"], ["g_not_square.npy", "N × N"]),
    "structured_with_ground": (["--lam", "1", "--ground", "{g}", "--sinkhorn-kernel", "structured"],
                               ["structured"]),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_sinkhorn_options_exit_2_with_one_line(d, tmp_path, case):
    extra, needles = BAD_OPTIONS[case]
    extra = [a.format(**{k: str(v) for k, v in d["files"].items()}) for a in extra]
    out = tmp_path / "out.csv"
    bad(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", *extra, "-o", out,
        needles=needles)
    assert os.listdir(tmp_path) == []  # no output, no temporary file


PARSE_ERRORS = {
    "iters_not_integer": (["--lam", "1", "--iters", "2.5"], "--iters"),
    "lam_not_a_number": (["--lam", "ten"], "--lam"),
    "bad_form": (["--lam", "1", "--sinkhorn-form", "exp"], "--sinkhorn-form"),
    "bad_kernel": (["--lam", "1", "--sinkhorn-kernel", "fft"], "--sinkhorn-kernel"),
}


@pytest.mark.parametrize("case", list(PARSE_ERRORS))
def test_unparsable_sinkhorn_options_exit_2(d, case):
    """Values the option parser rejects (Click/Typer usage errors): exit code 2, no output,
    the option named on stderr."""
    extra, option = PARSE_ERRORS[case]
    r = invoke(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", *extra)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert option in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("case", list(PARSE_ERRORS))
def test_unparsable_sinkhorn_options_give_one_line(d, case):
    extra, option = PARSE_ERRORS[case]
    r = invoke(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", *extra)
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_sinkhorn_options_with_another_metric_are_refused(d):
    bad(d["files"]["p"], d["files"]["q"], "--metric", "emd", "--lam", 5, needles=["--lam"])


def test_structured_kernel_with_ground_names_the_cli_option(d):
    bad(d["files"]["p"], d["files"]["q"], "--metric", "sinkhorn", "--lam", 1, "--ground",
        d["files"]["g"], "--sinkhorn-kernel", "structured", needles=["--sinkhorn-kernel"])

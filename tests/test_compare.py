"""``emd compare`` and :mod:`emdcli.compare` / :mod:`emdcli.plot` on small chains (and one
WordNet smoke test with a tiny grid).

The grid's shape and columns; SD/EMD → 1 and the gradient angle → 0 as λ and the iteration
limit grow (float64, log form, soft targets); float32 plain at a large λ reported as not
converged; the Fig. 3 and Fig. 5 plots written as real PNGs; ``--plot`` without matplotlib;
the ``--profile`` table; one-line errors (exit 2) for bad options and ``--device cuda``.
"""

import csv
import io
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from common import cli_runner

from emdcli import compare
from emdcli.api import emd
from emdcli.cli import app
from emdcli.spaces import Chain

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, os.pardir, "sample_data")
WORDNET = ["--tree", os.path.join(SAMPLE, "imagenet_wordnet_tree.csv"),
           "--bins", os.path.join(SAMPLE, "imagenet_bins.txt"), "--target-column", "label"]
IMAGENET_PRED = os.path.join(SAMPLE, "imagenet_pred.parquet")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
B, N = 5, 8
RUNNER = cli_runner()


def invoke(*args):
    return RUNNER.invoke(app, ["compare", *map(str, args)])


def ok(*args):
    r = invoke(*args)
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


def bad(*args):
    """Exit 2, nothing on stdout, one ``emd: error:`` line on stderr; returns the line."""
    r = invoke(*args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emd: error: "), r.stderr
    return lines[0]


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def cells(text):
    """CSV stdout → {(lam, iters, dtype, form, device): row with floats}."""
    out = {}
    for r in read_csv(text):
        key = (float(r["lam"]), int(r["iters"]), r["dtype"], r["form"], r["device"])
        out[key] = {k: (v if k in ("dtype", "form", "device") else float(v)) for k, v in r.items()}
    return out


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Soft rows on a chain of N bins (full support), their class labels, and one-hot rows."""
    folder = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(zlib.crc32(b"compare"))
    p = rng.dirichlet(np.full(N, 3.0), B)
    q = rng.dirichlet(np.full(N, 3.0), B)
    c = rng.integers(0, N, B).astype(np.int64)
    files = {}
    for name, a in (("p", p), ("q", q), ("c", c), ("onehot", np.eye(N)[c])):
        files[name] = str(folder / f"{name}.npy")
        np.save(files[name], a)
    return dict(p=p, q=q, c=c, files=files, folder=folder)


# ----------------------------------------------------------------------------- the grid


def test_grid_shape_and_columns(d):
    r = ok(d["files"]["p"], d["files"]["q"], "--lam", "1,5", "--iters", 10, "--iters", 100,
           "--dtype", "float64", "--form", "plain,log", "-f", "csv")
    rows = read_csv(r.stdout)
    assert list(rows[0]) == compare.COLUMNS
    for required in ("lam", "iters", "dtype", "form", "device", "ratio_mean", "ratio_p05",
                     "ratio_p95", "angle_mean", "angle_p05", "angle_p95", "nonconverged",
                     "seconds"):
        assert required in rows[0]
    keys = {(float(x["lam"]), int(x["iters"]), x["dtype"], x["form"], x["device"]) for x in rows}
    assert keys == {(lam, it, "float64", form, "cpu") for lam in (1.0, 5.0) for it in (10, 100)
                    for form in ("plain", "log")}
    assert len(rows) == 8
    for x in rows:
        assert int(x["rows"]) == B and float(x["seconds"]) > 0
        assert 0 <= float(x["nonconverged"]) <= 1
        assert float(x["ratio_p05"]) <= float(x["ratio_mean"]) <= float(x["ratio_p95"])
    assert "8 cells" in r.stderr and "exact EMD mean=" in r.stderr


def test_default_grid_is_the_papers():
    g = compare.Grid()
    assert g.lams == [0.5, 1, 2, 5, 10, 20, 50, 100]
    assert (g.iters, g.dtypes, g.forms, g.devices) == ([10, 100, 1000], ["float32", "float64"],
                                                       ["plain"], ["cpu"])
    assert len(g) == len(g.cells()) == 48


def test_ratio_and_angle_approach_the_exact_emd(d):
    """float64, log form, soft targets: with enough iterations SD/EMD → 1 and the angle → 0
    as λ grows; at a large λ, more iterations bring both closer."""
    lams, iters = [1.0, 4.0, 16.0, 64.0], [10, 100, 100_000]
    r = ok(d["files"]["p"], d["files"]["q"], "--lam", ",".join(map(str, lams)),
           "--iters", ",".join(map(str, iters)), "--dtype", "float64", "--form", "log",
           "-f", "csv", "-q")
    c = cells(r.stdout)
    top = [c[(lam, 100_000, "float64", "log", "cpu")] for lam in lams]
    assert all(x["nonconverged"] == 0 for x in top)
    err = [abs(x["ratio_mean"] - 1) for x in top]
    assert err[0] > 0.1 and err[-1] < 1e-6
    assert err[0] > err[1] > err[2]
    ang = [x["angle_mean"] for x in top]
    assert all(a > b for a, b in zip(ang, ang[1:])), ang
    assert ang[-1] < 2.0 and ang[-1] < ang[0] / 10 and top[-1]["angle_p95"] < 4.0
    at64 = [c[(64.0, it, "float64", "log", "cpu")] for it in iters]
    assert [abs(x["ratio_mean"] - 1) for x in at64] == sorted(
        (abs(x["ratio_mean"] - 1) for x in at64), reverse=True)
    assert at64[0]["angle_mean"] > at64[1]["angle_mean"] > at64[2]["angle_mean"]
    assert at64[0]["nonconverged"] == 1 and at64[0]["iterations_mean"] == 10


def test_float32_plain_at_large_lam_is_reported_not_converged(d):
    r = ok(d["files"]["p"], d["files"]["q"], "--lam", "1,500", "--iters", 10, "--iters", 1000,
           "--dtype", "float32", "-f", "csv", "-q")
    c = cells(r.stdout)
    for it in (10, 1000):
        assert c[(500.0, it, "float32", "plain", "cpu")]["nonconverged"] == 1.0
    assert c[(1.0, 1000, "float32", "plain", "cpu")]["nonconverged"] == 0.0
    blown = c[(500.0, 1000, "float32", "plain", "cpu")]
    assert blown["nonfinite"] > 0 or abs(blown["ratio_mean"] - 1) > 0.5


def test_library_run_matches_its_own_pieces(d):
    """compare.run on a Batch: ratio and angle are the per-row statistics of sinkhorn()."""
    from emdcli.sinkhorn import sinkhorn

    batch = compare.Batch(p=d["p"], q=d["q"], space=Chain.uniform(N), rows=np.arange(B),
                          ids=None, n_rows_file=B, one_hot=False, smoothing=0.0,
                          normalize="l1", names={})
    study = compare.run(batch, compare.Grid(lams=[3.0], iters=[200], dtypes=["float64"]))
    (row,) = study.rows
    e, g = emd(d["p"], d["q"], gradient=True)
    s = sinkhorn(d["p"], d["q"], lam=3.0, iters=200, gradient=True)
    ratio = s.values / e
    assert row["ratio_mean"] == pytest.approx(ratio.mean(), rel=1e-12)
    assert row["ratio_p05"] == pytest.approx(np.percentile(ratio, 5), rel=1e-12)
    cos = np.einsum("ij,ij->i", s.gradient, g) / (
        np.linalg.norm(s.gradient, axis=1) * np.linalg.norm(g, axis=1))
    assert row["angle_mean"] == pytest.approx(np.degrees(np.arccos(cos)).mean(), rel=1e-9)
    assert row["nonconverged"] == pytest.approx((~s.converged).mean())
    assert row["iterations_mean"] == pytest.approx(s.iterations.mean())
    np.testing.assert_array_equal(study.emd_values, e)


def test_angles_use_the_finite_entries_reprojected():
    a = np.array([[1.0, -1.0, 0.0, -np.inf], [1.0, 2.0, 3.0, 4.0], [np.nan] * 4,
                  [5.0, -np.inf, -np.inf, -np.inf]])
    b = np.array([[2.0, -2.0, 0.0, 9.0], [-1.0, -2.0, -3.0, -4.0], [1.0, 0, 0, -1.0],
                  [1.0, 2.0, 3.0, 4.0]])
    out = compare.angles(a, b)
    # row 0: over the three finite bins, b re-projected is (2, -2, 0) ∥ a: angle 0
    assert out[0] == pytest.approx(0.0, abs=1e-5)  # arccos near 1: ~sqrt(eps)
    assert out[1] == pytest.approx(180.0)
    assert np.isnan(out[2]) and np.isnan(out[3])  # nothing / one bin finite


def test_one_hot_targets_get_a_note_and_label_smoothing_makes_them_soft(d):
    r = ok(d["files"]["p"], d["files"]["c"], "--lam", 2, "--iters", 100, "--dtype", "float64",
           "-f", "csv")
    assert "one-hot" in r.stderr and "--label-smoothing" in r.stderr
    (row,) = read_csv(r.stdout)
    assert float(row["ratio_mean"]) == pytest.approx(1.0, rel=1e-9)  # exact in one iteration
    assert float(row["iterations_mean"]) == 1
    r = ok(d["files"]["p"], d["files"]["onehot"], "--lam", 2, "--iters", 100, "-f", "csv")
    assert "one-hot" in r.stderr  # one-hot rows are recognised too
    r = ok(d["files"]["p"], d["files"]["c"], "--lam", 2, "--iters", 100, "--dtype", "float64",
           "--label-smoothing", 0.1, "-f", "csv")
    assert "one-hot" not in r.stderr
    (row,) = read_csv(r.stdout)
    assert abs(float(row["ratio_mean"]) - 1) > 1e-3
    from emdcli.jobs.plan import Inputs, SpaceSpec

    batch = compare.load(Inputs(d["files"]["p"], d["files"]["c"]), SpaceSpec(), smoothing=0.1)
    want = 0.9 * np.eye(N)[d["c"]] + 0.1 / N
    np.testing.assert_allclose(batch.q, want, rtol=1e-15)
    assert batch.one_hot and batch.smoothing == 0.1


# ----------------------------------------------------------------------------- output


def test_output_files_parquet_and_jsonl(d, tmp_path):
    args = [d["files"]["p"], d["files"]["q"], "--lam", "1,3", "--iters", 50, "--dtype",
            "float64", "-q"]
    ok(*args, "-o", tmp_path / "c.parquet")
    t = pq.read_table(tmp_path / "c.parquet")
    assert t.column_names == compare.COLUMNS and t.num_rows == 2
    assert str(t.schema.field("dtype").type) == "string"
    assert str(t.schema.field("iters").type) == "int64"
    assert str(t.schema.field("ratio_mean").type) == "double"
    ok(*args, "-o", tmp_path / "c.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [list(x) for x in rows] == [compare.COLUMNS] * 2
    assert rows[0]["lam"] == 1.0 and rows[1]["iters"] == 50
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl", "c.parquet"]  # no temporary files left


def test_table_output(d):
    r = ok(d["files"]["p"], d["files"]["q"], "--lam", "1,500", "--iters", 10, "--dtype",
           "float32", "-f", "table", "-q")
    assert "SD/EMD" in r.stdout and "angle" in r.stdout and "float32" in r.stdout
    assert "500" in r.stdout and "100%" in r.stdout


def test_rows_sample_and_the_row_limit(d, monkeypatch):
    monkeypatch.setattr(compare, "MAX_ROWS", 4)
    line = bad(d["files"]["p"], d["files"]["q"], "--lam", 1, "--iters", 10)
    assert "--rows" in line and f"{B} rows" in line
    r = ok(d["files"]["p"], d["files"]["q"], "--lam", 1, "--iters", 10, "--dtype", "float64",
           "--rows", 3, "-f", "csv")
    assert [x["rows"] for x in read_csv(r.stdout)] == ["3"]
    assert f"a random sample of {B}" in r.stderr


# ----------------------------------------------------------------------------- plots


def _png_ok(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    return img


def test_plot_writes_a_png_and_an_svg(d, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "fig3.png"
    r = ok(d["files"]["p"], d["files"]["q"], "--lam", "1,4,500", "--iters", "10,1000",
           "--form", "plain", "--form", "log", "--plot", png, "-f", "csv")
    _png_ok(png)
    assert str(png) in r.stderr
    svg = tmp_path / "fig3.svg"
    ok(d["files"]["p"], d["files"]["q"], "--lam", "1,4", "--iters", 10, "--plot", svg, "-q",
       "-f", "csv")
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def test_plot_without_matplotlib_exits_2_before_any_work(d, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    png = tmp_path / "fig.png"
    line = bad(d["files"]["p"], d["files"]["q"], "--lam", 1, "--iters", 10, "--plot", png)
    assert "matplotlib" in line and "pip install 'emdcli[plot]'" in line
    assert not png.exists()
    line = bad(d["files"]["p"], d["files"]["q"], "--profile", 0, "--plot", png)
    assert "pip install 'emdcli[plot]'" in line


# ----------------------------------------------------------------------------- profile


def test_profile_prints_the_per_bin_gradients(d, tmp_path):
    r = ok(d["files"]["p"], d["files"]["q"], "--profile", 2, "--lam", "1,64", "-f", "csv")
    rows = read_csv(r.stdout)
    assert list(rows[0]) == ["bin", "name", "pred", "target", "mse", "emd", "emd2", "sd_1",
                             "sd_64"]
    assert [int(x["bin"]) for x in rows] == list(range(N))
    col = {k: np.array([float(x[k]) for x in rows]) for k in rows[0] if k != "name"}
    p, q = d["p"][2], d["q"][2]
    np.testing.assert_allclose(col["pred"], p, rtol=1e-15)
    mse = 2 * (p - q)
    np.testing.assert_allclose(col["mse"], mse - mse.mean(), atol=1e-15)
    _, g = emd(d["p"][2:3], d["q"][2:3], gradient=True)
    np.testing.assert_allclose(col["emd"], g[0], rtol=1e-12)
    _, g2 = emd(d["p"][2:3], d["q"][2:3], rho=2, gradient=True)
    np.testing.assert_allclose(col["emd2"], g2[0], rtol=1e-12)
    for k in ("mse", "emd", "emd2", "sd_1", "sd_64"):
        assert abs(col[k].sum()) < 1e-9  # all projected
    # a converged SD at a large λ has nearly the EMD's gradient, at a small λ it does not
    assert compare.angles(col["sd_64"][None], g)[0] < 2.0
    assert compare.angles(col["sd_1"][None], g)[0] > 10.0
    assert "row 2" in r.stderr and "SD(λ=64)" in r.stderr
    png = tmp_path / "fig5.png"
    ok(d["files"]["p"], d["files"]["q"], "--profile", 0, "--plot", png, "-q", "-f", "csv")
    _png_ok(png)


def test_profile_marks_bins_without_mass(d, tmp_path):
    p = d["p"].copy()
    p[1, 3] = 0.0
    np.save(tmp_path / "p0.npy", p)
    r = ok(tmp_path / "p0.npy", d["files"]["q"], "--profile", 1, "--lam", 5, "-f", "csv", "-q")
    rows = read_csv(r.stdout)
    assert rows[3]["sd_5"] == "-inf" and rows[3]["pred"] == "0.0"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lam", "0"], "--lam"),
        (["--lam", "x"], "--lam"),
        (["--lam", "1,,2"], "--lam"),
        (["--iters", "0"], "--iters"),
        (["--iters", "1.5"], "--iters"),
        (["--dtype", "float16"], "--dtype"),
        (["--form", "exp"], "--form"),
        (["--device", "tpu"], "--device"),
        (["--label-smoothing", "1"], "--label-smoothing"),
        (["--label-smoothing", "-0.1"], "--label-smoothing"),
        (["--tol", "-1"], "--tol"),
        (["--plot", "fig.gif"], "--plot"),
        (["--output", "out.npy"], "--output"),
        (["--profile", "99"], "--profile"),
        (["--profile", "0", "--iters", "10"], "--iters"),
        (["--profile", "0", "--dtype", "float32"], "--dtype"),
        (["--tree", "nope.csv", "--positions", "0,1"], "give one"),
        (["--positions", "0,1,2"], "positions"),
    ],
)
def test_bad_options_exit_2_with_one_line(d, args, needle):
    line = bad(d["files"]["p"], d["files"]["q"], *args)
    assert needle in line, line


def test_bad_input_names_the_file_and_the_row(d, tmp_path):
    p = d["p"].copy()
    p[3, 1] = -0.5
    np.save(tmp_path / "neg.npy", p)
    line = bad(tmp_path / "neg.npy", d["files"]["q"], "--lam", 1)
    assert "neg.npy" in line and "row 3" in line and "column 1" in line


def test_device_cuda_without_a_gpu_exits_2(d, monkeypatch):
    """Where CUDA cannot run, --device cuda is one line and exit 2, before any work. (The
    check is stubbed: importing numba.cuda here, in real mode, would make tests/test_gpu.py
    skip itself in the same process.)"""
    from emdcli import gpu

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no usable NVIDIA GPU: stubbed")
    for devices in ("cuda", "cpu,cuda"):
        line = bad(d["files"]["p"], d["files"]["q"], "--device", devices)
        assert "--device cuda" in line and "no usable NVIDIA GPU" in line, line


def test_device_cuda_in_the_simulator_agrees_with_the_cpu(tmp_path):
    """The cuda cells (numba.cuda kernels, run by the CUDA simulator in a subprocess) give
    the CPU cells' statistics."""
    rng = np.random.default_rng(7)
    np.save(tmp_path / "p.npy", rng.dirichlet(np.full(5, 2.0), 3))
    np.save(tmp_path / "q.npy", rng.dirichlet(np.full(5, 2.0), 3))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "emdcli.cli", "compare", str(tmp_path / "p.npy"),
         str(tmp_path / "q.npy"), "--device", "cpu,cuda", "--lam", "2", "--iters", "5",
         "--dtype", "float64", "-f", "csv", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    c = cells(out.stdout)
    cpu, gpu = c[(2.0, 5, "float64", "plain", "cpu")], c[(2.0, 5, "float64", "plain", "cuda")]
    for k in ("ratio_mean", "ratio_p05", "ratio_p95", "angle_mean", "nonconverged",
              "iterations_mean"):
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-9, abs=1e-9), k


# ----------------------------------------------------------------------------- WordNet


def test_wordnet_smoke():
    r = ok(IMAGENET_PRED, *WORDNET, "--label-smoothing", 0.1, "--lam", 10, "--iters", 10,
           "--dtype", "float32", "-f", "csv")
    (row,) = read_csv(r.stdout)
    assert row["rows"] == "512" and row["dtype"] == "float32"
    assert 0 < float(row["ratio_mean"]) < 1.2 and 0 < float(row["angle_mean"]) < 90
    assert "tree" not in r.stdout  # data only on stdout
    assert "512 rows" in r.stderr and "1 cells" in r.stderr


# ------------------------------------------------------------------- compilation, untimed

# Counts the compiled (or cache-loaded) specialisations of every Numba dispatcher in
# emdcli.kernels: a timed call that compiles or loads a kernel makes the count grow.
COUNT_OVERLOADS = """
import sys
from numba.core.dispatcher import Dispatcher

def overloads():
    return sum(len(v.overloads) for name, m in list(sys.modules.items())
               if name.startswith("emdcli.kernels.") for v in vars(m).values()
               if isinstance(v, Dispatcher))
"""


def test_compare_compiles_every_kernel_before_timing_it(tmp_path):
    """In a fresh process (Numba's cache cold or warm: loading a kernel counts too), no
    Sinkhorn call that ``emd compare`` times adds a kernel: each cell's kernels were
    compiled or loaded by its untimed warm-up. 40 rows: the timed calls run the lane
    solver (≥ 32 rows), which a one-row warm-up would not have compiled."""
    rng = np.random.default_rng(3)
    np.save(tmp_path / "p.npy", rng.dirichlet(np.full(6, 2.0), 40))
    np.save(tmp_path / "q.npy", rng.dirichlet(np.full(6, 2.0), 40))
    code = COUNT_OVERLOADS + f"""
import json
import emdcli.sinkhorn as sk
from emdcli import compare
from emdcli.jobs.plan import Inputs, SpaceSpec
real, calls = sk.sinkhorn, []

def counting(*args, **kw):
    before = overloads()
    out = real(*args, **kw)
    calls.append((kw["iters"], kw["form"], len(args[0]), overloads() - before))
    return out

sk.sinkhorn = counting
batch = compare.load(Inputs({str(tmp_path / "p.npy")!r}, {str(tmp_path / "q.npy")!r}), SpaceSpec())
grid = compare.Grid(lams=[1.0, 5.0], iters=[4, 7], dtypes=["float64"], forms=["plain", "log"])
study = compare.run(batch, grid)
print(json.dumps(dict(calls=calls, cells=len(study.rows))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    timed = [c for c in got["calls"] if c[0] != 1]
    assert len(timed) == got["cells"] == 8
    assert all(rows == 40 for _, _, rows, _ in timed)
    assert [added for *_, added in timed] == [0] * 8, got["calls"]
    warmups = [c for c in got["calls"] if c[0] == 1]
    assert sorted(form for _, form, _, _ in warmups) == ["log", "plain"]


def test_compare_says_once_that_it_is_compiling(d, monkeypatch):
    seen = []

    def fake(batch, grid, kernel="auto"):
        seen.append(sorted(grid.forms))
        return "compiling kernels for float64 chains (once per install, ~3 s)"

    monkeypatch.setattr(compare, "compile_notice", fake)
    p, q = d["files"]["p"], d["files"]["q"]
    r = ok(p, q, "--lam", 1, "--iters", 3, "--dtype", "float64", "--form", "plain,log", "-f", "csv")
    assert r.stderr.count("emd: compiling kernels for float64 chains (once per install, ~3 s)") == 1
    assert seen == [["log", "plain"]]
    r = ok(p, q, "--lam", 1, "--iters", 3, "--dtype", "float64", "-f", "csv", "-q")
    assert r.stderr == ""


def test_compile_notice_names_the_grid(monkeypatch):
    from emdcli import warmup

    batch = compare.Batch(p=np.full((3, N), 1 / N), q=np.full((3, N), 1 / N), space=Chain.uniform(N),
                          rows=np.arange(3), ids=None, n_rows_file=3, one_hot=False,
                          smoothing=0.0, normalize="l1", names={})
    grid = compare.Grid(lams=[1.0], iters=[3], dtypes=["float32"], forms=["log"])
    jobs = []
    monkeypatch.setattr(warmup, "notice_jobs", lambda js: jobs.extend(js) or None)
    assert compare.compile_notice(batch, grid) is None
    assert dict(space_kind="chain", dtype="float64", gradient=True, input_dtype="float64") in jobs
    assert dict(space_kind="chain", dtype="float32", metric="sinkhorn", form="log",
                kernel="auto", rows=3) in jobs

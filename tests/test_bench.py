"""`emd bench` and emdcli.bench on tiny configurations (one repetition)."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from common import cli_runner

from emdcli import bench
from emdcli.cli import app
from emdcli.spaces import Chain

runner = cli_runner()
TINY = ["--batch", "4", "--iters", "2", "--repeat", "1", "--quiet"]


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_default_space_is_the_packaged_wordnet_tree():
    tree = bench.default_tree()
    assert (tree.n_nodes, tree.n) == (1371, 1000)
    assert tree.bin_names[0] == "n01440764"  # tench: class index 0


def test_bench_csv_has_every_column_and_case():
    res = runner.invoke(app, ["bench", *TINY, "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    rows = _csv(res.stdout)
    assert list(rows[0]) == bench.COLUMNS
    cases = {(r["metric"], r["iters"], r["dtype"]) for r in rows}
    assert cases == {(m, i, d) for d in ("float32", "float64")
                     for m, i in (("emd", ""), ("emd2", ""), ("sinkhorn", "2"))}
    for r in rows:
        assert float(r["median_s"]) > 0 and float(r["first_call_s"]) > 0
        assert float(r["min_s"]) <= float(r["median_s"])
        assert r["device"] == "cpu" and r["repeats"] == "1"
        assert r["paper_s"] == ""  # batch 4 is not the paper's workload


def test_paper_numbers_only_for_the_papers_workload():
    rows, space = bench.run_bench(bench.BenchConfig(batch=512, iters=[10], dtypes=["float32"],
                                                    repeat=1, budget=1.0))
    by = {(r["metric"], r["iters"]): r for r in rows}
    assert by[("emd2", None)]["paper_s"] == 0.126
    assert by[("sinkhorn", 10)]["paper_s"] == 0.942
    assert by[("emd", None)]["paper_s"] is None
    assert by[("emd2", None)]["paper_over_ours"] == pytest.approx(
        0.126 / by[("emd2", None)]["median_s"])


def test_against_pot_agrees_on_a_tiny_configuration():
    res = runner.invoke(app, ["bench", *TINY, "--dtype", "float64", "--against", "pot",
                              "--pot-rows", "2", "--format", "jsonl"])
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    timed = [r for r in rows if r["metric"] in ("emd", "sinkhorn")]
    assert timed and all(r["pot_agrees"] is True for r in timed)
    assert all(r["pot_s"] > 0 and r["pot_over_ours"] > 0 for r in timed)
    assert all(r["pot_s"] is None for r in rows if r["metric"] == "emd2")


@pytest.mark.parametrize("targets", ["labels", "soft"])
def test_chain_by_number_of_bins(targets):
    res = runner.invoke(app, ["bench", *TINY, "--bins", "12", "--targets", targets,
                              "--against", "pot", "--pot-rows", "2", "-f", "csv"])
    assert res.exit_code == 0, res.stderr
    rows = _csv(res.stdout)
    assert all(r["pot_agrees"] in ("true", "") for r in rows)
    assert any(r["pot_agrees"] == "true" for r in rows)


def test_positions_and_ground_spaces(tmp_path):
    x = np.array([0.0, 1.0, 3.0, 7.0])
    np.save(tmp_path / "D.npy", Chain.from_positions(x).ground_matrix())
    res = runner.invoke(app, ["bench", *TINY, "--positions", "0,1,3,7", "-f", "csv"])
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(app, ["bench", *TINY, "--ground", str(tmp_path / "D.npy"), "-f", "csv"])
    assert res.exit_code == 0, res.stderr
    metrics = {r["metric"] for r in _csv(res.stdout)}
    assert metrics == {"emd", "sinkhorn"}  # EMD² needs a chain or tree


def test_table_output():
    res = runner.invoke(app, ["bench", *TINY, "--dtype", "float32", "-f", "table"])
    assert res.exit_code == 0, res.stderr
    assert "sinkhorn" in res.stdout and "paper" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iters", "0"], "--iters"),
        (["--iters", "a,b"], "--iters"),
        (["--bins", "x"], "--bins"),
        (["--lam", "0"], "lam"),
        (["--targets", "other"], "--targets"),
        (["--against", "scipy"], "--against"),
        (["--tree", "t.csv", "--positions", "0,1"], "give one"),
    ],
)
def test_bad_options_exit_2(args, message):
    res = runner.invoke(app, ["bench", "--repeat", "1", *args])
    assert res.exit_code == 2
    assert message in res.stderr and res.stderr.count("\n") == 1


def test_device_cuda_without_a_gpu_exits_2(monkeypatch):
    from emdcli import gpu

    if gpu.cuda_available():
        pytest.skip("a GPU (or the simulator) is available here")
    res = runner.invoke(app, ["bench", *TINY, "--device", "cuda"])
    assert res.exit_code == 2 and "device cuda is not available" in res.stderr
    res = runner.invoke(app, ["bench", *TINY, "--device", "tpu"])
    assert res.exit_code == 2 and "--device" in res.stderr


def test_no_timed_sample_compiles(tmp_path):
    """In a fresh process, only each case's first call (reported apart, as first_call_s)
    may compile or load a kernel; the calls behind the medians never do."""
    code = """
import json, sys
from numba.core.dispatcher import Dispatcher
from emdcli import bench
from emdcli.spaces import Chain

def overloads():
    return sum(len(v.overloads) for name, m in list(sys.modules.items())
               if name.startswith("emdcli.kernels.") for v in vars(m).values()
               if isinstance(v, Dispatcher))

real, added = bench.measure, []

def counting(fn, **kw):
    calls = []

    def wrapped():
        before = overloads()
        fn()
        calls.append(overloads() - before)

    t = real(wrapped, **kw)
    added.append(calls)
    return t

bench.measure = counting
cfg = bench.BenchConfig(space=Chain.uniform(7), batch=40, iters=[3], dtypes=["float64"],
                        repeat=2, budget=1.0)
notices = []
rows, _ = bench.run_bench(cfg, notice=notices.append)
print(json.dumps(dict(added=added, cases=len(rows), notices=notices)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["cases"] == len(got["added"]) == 3  # emd, emd2, sinkhorn 3
    for calls in got["added"]:
        assert len(calls) >= 2 + bench.WARMUP_CALLS
        assert calls[1:] == [0] * (len(calls) - 1), got["added"]
    assert len(got["notices"]) <= 1


def test_bench_says_when_it_will_compile(monkeypatch):
    monkeypatch.setattr(bench, "compile_notice", lambda cfg, space=None: "compiling kernels for X")
    res = runner.invoke(app, ["bench", "--bins", "6", "--batch", "4", "--iters", "2",
                              "--repeat", "1", "--dtype", "float64", "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("emd: compiling kernels for X") == 1
    res = runner.invoke(app, ["bench", "--bins", "6", *TINY, "--dtype", "float64", "-f", "csv"])
    assert "compiling" not in res.stderr

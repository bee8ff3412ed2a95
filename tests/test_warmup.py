"""emdcli.warmup: the compile notice and ``emd warmup``.

With a fresh ``NUMBA_CACHE_DIR`` in a subprocess, :func:`notice` reports the kernels as
missing (without importing Numba), one warm-up group compiles them, and then it reports
them cached (and only them). ``emd warmup`` exits 0 with one line per group. The index
files are read without running anything they hold.
"""

import io
import json
import os
import pickle
import subprocess
import sys

import pytest
from common import cli_runner

from emdcli import numba_cache, warmup
from emdcli.cli import app

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = cli_runner()


def run_fresh(code, cache_dir):
    """Run ``code`` in a new interpreter whose Numba cache is ``cache_dir``; returns the
    JSON it prints last."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=HERE, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_notice_says_compiling_on_a_cold_cache_and_nothing_after_warm(tmp_path):
    got = run_fresh("""
import json, sys
from emdcli import numba_cache, warmup
out = {"folder": numba_cache.cache_dir()}
out["before"] = warmup.notice("tree", "float32", gradient=True)
out["before_log"] = warmup.notice("chain", "float64", metric="sinkhorn", form="log")
out["numba_imported"] = "numba" in sys.modules
done = warmup.warm(groups=["tree-float32"])
out["done"] = [[name, compiled] for name, _, compiled in done]
out["after"] = [warmup.notice("tree", "float32", gradient=g, input_dtype=i)
                for g in (False, True) for i in ("float32", "float64")]
out["other"] = [warmup.notice("chain", "float32"), warmup.notice("tree", "float64"),
                warmup.notice("tree", "float32", metric="sinkhorn")]
print(json.dumps(out))
""", tmp_path)
    assert got["folder"].startswith(str(tmp_path))
    assert got["before"].startswith("compiling kernels for float32 trees with gradients ")
    assert got["before"].endswith(" s)") and "once per install, ~" in got["before"]
    assert got["before_log"].startswith("compiling kernels for float64 Sinkhorn (log form) on chains")
    assert not got["numba_imported"]  # the notice reads files only
    assert got["done"] == [["tree-float32", True]]
    assert got["after"] == [None] * 4
    assert all(o and o.startswith("compiling kernels for ") for o in got["other"])


def test_the_chain_lanes_kernel_with_and_without_row_sums_are_told_apart(tmp_path):
    """A narrow chain compiles the lanes kernel without the l1 check's row sums (its own
    specialisation: the stats argument None), values only (G None), and a tree's values
    its lanes kernel without gradients; the notice then says nothing for those jobs and
    still says compiling for wide chains, which take the sums in the kernel, and for
    gradients."""
    got = run_fresh("""
import json
import numpy as np
import emdcli
from emdcli import warmup
rng = np.random.default_rng(0)
x = rng.random((4096, 32)).astype(np.float32)
emdcli.emd(x, rng.integers(0, 32, 4096), dtype="float32")
p, _, c = warmup._tiny(warmup._big_rows(), "float32")
emdcli.emd(p, c, space=warmup._space("tree"), dtype="float32")  # a tree's values
print(json.dumps([warmup.notice("chain", "float32", rows=4096, bins=32),
                  warmup.notice("tree", "float32", rows=len(p), bins=5),
                  warmup.notice("chain", "float32", rows=4096, bins=64),
                  warmup.notice("chain", "float32", rows=4096, bins=32, gradient=True),
                  warmup.notice("tree", "float32", rows=len(p), bins=5, gradient=True)]))
""", tmp_path)
    assert got[:2] == [None, None]
    assert all(g and g.startswith("compiling kernels for float32 ") for g in got[2:])


def test_notice_on_a_kernel_folder_without_a_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(numba_cache, "numba_config",
                        lambda: (str(tmp_path / "nothing-here-yet"), None, False))
    assert numba_cache.cache_dir().startswith(str(tmp_path))
    line = warmup.notice("chain", "float64", metric="emd2")
    assert line.startswith("compiling kernels for float64 chains (once per install, ~")
    assert warmup.notice("ground", "float32", metric="sinkhorn", form="log").startswith(
        "compiling kernels for float32 Sinkhorn (log form) on ground matrices")


def test_entry_points_follow_the_dispatch(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")  # one thread: the serial kernels only
    ep = warmup.entry_points
    assert [f for _, f, _ in ep("chain", "float64")] == ["_sums_mins", "_runs"]
    lanes = ("chain_lanes", "_lanes_runs", warmup.ROW_SUMS)  # LANES rows side by side: rho
    plain = ("chain_lanes", "_lanes_runs", warmup.NO_ROW_SUMS)  # 1, 2 (the sums: or not)
    assert ep("chain", "float32") == [lanes]  # the l1 check's row sums: in the lanes kernel
    assert ep("chain", "float32", rows=4096, bins=64) == [lanes]
    assert ep("chain", "float32", rows=4096, bins=32) == [  # narrow: a pass of their own
        ("rowstats", "_sums_mins", None), plain]
    assert ep("chain", "float32", normalize="none") == [("rowstats", "_sums_mins", None), plain]
    assert ep("chain", "float64", rows=512, bins=1000)[-1] == lanes
    assert ep("chain", "float64", metric="emd-rho", rho=1.5)[-1] == ("chain", "_runs", None)
    assert ep("tree", "float32", gradient=True) == [
        ("tree_lanes", "_lanes_runs", warmup.TREE_GRADIENTS)]
    assert ep("tree", "float32")[-1] == ("tree_lanes", "_lanes_runs", warmup.TREE_VALUES)
    assert ep("tree", "float32", rows=3, gradient=True)[-1][1] == "_grad_runs"
    assert ep("tree", "float32", rows=3)[-1][1] == "_value_runs"
    assert ep("tree", "float32", metric="emd-rho", rho=1.5)[-1][1] == "_value_runs"
    assert [f for _, f, _ in ep("ground", "float64")] == ["_sums_mins"]
    softmax = ("chain_lanes", "_softmax_runs", None)  # logits: the lanes kernels' softmax,
    assert ep("chain", "float64", normalize="softmax", rows=4096, bins=32)[-1] == softmax
    assert ep("chain", "float32", normalize="softmax")[-1] == softmax  # narrow float64 too
    assert ep("chain", "float64", normalize="softmax", rho=1.5, metric="emd-rho")[-1] == (
        "chain", "_runs", None)
    assert ep("chain", "float64", normalize="softmax", rows=10, bins=32) == []  # numpy
    assert ep("tree", "float32", normalize="softmax", gradient=True)[-1] == (
        "tree_lanes", "_softmax_runs", None)
    assert ep("tree", "float32", normalize="softmax", rows=3)[-1][1] == "_value_runs"
    assert ep("chain", "float64", metric="sinkhorn")[-1] == ("lanes", "_lanes_batch", "ChainGibbs")
    assert ep("tree", "float64", metric="sinkhorn", rows=3)[-1] == (
        "sinkhorn", "_plain_batch", "TreeGibbs")
    assert ep("chain", "float64", metric="sinkhorn", form="log", kernel="dense")[-1] == (
        "sinkhorn", "_log_batch", "DenseGibbs")
    assert [f for _, f, _ in ep("tree", "float64", metric="sinkhorn", kernel="dense")] == [
        "_sums_mins"]  # the dense plain form: BLAS
    for bad in (dict(space_kind="ring", dtype="float64"), dict(space_kind="chain", dtype="int8"),
                dict(space_kind="chain", dtype="float64", metric="mse"),
                dict(space_kind="chain", dtype="float64", form="exp")):
        with pytest.raises(ValueError):
            ep(**bad)


def test_the_lane_count_is_the_kernels():
    from emdcli.kernels.lanes import LANES

    assert warmup.LANES == LANES


def test_the_index_reader_runs_nothing(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    data = pickle.dumps((b"stamp", {(Boom(),): "x.nbc"}))
    stamp, overloads = numba_cache._IndexUnpickler(io.BytesIO(data)).load()
    assert stamp == b"stamp" and list(overloads.values()) == ["x.nbc"]
    assert not (tmp_path / "ran").exists()


def test_unknown_group_is_refused():
    with pytest.raises(ValueError, match="unknown warm-up group"):
        warmup.warm(groups=["chain-float16"])
    assert set(warmup.DEFAULT_GROUPS) < set(warmup.ALL_GROUPS)


def test_emd_warmup_exits_0_with_a_line_per_group():
    r = RUNNER.invoke(app, ["warmup"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == len(warmup.DEFAULT_GROUPS) + 1
    for name, line in zip(warmup.DEFAULT_GROUPS, lines):
        assert line.startswith(f"emd warmup: {name}: ") and " s" in line
    assert lines[-1].startswith(f"emd warmup: {len(warmup.DEFAULT_GROUPS)} groups in ")
    assert r.stdout == ""
    # the exact EMD's kernels are now cached
    assert warmup.notice("chain", "float32", gradient=True) is None
    assert warmup.notice("tree", "float64", gradient=True) is None
    assert RUNNER.invoke(app, ["warmup", "--help"]).exit_code == 0


def test_no_notice_when_the_jit_is_disabled(monkeypatch):
    monkeypatch.setattr(numba_cache, "numba_config", lambda: ("", None, True))
    assert warmup.notice("chain", "float64") is None


def test_compute_says_once_that_it_compiles(tmp_path):
    """A cold cache: ``emd compute`` says it is compiling before the first batch; warm: not.
    (EMD^1.5: a job the numpy twins do not take, ``tests/test_startup.py``.)"""
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.random((3000, 40)))  # 120 000 values: the Numba kernels
    np.save(tmp_path / "c.npy", rng.integers(0, 40, 3000))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "emdcli.cli", "compute", str(tmp_path / "p.npy"),
           str(tmp_path / "c.npy"), "--metric", "emd-rho", "--rho", "1.5",
           "-o", str(tmp_path / "r.csv")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("compiling kernels for float64 chains") == 1, first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert second.returncode == 0 and "compiling" not in second.stderr, second.stderr
    quiet = subprocess.run(cmd + ["-q"], capture_output=True, text=True,
                           env={**env, "NUMBA_CACHE_DIR": str(tmp_path / "cold")})
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_entry_points_add_the_prange_twins_with_threads(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "4")
    ep = warmup.entry_points
    sums, plain = warmup.ROW_SUMS, warmup.NO_ROW_SUMS
    assert ep("chain", "float32") == [("chain_lanes", "_lanes_runs", sums),  # its own l1 sums
                                      ("chain_lanes", "_lanes_parallel", sums)]
    assert ep("chain", "float32", input_dtype="float64") == [  # converted: checked first
        ("rowstats", "_sums_mins", None), ("chain_lanes", "_lanes_runs", plain),
        ("rowstats", "_sums_mins_parallel", None), ("chain_lanes", "_lanes_parallel", plain)]
    assert ep("tree", "float64", rows=2000, bins=1000, gradient=True, metric="emd-rho",
              rho=1.5)[-1] == (
        "tree", "_grad_parallel", None)
    assert ep("tree", "float64", rows=3, bins=1000, gradient=True)[-1] == (
        "tree", "_grad_runs", None)  # three rows: one run, no twin
    assert ep("chain", "float64", rows=2000, bins=64)[-1] == ("chain", "_runs", None)  # maybe
    for (module, name), twin in warmup.TWINS.items():  # every twin exists where it is named
        import importlib

        kernels = importlib.import_module(f"emdcli.kernels.{module}")
        assert callable(getattr(kernels, name)) and callable(getattr(kernels, twin))

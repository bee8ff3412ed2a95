"""A job small enough runs on the numpy twins of the kernels (``jobs.startup``): no Numba
to load, nothing to compile on a cold cache, and the kernels' bits.

Whole ``emd compute`` processes on real files, with a Numba cache of their own."""

import csv
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from common import LIMITED_EMD

import emdcli
from emdcli import rows
from emdcli.jobs import startup
from emdcli.jobs.plan import metric_spec, space_spec

def _files(tmp_path, b=3000, n=40):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "p.npy", (rng.random((b, n)) ** 3).astype(np.float32))
    np.save(tmp_path / "c.npy", rng.integers(0, n, b))
    return np.load(tmp_path / "p.npy"), np.load(tmp_path / "c.npy")


def _emd(tmp_path, limits, *args, cache="cache"):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / cache)}
    cmd = [sys.executable, "-c", LIMITED_EMD, *map(str, limits), "compute", str(tmp_path / "p.npy"),
           str(tmp_path / "c.npy"), "--metric", "emd2", "-o", str(tmp_path / "r.csv"),
           "-g", str(tmp_path / "g.npy"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _compiled(folder):
    return [f for _, _, files in os.walk(folder) for f in files if f.endswith(".nbi")]


def _results(tmp_path):
    with open(tmp_path / "r.csv") as f:
        values = np.array([float(r["emd2"]) for r in csv.DictReader(f)])
    return values, np.load(tmp_path / "g.npy")


@pytest.mark.parametrize("limits, said", [((1 << 24, 1 << 26), False), ((0, 1 << 26), True)])
def test_a_job_on_the_twins_compiles_nothing_and_gives_the_kernels_bits(tmp_path, limits, said):
    """A cold cache: a job under ``JOB_ELEMENTS`` runs on the twins silently; one past it
    but under ``COLD_JOB_ELEMENTS`` says that numpy computes it. Neither compiles a kernel,
    and both give the bits of the kernels (this process: Numba loaded)."""
    p, c = _files(tmp_path)
    r = _emd(tmp_path, limits)
    assert r.returncode == 0, r.stderr
    assert ("numpy computes this job" in r.stderr) is said, r.stderr
    assert "compiling" not in r.stderr, r.stderr
    assert _compiled(tmp_path / "cache") == []
    values, g = _results(tmp_path)
    assert p.size > rows.SMALL_ELEMENTS  # a batch for the kernels in a library call
    want, want_g = emdcli.emd2(p, c, gradient=True)
    np.testing.assert_array_equal(values, want)
    np.testing.assert_array_equal(g, want_g)
    quiet = _emd(tmp_path, limits, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


@pytest.mark.parametrize("target", ["classes", "rows"])
def test_a_tree_job_on_the_twin_gives_the_kernels_bits(tmp_path, target):
    """WordNet (1000 bins), a cold cache: nothing compiles, the kernels' bits."""
    from common import IMAGENET_BINS, WORDNET

    from emdcli.treefiles import load_tree, read_bins

    p, c = _files(tmp_path, b=300, n=1000)
    q = np.random.default_rng(4).random((300, 1000)).astype(np.float32)
    if target == "rows":
        np.save(tmp_path / "c.npy", q)
    r = _emd(tmp_path, (1 << 24, 1 << 26), "--tree", WORDNET, "--bins", IMAGENET_BINS)
    assert r.returncode == 0, r.stderr
    assert "compiling" not in r.stderr and _compiled(tmp_path / "cache") == [], r.stderr
    values, g = _results(tmp_path)
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    want, want_g = emdcli.emd2(p, c if target == "classes" else q, space=tree, gradient=True)
    assert values.tobytes() == want.tobytes()
    assert g.tobytes() == want_g.tobytes()


def test_past_the_limits_the_kernels_compile_and_say_so(tmp_path):
    p, c = _files(tmp_path)
    r = _emd(tmp_path, (0, 0))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("compiling kernels for float64 chains") == 1, r.stderr
    assert _compiled(tmp_path / "cache")
    values, g = _results(tmp_path)
    want, want_g = emdcli.emd2(p, c, gradient=True)
    np.testing.assert_array_equal(values, want)
    np.testing.assert_array_equal(g, want_g)


def _plan(metric="emd2", rho=None, **space):
    m = dict(metric=metric, rho=rho)
    for k in ("normalize", "device", "gradient", "sinkhorn"):
        if k in space:
            m[k] = space.pop(k)
    return SimpleNamespace(metric=metric_spec(**m), space=space_spec(**space))


PRED = SimpleNamespace(n_rows=1000, dtype="float32")


@pytest.mark.parametrize("plan, twins", [
    (_plan(), True), (_plan("emd"), True), (_plan("emd-rho", 2.0), True),
    (_plan(normalize="none"), True), (_plan(gradient=True), True),
    (_plan("emd-rho", 1.5), False),  # |phi|^rho through pow: the kernels' own
    (_plan(normalize="softmax"), False),  # numpy's exp need not round as the kernels'
    (_plan(tree="t.nwk"), True), (_plan(tree="t.nwk", gradient=True), True),
    (_plan(ground="g.npy"), False),  # no twin
    (_plan(device="auto"), False), (_plan("sinkhorn", sinkhorn={"lam": 10.0}), False),
])
def test_which_jobs_the_twins_take(plan, twins):
    assert startup.numpy_job(plan, PRED, 1000, 32, 1000) == (twins, None)


def test_the_size_decides_and_a_cold_cache_raises_the_limit(monkeypatch):
    import emdcli.warmup as warmup

    plan, big = _plan(), rows.JOB_ELEMENTS // 32 + 1
    assert startup.numpy_job(plan, PRED, 1000, 32, rows.JOB_ELEMENTS // 32) == (True, None)
    assert startup.numpy_job(plan, PRED, 1000, 32, 0) == (False, None)  # no rows (or unknown)
    monkeypatch.setattr(warmup, "missing", lambda *a, **k: [])  # cached: the kernels
    assert startup.numpy_job(plan, PRED, 1000, 32, big) == (False, None)
    monkeypatch.setattr(warmup, "missing", lambda *a, **k: [("chain", "_runs", None)])
    twins, line = startup.numpy_job(plan, PRED, 1000, 32, big)
    assert twins and line.startswith("numpy computes this job") and "emd warmup" in line
    past = rows.COLD_JOB_ELEMENTS // 32 + 1
    assert startup.numpy_job(plan, PRED, 1000, 32, past) == (False, None)


def test_the_job_context_is_undone_after_the_job():
    with rows.numpy_twins_job(True):
        assert rows._JOB_TWINS[0]
    with rows.numpy_twins_job(False):
        assert not rows._JOB_TWINS[0]
    assert not rows._JOB_TWINS[0]

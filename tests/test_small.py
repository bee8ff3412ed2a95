"""The numpy twin of the chain kernel (``kernels.small``) gives the kernel's bits.

Small batches go through it so that a small job never loads Numba; these tests call both
on the same inputs — rows and classes, float32 and float64 storage, with and without row
scales, rows whose scale residual triggers the kernel's second pass — and require equal
values and gradients, exactly.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emdcli
from emdcli import rows
from emdcli.kernels.chain import chain_batch
from emdcli.kernels.small import chain_small, exact_products
from emdcli.kernels.small import row_sums_min as small_sums


def kernel(x, t, c, sp, sq, d, rho, want_grad):
    b, n = x.shape
    out = np.empty(b)
    G = np.empty((b, n if want_grad else 0))
    C = np.empty(0, dtype=np.int64) if c is None else c
    chain_batch((x, x if t is None else t, C, sp, sq), d, rho, out, G, np.empty((4, n)))
    return out, (G if want_grad else None)


def cases(seed, b, n, dtype, near):
    rng = np.random.default_rng(seed)
    x = (rng.random((b, n)) ** 3 + 1e-3).astype(dtype)
    t = (rng.random((b, n)) + 1e-3).astype(dtype)
    if near:  # targets that nearly cancel the predictions: the residual matters
        t = (x.astype(np.float64) * (1 + 1e-9 * rng.standard_normal((b, n)))).astype(dtype)
        t *= 3.0
    c = rng.integers(0, n, b)
    sp = 1.0 / x.sum(axis=1, dtype=np.float64)
    sq = 1.0 / t.sum(axis=1, dtype=np.float64)
    d = np.diff(np.cumsum(rng.random(n) + 0.1))
    return x, t, c, sp, sq, d


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 40),
       st.sampled_from([np.float32, np.float64]), st.booleans(), st.sampled_from([1.0, 2.0]),
       st.booleans(), st.booleans(), st.booleans())
def test_numpy_twin_gives_the_kernels_bits(seed, b, n, dtype, near, rho, classes, grad, scale):
    x, t, c, sp, sq, d = cases(seed, b, n, dtype, near)
    empty = np.empty(0)
    args = (x, None if classes else t, c if classes else None,
            sp if scale else empty, sq if scale else empty, d, rho, grad)
    assert exact_products(x, sp, sq, t)
    v1, g1 = kernel(*args)
    v2, g2 = chain_small(*args)
    np.testing.assert_array_equal(v1, v2)
    if grad:
        np.testing.assert_array_equal(g1, g2)


def test_the_second_pass_is_exercised():
    """Near-cancelling rows really take the kernel's residual pass (so the twin's is tested)."""
    x, t, c, sp, sq, d = cases(3, 30, 37, np.float64, True)
    v1, _ = kernel(x, t, None, sp, sq, d, 2.0, False)
    out = np.empty(30)
    # one pass only: the marked rows come back as −1
    from emdcli.kernels.chain import _rows

    _rows(x, t, np.empty(0, dtype=np.int64), sp, sq, d, 2.0, out, np.empty((30, 0)), 0, 30,
          np.empty(37), False)
    assert (out < 0).any()
    v2, _ = chain_small(x, t, None, sp, sq, d, 2.0, False)
    np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_twin(dtype):
    from emdcli.kernels.rowstats import row_sums_min

    x = np.random.default_rng(0).random((50, 33)).astype(dtype)
    s, m = np.empty(50), np.empty(50)
    row_sums_min(x, s, m)
    s2, m2 = small_sums(x)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(m, m2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b,n", [(1, 1), (3, 5), (4, 1), (7, 32), (13, 9), (4099, 3)])
def test_row_sums_are_each_rows_sum_in_order(dtype, b, n):
    """The kernel sums four rows side by side: each row's sum is still the in-order sum
    from 0.0 and its minimum the first smallest element (a NaN never replaces it), for
    every row count (the rows past a multiple of four too) and runs on threads."""
    from emdcli.kernels.rowstats import row_sums_min

    rng = np.random.default_rng(b * 100 + n)
    x = (rng.random((b, n)) * 10.0 ** rng.integers(-8, 9, (b, n))).astype(dtype)
    x[rng.random((b, n)) < 0.05] = -0.0
    x[rng.random((b, n)) < 0.02] = np.nan
    x[rng.random((b, n)) < 0.02] = np.inf
    s, m = np.empty(b), np.empty(b)
    row_sums_min(x, s, m)
    for r in range(b):
        want, low = 0.0, float(x[r, 0])
        for v in map(float, x[r]):
            want += v
            low = v if v < low else low
        np.testing.assert_array_equal(s[r], want)
        np.testing.assert_array_equal(m[r], low)
        assert np.signbit(m[r]) == np.signbit(low)


@pytest.mark.parametrize("chunk", [1, 50, 333])
@pytest.mark.parametrize("classes", [True, False])
def test_the_twin_taken_in_chunks_of_rows_gives_the_same_bits(monkeypatch, chunk, classes):
    """The twins take rows ``CHUNK`` values at a time (one row at least); the chunks'
    rows, scales and classes are the batch's, the residual pass's rows too."""
    from emdcli.kernels import small

    monkeypatch.setattr(small, "CHUNK", chunk)
    for seed, near in [(1, False), (2, True)]:
        x, t, c, sp, sq, d = cases(seed, 37, 24, np.float32, near)
        args = (x, None if classes else t, c if classes else None, sp, sq, d, 2.0, True)
        v1, g1 = kernel(*args)
        v2, g2 = chain_small(*args)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(g1, g2)
        s2, m2 = small_sums(x)
        np.testing.assert_array_equal(s2, np.cumsum(x.astype(np.float64), axis=1)[:, -1])
        np.testing.assert_array_equal(m2, x.min(axis=1))


def test_public_function_same_bits_either_side_of_the_threshold(monkeypatch):
    x, t, c, sp, sq, d = cases(5, 64, 24, np.float64, False)
    calls = []
    monkeypatch.setattr(rows, "numpy_twins", lambda size: calls.append(size) or True)
    got = emdcli.emd(x, c, rho=2.0, gradient=True)
    assert calls  # the numpy twins ran
    monkeypatch.setattr(rows, "numpy_twins", lambda size: False)  # the Numba kernels
    want = emdcli.emd(x, c, rho=2.0, gradient=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_small_batches_go_to_the_kernels_once_numba_pays():
    """The numpy twins serve small batches until Numba is loaded or they have taken
    SMALL_BUDGET values: then the kernels, 1.7-20x faster, take every batch."""
    code = (
        "import sys, numpy as np, emdcli\n"
        "from emdcli import rows\n"
        "x, c = np.random.default_rng(0).random((1000, 32)), np.zeros(1000, dtype=int)\n"
        "v = emdcli.emd2(x, c)\n"
        "print('numba' in sys.modules)\n"
        "calls = 0\n"
        "while 'numba' not in sys.modules and calls < 1000:\n"
        "    assert (emdcli.emd2(x, c) == v).all()\n"
        "    calls += 1\n"
        "print(calls * x.size >= rows.SMALL_BUDGET // 3, calls < 1000, rows.numpy_twins(10))\n"
        "assert (emdcli.emd2(x, c) == v).all()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "True", "True", "False"], (r.stdout, r.stderr)


def test_out_of_range_values_use_the_kernel():
    tiny = np.full((2, 3), 1e-280)
    assert not exact_products(tiny)
    assert exact_products(np.full((2, 3), 0.5), np.zeros(3))


def test_a_small_job_never_imports_numba(tmp_path):
    np.save(tmp_path / "p.npy", np.random.default_rng(0).random((1000, 32)).astype(np.float32))
    np.save(tmp_path / "c.npy", np.random.default_rng(1).integers(0, 32, 1000))
    code = ("import sys; from emdcli.cli import app\n"
            "try:\n    app([%r, %r, %r, '-q', '-o', %r, '-m', 'emd2'])\n"
            "except SystemExit:\n    pass\n"
            "print('numba' in sys.modules)") % ("compute", str(tmp_path / "p.npy"),
                                                 str(tmp_path / "c.npy"), str(tmp_path / "o.csv"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "False", (r.stdout, r.stderr)
    assert (tmp_path / "o.csv").read_text().count("\n") == 1001


@pytest.mark.parametrize("b", [5, 5000])  # the numpy twin and the Numba kernel
def test_mixed_storage_dtypes(b):
    """float32 predictions against float64 target rows (and the reverse) compute as float64."""
    rng = np.random.default_rng(7)
    p, q = rng.random((b, 30)) + 0.01, rng.random((b, 30)) + 0.01
    want = emdcli.emd(p.astype(np.float32).astype(np.float64), q, rho=2.0)
    np.testing.assert_array_equal(emdcli.emd(p.astype(np.float32), q, rho=2.0), want)
    want = emdcli.emd(p, q.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(emdcli.emd(p, q.astype(np.float32)), want)


def test_kernels_skip_numbas_blas_probe_only():
    """Loading a kernel (compiled or from the cache) answers Numba's BLAS probe without
    importing scipy.linalg (``kernels.jit``), and so does a later compile's refresh, with
    the answer Numba would give; SciPy itself and np.dot in compiled code still work in
    that process."""
    pytest.importorskip("scipy")
    code = (
        "import sys\n"
        "import numpy as np, numba, emdcli\n"
        "emdcli.emd2(np.ones((4096, 40)), np.zeros(4096, dtype=np.int64))\n"
        "print('scipy.linalg' in sys.modules)\n"
        "numba.njit(lambda a: a.sum())(np.ones(3))\n"
        "import numba.np.arraymath as am\n"
        "print('scipy.linalg' in sys.modules, am._HAVE_BLAS)\n"
        "f = numba.njit(lambda a, b: np.dot(a, b))\n"
        "print(f(np.ones((2, 2)), np.ones(2)).tolist())\n"
        "import scipy.linalg\n"
        "print(scipy.linalg.solve(np.eye(2), np.ones(2)).tolist())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["False", "False True", "[2.0, 2.0]", "[1.0, 1.0]"], r.stdout


def test_a_cached_kernel_loads_without_numbas_registries_and_other_functions_as_ever(
        tmp_path):
    """A kernel from the cache loads with Numba's runtime alone: none of the registries
    a compile needs is imported (``kernels.jit.light_cache_loads``), and the values are
    the kernels'. In that process a user's own cached function (another module: Numba's
    own load, with the refresh) and a fresh compile work as ever."""
    (tmp_path / "mine.py").write_text(
        "import numba, numpy as np\n"
        "@numba.njit(cache=True)\n"
        "def norm(a):\n"
        "    return np.linalg.norm(a) + np.sort(a)[0]\n")
    code = (
        "import sys\n"
        "import numpy as np, numba, emdcli\n"
        "rng = np.random.default_rng(0)\n"
        "p, c = rng.random((4096, 40)), rng.integers(0, 40, 4096)\n"
        "v = emdcli.emd2(p, c)\n"
        "print(sorted(m for m in ('numba.np.linalg', 'numba.np.arraymath', 'numba.typed.typeddict')"
        " if m in sys.modules))\n"
        "from emdcli.kernels.small import chain_small\n"
        "e = np.empty(0)\n"
        "w, _ = chain_small(p, None, c, 1 / np.cumsum(p, axis=1)[:, -1], e, np.ones(39), 2.0,"
        " False)\n"
        "print(np.array_equal(v, w))\n"
        "import mine\n"
        "print(mine.norm(np.array([3.0, 4.0])))\n"
        "print(numba.njit(lambda a: np.cumsum(a)[-1])(np.ones(4)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    for _ in range(2):  # the first run may compile (and caches); the second loads
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["[]", "True", "8.0", "4.0"], r.stdout


def test_every_cpu_kernel_module_loads_numba_through_the_light_first_load():
    """Whichever kernel a process loads first, ``kernels.jit`` has run before it."""
    from pathlib import Path

    import emdcli.kernels

    folder = Path(emdcli.kernels.__file__).parent
    jitted = [f for f in sorted(folder.glob("*.py")) + [folder.parent / "learn.py"]
              if "@njit" in f.read_text() and not f.name.startswith("gpu_")]
    assert len(jitted) >= 10
    for f in jitted:
        assert "import jit  # noqa: F401" in f.read_text(), f.name

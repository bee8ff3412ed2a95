"""Bounded memory: the peak resident set of ``emd compute`` does not grow with the file.

Each case runs a real process on an input of K and of 8·K parts (Parquet row groups, NPY
row blocks, the same through standard input) and compares the child's peak RSS, taken
with ``os.wait4`` from a small launcher process (a child's ``ru_maxrss`` starts from its
parent's high-water mark at exec, so the launcher is kept tiny). Very wide rows must
also stay under a fixed bound. Each runs twice: the whole job on the kernels' numpy twins
and on the Numba kernels (``jobs.startup``: which one a job takes depends on its size and
on Numba's cache; here the size limits are set for the child).
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from common import LIMITED_EMD

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB, Linux")

LAUNCHER = textwrap.dedent("""
    import os, sys
    stdin = sys.argv[1]
    pid = os.fork()
    if pid == 0:
        if stdin != "-":
            fd = os.open(stdin, os.O_RDONLY)
            os.dup2(fd, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(sys.argv[2], sys.argv[2:])
    _, status, usage = os.wait4(pid, 0)
    print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
""")


LIMITS = {"twins": 1 << 60, "kernels": 0}  # the twins' job size limits, both


def peak_rss_mib(args, stdin="-", path="kernels"):
    """(exit code, peak RSS in MiB) of ``emd ARGS`` (stdin from a file), the job on the
    numpy twins or the kernels (``path``)."""
    cmd = [sys.executable, "-c", LAUNCHER, stdin, sys.executable, "-c", LIMITED_EMD,
           str(LIMITS[path]), str(LIMITS[path]), *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    code, kib = r.stdout.split()
    assert int(code) == 0, r.stderr
    return int(kib) / 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Float32 inputs of K = 4 and 8·K = 32 parts of 8192 rows × 128 bins (4 MB each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("mem")
    rng = np.random.default_rng(0)
    part = rng.random((8192, 128), dtype=np.float32) + 0.01
    labels = rng.integers(0, 128, 8192)
    made = {}
    for k in (4, 32):
        pred = pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), 128)
        table = pa.table({"pred": pred, "target": labels})
        with pq.ParquetWriter(d / f"p{k}.parquet", table.schema) as w:
            for _ in range(k):
                w.write_table(table)
        with open(d / f"p{k}.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (8192 * k, 128)})
            for _ in range(k):
                f.write(part.tobytes())
        np.save(d / f"c{k}.npy", np.tile(labels, k))
        made[k] = (d / f"p{k}.parquet", d / f"p{k}.npy", d / f"c{k}.npy")
    return d, made


def _grows_little(small, large):
    assert large < 1.10 * small, f"peak RSS {small:.0f} MiB -> {large:.0f} MiB"


@pytest.mark.parametrize("path", LIMITS)
def test_parquet_memory_does_not_grow_with_row_groups(files, path):
    d, made = files
    small = peak_rss_mib(["compute", made[4][0], "-q", "-o", d / "a.parquet"], path=path)
    large = peak_rss_mib(["compute", made[32][0], "-q", "-o", d / "b.parquet"], path=path)
    _grows_little(small, large)


@pytest.mark.parametrize("path", LIMITS)
def test_npy_memory_does_not_grow_with_rows(files, path):
    d, made = files
    small = peak_rss_mib(["compute", made[4][1], made[4][2], "-q", "-o", d / "a.npy"], path=path)
    large = peak_rss_mib(["compute", made[32][1], made[32][2], "-q", "-o", d / "b.npy"], path=path)
    _grows_little(small, large)


@pytest.mark.parametrize("path", LIMITS)
@pytest.mark.parametrize("kind", [1, 0])
def test_stdin_memory_does_not_grow_with_rows(files, kind, path):
    """NPY and Parquet on standard input (Parquet is spooled to disk, not to memory)."""
    d, made = files
    args = (lambda k: ["compute", "-", made[k][2], "-q", "-o", d / "s.csv"]) if kind else (
        lambda k: ["compute", "-", "-q", "-o", d / "s.csv"])
    small = peak_rss_mib(args(4), stdin=made[4][kind], path=path)
    large = peak_rss_mib(args(32), stdin=made[32][kind], path=path)
    _grows_little(small, large)


@pytest.mark.parametrize("path", LIMITS)
@pytest.mark.parametrize("shape", [(1, 2_000_000), (64, 250_000)])
def test_very_wide_rows_stay_bounded(tmp_path, shape, path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "w.npy", rng.random(shape, dtype=np.float32) + 0.01)
    np.save(tmp_path / "c.npy", rng.integers(0, shape[1], shape[0]))
    peak = peak_rss_mib(["compute", tmp_path / "w.npy", tmp_path / "c.npy", "-q", "--metric", "emd2"],
                        path=path)
    assert peak < 400, f"peak RSS {peak:.0f} MiB for {shape}"

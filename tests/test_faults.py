"""Nothing left behind, ever: signals, OS errors on output, closed and full standard
output, truncated input — each gives its exit code, one line on stderr, no traceback, and
no file (final or temporary) in the output folder.

These run real ``emd`` processes. Mid-run faults are made deterministic by feeding the
input through a pipe that the test holds open: the job has opened its outputs (their
temporary files exist) and waits for rows when the signal is sent. A full disk is a real
small ``tmpfs`` and a read-only folder a real read-only mount (root only: CI runs as root;
skipped with the reason elsewhere).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

EMD = [sys.executable, "-m", "emdcli.cli"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
LINUX = sys.platform.startswith("linux")


def emd(*args, **kw):
    return subprocess.run([*EMD, *map(str, args)], capture_output=True, text=True, **kw)


def one_line_error(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def leftovers(folder):
    return sorted(os.listdir(folder))


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.random((4000, 16)) + 0.01
    c = rng.integers(0, 16, 4000)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", c)
    out = tmp_path / "out"
    out.mkdir()
    return tmp_path, out


# ----------------------------------------------------------------------------- signals


def _npy_header(shape, dtype="<f8"):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _wait_for_temp(folder, n, proc, timeout=60):
    """Wait until ``n`` temporary files exist in ``folder`` (the job is mid-run)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len([f for f in os.listdir(folder) if f.startswith(".")]) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no temporary files in {folder}: {os.listdir(folder)}")


@pytest.mark.skipif(not LINUX, reason="POSIX signals and pipes as on Linux")
@pytest.mark.parametrize("sig, code, twice", [
    (signal.SIGTERM, 143, False), (signal.SIGHUP, 129, False), (signal.SIGINT, 130, False),
    (signal.SIGINT, 130, True), (signal.SIGTERM, 143, True),
])
def test_signal_mid_run_removes_every_temp_file(data, sig, code, twice):
    tmp, out = data
    rows, width = 200_000, 16
    proc = subprocess.Popen(
        [*EMD, "compute", "-", str(tmp / "c200k.npy"), "-o", str(out / "r.npy"),
         "-g", str(out / "g.parquet"), "--batch-size", "1000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    np.save(tmp / "c200k.npy", np.zeros(rows, dtype=np.int64))
    try:
        proc.stdin.write(_npy_header((rows, width)))
        proc.stdin.write(np.full((5000, width), 0.5).tobytes())  # a few batches, then wait
        proc.stdin.flush()
        _wait_for_temp(out, 2, proc)
        time.sleep(0.3)  # the first batches are computed; the job now waits for rows
        proc.send_signal(sig)
        if twice:
            time.sleep(0.05)
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == code, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by" in lines[0], err
    assert leftovers(out) == []


# ----------------------------------------------------------------------------- output paths


def test_output_is_a_directory_is_a_dataset_output(data):
    """An existing directory as --output is a dataset folder (one part per input file);
    a file --gradient beside it, or a --gradient folder beside a file, fail before any work."""
    tmp, out = data
    (out / "d.csv").mkdir()
    r = emd("compute", tmp / "p.npy", tmp / "c.npy", "-g", out / "d.csv.npy", "-o", out / "d.csv")
    one_line_error(r, 2, "--gradient names a folder too")
    r = emd("compute", tmp / "p.npy", tmp / "c.npy", "-g", out / "d.csv", "-o", out / "x.csv")
    one_line_error(r, 2, "a --gradient folder needs --output DIR/")
    assert leftovers(out) == ["d.csv"] and not os.listdir(out / "d.csv")
    r = emd("compute", tmp / "p.npy", tmp / "c.npy", "-o", out / "d.csv", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out / "d.csv")) == ["_summary.json", "p.parquet"]


def test_output_folder_missing(data):
    tmp, out = data
    r = emd("compute", tmp / "p.npy", tmp / "c.npy", "-o", out / "no" / "r.csv")
    one_line_error(r, 2, "does not exist")


@pytest.fixture
def mounted(tmp_path):
    """mount(options) → a fresh tmpfs folder mounted with those options; unmounted after."""
    if not (LINUX and IS_ROOT and shutil.which("mount")):
        pytest.skip("needs root on Linux to mount a tmpfs (CI runs as root)")
    made = []

    def mount(options):
        where = tmp_path / f"mnt{len(made)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        made.append(where)
        return where

    yield mount
    for where in made:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.parametrize("ext", [".npy", ".csv", ".parquet", ".jsonl"])
def test_full_disk_is_one_line_and_leaves_nothing(data, mounted, ext):
    tmp, _ = data
    full = mounted("size=256k")
    rng = np.random.default_rng(1)
    np.save(tmp / "big.npy", rng.random((60_000, 8)) + 0.01)
    np.save(tmp / "big_c.npy", rng.integers(0, 8, 60_000))
    r = emd("compute", tmp / "big.npy", tmp / "big_c.npy", "-o", full / f"r{ext}")
    line = one_line_error(r, 2, f"r{ext}", "disk full")
    assert "wrote" in line
    assert leftovers(full) == []


def test_full_disk_for_gradients(data, mounted):
    tmp, _ = data
    full = mounted("size=128k")
    r = emd("compute", tmp / "p.npy", tmp / "c.npy", "-o", full / "r.csv", "-g", full / "g.npy")
    one_line_error(r, 2, "g.npy", "disk full")
    assert leftovers(full) == []


def test_read_only_folder_fails_before_any_work(data, mounted):
    tmp, _ = data
    ro = mounted("size=1m,ro")
    for args in (["-o", ro / "r.csv"], ["-g", ro / "g.npy", "-q"], ["-o", ro / "r.npy"]):
        r = emd("compute", tmp / "p.npy", tmp / "c.npy", *args)
        one_line_error(r, 2, "read-only file system")
    r = emd("compare", tmp / "p.npy", tmp / "c.npy", "-o", ro / "x.csv", "-q")
    one_line_error(r, 2, "read-only file system")
    tree = tmp / "t.csv"
    tree.write_text("node,parent\nr,\na,r\nb,r\n")
    r = emd("tree", tree, "--ground-out", ro / "D.npy")
    one_line_error(r, 2, "read-only file system")


@pytest.mark.skipif(not (LINUX and IS_ROOT and shutil.which("setpriv")),
                    reason="needs root and setpriv (util-linux) to drop the permission override")
def test_permission_denied_folder(data):
    """As root without CAP_DAC_OVERRIDE (setpriv drops it), a 0555 folder is EACCES."""
    tmp, out = data
    locked = tmp / "locked"
    locked.mkdir(mode=0o555)
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    r = subprocess.run([*drop, *EMD, "compute", str(tmp / "p.npy"), str(tmp / "c.npy"),
                        "-o", str(locked / "r.csv")], capture_output=True, text=True)
    one_line_error(r, 2, "r.csv", "permission denied")
    assert leftovers(locked) == []


def test_tree_ground_out_checks(data):
    tmp, out = data
    tree = tmp / "t.csv"
    tree.write_text("node,parent\nr,\na,r\nb,r\n")
    r = emd("tree", tree, "--ground-out", out / "missing" / "D.npy")
    one_line_error(r, 2, "does not exist")
    (out / "D.npy").mkdir()
    r = emd("tree", tree, "--ground-out", out / "D.npy")
    one_line_error(r, 2, "is a directory")


def test_compare_output_checked_first(data):
    tmp, out = data
    (out / "x.csv").mkdir()
    r = emd("compare", tmp / "p.npy", tmp / "c.npy", "-o", out / "x.csv", "-q")
    one_line_error(r, 2, "is a directory")
    (out / "x.png").mkdir()
    r = emd("compare", tmp / "p.npy", tmp / "c.npy", "--plot", out / "x.png", "-q")
    one_line_error(r, 2, "is a directory")


# ----------------------------------------------------------------------------- standard output


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_stdout_on_a_full_device(data):
    tmp, _ = data
    with open("/dev/full", "w") as full:
        r = subprocess.run([*EMD, "compute", str(tmp / "p.npy"), str(tmp / "c.npy")],
                           stdout=full, stderr=subprocess.PIPE, text=True)
    r.stdout = ""
    one_line_error(r, 2, "standard output", "disk full")


@pytest.mark.skipif(not LINUX, reason="closes a file descriptor with the shell")
def test_closed_stdout(data):
    tmp, out = data
    cmd = " ".join([*EMD, "compute", str(tmp / "p.npy"), str(tmp / "c.npy")])
    r = subprocess.run(["bash", "-c", cmd + " >&-"], capture_output=True, text=True)
    one_line_error(r, 2, "standard output is closed")
    r = subprocess.run(["bash", "-c", cmd + f" -q -o {out / 'r.csv'} >&-"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert leftovers(out) == ["r.csv"]


@pytest.mark.skipif(not LINUX, reason="a pipe closed by its reader")
def test_head_with_gradient_file_is_an_error_and_leaves_nothing(data):
    tmp, out = data
    rng = np.random.default_rng(2)
    np.save(tmp / "p2.npy", rng.random((300_000, 4)) + 0.01)
    np.save(tmp / "c2.npy", rng.integers(0, 4, 300_000))
    base = [*EMD, "compute", str(tmp / "p2.npy"), str(tmp / "c2.npy"), "--batch-size", "1000"]
    r = subprocess.run(["bash", "-c", " ".join(base + ["-g", str(out / "g.npy")])
                        + " | head -n 3 > /dev/null; echo ${PIPESTATUS[0]} >&2"],
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "2", r.stderr
    assert len(lines) == 2 and "g.npy" in lines[0] and "not written" in lines[0], r.stderr
    assert leftovers(out) == []
    r = subprocess.run(["bash", "-c", " ".join(base + ["-q"])
                        + " | head -n 3 > /dev/null; echo ${PIPESTATUS[0]} >&2"],
                       capture_output=True, text=True)
    assert r.stderr.strip() == "0", r.stderr  # nothing else was asked for: a quiet stop


# ----------------------------------------------------------------------------- bad input


def test_truncated_npy_input(data):
    tmp, out = data
    raw = (tmp / "p.npy").read_bytes()
    (tmp / "cut.npy").write_bytes(raw[: len(raw) // 2])
    r = emd("compute", tmp / "cut.npy", tmp / "c.npy", "-o", out / "r.npy", "--batch-size", "100")
    one_line_error(r, 2, "cut.npy", "truncated")
    assert leftovers(out) == []


def test_input_truncated_while_it_is_read(data):
    """The file shrinks after the job opened it: an error naming the row, not SIGBUS."""
    tmp, out = data
    rows, width = 100_000, 16
    path = tmp / "growing.npy"
    with open(path, "wb") as f:
        f.write(_npy_header((rows, width)))
        f.write(np.full((rows, width), 0.5).tobytes())
    np.save(tmp / "c100k.npy", np.zeros(rows, dtype=np.int64))
    proc = subprocess.Popen([*EMD, "compute", "-", str(tmp / "c100k.npy"), "-o", str(out / "r.npy")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data_bytes = path.read_bytes()
    _, err = proc.communicate(data_bytes[: len(data_bytes) // 3], timeout=120)  # ends early
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", err.decode())
    one_line_error(r, 2, "truncated", "row")
    assert leftovers(out) == []


@pytest.mark.parametrize("header", [
    b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }",
    b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2",
    b"{'descr': 'zz', 'fortran_order': False, 'shape': (3, 2), }",
    b"{'descr': '<f8', 'fortran_order': False, 'shape': (-3, 2), }",
    b"\xff\xfe garbage \x00",
])
def test_garbled_npy_header(tmp_path, header):
    import struct

    body = header.ljust(118) + b"\n"
    if header.startswith(b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }"):
        body = body.replace(b"(3, 2)", b"(3, 2 ")  # an unbalanced tuple
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body
                                       + b"\0" * 48)
    np.save(tmp_path / "c.npy", np.array([0, 1, 0]))
    r = emd("compute", tmp_path / "bad.npy", tmp_path / "c.npy")
    one_line_error(r, 2, "bad.npy")


def test_duplicate_parquet_column_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_arrays([pa.array([[0.5, 0.5]] * 3), pa.array([0, 1, 0]), pa.array([1, 0, 1])],
                             names=["pred", "target", "target"])
    pq.write_table(t, tmp_path / "dup.parquet")
    r = emd("compute", tmp_path / "dup.parquet")
    one_line_error(r, 2, "dup.parquet", "2 columns named 'target'")

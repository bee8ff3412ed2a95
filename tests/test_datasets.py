"""Datasets in and out: directories, globs and hive trees as one input; ``-o DIR/``
parts; ``--group-by`` and ``--summary``; the Dask engine on a real LocalCluster."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from emdcli import report
from emdcli.errors import EMDInputError
from emdcli.jobs import engine as engines
from emdcli.sketch import Moments, QuantileSketch

try:
    import distributed
except ImportError:  # the Dask tests skip
    distributed = None

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pads = pytest.importorskip("pyarrow.dataset")

N = 8
SIZES = [("train", 300), ("train", 120), ("val", 250)]


def emd(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "emdcli.cli", *map(str, args)],
                          capture_output=True, text=True, stdin=stdin, timeout=300)


def ok(*args):
    r = emd(*args)
    assert r.returncode == 0, r.stderr
    return r


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _table(p, c):
    return pa.table({"pred": pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), N),
                     "target": pa.array(c), "key": pa.array([f"k{v % 3}" for v in c])})


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """A hive dataset split=…/part-i.parquet, the same rows as one file, and NPY twins."""
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(7)
    ps, cs = [], []
    for i, (split, n) in enumerate(SIZES):
        p, c = rng.random((n, N)), rng.integers(0, N, n)
        ps.append(p)
        cs.append(c)
        (root / "hive" / f"split={split}").mkdir(parents=True, exist_ok=True)
        pq.write_table(_table(p, c), root / "hive" / f"split={split}" / f"part-{i}.parquet",
                       row_group_size=100)
        (root / "npy" / "pred").mkdir(parents=True, exist_ok=True)
        (root / "npy" / "target").mkdir(parents=True, exist_ok=True)
        np.save(root / "npy" / "pred" / f"p{i}.npy", p)
        np.save(root / "npy" / "target" / f"p{i}.npy", c)
    (root / "hive" / "_SUCCESS").write_text("")
    (root / "hive" / "split=val" / ".part-9.parquet.tmp").write_bytes(b"junk")  # hidden: no part
    p, c = np.concatenate(ps), np.concatenate(cs)
    pq.write_table(_table(p, c), root / "all.parquet")
    return root


def test_directory_glob_and_hive_equal_the_single_file(ds):
    whole = ok("compute", ds / "all.parquet", "-m", "emd2", "-q").stdout
    assert ok("compute", ds / "hive", "-m", "emd2", "-q").stdout == whole
    assert ok("compute", f"{ds}/hive/*/*.parquet", "-m", "emd2", "-q").stdout == whole
    assert ok("compute", f"{ds}/hive/**/part-*.parquet", "-m", "emd2", "-q").stdout == whole
    npy = ok("compute", ds / "npy" / "pred", ds / "npy" / "target", "-m", "emd2", "-q").stdout
    assert npy == whole


def test_partition_column_as_ids_and_groups(ds, tmp_path):
    r = ok("compute", ds / "hive", "--id-column", "split", "--group-by", "split",
           "--summary", tmp_path / "s.csv")
    lines = r.stdout.splitlines()
    assert lines[0] == "split,emd" and lines[1].startswith("train,") and lines[-1].startswith("val,")
    assert sum(1 for ln in lines if ln.startswith("train,")) == 420
    err = r.stderr.strip().splitlines()
    assert err[0].startswith("emd: count=670")
    assert err[1].startswith("emd[split=train]: count=420") and err[2].startswith("emd[split=val]: count=250")
    csv = (tmp_path / "s.csv").read_text().splitlines()
    assert csv[0].startswith("group,count,nonfinite,mean") and [ln.split(",")[0] for ln in csv[1:]] == [
        "train", "val", "all"]
    # the numbers equal the ones of the rows
    values = np.array([float(ln.split(",")[1]) for ln in lines[1:]])
    train = values[:420]
    row = dict(zip(csv[0].split(","), csv[1].split(",")))
    assert float(row["mean"]) == pytest.approx(train.mean(), rel=1e-14)
    assert float(row["max"]) == train.max() and float(row["p50"]) == np.quantile(train, 0.5)


def test_group_by_a_file_column(ds, tmp_path):
    r = ok("compute", ds / "all.parquet", "--group-by", "key", "--summary", tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["group_by"] == "key" and doc["summary"]["count"] == 670
    assert sorted(g["group"] for g in doc["groups"]) == ["k0", "k1", "k2"]
    assert sum(g["count"] for g in doc["groups"]) == 670
    assert len(r.stderr.strip().splitlines()) == 4
    one_line_error(emd("compute", ds / "npy" / "pred" / "p0.npy", ds / "npy" / "target" / "p0.npy",
                       "--group-by", "key"), "--group-by needs a Parquet")
    one_line_error(emd("compute", ds / "all.parquet", "--group-by", "nope"), "no column 'nope'")


def test_dataset_output_layout_and_summary(ds, tmp_path):
    out = tmp_path / "out"
    r = ok("compute", ds / "hive", "-m", "emd2", "-o", f"{out}/", "--group-by", "split")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["_summary.json", "split=train/part-0.parquet", "split=train/part-1.parquet",
                     "split=val/part-2.parquet"]
    doc = json.loads((out / "_summary.json").read_text())
    assert doc["rows"] == 670 and doc["engine"] == "local" and len(doc["parts"]) == 3
    assert [g["group"] for g in doc["groups"]] == ["train", "val"]
    assert r.stderr.startswith(f"emd2: count=670 mean={report.format_float(doc['summary']['mean'])}")
    back = pads.dataset(out, format="parquet", partitioning="hive").to_table()
    whole = pq.read_table(ds / "all.parquet")
    single = tmp_path / "single.parquet"
    ok("compute", ds / "all.parquet", "-m", "emd2", "-o", single, "-q")
    assert back.column("emd2").to_pylist() == pq.read_table(single).column("emd2").to_pylist()
    assert back.column("split").to_pylist() == ["train"] * 420 + ["val"] * 250
    assert back.num_rows == whole.num_rows
    # rows are numbered within each part (its input file)
    assert pq.read_table(out / "split=train" / "part-1.parquet").column("row").to_pylist() == list(range(120))


def test_gradient_folder_beside_the_output_folder(ds, tmp_path):
    ok("compute", ds / "npy" / "pred", ds / "npy" / "target", "-m", "emd2", "-o", f"{tmp_path}/o/",
       "-g", f"{tmp_path}/g/", "-q")
    g = pq.read_table(tmp_path / "g" / "p1.parquet")
    assert g.num_rows == 120 and len(g.column("gradient")[0]) == N


@pytest.mark.parametrize("case", ["empty_dir", "no_match", "widths", "keys", "count", "rows",
                                  "file_and_dataset", "columns"])
def test_bad_datasets_name_the_files(ds, tmp_path, case):
    rng = np.random.default_rng(1)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    if case == "empty_dir":
        args, needles = [a, ds / "npy" / "target"], ["a: no data files"]
    elif case == "no_match":
        args, needles = [f"{tmp_path}/*.parquet"], ["*.parquet: matches no file"]
    elif case == "widths":
        np.save(a / "x0.npy", rng.random((3, N)))
        np.save(a / "x1.npy", rng.random((3, N + 1)))
        np.save(b / "x0.npy", np.zeros(3, int))
        np.save(b / "x1.npy", np.zeros(3, int))
        args, needles = [a, b], ["x1.npy: has 9 bins but", "x0.npy has 8"]
    elif case == "keys":
        (a / "s=1").mkdir()
        pq.write_table(_table(rng.random((2, N)), np.zeros(2, int)), a / "s=1" / "x.parquet")
        pq.write_table(_table(rng.random((2, N)), np.zeros(2, int)), a / "y.parquet")
        args, needles = [a], ["has partition folders", "x.parquet has ['s']"]
    elif case == "count":
        np.save(a / "x0.npy", rng.random((3, N)))
        np.save(a / "x1.npy", rng.random((3, N)))
        np.save(b / "x0.npy", np.zeros(3, int))
        args, needles = [a, b], ["b: has 1 files but", "a has 2"]
    elif case == "rows":
        np.save(a / "x0.npy", rng.random((3, N)))
        np.save(b / "x0.npy", np.zeros(4, int))
        args, needles = [a, b], ["x0.npy: has 4 rows but", "x0.npy has 3"]
    elif case == "columns":
        pq.write_table(_table(rng.random((2, N)), np.zeros(2, int)), a / "x0.parquet")
        pq.write_table(_table(rng.random((2, N)), np.zeros(2, int)).drop_columns(["target"]),
                       a / "x1.parquet")
        args, needles = [a], ["x1.parquet: no targets", "unlike", "x0.parquet"]
    else:
        np.save(a / "x0.npy", rng.random((3, N)))
        args, needles = [a, ds / "npy" / "target" / "p0.npy"], ["is one file but PRED is a dataset"]
    one_line_error(emd("compute", *args), *needles)


def _bad_third_file(tmp_path):
    """Three NPY parts; the third has a negative mass at its row 5."""
    rng = np.random.default_rng(3)
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    src.mkdir()
    tgt.mkdir()
    for i in range(3):
        p = rng.random((40, N))
        if i == 2:
            p[5, 2] = -1.0
        np.save(src / f"f{i}.npy", p)
        np.save(tgt / f"f{i}.npy", rng.integers(0, N, 40))
    return src, tgt


def test_bad_input_in_the_third_file_leaves_no_part(tmp_path):
    src, tgt = _bad_third_file(tmp_path)
    out = tmp_path / "out"
    one_line_error(emd("compute", src, tgt, "-o", f"{out}/"), "f2.npy: row 5", "negative")
    assert not out.exists()


def test_library_compute_dataset(ds, tmp_path):
    s = engines.compute_dataset(str(ds / "hive"), output=str(tmp_path / "o"), metric="emd2",
                                columns={"group_by": "split"}, warn=lambda m: None)
    assert s.count == 670 and set(s.groups) == {"train", "val"}
    assert (tmp_path / "o" / "_summary.json").exists()
    import emdcli

    assert emdcli.compute_dataset is engines.compute_dataset


def test_import_emdcli_loads_no_dask():
    code = "import emdcli, sys; emdcli.compute_dataset; print(sorted(m for m in ('dask', 'distributed', 'pyarrow', 'numba') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------------ summaries merge


@pytest.mark.parametrize("limit", [1 << 21, 50])
def test_summaries_merge_like_one(limit, monkeypatch):
    """Parts merged (exact, or past the limit: moments + sketch) equal one summary of all
    values: count, min, max exactly, mean and std to rounding, quantiles within α."""
    monkeypatch.setattr(report.Summary, "EXACT_LIMIT", limit)
    rng = np.random.default_rng(5)
    chunks = [rng.lognormal(size=n) for n in (30, 70, 1, 0, 200)]
    chunks[2][0] = np.nan
    merged = report.Summary("emd")
    for c in chunks:
        part = report.Summary("emd")
        part.add(c)
        merged.merge(part)
    v = np.concatenate(chunks)
    v = v[np.isfinite(v)]
    s = merged.stats()
    assert s["count"] == 301 and s["nonfinite"] == 1
    assert s["min"] == v.min() and s["max"] == v.max()
    assert s["mean"] == pytest.approx(v.mean(), rel=1e-13)
    assert s["std"] == pytest.approx(v.std(), rel=1e-12)
    for q in (0.5, 0.95):
        got = s[f"p{round(q * 100)}"]
        if limit >= v.size:  # exact
            assert got == np.quantile(v, q)
        else:  # the sketch: the value of rank round(q (n − 1)) within a relative α = 1e-4
            want = np.sort(v)[round(q * (v.size - 1))]
            assert abs(got - want) <= 1e-4 * want


def test_moments_merge_is_chan():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, 1000), rng.normal(-1, 5, 10)
    m, m2, mb = Moments(), Moments(), Moments()
    m.add(np.concatenate([a, b]))
    m2.add(a)
    mb.add(b)
    m2.merge(mb)
    assert (m2.count, m2.min, m2.max) == (m.count, m.min, m.max)
    assert m2.mean == pytest.approx(m.mean, rel=1e-14) and m2.std == pytest.approx(m.std, rel=1e-13)
    sk = QuantileSketch()
    sk.add(a)
    assert sk.count == 1000


# ------------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def cluster():
    if distributed is None:
        pytest.skip("needs distributed (pip install 'emdcli[dask]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


def test_dask_equals_local_bit_for_bit(ds, tmp_path, cluster):
    local, far = tmp_path / "local", tmp_path / "dask"
    ok("compute", ds / "hive", "-m", "emd2", "-o", f"{local}/", "--group-by", "split", "-q")
    r = ok("compute", ds / "hive", "-m", "emd2", "-o", f"{far}/", "--group-by", "split",
           "--engine", "dask", "--scheduler", cluster.scheduler_address)
    for part in ("split=train/part-0.parquet", "split=train/part-1.parquet", "split=val/part-2.parquet"):
        assert pq.read_table(far / part).equals(pq.read_table(local / part))
    a = json.loads((local / "_summary.json").read_text())
    b = json.loads((far / "_summary.json").read_text())
    assert b["engine"] == "dask" and a["summary"] == b["summary"] and a["groups"] == b["groups"]
    assert r.stderr.startswith("emd2: count=670")


def test_dask_bad_input_in_the_third_file(tmp_path, cluster):
    src, tgt = _bad_third_file(tmp_path)
    out = tmp_path / "out"
    r = emd("compute", src, tgt, "-o", f"{out}/", "--engine", "dask",
            "--scheduler", cluster.scheduler_address)
    one_line_error(r, "f2.npy: row 5", "negative")
    assert not out.exists()


class KillWhileWriting(distributed.WorkerPlugin if distributed else object):
    """A worker plugin: the first time the task of part ``index`` runs, kill the worker
    process (as an OOM kill would) once that part's temporary file exists."""

    name = "test-kill-while-writing"

    def __init__(self, index, folder, marker):
        self.index, self.folder, self.marker = index, str(folder), str(marker)

    def setup(self, worker):
        pass

    def teardown(self, worker):
        pass

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith(f"emd-part-{self.index}-"):
            return
        if os.path.exists(self.marker):
            return
        open(self.marker, "w").close()

        def kill():
            for _ in range(20000):
                if any(e.startswith(".") for e in os.listdir(self.folder)):
                    with open(self.marker, "w") as f:
                        f.write("killed mid-write")
                    os._exit(1)
                threading.Event().wait(0.0005)

        threading.Thread(target=kill, daemon=True).start()


def test_dask_worker_killed_mid_task_every_row_once(tmp_path, cluster):
    rng = np.random.default_rng(11)
    src, tgt, out = tmp_path / "src", tmp_path / "tgt", tmp_path / "out"
    src.mkdir()
    tgt.mkdir()
    n = 4000
    for i in range(3):
        np.save(src / f"f{i}.npy", rng.random((n, N)))
        np.save(tgt / f"f{i}.npy", rng.integers(0, N, n))
    out.mkdir()
    marker = tmp_path / "killed"
    with distributed.Client(cluster.scheduler_address) as client:
        client.register_plugin(KillWhileWriting(1, out, marker))
        try:
            s = engines.compute_dataset(str(src), str(tgt), output=str(out), engine="dask",
                                        scheduler=cluster.scheduler_address, metric="emd2",
                                        columns={"batch_rows": 50}, warn=lambda m: None)
        finally:
            client.unregister_worker_plugin(KillWhileWriting.name)
    assert marker.read_text() == "killed mid-write"
    assert s.count == 3 * n
    assert sorted(os.listdir(out)) == ["_summary.json", "f0.parquet", "f1.parquet", "f2.parquet"]
    for i in range(3):
        t = pq.read_table(out / f"f{i}.parquet")
        assert t.column("row").to_pylist() == list(range(n))


def test_dask_scheduler_that_does_not_answer(tmp_path, ds, monkeypatch):
    pytest.importorskip("distributed")
    from emdcli.jobs import dask as dask_engine

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", 2)
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EMDInputError, match="cannot reach the Dask scheduler within 2 s"):
        engines.compute_dataset(str(ds / "hive"), output=str(tmp_path / "o"), engine="dask",
                                scheduler=f"tcp://127.0.0.1:{port}")
    assert not (tmp_path / "o").exists()


def test_engine_options_are_checked(ds, tmp_path):
    one_line_error(emd("compute", ds / "hive", "--engine", "dask"), "--engine dask writes a dataset")
    one_line_error(emd("compute", ds / "hive", "-o", f"{tmp_path}/o/", "--workers", "2"),
                   "--workers needs --engine dask")
    one_line_error(emd("compute", ds / "hive", "-o", f"{tmp_path}/o/", "--engine", "dask",
                       "--workers", "0"), "--workers must be >= 1")


# ------------------------------------------------------------------ large files split


def test_large_files_split_into_windows(ds, tmp_path):
    """--task-size splits a Parquet file at row-group boundaries (an NPY file by rows):
    the parts hold the same rows, numbered within their file, on both engines."""
    out = tmp_path / "out"
    ok("compute", ds / "hive", "-m", "emd2", "-o", f"{out}/", "--task-size", "1k", "-q")
    train = sorted(p.name for p in (out / "split=train").iterdir())
    assert train == [f"part-0.{k:05d}.parquet" for k in range(3)] + [
        f"part-1.{k:05d}.parquet" for k in range(2)]
    back = pads.dataset(out, format="parquet", partitioning="hive").to_table()
    single = tmp_path / "single.parquet"
    ok("compute", ds / "all.parquet", "-m", "emd2", "-o", single, "-q")
    assert back.column("emd2").to_pylist() == pq.read_table(single).column("emd2").to_pylist()
    assert pq.read_table(out / "split=train" / "part-0.00001.parquet").column("row").to_pylist() == \
        list(range(100, 200))
    npy = tmp_path / "npy"
    ok("compute", ds / "npy" / "pred", ds / "npy" / "target", "-o", f"{npy}/", "--task-size", "5k", "-q")
    p0 = sorted(p.name for p in npy.iterdir() if p.name.startswith("p0."))
    assert len(p0) == 4  # 300 rows × 64 B in windows of 80 rows
    rows = np.concatenate([pq.read_table(npy / f).column("row").to_numpy() for f in p0])
    assert rows.tolist() == list(range(300))


def test_bad_row_in_a_window_is_numbered_within_the_file(tmp_path):
    src, tgt = _bad_third_file(tmp_path)
    np.save(src / "f2.npy", np.concatenate([np.random.default_rng(0).random((40, N)),
                                             np.load(src / "f2.npy")]))
    np.save(tgt / "f2.npy", np.zeros(80, int))
    out = tmp_path / "out"
    one_line_error(emd("compute", src, tgt, "-o", f"{out}/", "--task-size", "1k"),
                   "f2.npy: row 45", "negative")
    assert not out.exists()
    one_line_error(emd("compute", src, tgt, "-o", f"{out}/", "--task-size", "lots"),
                   "--task-size 'lots' is not a size")

"""More input and output formats: CSV, Arrow IPC files and streams (also on standard
input), URIs through pyarrow.fs, ``-f arrow`` and ``-f parquet`` on standard output."""

import io
import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ipc = pytest.importorskip("pyarrow.ipc")

N = 6


def emd(*args, stdin=None, text=True):
    return subprocess.run([sys.executable, "-m", "emdcli.cli", *map(str, args)],
                          capture_output=True, text=text, input=stdin, timeout=300)


def ok(*args, stdin=None, text=True):
    r = emd(*args, stdin=stdin, text=text)
    assert r.returncode == 0, r.stderr
    return r


def one_line_error(r, *needles):
    err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(2)
    p = rng.random((2500, N))
    c = rng.integers(0, N, 2500)
    table = pa.table({**{f"b{i}": p[:, i] for i in range(N)}, "target": c})
    pq.write_table(table, d / "t.parquet")
    with ipc.new_file(d / "t.arrow", table.schema) as w:
        for b in table.to_batches(max_chunksize=700):
            w.write_batch(b)
    with ipc.new_stream(d / "t.arrows", table.schema) as w:
        for b in table.to_batches(max_chunksize=700):
            w.write_batch(b)
    with open(d / "t.csv", "w") as f:  # integers in the first rows: still read as float bins
        f.write(",".join(table.column_names) + "\n")
        for k, (row, cls) in enumerate(zip(p, c)):
            cells = ["1"] * N if k < 3 else [repr(float(v)) for v in row]
            f.write(",".join(cells) + f",{cls}\n")
    (d / "t.tsv").write_text((d / "t.csv").read_text().replace(",", "\t"))
    p[:3] = 1.0
    pq.write_table(pa.table({**{f"b{i}": p[:, i] for i in range(N)}, "target": c}), d / "csv_twin.parquet")
    return d


def test_arrow_files_and_streams_equal_parquet(files):
    want = ok("compute", files / "t.parquet", "-m", "emd2", "-q").stdout
    for name in ("t.arrow", "t.arrows"):
        assert ok("compute", files / name, "-m", "emd2", "-q").stdout == want
        data = (files / name).read_bytes()
        r = subprocess.run([sys.executable, "-m", "emdcli.cli", "compute", "-", "-m", "emd2", "-q"],
                           input=data, capture_output=True, timeout=300)
        assert r.returncode == 0 and r.stdout.decode() == want, r.stderr


def test_csv_and_tsv(files):
    want = ok("compute", files / "csv_twin.parquet", "-q").stdout
    assert ok("compute", files / "t.csv", "-q").stdout == want
    assert ok("compute", files / "t.tsv", "-q").stdout == want
    assert ok("compute", "-", "-q", stdin=(files / "t.csv").read_text()).stdout == want
    # column options as for Parquet
    cols = ",".join(f"b{i}" for i in range(N))
    assert ok("compute", files / "t.csv", "--pred-column", cols, "--target-column", "target",
              "-q").stdout == want


def test_bad_csv(files, tmp_path):
    (tmp_path / "nohead.csv").write_text("0.5,0.5,1\n0.2,0.8,0\n")
    one_line_error(emd("compute", tmp_path / "nohead.csv"), "nohead.csv: has no header line")
    (tmp_path / "quoted.csv").write_text('a,b,"tar\nget"\n0.5,0.5,1\n')
    one_line_error(emd("compute", tmp_path / "quoted.csv", "--target-column", "tar\nget"),
                   "quoted.csv", "rows where")
    (tmp_path / "text.csv").write_text("a,b,target\n0.5,0.5,1\n0.5,x,1\n")
    one_line_error(emd("compute", tmp_path / "text.csv"), "text.csv: column 'b' holds text")


def test_uris_through_pyarrow_fs(files):
    want = ok("compute", files / "t.parquet", "-q").stdout
    for name in ("t.parquet", "t.arrow", "t.arrows", "t.csv"):
        got = ok("compute", f"file://{files / name}", "-q").stdout
        assert got == (want if name != "t.csv" else ok("compute", files / "csv_twin.parquet", "-q").stdout)
    one_line_error(emd("compute", f"file://{files}/missing.parquet"), "missing.parquet: no such file")


def test_arrow_and_parquet_on_standard_output(files):
    want = pq.read_table(files / "t.parquet")
    r = ok("compute", files / "t.parquet", "-m", "emd2", "-f", "arrow", "-q", "-g", files / "g.parquet",
           text=False)
    got = ipc.open_stream(io.BytesIO(r.stdout)).read_all()
    assert got.column_names == ["row", "emd2"] and got.num_rows == want.num_rows
    csv = ok("compute", files / "t.parquet", "-m", "emd2", "-q").stdout.splitlines()[1:]
    assert [repr(v) for v in got.column("emd2").to_pylist()] == [ln.split(",")[1] for ln in csv]
    # an Arrow stream of inputs through `emd compute - -f arrow`
    data = (files / "t.arrows").read_bytes()
    r = subprocess.run([sys.executable, "-m", "emdcli.cli", "compute", "-", "-m", "emd2", "-f", "arrow",
                        "-q"], input=data, capture_output=True, timeout=300)
    assert ipc.open_stream(io.BytesIO(r.stdout)).read_all().equals(got)
    r = ok("compute", files / "t.parquet", "-m", "emd2", "-f", "parquet", "-q", text=False)
    assert pq.read_table(io.BytesIO(r.stdout)).equals(got)


def test_arrow_file_output_and_empty_results(files, tmp_path):
    ok("compute", files / "t.parquet", "-o", tmp_path / "r.arrow", "-q")
    t = ipc.open_file(tmp_path / "r.arrow").read_all()
    assert t.num_rows == 2500 and t.schema.field("emd").type == pa.float64()
    np.save(tmp_path / "z.npy", np.zeros((0, N)))
    np.save(tmp_path / "zc.npy", np.zeros(0, dtype=np.int64))
    r = ok("compute", tmp_path / "z.npy", tmp_path / "zc.npy", "-f", "arrow", "-q", text=False)
    t = ipc.open_stream(io.BytesIO(r.stdout)).read_all()
    assert t.num_rows == 0 and t.schema.field("emd").type == pa.float64()

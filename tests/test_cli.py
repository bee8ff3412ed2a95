"""``emd compute`` end to end: every input layout, every output format, gradients, stdin,
batching, the summary, and every kind of bad input (exit code 2, one line on stderr naming
the file and the row/column, no output file and no temporary file left behind).

Values are compared with :func:`emdcli.emd` *exactly*: the CLI prints floats at full
precision, so the text must read back to the library's float64 (or float32) values.

Most runs go through ``typer.testing.CliRunner`` (in-process, stdout and stderr captured
separately); a few go through a real process (``python -m emdcli.cli`` and the ``emd``
console script) to check standard input and the real exit path.
"""

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from common import cli_runner

import emdcli
from emdcli.cli import app

B, N = 11, 6  # rows, bins
BATCH = 3  # with B = 11: batches 0-2, 3-5, 6-8, 9-10; row 7 is in the 3rd batch
RUNNER = cli_runner()
FILE_EXTS = [".csv", ".tsv", ".jsonl", ".parquet", ".npy"]


# ----------------------------------------------------------------------------- helpers


def invoke(*args, input=None):
    return RUNNER.invoke(app, ["compute", *map(str, args)], input=input)


def ok(*args, input=None):
    r = invoke(*args, input=input)
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


def parse(text, fmt="csv"):
    """Output text → (header, list of row dicts of strings / JSON values)."""
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line]
        return (list(rows[0]) if rows else []), rows
    sep = "," if fmt == "csv" else "\t"
    table = list(csv.reader(io.StringIO(text), delimiter=sep))
    header, body = table[0], table[1:]
    assert all(len(r) == len(header) for r in body), table
    return header, [dict(zip(header, r)) for r in body]


def column(rows, name, conv=float):
    return np.array([conv(r[name]) for r in rows])


def read_file(path):
    """A result file → (header, dict column → numpy array)."""
    path = str(path)
    ext = os.path.splitext(path)[1]
    if ext == ".parquet":
        t = pq.read_table(path)
        return t.column_names, {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    if ext == ".npy":
        return None, {"values": np.load(path)}
    with open(path, newline="") as f:
        text = f.read()
    fmt = ext[1:]
    header, rows = parse(text, fmt)
    return header, {c: [r[c] for r in rows] for c in header}


def summary_fields(stderr):
    """``emd: count=… mean=…`` → (name, {key: text})."""
    line = stderr.strip()
    assert "\n" not in line, stderr
    name, _, rest = line.partition(": ")
    return name, dict(tok.split("=", 1) for tok in rest.split())


def gradient_from_parquet(path):
    t = pq.read_table(str(path))
    g = t.column("gradient").combine_chunks()
    return t, np.asarray(g.flatten().to_numpy()).reshape(len(g), -1)


def console_script():
    exe = os.path.join(os.path.dirname(sys.executable), "emd")
    if not os.path.exists(exe):
        pytest.skip("no emd console script next to sys.executable")
    return exe


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(20240611)
    p = rng.random((B, N)) + 0.01
    q = rng.random((B, N)) + 0.01
    c = rng.integers(0, N, B)
    c[:N] = np.arange(N)  # every class appears, including 0 and N-1
    logits = rng.normal(size=(B, N)) * 3.0
    noise = rng.random(B) + 0.01
    ids = np.array([f"id{i:02d}" for i in range(B)])
    rid = np.arange(100, 100 + B, dtype=np.int64)
    x = np.array([0.0, 0.5, 2.0, 2.25, 7.0, 10.0])  # non-uniform positions

    def path(name):
        return root / name

    np.save(path("p.npy"), p)
    np.save(path("q.npy"), q)
    np.save(path("c.npy"), c)
    np.save(path("logits.npy"), logits)
    np.save(path("pos.npy"), x)
    path("pos.txt").write_text("# bin positions\n" + "\n".join(repr(float(v)) for v in x[:3]) + "\n\n"
                               + "\n".join(repr(float(v)) for v in x[3:]) + "\n")

    def lists(a):
        return pa.array([list(r) for r in a], type=pa.list_(pa.float64()))

    def fsl(a):
        return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])

    # bins as a list column, target as a list column named "target", string ids
    pq.write_table(pa.table({"pred": lists(p), "target": lists(q), "id": pa.array(ids)}),
                   path("list.parquet"), row_group_size=4)
    # bins as a fixed-size list, integer class column "label", int64 ids
    pq.write_table(pa.table({"key": rid, "scores": fsl(p), "label": pa.array(c, pa.int32())}),
                   path("fsl.parquet"), row_group_size=4)
    # bins as numeric columns, integer class column named "target"
    pq.write_table(pa.table({**{f"b{j}": p[:, j] for j in range(N)}, "target": c}),
                   path("cols.parquet"), row_group_size=4)
    # numeric columns in file order with an id column and an extra numeric column in the middle
    extra = {"rid": rid, "b0": p[:, 0], "b1": p[:, 1], "b2": p[:, 2], "noise": noise,
             "b3": p[:, 3], "b4": p[:, 4], "b5": p[:, 5], "label": c}
    pq.write_table(pa.table(extra), path("extra.parquet"), row_group_size=4)
    # predictions only (list column + ids); targets live elsewhere
    pq.write_table(pa.table({"pred": lists(p), "id": pa.array(ids)}), path("pred_only.parquet"),
                   row_group_size=5)
    pq.write_table(pa.table({"dist": lists(q)}), path("t_list.parquet"), row_group_size=2)
    pq.write_table(pa.table({"dist": fsl(q)}), path("t_fsl.parquet"))
    pq.write_table(pa.table({"label": c}), path("t_label.parquet"))
    pq.write_table(pa.table({"target": c}), path("t_target.parquet"))
    # logits with class targets in one file
    pq.write_table(pa.table({"logit": lists(logits), "target": c}), path("logits.parquet"))

    return SimpleNamespace(
        root=root, p=p, q=q, c=c, logits=logits, x=x, ids=ids, rid=rid,
        p_extra=np.column_stack([p[:, :3], noise, p[:, 3:]]),
        **{k.replace(".", "_"): path(k) for k in (
            "p.npy", "q.npy", "c.npy", "logits.npy", "pos.npy", "pos.txt", "list.parquet",
            "fsl.parquet", "cols.parquet", "extra.parquet", "pred_only.parquet",
            "t_list.parquet", "t_fsl.parquet", "t_label.parquet", "t_target.parquet",
            "logits.parquet")},
    )


@pytest.fixture
def out(tmp_path):
    """An empty folder for outputs; tests check that failures leave it empty."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def lib(p, q, **kw):
    return emdcli.emd(p, q, **kw)


# ----------------------------------------------------------------------------- layouts

# id → (CLI arguments, expected (pred, target), expected id column name and values or None)
LAYOUTS = {
    "npy-rows": (lambda d: [d.p_npy, d.q_npy], lambda d: (d.p, d.q), None),
    "npy-classes": (lambda d: [d.p_npy, d.c_npy], lambda d: (d.p, d.c), None),
    "parquet-list-target-list-default-name": (lambda d: [d.list_parquet], lambda d: (d.p, d.q), None),
    "parquet-list-via-pred-column": (
        lambda d: [d.list_parquet, "--pred-column", "pred", "--target-column", "target"],
        lambda d: (d.p, d.q), None),
    "parquet-fixed-size-list-target-column": (
        lambda d: [d.fsl_parquet, "--target-column", "label"], lambda d: (d.p, d.c), None),
    "parquet-columns-target-default-name": (lambda d: [d.cols_parquet], lambda d: (d.p, d.c), None),
    "parquet-columns-all-numeric-in-file-order": (
        lambda d: [d.extra_parquet, "--target-column", "label", "--id-column", "rid"],
        lambda d: (d.p_extra, d.c), ("rid", lambda d: d.rid)),
    "parquet-pred-column-comma-list": (
        lambda d: [d.extra_parquet, "--pred-column", "b0,b1,b2,b3,b4,b5", "--target-column", "label"],
        lambda d: (d.p, d.c), None),
    "parquet-pred-column-comma-list-reordered-spaces": (
        lambda d: [d.extra_parquet, "--pred-column", "b5, b4, b3, b2, b1, b0", "--target-column", "label"],
        lambda d: (d.p[:, ::-1], d.c), None),
    "separate-parquet-target-list": (
        lambda d: [d.pred_only_parquet, d.t_list_parquet], lambda d: (d.p, d.q), None),
    "separate-parquet-target-fixed-size-list": (
        lambda d: [d.pred_only_parquet, d.t_fsl_parquet], lambda d: (d.p, d.q), None),
    "separate-parquet-target-int-column": (
        lambda d: [d.pred_only_parquet, d.t_label_parquet, "--target-column", "label"],
        lambda d: (d.p, d.c), None),
    "npy-pred-parquet-target": (lambda d: [d.p_npy, d.t_list_parquet], lambda d: (d.p, d.q), None),
    "parquet-pred-npy-target": (lambda d: [d.pred_only_parquet, d.c_npy], lambda d: (d.p, d.c), None),
    "parquet-ids-carried": (
        lambda d: [d.list_parquet, "--id-column", "id"], lambda d: (d.p, d.q),
        ("id", lambda d: d.ids)),
    "parquet-int-ids-carried": (
        lambda d: [d.fsl_parquet, "--target-column", "label", "--id-column", "key"],
        lambda d: (d.p, d.c), ("key", lambda d: d.rid)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_input_layouts(d, layout):
    args, expect, ids = LAYOUTS[layout]
    p, q = expect(d)
    r = ok(*args(d), "--quiet")
    assert r.stderr == ""
    header, rows = parse(r.stdout)
    id_name = ids[0] if ids else "row"
    assert header == [id_name, "emd"]
    want_ids = [str(v) for v in ids[1](d)] if ids else [str(i) for i in range(B)]
    assert [row[id_name] for row in rows] == want_ids
    np.testing.assert_array_equal(column(rows, "emd"), lib(p, q))


def test_all_numeric_columns_differ_from_explicit_pred_columns(d):
    """The extra numeric column really is a bin when --pred-column is not given."""
    a = parse(ok(d.extra_parquet, "--target-column", "label", "--id-column", "rid", "-q").stdout)[1]
    b = parse(ok(d.extra_parquet, "--target-column", "label", "--id-column", "rid", "-q",
                 "--pred-column", "b0,b1,b2,b3,b4,b5").stdout)[1]
    assert not np.array_equal(column(a, "emd"), column(b, "emd"))


def test_separate_target_parquet_default_target_column(d):
    r = ok(d.pred_only_parquet, d.t_target_parquet, "-q")
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(d.p, d.c))


# ----------------------------------------------------------------------------- output formats


@pytest.mark.parametrize("fmt", [None, "csv", "tsv", "jsonl"])
@pytest.mark.parametrize("with_ids", [False, True])
def test_stdout_formats(d, fmt, with_ids):
    args = [d.list_parquet, "--id-column", "id"] if with_ids else [d.p_npy, d.q_npy]
    r = ok(*args, *(["--format", fmt] if fmt else []), "-q")
    header, rows = parse(r.stdout, fmt or "csv")  # CSV is the default when not a terminal
    id_name = "id" if with_ids else "row"
    assert header == [id_name, "emd"]
    got_ids = [row[id_name] for row in rows]
    if with_ids:
        assert got_ids == list(d.ids)
    else:
        assert got_ids == (list(range(B)) if fmt == "jsonl" else [str(i) for i in range(B)])
    np.testing.assert_array_equal(column(rows, "emd"), lib(d.p, d.q))


def test_stdout_table_format(d):
    r = ok(d.p_npy, d.q_npy, "--format", "table", "-q")
    assert "emd" in r.stdout and "row" in r.stdout
    assert repr(float(lib(d.p, d.q)[0])) in r.stdout


@pytest.mark.parametrize("ext", FILE_EXTS)
@pytest.mark.parametrize("with_ids", [False, True])
def test_output_files(d, out, ext, with_ids):
    args = [d.list_parquet, "--id-column", "id"] if with_ids else [d.p_npy, d.q_npy]
    target = out / f"result{ext}"
    r = ok(*args, "--output", target, "-q")
    assert r.stdout == "" and r.stderr == ""
    assert sorted(os.listdir(out)) == [target.name]  # no temp file left
    want = lib(d.p, d.q)
    header, cols = read_file(target)
    if ext == ".npy":  # the value column only
        got = cols["values"]
        assert got.shape == (B,) and got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
        return
    id_name = "id" if with_ids else "row"
    assert header == [id_name, "emd"]
    want_ids = list(d.ids) if with_ids else list(range(B))
    if ext == ".parquet":
        assert list(cols[id_name]) == want_ids
        assert cols["emd"].dtype == np.float64
        np.testing.assert_array_equal(cols["emd"], want)
    else:
        assert [str(v) for v in cols[id_name]] == [str(v) for v in want_ids]
        np.testing.assert_array_equal(np.array([float(v) for v in cols["emd"]]), want)


def test_output_extension_wins_over_format_and_is_case_insensitive(d, out):
    ok(d.p_npy, d.q_npy, "-o", out / "r.TSV", "--format", "jsonl", "-q")
    header, rows = parse((out / "r.TSV").read_text(), "tsv")
    assert header == ["row", "emd"]
    np.testing.assert_array_equal(column(rows, "emd"), lib(d.p, d.q))


def test_output_dash_means_stdout(d):
    r = ok(d.p_npy, d.q_npy, "-o", "-", "-f", "tsv", "-q")
    np.testing.assert_array_equal(column(parse(r.stdout, "tsv")[1], "emd"), lib(d.p, d.q))


def test_output_replaces_existing_file(d, out):
    target = out / "r.csv"
    target.write_text("old\n")
    ok(d.p_npy, d.q_npy, "-o", target, "-q")
    np.testing.assert_array_equal(column(parse(target.read_text())[1], "emd"), lib(d.p, d.q))
    assert os.listdir(out) == ["r.csv"]


def test_full_precision_text(d):
    """Every printed float is the shortest text that reads back to the same float64."""
    r = ok(d.p_npy, d.q_npy, "-q")
    want = lib(d.p, d.q)
    texts = [row["emd"] for row in parse(r.stdout)[1]]
    assert texts == [repr(float(v)) for v in want]


def test_nonfinite_values_csv_and_jsonl(d, tmp_path):
    """Positions so far apart that one distance overflows: CSV says inf, JSONL says null."""
    np.save(tmp_path / "a.npy", np.array([[1.0, 0, 0], [0.5, 0.5, 0]]))
    np.save(tmp_path / "ac.npy", np.array([2, 0]))
    pos = "--positions=-1.7e308,0,1.7e308"
    r = ok(tmp_path / "a.npy", tmp_path / "ac.npy", pos)
    rows = parse(r.stdout)[1]
    assert rows[0]["emd"] == "inf"
    assert float(rows[1]["emd"]) == 8.5e307
    name, s = summary_fields(r.stderr)
    assert s["count"] == "2" and s["nonfinite"] == "1" and float(s["max"]) == 8.5e307
    rows = parse(ok(tmp_path / "a.npy", tmp_path / "ac.npy", pos, "-f", "jsonl", "-q").stdout, "jsonl")[1]
    assert rows[0]["emd"] is None and rows[1]["emd"] == 8.5e307


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("grad_wrt", ["distribution", "input"])
@pytest.mark.parametrize("gext", [".npy", ".parquet"])
@pytest.mark.parametrize("case", ["npy-rows", "parquet-classes-ids", "softmax", "float32-emd2"])
def test_gradient_files(d, out, grad_wrt, gext, case):
    kw, args = {}, []
    if case == "npy-rows":
        args, p, q, id_name, ids = [d.p_npy, d.q_npy], d.p, d.q, "row", list(range(B))
    elif case == "parquet-classes-ids":
        args = [d.fsl_parquet, "--target-column", "label", "--id-column", "key"]
        p, q, id_name, ids = d.p, d.c, "key", list(d.rid)
    elif case == "softmax":
        args, p, q, id_name, ids = [d.logits_npy, d.q_npy, "--normalize", "softmax"], d.logits, d.q, "row", list(range(B))
        kw["normalize"] = "softmax"
    else:
        args = [d.p_npy, d.c_npy, "--dtype", "float32", "--metric", "emd2", "--positions", d.pos_npy]
        p, q, id_name, ids = d.p, d.c, "row", list(range(B))
        kw.update(dtype="float32", rho=2.0, positions=d.x)
    g = out / f"grad{gext}"
    r = ok(*args, "--gradient", g, "--grad-wrt", grad_wrt, "-q")
    want_v, want_g = lib(p, q, gradient=True, grad_wrt=grad_wrt, **kw)
    rows = parse(r.stdout)[1]
    metric = "emd2" if case == "float32-emd2" else "emd"
    conv = np.float32 if case == "float32-emd2" else float
    np.testing.assert_array_equal(column(rows, metric, conv), want_v)
    if gext == ".npy":
        got = np.load(g)
        assert got.shape == (B, N) and got.dtype == want_g.dtype
    else:
        t, got = gradient_from_parquet(g)
        assert t.column_names == [id_name, "gradient"]
        assert t.column(id_name).to_pylist() == ids
        assert got.dtype == want_g.dtype
    np.testing.assert_array_equal(got, want_g)
    assert os.listdir(out) == [g.name]


def test_gradient_and_output_files_together(d, out):
    ok(d.list_parquet, "--id-column", "id", "-o", out / "v.parquet", "-g", out / "g.parquet", "-q")
    want_v, want_g = lib(d.p, d.q, gradient=True)
    np.testing.assert_array_equal(pq.read_table(out / "v.parquet").column("emd").to_numpy(), want_v)
    t, got = gradient_from_parquet(out / "g.parquet")
    assert t.column("id").to_pylist() == list(d.ids)
    np.testing.assert_array_equal(got, want_g)
    assert sorted(os.listdir(out)) == ["g.parquet", "v.parquet"]


def test_gradient_distribution_sums_to_zero(d, out):
    ok(d.p_npy, d.c_npy, "-g", out / "g.npy", "-q")
    np.testing.assert_allclose(np.load(out / "g.npy").sum(axis=1), 0.0, atol=1e-12)


# ----------------------------------------------------------------------------- standard input


def test_stdin_npy_predictions(d):
    r = ok("-", d.q_npy, "-q", input=d.p_npy.read_bytes())
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(d.p, d.q))


def test_stdin_npy_class_targets(d):
    r = ok(d.p_npy, "-", "-q", input=d.c_npy.read_bytes())
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(d.p, d.c))


def test_stdin_parquet_with_ids(d):
    r = ok("-", "--id-column", "id", "-q", input=d.list_parquet.read_bytes())
    header, rows = parse(r.stdout)
    assert header == ["id", "emd"] and [x["id"] for x in rows] == list(d.ids)
    np.testing.assert_array_equal(column(rows, "emd"), lib(d.p, d.q))


def test_stdin_parquet_target_file(d):
    r = ok(d.pred_only_parquet, "-", "--target-column", "label", "-q",
           input=d.t_label_parquet.read_bytes())
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(d.p, d.c))


def test_subprocess_module_stdin_npy(d, out):
    """A real pipe into ``python -m emdcli.cli``; summary on stderr, CSV on stdout."""
    r = subprocess.run(
        [sys.executable, "-m", "emdcli.cli", "compute", "-", str(d.q_npy), "--metric", "emd2"],
        input=d.p_npy.read_bytes(), capture_output=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    header, rows = parse(r.stdout.decode())
    assert header == ["row", "emd2"]
    np.testing.assert_array_equal(column(rows, "emd2"), lib(d.p, d.q, rho=2.0))
    name, s = summary_fields(r.stderr.decode())
    assert name == "emd2" and s["count"] == str(B)


def test_subprocess_console_script_stdin_parquet(d, out):
    r = subprocess.run(
        [console_script(), "compute", "-", "--id-column", "id", "-f", "jsonl", "-q",
         "-o", str(out / "r.parquet")],
        input=d.list_parquet.read_bytes(), capture_output=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and r.stderr == b""
    t = pq.read_table(out / "r.parquet")
    assert t.column("id").to_pylist() == list(d.ids)
    np.testing.assert_array_equal(t.column("emd").to_numpy(), lib(d.p, d.q))


def test_subprocess_console_script_bad_input(d, out, tmp_path):
    bad = d.p.copy()
    bad[7, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    r = subprocess.run(
        [console_script(), "compute", str(tmp_path / "bad.npy"), str(d.c_npy), "--batch-size", "3",
         "-o", str(out / "r.csv"), "-g", str(out / "g.npy")],
        capture_output=True, timeout=120,
    )
    assert r.returncode == 2
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, r.stderr
    assert "bad.npy" in lines[0] and "row 7" in lines[0] and "column 4" in lines[0]
    assert os.listdir(out) == []


def test_closed_pipe_ends_quietly(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "big.npy", rng.random((50_000, 4)))
    np.save(tmp_path / "lab.npy", rng.integers(0, 4, 50_000))
    proc = subprocess.Popen(
        [console_script(), "compute", str(tmp_path / "big.npy"), str(tmp_path / "lab.npy"), "-q",
         "--batch-size", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -n 1`
    err = proc.stderr.read()
    proc.stderr.close()
    rc = proc.wait(timeout=120)
    assert first == b"row,emd\n"
    assert b"Traceback" not in err and err == b""
    assert rc in (0, -signal.SIGPIPE)


# ----------------------------------------------------------------------------- options


def test_class_indices_equal_one_hot_rows(d):
    onehot = np.eye(N)[d.c]
    a = column(parse(ok(d.p_npy, d.c_npy, "-q").stdout)[1], "emd")
    np.testing.assert_array_equal(a, lib(d.p, d.c))
    np.testing.assert_allclose(a, lib(d.p, onehot), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("target", ["q", "c"])
def test_softmax(d, target):
    t = d.q_npy if target == "q" else d.c_npy
    r = ok(d.logits_npy, t, "--normalize", "softmax", "-q")
    want = lib(d.logits, d.q if target == "q" else d.c, normalize="softmax")
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), want)


def test_softmax_parquet_logits(d):
    r = ok(d.logits_parquet, "--normalize", "softmax", "-q")
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(d.logits, d.c, normalize="softmax"))


def test_normalize_none_with_equal_masses(d, tmp_path):
    pn = d.p / d.p.sum(axis=1, keepdims=True)
    qn = d.q / d.q.sum(axis=1, keepdims=True)
    np.save(tmp_path / "pn.npy", pn)
    np.save(tmp_path / "qn.npy", qn)
    r = ok(tmp_path / "pn.npy", tmp_path / "qn.npy", "--normalize", "none", "-q")
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(pn, qn, normalize="none"))
    r = ok(tmp_path / "pn.npy", d.c_npy, "--normalize", "none", "-q")
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(pn, d.c, normalize="none"))


def _significant_digits(text):
    mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return len(mantissa)


@pytest.mark.parametrize("target", ["q", "c"])
def test_float32(d, out, target):
    t, tv = (d.q_npy, d.q) if target == "q" else (d.c_npy, d.c)
    want = lib(d.p, tv, dtype="float32")
    assert want.dtype == np.float32
    r = ok(d.p_npy, t, "--dtype", "float32", "-q")
    texts = [row["emd"] for row in parse(r.stdout)[1]]
    np.testing.assert_array_equal(np.array(texts, dtype=np.float32), want)
    assert all(_significant_digits(s) <= 9 for s in texts), texts  # float32-precise text
    rows = parse(ok(d.p_npy, t, "--dtype", "float32", "-f", "jsonl", "-q").stdout, "jsonl")[1]
    np.testing.assert_array_equal(np.array([x["emd"] for x in rows], dtype=np.float32), want)
    ok(d.p_npy, t, "--dtype", "float32", "-o", out / "r.parquet", "-q")
    col = pq.read_table(out / "r.parquet").column("emd")
    assert col.type == pa.float32()
    np.testing.assert_array_equal(col.to_numpy(), want)
    ok(d.p_npy, t, "--dtype", "float32", "-o", out / "r.npy", "-q")
    got = np.load(out / "r.npy")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("form", ["npy", "text", "comma"])
def test_positions_forms(d, form):
    spec = {"npy": d.pos_npy, "text": d.pos_txt, "comma": ",".join(repr(float(v)) for v in d.x)}[form]
    for t, tv in ((d.q_npy, d.q), (d.c_npy, d.c)):
        r = ok(d.p_npy, t, "--positions", spec, "-q")
        np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd"), lib(d.p, tv, positions=d.x))


def test_positions_unit_spacing_is_default(d):
    a = ok(d.p_npy, d.q_npy, "-q").stdout
    b = ok(d.p_npy, d.q_npy, "--positions", ",".join(str(i) for i in range(N)), "-q").stdout
    assert a == b


def test_positions_scale(d):
    """Positions scaled by 2 double every EMD (a sanity check that --positions is used)."""
    a = column(parse(ok(d.p_npy, d.q_npy, "--positions", "0,1,2,3,4,5", "-q").stdout)[1], "emd")
    b = column(parse(ok(d.p_npy, d.q_npy, "--positions", "0,2,4,6,8,10", "-q").stdout)[1], "emd")
    np.testing.assert_allclose(b, 2 * a, rtol=1e-14)


@pytest.mark.parametrize("args,name,rho", [
    (["--metric", "emd"], "emd", 1.0),
    (["--metric", "emd", "--rho", "1"], "emd", 1.0),
    (["--metric", "emd2"], "emd2", 2.0),
    (["-m", "emd2", "--rho", "2"], "emd2", 2.0),
    (["--metric", "emd-rho", "--rho", "1.5"], "emd_rho", 1.5),
    (["--metric", "emd-rho", "--rho", "3.7"], "emd_rho", 3.7),
    (["--metric", "emd-rho", "--rho", "1"], "emd_rho", 1.0),
])
def test_metrics(d, args, name, rho):
    r = ok(d.p_npy, d.q_npy, "--positions", d.pos_npy, *args)
    header, rows = parse(r.stdout)
    assert header == ["row", name]
    np.testing.assert_array_equal(column(rows, name), lib(d.p, d.q, rho=rho, positions=d.x))
    assert summary_fields(r.stderr)[0] == name


def test_emd2_matches_library_emd2(d):
    r = ok(d.p_npy, d.c_npy, "--metric", "emd2", "-q")
    np.testing.assert_array_equal(column(parse(r.stdout)[1], "emd2"), emdcli.emd2(d.p, d.c))


BATCH_CASES = {
    "npy": lambda d: [d.p_npy, d.q_npy],
    "npy-classes": lambda d: [d.p_npy, d.c_npy],
    "parquet-list-rowgroups": lambda d: [d.list_parquet, "--id-column", "id"],
    "parquet-columns-rowgroups": lambda d: [d.cols_parquet],
    "parquet-fsl": lambda d: [d.fsl_parquet, "--target-column", "label", "--id-column", "key"],
    "parquet-pred-separate-parquet-target": lambda d: [d.pred_only_parquet, d.t_list_parquet],
    "parquet-pred-npy-target": lambda d: [d.pred_only_parquet, d.c_npy],
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
@pytest.mark.parametrize("size", [1, BATCH, 4, 5, 10, B, 1000])
def test_batch_size_identical_results(d, out, case, size):
    args = BATCH_CASES[case](d)
    whole = ok(*args, "-g", out / "g1.npy", "-q")
    part = ok(*args, "--batch-size", size, "-g", out / "g2.npy", "-q")
    assert part.stdout == whole.stdout
    np.testing.assert_array_equal(np.load(out / "g1.npy"), np.load(out / "g2.npy"))


def test_quiet_suppresses_summary(d):
    r = ok(d.p_npy, d.q_npy, "--quiet")
    assert r.stderr == ""
    r = ok(d.p_npy, d.q_npy, "-q", "-o", "-")
    assert r.stderr == ""


TIMING = re.compile(
    r"^timing: (\d+) rows in \S+ \S+ \(([\d,]+) rows/s\): read \S+ \S+, compute \S+ \S+, "
    r"write \S+ \S+$"
)


def test_verbose_says_where_the_time_went(d):
    """--verbose adds one line after the summary: rows, rows/s, read / compute / write."""
    r = ok(d.p_npy, d.q_npy, "--verbose", "--batch-size", BATCH)
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("emd: count=11 ")
    m = TIMING.match(lines[1])
    assert m, lines[1]
    assert int(m.group(1)) == B and int(m.group(2).replace(",", "")) > 0
    assert ok(d.p_npy, d.q_npy).stdout == r.stdout  # the rows are not touched


def test_quiet_and_verbose_contradict(d):
    r = invoke(d.p_npy, d.q_npy, "-q", "-v")
    assert r.exit_code == 2 and "contradict" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("metric,name,extra", [("emd", "emd", []), ("emd2", "emd2", []),
                                               ("emd-rho", "emd_rho", ["--rho", "1.5"])])
def test_summary_line(d, metric, name, extra):
    r = ok(d.p_npy, d.q_npy, "--metric", metric, *extra)
    v = lib(d.p, d.q, rho={"emd": 1.0, "emd2": 2.0, "emd-rho": 1.5}[metric])
    got_name, s = summary_fields(r.stderr)
    assert got_name == name
    assert list(s) == ["count", "mean", "std", "min", "p50", "p95", "max"]
    assert int(s["count"]) == B
    expect = {"mean": v.mean(), "std": v.std(), "min": v.min(), "p50": np.median(v),
              "p95": np.quantile(v, 0.95), "max": v.max()}
    for k, want in expect.items():
        assert float(s[k]) == pytest.approx(want, rel=1e-12, abs=1e-15), k
    assert float(s["min"]) == v.min() and float(s["max"]) == v.max()
    # the summary is on stderr only; stdout is pure data
    assert all(not line.startswith(name + ":") for line in r.stdout.splitlines())


def test_stdout_and_stderr_are_separate(d):
    """Data on stdout, the summary on stderr."""
    r = ok(d.p_npy, d.q_npy)
    assert r.stdout.startswith("row,emd\n") and "count=" not in r.stdout
    assert r.stderr.startswith("emd: count=11 ") and "row,emd" not in r.stderr


def test_summary_with_output_file(d, out):
    r = ok(d.p_npy, d.q_npy, "-o", out / "r.csv")
    assert r.stdout == ""
    assert summary_fields(r.stderr)[1]["count"] == str(B)


def test_zero_rows(tmp_path, out):
    np.save(tmp_path / "z.npy", np.zeros((0, N)))
    np.save(tmp_path / "zc.npy", np.zeros(0, dtype=np.int64))
    r = ok(tmp_path / "z.npy", tmp_path / "zc.npy")
    assert r.stdout == "row,emd\n"
    assert summary_fields(r.stderr)[1]["count"] == "0"
    ok(tmp_path / "z.npy", tmp_path / "zc.npy", "-o", out / "r.parquet", "-q")
    assert pq.read_table(out / "r.parquet").num_rows == 0


def test_zero_rows_keep_shapes_and_types(tmp_path, out):
    np.save(tmp_path / "z.npy", np.zeros((0, N)))
    np.save(tmp_path / "zc.npy", np.zeros(0, dtype=np.int64))
    ok(tmp_path / "z.npy", tmp_path / "zc.npy", "-o", out / "r.parquet", "-g", out / "g.npy", "-q")
    assert np.load(out / "g.npy").shape == (0, N)
    schema = pq.read_table(out / "r.parquet").schema
    assert schema.field("row").type == pa.int64()


# ----------------------------------------------------------------------------- bad input


def _save(folder, name, arr):
    np.save(folder / name, arr)
    return folder / name


def _pq(folder, name, cols, **kw):
    pq.write_table(pa.table(cols), folder / name, **kw)
    return folder / name


def _mod(a, idx, value):
    a = np.array(a, dtype=float if isinstance(value, float) else a.dtype)
    a[idx] = value
    return a


def bad_cases():
    """id → builder(d, folder) → (args, file name to be named or None, row, column)."""
    cases = {}

    def case(fn):
        cases[fn.__name__] = fn
        return fn

    @case
    def nan_pred(d, f):
        return [_save(f, "nan.npy", _mod(d.p, (3, 2), np.nan)), d.q_npy], "nan.npy", 3, 2

    @case
    def inf_pred(d, f):
        return [_save(f, "inf.npy", _mod(d.p, (4, 1), np.inf)), d.c_npy], "inf.npy", 4, 1

    @case
    def neg_inf_target(d, f):
        return [d.p_npy, _save(f, "ninf.npy", _mod(d.q, (5, 0), -np.inf))], "ninf.npy", 5, 0

    @case
    def nan_logits_softmax(d, f):
        return ([_save(f, "nanl.npy", _mod(d.logits, (6, 5), np.nan)), d.c_npy, "--normalize", "softmax"],
                "nanl.npy", 6, 5)

    @case
    def negative_mass_pred(d, f):
        return [_save(f, "neg.npy", _mod(d.p, (2, 3), -0.25)), d.q_npy], "neg.npy", 2, 3

    @case
    def negative_mass_target(d, f):
        return [d.p_npy, _save(f, "negq.npy", _mod(d.q, (8, 4), -1.0))], "negq.npy", 8, 4

    @case
    def zero_sum_pred(d, f):
        return [_save(f, "zero.npy", _mod(d.p, 5, 0.0)), d.q_npy], "zero.npy", 5, None

    @case
    def zero_sum_target(d, f):
        return [d.p_npy, _save(f, "zeroq.npy", _mod(d.q, 9, 0.0))], "zeroq.npy", 9, None

    @case
    def unequal_mass_none(d, f):
        pn = d.p / d.p.sum(axis=1, keepdims=True)
        qn = d.q / d.q.sum(axis=1, keepdims=True)
        qn[6] *= 2
        return ([_save(f, "pn.npy", pn), _save(f, "qn.npy", qn), "--normalize", "none"],
                ("pn.npy", "qn.npy"), 6, None)

    @case
    def unequal_mass_none_classes(d, f):
        pn = d.p / d.p.sum(axis=1, keepdims=True)
        pn[4] *= 3
        return [_save(f, "pn.npy", pn), d.c_npy, "--normalize", "none"], "pn.npy", 4, None

    @case
    def width_mismatch(d, f):
        return [d.p_npy, _save(f, "q5.npy", d.q[:, :5])], ("q5.npy", "p.npy"), None, None

    @case
    def width_mismatch_parquet_target(d, f):
        t = _pq(f, "t5.parquet", {"dist": pa.array([list(r) for r in d.q[:, :5]])})
        return [d.p_npy, t], ("t5.parquet", "p.npy"), None, None

    @case
    def row_count_mismatch(d, f):
        return [d.p_npy, _save(f, "q10.npy", d.q[:-1])], ("q10.npy", "p.npy"), None, None

    @case
    def row_count_mismatch_classes(d, f):
        return [d.p_npy, _save(f, "c12.npy", np.append(d.c, 0))], ("c12.npy", "p.npy"), None, None

    @case
    def class_out_of_range(d, f):
        return [d.p_npy, _save(f, "cbig.npy", _mod(d.c, 3, N))], "cbig.npy", 3, None

    @case
    def class_negative(d, f):
        return [d.p_npy, _save(f, "cneg.npy", _mod(d.c, 4, -1))], "cneg.npy", 4, None

    @case
    def class_out_of_range_parquet(d, f):
        t = _pq(f, "cbig.parquet", {"pred": pa.array([list(r) for r in d.p]), "target": _mod(d.c, 9, 99)})
        return [t], "cbig.parquet", 9, None

    @case
    def class_not_integer(d, f):
        return [d.p_npy, _save(f, "cfl.npy", _mod(d.c.astype(float), 2, 2.5))], "cfl.npy", 2, None

    @case
    def class_nan(d, f):
        return [d.p_npy, _save(f, "cnan.npy", _mod(d.c.astype(float), 1, np.nan))], "cnan.npy", 1, None

    @case
    def missing_pred_file(d, f):
        return [f / "missing.npy", d.q_npy], "missing.npy", None, None

    @case
    def missing_target_file(d, f):
        return [d.p_npy, f / "missing.parquet"], "missing.parquet", None, None

    @case
    def directory_as_input(d, f):
        (f / "adir").mkdir()
        return [f / "adir", d.q_npy], "adir", None, None

    @case
    def empty_npy(d, f):
        (f / "empty.npy").write_bytes(b"")
        return [f / "empty.npy", d.q_npy], "empty.npy", None, None

    @case
    def empty_parquet(d, f):
        (f / "empty.parquet").write_bytes(b"")
        return [f / "empty.parquet"], "empty.parquet", None, None

    @case
    def empty_target_no_extension(d, f):
        (f / "empty").write_bytes(b"")
        return [d.p_npy, f / "empty"], "empty", None, None

    @case
    def text_file_as_input(d, f):
        (f / "p.csv").write_text("0.1,0.2\n0.3,0.4\n")
        return [f / "p.csv", d.q_npy], "p.csv", None, None

    @case
    def truncated_npy_data(d, f):
        data = d.p_npy.read_bytes()
        (f / "trunc.npy").write_bytes(data[:-20])
        return [f / "trunc.npy", d.q_npy], "trunc.npy", None, None

    @case
    def truncated_npy_header(d, f):
        (f / "trunch.npy").write_bytes(d.p_npy.read_bytes()[:40])
        return [f / "trunch.npy", d.q_npy], "trunch.npy", None, None

    @case
    def truncated_npy_target_classes(d, f):
        (f / "truncc.npy").write_bytes(d.c_npy.read_bytes()[:-5])
        return [d.p_npy, f / "truncc.npy"], "truncc.npy", None, None

    @case
    def npy_of_strings(d, f):
        return [_save(f, "str.npy", np.array([["a", "b"]])), d.q_npy], "str.npy", None, None

    @case
    def npy_three_d(d, f):
        return [_save(f, "p3.npy", d.p.reshape(B, 2, 3)), d.c_npy], "p3.npy", None, None

    @case
    def npy_one_d_predictions(d, f):
        return [_save(f, "p1.npy", d.p[:, 0]), d.c_npy], "p1.npy", None, None

    @case
    def truncated_parquet(d, f):
        data = d.list_parquet.read_bytes()
        (f / "trunc.parquet").write_bytes(data[: len(data) // 2])
        return [f / "trunc.parquet"], "trunc.parquet", None, None

    @case
    def truncated_parquet_target(d, f):
        data = d.t_list_parquet.read_bytes()
        (f / "trunct.parquet").write_bytes(data[:-10])
        return [d.p_npy, f / "trunct.parquet"], "trunct.parquet", None, None

    @case
    def corrupt_parquet_garbage(d, f):
        rng = np.random.default_rng(1)
        (f / "garbage.parquet").write_bytes(b"PAR1" + rng.bytes(500) + b"PAR1")
        return [f / "garbage.parquet"], "garbage.parquet", None, None

    @case
    def corrupt_parquet_not_parquet(d, f):
        (f / "text.parquet").write_text("pred,target\n1,2\n")
        return [f / "text.parquet"], "text.parquet", None, None

    @case
    def wrong_pred_column(d, f):
        return [d.list_parquet, "--pred-column", "nope"], "list.parquet", None, None

    @case
    def wrong_pred_column_in_comma_list(d, f):
        return [d.extra_parquet, "--pred-column", "b0,b1,nope", "--target-column", "label"], "extra.parquet", None, None

    @case
    def wrong_target_column(d, f):
        return [d.list_parquet, "--target-column", "nope"], "list.parquet", None, None

    @case
    def wrong_target_column_separate_file(d, f):
        return [d.pred_only_parquet, d.t_label_parquet, "--target-column", "nope"], "t_label.parquet", None, None

    @case
    def wrong_id_column(d, f):
        return [d.list_parquet, "--id-column", "nope"], "list.parquet", None, None

    @case
    def id_column_on_npy(d, f):
        return [d.p_npy, d.q_npy, "--id-column", "id"], "p.npy", None, None

    @case
    def string_target_column(d, f):
        return [d.list_parquet, "--target-column", "id"], "list.parquet", None, None

    @case
    def string_pred_column(d, f):
        return [d.list_parquet, "--pred-column", "id,pred"], "list.parquet", None, None

    @case
    def several_list_columns(d, f):
        t = _pq(f, "two.parquet", {"a": pa.array([list(r) for r in d.p]),
                                   "b": pa.array([list(r) for r in d.q]), "target": d.c})
        return [t], "two.parquet", None, None

    @case
    def ragged_list_column(d, f):
        rows = [list(r) for r in d.p]
        rows[4] = rows[4][:4]
        return [_pq(f, "ragged.parquet", {"pred": pa.array(rows), "target": d.c})], "ragged.parquet", 4, None

    @case
    def ragged_target_list_column(d, f):
        rows = [list(r) for r in d.q]
        rows[8] = rows[8] + [0.5]
        return [d.p_npy, _pq(f, "raggedt.parquet", {"dist": pa.array(rows)})], "raggedt.parquet", 8, None

    @case
    def null_list_row(d, f):
        rows = [list(r) for r in d.p]
        rows[2] = None
        return [_pq(f, "nullrow.parquet", {"pred": pa.array(rows), "target": d.c})], "nullrow.parquet", 2, None

    @case
    def null_list_element(d, f):
        rows = [list(r) for r in d.p]
        rows[3][1] = None
        return [_pq(f, "nullval.parquet", {"pred": pa.array(rows), "target": d.c})], "nullval.parquet", 3, 1

    @case
    def null_numeric_column(d, f):
        cols = {f"b{j}": pa.array(d.p[:, j]) for j in range(N)}
        cols["b4"] = pa.array([None if i == 5 else v for i, v in enumerate(d.p[:, 4])])
        return [_pq(f, "nullcol.parquet", {**cols, "target": d.c})], "nullcol.parquet", 5, None

    @case
    def null_class_target(d, f):
        tgt = pa.array([None if i == 6 else int(v) for i, v in enumerate(d.c)], pa.int64())
        return [_pq(f, "nulltgt.parquet", {"pred": pa.array([list(r) for r in d.p]), "target": tgt})], "nulltgt.parquet", 6, None

    @case
    def null_in_separate_target_list(d, f):
        rows = [list(r) for r in d.q]
        rows[10][0] = None
        return [d.p_npy, _pq(f, "nullt.parquet", {"dist": pa.array(rows)})], "nullt.parquet", 10, 0

    @case
    def positions_not_increasing(d, f):
        return [d.p_npy, d.q_npy, "--positions", "0,1,1,2,3,4"], None, None, None

    @case
    def positions_decreasing_file(d, f):
        (f / "pos.txt").write_text("0\n1\n2\n3\n5\n4\n")
        return [d.p_npy, d.q_npy, "--positions", f / "pos.txt"], "pos.txt", None, None

    @case
    def positions_wrong_count(d, f):
        return [d.p_npy, d.q_npy, "--positions", "0,1,2"], None, None, None

    @case
    def positions_wrong_count_npy(d, f):
        return [d.p_npy, d.q_npy, "--positions", _save(f, "pos7.npy", np.arange(7.0))], "pos7.npy", None, None

    @case
    def positions_unparsable(d, f):
        return [d.p_npy, d.q_npy, "--positions", "a,b,c,d,e,f"], None, None, None

    @case
    def positions_unparsable_file(d, f):
        (f / "posbad.txt").write_text("0\n1\ntwo\n3\n4\n5\n")
        return [d.p_npy, d.q_npy, "--positions", f / "posbad.txt"], "posbad.txt", None, None

    @case
    def positions_nan(d, f):
        return [d.p_npy, d.q_npy, "--positions", "0,1,nan,3,4,5"], None, None, None

    @case
    def positions_two_d_npy(d, f):
        return [d.p_npy, d.q_npy, "--positions", _save(f, "pos2d.npy", np.arange(6.0).reshape(2, 3))], "pos2d.npy", None, None

    @case
    def emd_rho_without_rho(d, f):
        return [d.p_npy, d.q_npy, "--metric", "emd-rho"], None, None, None

    @case
    def rho_below_one(d, f):
        return [d.p_npy, d.q_npy, "--metric", "emd-rho", "--rho", "0.5"], None, None, None

    @case
    def rho_nan(d, f):
        return [d.p_npy, d.q_npy, "--metric", "emd-rho", "--rho", "nan"], None, None, None

    @case
    def rho_conflicts_with_emd2(d, f):
        return [d.p_npy, d.q_npy, "--metric", "emd2", "--rho", "3"], None, None, None

    @case
    def float32_overflow(d, f):
        return ([_save(f, "huge.npy", _mod(d.p, (1, 2), 1e39)), d.q_npy, "--dtype", "float32"],
                "huge.npy", 1, 2)

    @case
    def no_targets_npy(d, f):
        return [d.p_npy], "p.npy", None, None

    @case
    def no_targets_parquet(d, f):
        return [d.pred_only_parquet], "pred_only.parquet", None, None

    @case
    def both_inputs_stdin(d, f):
        return ["-", "-"], None, None, None

    @case
    def empty_stdin(d, f):
        return ["-", d.q_npy], "<stdin>", None, None

    @case
    def bad_stdin_npy(d, f):
        return ["-", d.q_npy], "<stdin>", 3, 2

    return cases


BAD = bad_cases()
STDIN = {  # cases that read standard input: builder of the bytes
    "both_inputs_stdin": lambda d: d.p_npy.read_bytes(),
    "empty_stdin": lambda d: b"",
    "bad_stdin_npy": lambda d: _npy_bytes(_mod(d.p, (3, 2), np.nan)),
}


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def check_bad(r, names, row, col, out):
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("emd: error: "), line
    assert "Traceback" not in r.stderr
    if names:
        names = (names,) if isinstance(names, str) else names
        assert any(n in line for n in names), line
    if row is not None:
        assert re.search(rf"\brow {row}\b", line), line
    if col is not None:
        assert re.search(rf"\bcolumn {col}\b", line), line
    assert os.listdir(out) == [], os.listdir(out)  # no output file, no temp file
    return line


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(d, tmp_path, out, case):
    folder = tmp_path / "bad"
    folder.mkdir()
    args, names, row, col = BAD[case](d, folder)
    stdin = STDIN[case](d) if case in STDIN else None
    r = invoke(*args, "-o", out / "result.csv", input=stdin)
    check_bad(r, names, row, col, out)


@pytest.mark.parametrize("case", ["nan_pred", "class_out_of_range", "null_list_element",
                                  "ragged_list_column", "truncated_parquet", "wrong_id_column"])
def test_bad_input_with_parquet_output_and_gradient(d, tmp_path, out, case):
    folder = tmp_path / "bad"
    folder.mkdir()
    args, names, row, col = BAD[case](d, folder)
    r = invoke(*args, "-o", out / "result.parquet", "-g", out / "grad.npy")
    check_bad(r, names, row, col, out)


def test_unknown_output_extension(d, out):
    r = invoke(d.p_npy, d.q_npy, "-o", out / "result.xyz")
    line = check_bad(r, None, None, None, out)
    assert "--output" in line
    r = invoke(d.p_npy, d.q_npy, "-o", out / "result")
    check_bad(r, None, None, None, out)


@pytest.mark.parametrize("gname", ["grad.txt", "grad.csv", "grad"])
def test_gradient_bad_extension(d, out, gname):
    r = invoke(d.p_npy, d.q_npy, "-g", out / gname)
    line = check_bad(r, None, None, None, out)
    assert "--gradient" in line


def test_output_and_gradient_same_file(d, out):
    r = invoke(d.p_npy, d.q_npy, "-o", out / "x.npy", "-g", out / "x.npy")
    check_bad(r, None, None, None, out)


def test_output_folder_missing(d, out):
    r = invoke(d.p_npy, d.q_npy, "-o", out / "nope" / "r.csv")
    line = check_bad(r, None, None, None, out)
    assert "nope" in line


@pytest.mark.parametrize("spec", ["0,1,1,2,3,4", "0,1,2"])
def test_comma_positions_errors_name_the_option(d, spec):
    """A comma list is not a file: the message names the option (``--positions …: …``)."""
    r = invoke(d.p_npy, d.q_npy, "--positions", spec)
    assert r.exit_code == 2
    assert r.stderr.startswith("emd: error: --positions"), r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_failure_keeps_existing_output_untouched(d, tmp_path, out):
    bad = _save(tmp_path, "nan.npy", _mod(d.p, (7, 1), np.nan))
    (out / "r.csv").write_text("old\n")
    r = invoke(bad, d.q_npy, "--batch-size", BATCH, "-o", out / "r.csv")
    assert r.exit_code == 2
    assert os.listdir(out) == ["r.csv"] and (out / "r.csv").read_text() == "old\n"


# a bad row in the 3rd batch (rows 6-8 with --batch-size 3) is reported by its absolute row,
# and the output and gradient files started for the first batches are removed
THIRD_BATCH = {
    "npy-nan": lambda d, f: ([_save(f, "b.npy", _mod(d.p, (7, 4), np.nan)), d.q_npy], "b.npy", 7, 4),
    "npy-negative-target": lambda d, f: ([d.p_npy, _save(f, "b.npy", _mod(d.q, (7, 0), -2.0))], "b.npy", 7, 0),
    "npy-class-out-of-range": lambda d, f: ([d.p_npy, _save(f, "b.npy", _mod(d.c, 7, N + 3))], "b.npy", 7, None),
    "npy-zero-row": lambda d, f: ([_save(f, "b.npy", _mod(d.p, 7, 0.0)), d.c_npy], "b.npy", 7, None),
    "parquet-list-null": lambda d, f: (
        [_pq(f, "b.parquet", {"pred": pa.array([None if i == 7 else list(r) for i, r in enumerate(d.p)]),
                              "target": d.c}, row_group_size=4)], "b.parquet", 7, None),
    "parquet-columns-nan": lambda d, f: (
        [_pq(f, "b.parquet", {**{f"b{j}": _mod(d.p[:, j], 7, np.nan) if j == 2 else d.p[:, j]
                                 for j in range(N)}, "target": d.c}, row_group_size=2)],
        "b.parquet", 7, 2),
    "parquet-class-out-of-range": lambda d, f: (
        [_pq(f, "b.parquet", {"pred": pa.array([list(r) for r in d.p]), "target": _mod(d.c, 7, -5)},
             row_group_size=4)], "b.parquet", 7, None),
    "separate-target-ragged": lambda d, f: (
        [d.pred_only_parquet, _pq(f, "b.parquet", {"dist": pa.array(
            [list(r)[:5] if i == 7 else list(r) for i, r in enumerate(d.q)])}, row_group_size=4)],
        "b.parquet", 7, None),
}


@pytest.mark.parametrize("case", list(THIRD_BATCH))
@pytest.mark.parametrize("ext,gext", [(".csv", ".npy"), (".tsv", ".parquet"), (".jsonl", ".npy"),
                                      (".parquet", ".parquet"), (".npy", ".npy")])
def test_bad_row_in_third_batch(d, tmp_path, out, case, ext, gext):
    folder = tmp_path / "bad"
    folder.mkdir()
    args, names, row, col = THIRD_BATCH[case](d, folder)
    r = invoke(*args, "--batch-size", BATCH, "-o", out / f"result{ext}", "-g", out / f"grad{gext}")
    check_bad(r, names, row, col, out)


def test_bad_row_in_third_batch_on_stdout_keeps_first_batches(d, tmp_path):
    """Writing to stdout streams: the first batches may already be out, but the error is
    still one line with the absolute row and exit code 2."""
    bad = _save(tmp_path, "b.npy", _mod(d.p, (7, 4), np.nan))
    r = invoke(bad, d.q_npy, "--batch-size", BATCH)
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "row 7" in lines[0] and "column 4" in lines[0]
    rows = parse(r.stdout)[1] if r.stdout else []
    assert len(rows) <= 6


# ----------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_text_output_quotes_ids(d, tmp_path, fmt):
    ids = ["a,b", 'say "hi"', "tab\there", "two\nlines", "plain"] + [f"x{i}" for i in range(B - 5)]
    path = _pq(tmp_path, "ids.parquet", {"pred": pa.array([list(r) for r in d.p]), "target": d.c,
                                          "name": pa.array(ids)})
    r = ok(path, "--id-column", "name", "-f", fmt, "-q")
    header, rows = parse(r.stdout, fmt)
    assert [x["name"] for x in rows] == ids
    np.testing.assert_array_equal(column(rows, "emd"), lib(d.p, d.c))


def test_jsonl_ids_with_special_characters(d, tmp_path):
    ids = ["a,b", 'say "hi"', "tab\there", "two\nlines", "plain"] + [f"x{i}" for i in range(B - 5)]
    path = _pq(tmp_path, "ids.parquet", {"pred": pa.array([list(r) for r in d.p]), "target": d.c,
                                          "name": pa.array(ids)})
    rows = parse(ok(path, "--id-column", "name", "-f", "jsonl", "-q").stdout, "jsonl")[1]
    assert [x["name"] for x in rows] == ids


NUMPY_REPR_CASES = {
    "negative-mass": lambda d, f: [_save(f, "neg.npy", _mod(d.p, (2, 3), -0.25)), d.q_npy],
    "unequal-mass": lambda d, f: [_save(f, "pn.npy", d.p), d.c_npy, "--normalize", "none"],
    "non-integer-class": lambda d, f: [d.p_npy, _save(f, "cfl.npy", _mod(d.c.astype(float), 2, 2.5))],
    "positions-not-increasing": lambda d, f: [d.p_npy, d.q_npy, "--positions", "0,1,1,2,3,4"],
}


@pytest.mark.parametrize("case", list(NUMPY_REPR_CASES))
def test_error_messages_show_plain_numbers(d, tmp_path, case):
    r = invoke(*NUMPY_REPR_CASES[case](d, tmp_path))
    assert r.exit_code == 2
    assert "np.float" not in r.stderr and "np.int" not in r.stderr, r.stderr


def test_ragged_list_column_across_batches(d, tmp_path, out):
    rows = [list(r) for r in d.p]
    for i in (3, 4, 5):
        rows[i] = rows[i][:4]
    path = _pq(tmp_path, "rag.parquet", {"pred": pa.array(rows), "target": np.zeros(B, np.int64)})
    r = invoke(path, "--batch-size", BATCH, "-o", out / "r.csv")
    check_bad(r, "rag.parquet", 3, None, out)


def _footer_flips(data):
    """Copies of a Parquet file with 8 bytes inverted at places inside its footer."""
    footer_len = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_len
    for k in range(start + 4, len(data) - 8 - 8, max(1, footer_len // 24)):
        b = bytearray(data)
        for j in range(k, k + 8):
            b[j] ^= 0xFF
        yield bytes(b)


def test_corrupt_parquet_footer_errors_are_one_line(d, tmp_path, out):
    data = d.list_parquet.read_bytes()
    path = tmp_path / "corrupt.parquet"
    for blob in _footer_flips(data):
        path.write_bytes(blob)
        r = invoke(path, "-o", out / "r.csv", "-q")
        if r.exit_code == 0:  # a flip in unused metadata: harmless
            (out / "r.csv").unlink()
            continue
        check_bad(r, "corrupt.parquet", None, None, out)


@pytest.mark.parametrize("case", ["pred-column-on-npy-pred", "target-column-on-npy-target"])
def test_column_options_on_npy_are_refused(d, out, case):
    if case == "pred-column-on-npy-pred":
        args, name = [d.p_npy, d.c_npy, "--pred-column", "zz"], "p.npy"
    else:
        args, name = [d.p_npy, d.c_npy, "--target-column", "zz"], "c.npy"
    check_bad(invoke(*args, "-o", out / "r.csv"), name, None, None, out)


def test_device_cuda_without_a_gpu_exits_2(tmp_path, monkeypatch):
    from emdcli import gpu

    if gpu.cuda_available():
        pytest.skip("a GPU (or the simulator) is available here")
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    np.save(tmp_path / "p.npy", np.full((2, 3), 1 / 3))
    np.save(tmp_path / "c.npy", np.array([0, 2]))
    r = RUNNER.invoke(app, ["compute", str(tmp_path / "p.npy"), str(tmp_path / "c.npy"),
                            "--device", "cuda"])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "device cuda is not available" in r.stderr
    r = RUNNER.invoke(app, ["compute", str(tmp_path / "p.npy"), str(tmp_path / "c.npy"),
                            "--device", "auto", "-q"])
    assert r.exit_code == 0 and r.stdout.splitlines()[1] == "0,1.0000000000000002"

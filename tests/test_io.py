"""Unit tests of the file layer: ``emdcli.io`` (sources, batching, positions) and
``emdcli.report`` (float text, writers, summaries, atomic paths)."""

import io as _io
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emdcli import io as eio
from emdcli import report
from emdcli.io import atomic, sinks
from emdcli.errors import EMDInputError

B, N = 23, 5


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    rng = np.random.default_rng(7)
    p = rng.random((B, N))
    q = rng.random((B, N))
    c = rng.integers(0, N, B)
    ids = np.array([f"r{i}" for i in range(B)])
    lists = pa.array([list(r) for r in p], type=pa.list_(pa.float64()))
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(q.ravel()), N)
    # small row groups (4 rows) so that every batch size straddles row groups
    pq.write_table(pa.table({"pred": lists, "target": c, "id": ids}), root / "list.parquet",
                   row_group_size=4)
    pq.write_table(pa.table({"scores": lists, "dist": fsl}), root / "two.parquet",
                   row_group_size=3)
    pq.write_table(pa.table({**{f"b{j}": p[:, j] for j in range(N)}, "target": c}),
                   root / "cols.parquet", row_group_size=5)
    pq.write_table(pa.table({"dist": fsl}), root / "target_fsl.parquet", row_group_size=7)
    np.save(root / "p.npy", p)
    np.save(root / "c.npy", c)
    return root, p, q, c, ids


SIZES = [1, 2, 3, 4, 5, 7, 8, 22, 23, 24, 1000]


def collect(source, size, roles):
    chunks = list(source.batches(size, roles))
    lengths = [len(ch[roles[0]]) for ch in chunks]
    for ch in chunks:
        assert set(ch) == set(roles)
        assert all(len(v) == len(ch[roles[0]]) for v in ch.values())
    assert all(n == size for n in lengths[:-1]), lengths
    assert 0 < lengths[-1] <= size
    assert sum(lengths) == source.n_rows
    return lengths, {r: np.concatenate([ch[r] for ch in chunks]) for r in roles}


# ----------------------------------------------------------------------------- Source


def test_parquet_files_really_have_many_row_groups(data):
    root = data[0]
    assert pq.ParquetFile(root / "list.parquet").metadata.num_row_groups == 6
    assert pq.ParquetFile(root / "cols.parquet").metadata.num_row_groups == 5


@pytest.mark.parametrize("size", SIZES)
def test_parquet_list_column_batches_straddle_row_groups(data, size):
    root, p, q, c, ids = data
    src = eio.open_input(str(root / "list.parquet"), "pred", id_column="id")
    assert src.n_rows == B and src.has("pred") and src.has("target") and src.has("id")
    lengths, got = collect(src, size, ["pred", "target", "id"])
    np.testing.assert_array_equal(got["pred"], p)
    np.testing.assert_array_equal(got["target"], c)
    assert list(got["id"]) == list(ids)


@pytest.mark.parametrize("size", SIZES)
def test_parquet_numeric_columns_batches(data, size):
    root, p, q, c, ids = data
    src = eio.open_input(str(root / "cols.parquet"), "pred")
    assert src.width == N and src.bin_names == [f"b{j}" for j in range(N)]
    _, got = collect(src, size, ["pred", "target"])
    assert got["pred"].dtype == np.float64 and got["pred"].shape == (B, N)
    np.testing.assert_array_equal(got["pred"], p)
    np.testing.assert_array_equal(got["target"], c)


@pytest.mark.parametrize("size", SIZES)
def test_parquet_fixed_size_list_target_source(data, size):
    root, p, q, c, ids = data
    src = eio.open_input(str(root / "target_fsl.parquet"), "target")
    assert src.width == N
    _, got = collect(src, size, ["target"])
    np.testing.assert_array_equal(got["target"], q)


@pytest.mark.parametrize("size", [1, 3, 4, 10, 1000])
def test_parquet_pred_and_target_list_columns_chosen_by_name(data, size):
    root, p, q, c, ids = data
    src = eio.open_input(str(root / "two.parquet"), "pred", column="scores", target_column="dist")
    _, got = collect(src, size, ["pred", "target"])
    np.testing.assert_array_equal(got["pred"], p)
    np.testing.assert_array_equal(got["target"], q)


def test_parquet_batches_can_be_read_twice(data):
    root, p, *_ = data
    src = eio.open_input(str(root / "list.parquet"), "pred")
    a = collect(src, 5, ["pred"])[1]["pred"]
    b = collect(src, 6, ["pred"])[1]["pred"]
    np.testing.assert_array_equal(a, p)
    np.testing.assert_array_equal(b, p)


@pytest.mark.parametrize("size", [1, 4, 6, 23, 50])
def test_npy_sources(data, size):
    root, p, q, c, ids = data
    src = eio.open_input(str(root / "p.npy"), "pred")
    assert (src.n_rows, src.width) == (B, N)
    lengths, got = collect(src, size, ["pred"])
    np.testing.assert_array_equal(got["pred"], p)
    tsrc = eio.open_input(str(root / "c.npy"), "target")
    assert (tsrc.n_rows, tsrc.width) == (B, 0)
    _, got = collect(tsrc, size, ["target"])
    np.testing.assert_array_equal(got["target"], c)


def test_null_in_a_later_row_group_has_absolute_row(tmp_path):
    rows = [[1.0, 2.0, 3.0] for _ in range(12)]
    rows[9][2] = None
    pq.write_table(pa.table({"pred": rows, "target": [0] * 12}), tmp_path / "n.parquet",
                   row_group_size=4)
    src = eio.open_input(str(tmp_path / "n.parquet"), "pred")
    with pytest.raises(EMDInputError) as e:
        list(src.batches(3, ["pred", "target"]))
    assert (e.value.row, e.value.column) == (9, 2)
    assert e.value.source == str(tmp_path / "n.parquet")


def test_ragged_row_in_a_later_row_group_has_absolute_row(tmp_path):
    rows = [[1.0, 2.0, 3.0] for _ in range(12)]
    rows[10] = [1.0, 2.0]
    pq.write_table(pa.table({"pred": rows, "target": [0] * 12}), tmp_path / "r.parquet",
                   row_group_size=4)
    src = eio.open_input(str(tmp_path / "r.parquet"), "pred")
    with pytest.raises(EMDInputError) as e:
        list(src.batches(3, ["pred", "target"]))
    assert e.value.row == 10


@pytest.mark.parametrize("pieces", [[2, 5, 1, 7], [3, 3, 3], [1] * 10, [10], [4, 0, 4]])
@pytest.mark.parametrize("size", [1, 3, 4, 100])
def test_rechunk(pieces, size):
    total = sum(pieces)
    a = np.arange(total)
    b = np.arange(total * 2).reshape(total, 2)
    chunks, start = [], 0
    for n in pieces:
        chunks.append({"a": a[start:start + n], "b": b[start:start + n]})
        start += n
    out = list(eio.parquet.rechunk(iter(chunks), size))
    lengths = [len(ch["a"]) for ch in out]
    assert all(n == size for n in lengths[:-1]) and 0 < lengths[-1] <= size
    np.testing.assert_array_equal(np.concatenate([ch["a"] for ch in out]), a)
    np.testing.assert_array_equal(np.concatenate([ch["b"] for ch in out]), b)


def test_rechunk_empty():
    assert list(eio.parquet.rechunk(iter([]), 3)) == []


def test_open_input_errors(tmp_path):
    with pytest.raises(EMDInputError) as e:
        eio.open_input(str(tmp_path / "missing.npy"), "pred")
    assert e.value.source == str(tmp_path / "missing.npy")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(EMDInputError):
        eio.open_input(str(tmp_path / "empty.parquet"), "pred")
    np.save(tmp_path / "one.npy", np.arange(3.0))
    with pytest.raises(EMDInputError):
        eio.open_input(str(tmp_path / "one.npy"), "pred")  # 1-D predictions
    assert eio.open_input(str(tmp_path / "one.npy"), "target").width == 0  # 1-D classes


# ----------------------------------------------------------------------------- read_positions


def test_read_positions_npy(tmp_path):
    x = np.array([0.0, 0.5, 2.0, 1e10])
    np.save(tmp_path / "x.npy", x)
    got = eio.read_positions(str(tmp_path / "x.npy"))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x)


def test_read_positions_npy_ints(tmp_path):
    np.save(tmp_path / "x.npy", np.array([1, 2, 5]))
    got = eio.read_positions(str(tmp_path / "x.npy"))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.0, 2.0, 5.0])


def test_read_positions_text(tmp_path):
    x = [0.0, 0.1, 0.30000000000000004, 7.25e-3 + 1, 12.0]
    (tmp_path / "x.txt").write_text("# positions\n" + "\n".join(repr(v) for v in x) + "\n\n")
    got = eio.read_positions(str(tmp_path / "x.txt"))
    assert got.dtype == np.float64
    assert list(got) == x  # exact


def test_read_positions_comma_list():
    got = eio.read_positions("0,0.5, 2,1e3,-0")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [0.0, 0.5, 2.0, 1000.0, 0.0])
    assert list(eio.read_positions("0.1,0.2")) == [0.1, 0.2]


@pytest.mark.parametrize("spec", ["a,b", "1,,2", "1;2;3", "", "missing_file.txt"])
def test_read_positions_unparsable(spec):
    with pytest.raises(EMDInputError) as e:
        eio.read_positions(spec)
    assert e.value.source == "--positions"


def test_read_positions_bad_text_file(tmp_path):
    (tmp_path / "x.txt").write_text("0\n1\nthree\n")
    with pytest.raises(EMDInputError) as e:
        eio.read_positions(str(tmp_path / "x.txt"))
    assert e.value.source == str(tmp_path / "x.txt")


def test_read_positions_bad_npy(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(EMDInputError) as e:
        eio.read_positions(str(tmp_path / "x.npy"))
    assert e.value.source == str(tmp_path / "x.npy")


# ----------------------------------------------------------------------------- format_float


def _f64_samples():
    rng = np.random.default_rng(3)
    v = np.concatenate([
        rng.random(300), rng.standard_normal(300) * 1e-300, rng.standard_normal(300) * 1e300,
        np.exp(rng.uniform(-700, 700, 300)),
        [0.0, -0.0, 0.1, 1 / 3, 2 / 3, 1e-320, 5e-324, np.finfo(np.float64).max,
         np.finfo(np.float64).tiny, 1.0, 123456789.123456789, 0.30000000000000004],
    ])
    return v


def test_format_float_round_trips_float64():
    for v in _f64_samples():
        for value in (np.float64(v), float(v)):
            s = report.format_float(value)
            assert float(s) == v and math.copysign(1, float(s)) == math.copysign(1, v), (v, s)
            assert s == repr(float(v))  # shortest round-trip text


def test_format_float_round_trips_float32():
    with np.errstate(over="ignore"):
        v32 = _f64_samples().astype(np.float32)
    v32 = v32[np.isfinite(v32)]
    for v in v32:
        s = report.format_float(v)
        assert np.float32(s) == v, (v, s)
        # float32-precise: the shortest text for a float32, not the widened float64's
        digits = s.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
        assert len(digits) <= 9, s
    assert report.format_float(np.float32(0.1)) == "0.1"
    assert report.format_float(np.float64(np.float32(0.1))) == repr(float(np.float32(0.1)))


@pytest.mark.parametrize("older_numpy_branch", [False, True])
def test_float32_text_is_the_same_on_every_numpy(monkeypatch, older_numpy_branch):
    """float32 cells are spelt as numpy >= 2.3 spells them (scientific from 1e6 on) also
    where numpy would not: the branch for older numpys gives the same text."""
    if older_numpy_branch:
        monkeypatch.setattr(report, "_FLOAT32_SCIENTIFIC_FROM_1E6", False)
    rng = np.random.default_rng(7)
    v = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0.0, -0.0, 999999.0, 1e6, 9.9e6, 2**24, 2**24 + 2, 1e16, 3.4e38, 1e-4,
                      9.99e-5, 1e-45, 0.1, 3.0], np.float32)
    v = np.concatenate([v[np.isfinite(v)], edges, -edges])
    got = report.text_cells(v, ",")
    assert got[-2 * len(edges):] == [report.format_float(x) for x in v[-2 * len(edges):]]
    assert all(np.float32(s) == x for s, x in zip(got, v))
    big = [s for s, x in zip(got, v) if abs(x) >= 1e6]
    assert big and all("e+" in s for s in big)
    assert report.format_float(np.float32(2.0576778e10)) == "2.0576778e+10"
    assert report.format_float(np.float32(999999.0)) == "999999.0"
    if np.lib.NumpyVersion(np.__version__) >= "2.3.0":  # what numpy itself writes
        assert got == v.astype(str).tolist()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, float])
def test_format_float_nonfinite(dtype):
    assert report.format_float(dtype("nan")) == "nan"
    assert report.format_float(dtype("inf")) == "inf"
    assert report.format_float(dtype("-inf")) == "-inf"


# ----------------------------------------------------------------------------- writers


def _write(fmt, batches, columns):
    buf = _io.StringIO()
    w = sinks.TextWriter(buf, fmt, columns)
    for b in batches:
        w.write(b)
    w.close()
    return buf.getvalue()


def test_text_writer_csv_tsv():
    v = np.array([0.1, 1 / 3, np.nan, np.inf, -np.inf])
    batches = [{"row": np.arange(2), "emd": v[:2]}, {"row": np.arange(2, 5), "emd": v[2:]}]
    assert _write("csv", batches, ["row", "emd"]) == (
        "row,emd\n0,0.1\n1,0.3333333333333333\n2,nan\n3,inf\n4,-inf\n")
    assert _write("tsv", batches, ["row", "emd"]).splitlines()[:2] == ["row\temd", "0\t0.1"]


def test_text_writer_jsonl_null_for_nonfinite():
    v = np.array([0.1, np.nan, np.inf, -np.inf, 1 / 3])
    text = _write("jsonl", [{"row": np.arange(5), "emd": v}], ["row", "emd"])
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["emd"] for r in rows] == [0.1, None, None, None, 1 / 3]
    assert "NaN" not in text and "Infinity" not in text  # strict JSON


def test_text_writer_jsonl_float32_and_python_values():
    v = np.array([0.1, 1 / 3, np.nan], dtype=np.float32)
    text = _write("jsonl", [{"id": np.array(["a", "b", "c"]), "emd": v}], ["id", "emd"])
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert np.float32(rows[0]["emd"]) == v[0] and np.float32(rows[1]["emd"]) == v[1]
    assert rows[0]["emd"] == 0.1  # the float32's shortest text, not 0.10000000149011612
    assert rows[2]["emd"] is None
    assert report._json_value(float("nan")) is None
    assert report._json_value(np.int64(3)) == 3 and type(report._json_value(np.int64(3))) is int


def test_text_writer_columns_equal_the_cell_by_cell_definition():
    """The writers format whole columns at once; the text must be what formatting cell by
    cell (``_cell``/``_quoted`` for CSV and TSV, ``json.dumps`` of ``_json_value`` for
    JSONL) gives, for every kind of column: float64 and float32 (awkward values, non-finite,
    signed zeros, subnormals), integers, booleans, strings needing quotes."""
    with np.errstate(over="ignore"):
        f64 = np.concatenate([_f64_samples(), [np.nan, np.inf, -np.inf]])
        f32 = f64.astype(np.float32)
    n = f64.size
    ids = np.array([f'id "{i}",\t{i}' if i % 7 == 0 else f"id{i}" for i in range(n)])
    batch = {"id": ids, "row": np.arange(n), "v64": f64, "v32": f32,
             "iters": np.arange(n, dtype=np.int64) * 3, "ok": np.arange(n) % 3 == 0,
             "u8": (np.arange(n) % 256).astype(np.uint8)}
    columns = list(batch)
    for fmt, sep in (("csv", ","), ("tsv", "\t")):
        want = sep.join(columns) + "\n" + "".join(
            sep.join(report._quoted(report.cell(batch[c][i]), sep) for c in columns) + "\n"
            for i in range(n))
        assert _write(fmt, [batch], columns) == want
    want = "".join(json.dumps({c: report._json_value(batch[c][i]) for c in columns}) + "\n"
                   for i in range(n))
    assert _write("jsonl", [batch], columns) == want
    assert _write("jsonl", [{k: v[:0] for k, v in batch.items()}], columns) == ""


def test_parquet_writer_batches_and_empty(tmp_path):
    w = sinks.ParquetWriter(str(tmp_path / "a.parquet"), ["row", "emd", "gradient"])
    g = np.arange(12.0).reshape(4, 3)
    w.write({"row": np.arange(2), "emd": np.array([0.5, 1.5]), "gradient": g[:2]})
    w.write({"row": np.arange(2, 4), "emd": np.array([2.5, 3.5]), "gradient": g[2:]})
    w.close()
    t = pq.read_table(tmp_path / "a.parquet")
    assert t.column("row").to_pylist() == [0, 1, 2, 3]
    assert t.column("emd").to_pylist() == [0.5, 1.5, 2.5, 3.5]
    assert t.column("gradient").to_pylist() == g.tolist()
    e = sinks.ParquetWriter(str(tmp_path / "e.parquet"), ["row", "emd"])
    e.close()
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


def test_npy_writer_values_and_gradients(tmp_path):
    dt = {"emd": np.dtype(np.float32), "gradient": np.dtype(np.float32)}
    w = sinks.NpyWriter(str(tmp_path / "v.npy"), ["emd"], 5, dt)
    w.write({"emd": np.arange(3, dtype=np.float32)})
    w.write({"emd": np.arange(3, 5, dtype=np.float32)})
    w.close()
    v = np.load(tmp_path / "v.npy")
    assert v.dtype == np.float32 and list(v) == [0, 1, 2, 3, 4]
    g = np.arange(10, dtype=np.float32).reshape(5, 2)
    w = sinks.NpyWriter(str(tmp_path / "g.npy"), ["gradient"], 5, dt, width=2)
    w.write({"gradient": g[:4]})
    w.write({"gradient": g[4:]})
    w.close()
    np.testing.assert_array_equal(np.load(tmp_path / "g.npy"), g)


# ----------------------------------------------------------------------------- output_format


def test_output_format():
    assert report.output_format("a.csv", None, True) == "csv"
    assert report.output_format("a.TSV", "jsonl", False) == "tsv"
    assert report.output_format("x/y.jsonl", None, False) == "jsonl"
    assert report.output_format("a.parquet", None, False) == "parquet"
    assert report.output_format("a.npy", None, False) == "npy"
    assert report.output_format(None, None, True) == "table"
    assert report.output_format(None, None, False) == "csv"
    assert report.output_format("-", "tsv", True) == "tsv"
    assert report.output_format(None, "jsonl", True) == "jsonl"
    for bad in ("a.xyz", "a", "a.json"):
        with pytest.raises(EMDInputError) as e:
            report.output_format(bad, None, False)
        assert e.value.source == "--output"


# ----------------------------------------------------------------------------- Summary


def test_summary_stats_match_numpy():
    rng = np.random.default_rng(5)
    parts = [rng.random(n) * 10 for n in (1, 7, 100, 3)]
    s = report.Summary("emd")
    for part in parts:
        s.add(part)
    v = np.concatenate(parts)
    st = s.stats()
    assert st["count"] == v.size and st["nonfinite"] == 0
    assert st["mean"] == pytest.approx(v.mean(), rel=1e-14)
    assert st["std"] == pytest.approx(v.std(), rel=1e-12)
    assert st["min"] == v.min() and st["max"] == v.max()
    assert st["p50"] == pytest.approx(np.median(v), rel=1e-15)
    assert st["p95"] == pytest.approx(np.quantile(v, 0.95), rel=1e-15)


def test_summary_ignores_nonfinite_and_copies_input():
    s = report.Summary("emd2")
    a = np.array([1.0, np.nan, 3.0])
    s.add(a)
    s.add(np.array([np.inf, 2.0], dtype=np.float32))
    a[0] = 100.0  # the summary keeps its own copy
    st = s.stats()
    assert st["count"] == 5 and st["nonfinite"] == 2
    assert st["min"] == 1.0 and st["max"] == 3.0 and st["mean"] == 2.0 and st["p50"] == 2.0


def test_summary_line_format():
    s = report.Summary("emd_rho")
    s.add(np.array([1.0, 2.0, 4.0]))
    line = s.line()
    name, _, rest = line.partition(": ")
    assert name == "emd_rho"
    fields = dict(tok.split("=") for tok in rest.split())
    assert list(fields) == ["count", "mean", "std", "min", "p50", "p95", "max"]
    assert fields["count"] == "3" and float(fields["mean"]) == 7 / 3
    assert float(fields["std"]) == np.std([1.0, 2.0, 4.0])  # full precision text
    assert fields["min"] == "1.0" and fields["max"] == "4.0"
    s.add(np.array([np.nan]))
    assert "nonfinite=1" in s.line()


def test_summary_empty():
    s = report.Summary("emd")
    assert s.stats() == {"count": 0, "nonfinite": 0}
    assert s.line() == "emd: count=0"
    s.add(np.array([np.nan]))
    assert s.line() == "emd: count=1 nonfinite=1"


# ----------------------------------------------------------------------------- AtomicPath


def test_atomic_path_commit(tmp_path):
    target = tmp_path / "out.csv"
    a = atomic.AtomicPath(str(target))
    assert os.path.dirname(a.tmp) == str(tmp_path)
    assert os.path.basename(a.tmp).startswith(".out.csv.")
    assert os.path.exists(a.tmp) and not target.exists()
    with open(a.tmp, "w") as f:
        f.write("data\n")
    a.commit()
    assert target.read_text() == "data\n"
    assert os.listdir(tmp_path) == ["out.csv"]
    a.abort()  # after a commit: harmless, the committed file stays
    assert target.read_text() == "data\n"


def test_atomic_path_abort(tmp_path):
    target = tmp_path / "out.parquet"
    a = atomic.AtomicPath(str(target))
    with open(a.tmp, "wb") as f:
        f.write(b"partial")
    a.abort()
    assert os.listdir(tmp_path) == []
    a.abort()  # twice: harmless


def test_atomic_path_keeps_existing_until_commit(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    a = atomic.AtomicPath(str(target))
    with open(a.tmp, "w") as f:
        f.write("new\n")
    assert target.read_text() == "old\n"
    a.abort()
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.csv"]
    b = atomic.AtomicPath(str(target))
    with open(b.tmp, "w") as f:
        f.write("new\n")
    b.commit()
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["out.csv"]


def test_atomic_path_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = atomic.AtomicPath("rel.npy")
    assert os.path.dirname(os.path.abspath(a.tmp)) == str(tmp_path)
    a.commit()
    assert os.listdir(tmp_path) == ["rel.npy"]


def test_read_ahead_keeps_order_one_item_ahead_and_ends_its_thread():
    """One reader thread for the whole source: items in order, never more than one
    produced beyond the one the caller holds, errors handed over, the thread gone once
    the caller stops early."""
    import threading
    import time

    from emdcli.io.readahead import read_ahead

    made = []

    def items():
        for i in range(50):
            made.append(i)
            yield i

    got = []
    for v in read_ahead(items()):
        time.sleep(0.001)
        assert len(made) <= v + 2  # the caller's item and the next one, no more
        got.append(v)
    assert got == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(read_ahead(failing()))
    before = threading.active_count()
    gen = read_ahead(items())
    assert next(gen) == 0
    gen.close()
    for _ in range(100):
        if threading.active_count() <= before:
            break
        time.sleep(0.01)
    assert threading.active_count() <= before

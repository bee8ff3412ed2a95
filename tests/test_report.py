"""``emd report``: what it names first on data whose errors are known, that its per-class
and per-group numbers are ``emd compute``'s, its JSON schema, the HTML page (parsed: its
tables, its inline plots, nothing fetched), Markdown, the accumulators (mergeable,
bounded), and bad input (exit 2, one line, nothing left behind)."""

import html.parser
import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from common import IMAGENET_BINS, IMAGENET_PRED, SAMPLE, WORDNET, cli_runner

from emdcli.cli import app

RUNNER = cli_runner()
SIGNAL = os.path.join(SAMPLE, "signal.parquet")
WORDNET_ARGS = [IMAGENET_PRED, "--tree", WORDNET, "--bins", IMAGENET_BINS,
                "--target-column", "label", "--id-column", "image"]


def invoke(*args):
    return RUNNER.invoke(app, [*map(str, args)])


def ok(*args):
    r = invoke(*args)
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


def report_json(*args):
    return json.loads(ok("report", *args, "-f", "json", "-q").stdout)


# ----------------------------------------------------------------------------- data


@pytest.fixture
def tree_case(tmp_path):
    """A tree whose error sits on one edge: bins a1 a2 b1 b2 and the internal node B;
    rows of target b1 put half their mass on B (crossing only the edge b1 ← B)."""
    tree = tmp_path / "tree.csv"
    tree.write_text("node,parent,weight,label\nroot,,0,Root\nA,root,1,Alpha\nB,root,1,Beta\n"
                    "a1,A,1,alpha one\na2,A,1,alpha two\nb1,B,1,beta one\nb2,B,1,beta two\n")
    bins = tmp_path / "bins.txt"
    bins.write_text("a1\na2\nb1\nb2\nB\n")
    rng = np.random.default_rng(1)
    c = rng.integers(0, 4, 400)
    p = np.full((400, 5), 0.025)
    p[np.arange(400), c] = 0.9
    hit = c == 2
    p[hit, 2] -= 0.5
    p[hit, 4] += 0.5
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", c)
    return tmp_path, ["--tree", tree, "--bins", bins]


@pytest.fixture
def chain_case(tmp_path):
    """A chain of 8 bins: predictions peak on the target, but for class 5 two bins higher."""
    tmp_path = tmp_path / "chain"
    tmp_path.mkdir()
    rng = np.random.default_rng(2)
    c = rng.integers(0, 8, 600)
    shift = np.where(c == 5, 2, 0)
    p = np.full((600, 8), 0.01)
    p[np.arange(600), c + shift] += 0.9
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "c.npy", c)
    return tmp_path


def _grouped_signal(tmp_path):
    t = pq.read_table(SIGNAL).slice(0, 20000)
    split = np.array(["train", "val", "test"])[np.arange(t.num_rows) * 7 % 10 % 3]
    path = tmp_path / "signal_split.parquet"
    pq.write_table(t.append_column("split", pa.array(split)), path)
    return path


# ----------------------------------------------------------------------------- what it names


def test_tree_report_names_the_edge_and_the_class_that_carry_the_error(tree_case):
    d, space = tree_case
    doc = report_json(d / "p.npy", d / "c.npy", *space)
    a = doc["all"]
    assert a["tree"]["edges"][0]["edge"] == "b1 ← B"
    assert a["tree"]["edges"][0]["share"] > 2 * a["tree"]["edges"][1]["share"]
    assert a["classes"][0]["class"] == "b1"
    assert a["tree"]["nodes"][0]["node"] == "B"  # the error stays inside B's subtree
    # the edge masses add up to the sum of the EMDs
    total = a["summary"]["emd"]["mean"] * a["count"]
    assert a["tree"]["total_mass"] == pytest.approx(total, rel=1e-12)
    assert sum(e["share"] for e in a["tree"]["edges"]) == pytest.approx(1.0)
    # readable names from a column of the tree file
    named = report_json(d / "p.npy", d / "c.npy", *space, "--node-names", "label")
    assert named["all"]["tree"]["edges"][0]["edge"] == "beta one ← Beta"
    assert named["all"]["classes"][0]["class"] == "beta one"


def test_chain_report_names_the_class_and_the_direction(chain_case):
    d = chain_case
    doc = report_json(d / "p.npy", d / "c.npy")
    a = doc["all"]
    assert a["classes"][0]["class"] == "5" and a["classes"][0]["top1"] == 0.0
    assert all(r["top1"] == 1.0 for r in a["classes"][1:])
    chain = a["chain"]
    # predicted too high for class 5: the predicted CDF lags the target's at gaps 5 and 6
    assert chain["gaps"][5]["mean_flow"] < 0 and chain["gaps"][6]["mean_flow"] < 0
    assert chain["bias"] > 0 and chain["mean_class_error"] > 0
    share5 = np.mean(np.load(d / "c.npy") == 5)
    assert chain["mean_abs_class_error"] == pytest.approx(2 * share5)
    # the same numbers on positions 0, 10, 20, …: the class error in position units
    pos = ",".join(str(10 * i) for i in range(8))
    scaled = report_json(d / "p.npy", d / "c.npy", "--positions", pos)["all"]
    assert scaled["chain"]["mean_abs_class_error"] == pytest.approx(20 * share5)
    assert scaled["classes"][0]["class"] == "50"
    assert scaled["summary"]["emd"]["mean"] == pytest.approx(10 * a["summary"]["emd"]["mean"])


# ----------------------------------------------------------------------------- as compute says


def _compute_csv(tmp_path, *args):
    out = tmp_path / "emd.csv"
    ok("compute", *args, "-o", out, "-q")
    with open(out) as f:
        header = f.readline().strip().split(",")
        rows = [line.rstrip("\n").split(",") for line in f]
    return header, rows


def test_per_class_means_are_a_groupby_of_compute(tmp_path):
    doc = report_json(*WORDNET_ARGS)
    header, rows = _compute_csv(tmp_path, *WORDNET_ARGS)
    assert header == ["image", "emd"]
    t = pq.read_table(IMAGENET_PRED, columns=["image", "label"]).to_pydict()
    label = dict(zip(t["image"], t["label"]))
    emd = np.array([float(r[1]) for r in rows])
    cls = np.array([label[r[0]] for r in rows])
    classes = {r["index"]: r for r in doc["all"]["classes"]}
    assert set(classes) == set(cls.tolist())
    for k, r in classes.items():
        assert r["count"] == int((cls == k).sum())
        assert r["mean_emd"] == pytest.approx(emd[cls == k].mean(), rel=1e-12, abs=1e-15)
    assert doc["all"]["summary"]["emd"]["mean"] == pytest.approx(emd.mean(), rel=1e-12)
    # sorted by mean EMD, the largest first; the worst row is compute's largest
    means = [r["mean_emd"] for r in doc["all"]["classes"]]
    assert means == sorted(means, reverse=True)
    assert doc["all"]["worst_rows"][0]["id"] == rows[int(np.argmax(emd))][0]
    assert doc["all"]["worst_rows"][0]["emd"] == pytest.approx(emd.max(), rel=1e-12)
    # EMD² from the flows is compute's --metric emd2
    _, rows2 = _compute_csv(tmp_path, *WORDNET_ARGS, "--metric", "emd2")
    emd2 = np.array([float(r[1]) for r in rows2])
    assert doc["all"]["summary"]["emd2"]["mean"] == pytest.approx(emd2.mean(), rel=1e-10)


def test_group_by_matches_computes_grouped_summary(tmp_path):
    path = _grouped_signal(tmp_path)
    args = [path, "--target-column", "level", "--id-column", "t", "--group-by", "split"]
    doc = report_json(*args)
    summary = tmp_path / "s.json"
    ok("compute", *args, "-o", tmp_path / "out.parquet", "--summary", summary, "-q")
    want = {g["group"]: g for g in json.loads(summary.read_text())["groups"]}
    got = {g["group"]: g for g in doc["groups"]}
    assert set(got) == set(want) == {"train", "val", "test"}
    for k, g in got.items():
        assert g["count"] == want[k]["count"]
        assert g["summary"]["emd"]["mean"] == pytest.approx(want[k]["mean"], rel=1e-12)
        assert g["summary"]["emd"]["p50"] == pytest.approx(want[k]["p50"], rel=1e-12)
    assert sum(g["count"] for g in doc["groups"]) == doc["all"]["count"] == 20000
    # class counts of the groups add up to all rows'
    counts = {}
    for g in doc["groups"]:
        for r in g["classes"]:
            counts[r["index"]] = counts.get(r["index"], 0) + r["count"]
    assert counts == {r["index"]: r["count"] for r in doc["all"]["classes"]}
    assert all(r["group"] in got for r in doc["all"]["worst_rows"])
    # and the page shows one column per group
    page = ok("report", *args, "-f", "html", "-q").stdout
    tables = _tables(page)
    by = tables["By split"]
    assert by[0] == ["", "test", "train", "val", "all"]
    assert by[1][0] == "rows" and by[1][-1] == "20,000"


def test_group_by_a_partition_key(tmp_path):
    t = pq.read_table(SIGNAL).slice(0, 3000)
    for i, split in enumerate(("a", "b")):
        folder = tmp_path / "ds" / f"split={split}"
        folder.mkdir(parents=True)
        pq.write_table(t.slice(1500 * i, 1500), folder / "part-0.parquet")
    doc = report_json(tmp_path / "ds", "--target-column", "level", "--group-by", "split")
    assert [g["group"] for g in doc["groups"]] == ["a", "b"]
    assert [g["count"] for g in doc["groups"]] == [1500, 1500]
    assert doc["all"]["worst_rows"][0]["id"] >= 0  # rows numbered across the files


# ----------------------------------------------------------------------------- schema


SECTION = {"count", "summary", "accuracy", "classes", "histogram", "worst_rows", "tree", "chain"}
STATS = {"count", "nonfinite", "mean", "std", "min", "p05", "p25", "p50", "p75", "p95", "p99",
         "max", "approximate"}


def test_json_schema_is_stable(tree_case, chain_case):
    d, space = tree_case
    doc = report_json(d / "p.npy", d / "c.npy", *space)
    assert set(doc) == {"schema", "emdcli", "inputs", "space", "options", "notes", "seconds",
                        "all", "groups"}
    assert doc["schema"] == "emdcli.report/1"
    assert set(doc["options"]) == {"top_k", "worst", "epsilon", "normalize", "dtype", "group_by"}
    a = doc["all"]
    assert set(a) == SECTION
    assert set(a["summary"]) == {"emd", "emd2", "cross_entropy"}
    assert all(set(s) == STATS for s in a["summary"].values())
    assert set(a["accuracy"]) == {"top1", "topk", "k"}
    assert set(a["classes"][0]) == {"class", "index", "count", "mean_emd", "mean_emd2",
                                    "mean_cross_entropy", "top1", "topk", "predicted"}
    assert set(a["histogram"]) == {"edges", "counts", "above"}
    assert len(a["histogram"]["edges"]) == len(a["histogram"]["counts"]) + 1
    assert sum(a["histogram"]["counts"]) + a["histogram"]["above"] == a["count"]
    assert set(a["worst_rows"][0]) == {"id", "group", "emd", "emd2", "target", "predicted",
                                       "p_target"}
    assert set(a["tree"]) == {"total_mass", "per_row", "edges", "nodes"}
    assert set(a["tree"]["edges"][0]) == {"edge", "child", "parent", "weight", "mass",
                                          "per_row", "share"}
    assert set(a["tree"]["nodes"][0]) == {"node", "bins", "inside", "inside_share", "across",
                                          "across_share", "stays_inside"}
    assert a["chain"] is None and doc["space"]["kind"] == "tree"
    c = report_json(chain_case / "p.npy", chain_case / "c.npy")["all"]
    assert c["tree"] is None
    assert set(c["chain"]) == {"gaps", "bias", "mean_class_error", "mean_abs_class_error"}
    assert set(c["chain"]["gaps"][0]) == {"from", "to", "mean_flow", "mean_abs_flow"}
    assert len(c["chain"]["gaps"]) == 7


def test_cross_entropy_and_accuracy_of_soft_targets():
    args = [os.path.join(SAMPLE, "hist_pred.npy"), os.path.join(SAMPLE, "hist_target.npy"),
            "--positions", os.path.join(SAMPLE, "hist_positions.txt"), "--top", "3"]
    doc = report_json(*args)
    p = np.load(args[0])
    q = np.load(args[1])
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    ce = -(q * np.log(np.maximum(p, 1e-12))).sum(1)
    s = doc["all"]
    assert s["summary"]["cross_entropy"]["mean"] == pytest.approx(ce.mean(), rel=1e-9)
    c = q.argmax(1)
    assert s["accuracy"]["top1"] == pytest.approx(np.mean(p.argmax(1) == c))
    ranks = (p > p[np.arange(len(c)), c][:, None]).sum(1)
    assert s["accuracy"]["k"] == 3 and s["accuracy"]["topk"] == pytest.approx(np.mean(ranks < 3))
    assert s["summary"]["emd"]["count"] == len(p)


# ----------------------------------------------------------------------------- HTML, Markdown


class _Tables(html.parser.HTMLParser):
    """caption → [[cells of the header], [cells of each row], …]; also what it saw."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.caption, self.cell = {}, None, None, None
        self.tags = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "table":
            self.current = []
        elif tag == "caption":
            self.caption = ""
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.current[-1].append(self.cell)
            self.cell = None
        elif tag == "table":
            self.tables[self.caption] = self.current
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        elif self.caption is not None and self.current is not None and not self.current:
            self.caption += data


def _tables(page):
    p = _Tables()
    p.feed(page)
    return p.tables


def test_html_page_parses_with_its_tables_and_inline_plots(tree_case, tmp_path):
    d, space = tree_case
    out = tmp_path / "r.html"
    ok("report", d / "p.npy", d / "c.npy", *space, "-o", out, "-q")
    page = out.read_text()
    parser = _Tables()
    parser.feed(page)
    assert "script" not in parser.tags and "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert page.count("<svg") >= 3  # histogram, classes, edges
    edges = parser.tables["Edges by error mass"]
    assert edges[0][0] == "edge (child ← parent)" and edges[1][0] == "b1 ← B"
    summary = parser.tables["Summary"]
    assert [r[0] for r in summary[1:]] == ["EMD", "EMD²", "cross entropy (nats)"]
    assert summary[1][1] == "400"
    classes = parser.tables["Target classes with the largest mean EMD"]
    assert classes[1][0] == "b1" and len(classes) == 5  # header + 4 classes
    worst = parser.tables["Rows with the largest EMD"]
    assert len(worst) == 16  # header + --worst 15
    assert "Internal nodes by error inside their subtree" in parser.tables


def test_wordnet_and_signal_end_to_end(tmp_path):
    out = tmp_path / "wordnet.html"
    r = ok("report", *WORDNET_ARGS, "--node-names", "synset", "-o", out)
    assert "wrote the html report of 512 rows" in r.stderr
    tables = _tables(out.read_text())
    edges = tables["Edges by error mass"]
    assert all(" ← " in row[0] for row in edges[1:]) and len(edges) == 16
    assert re.fullmatch(r"val_\d{5}", tables["Rows with the largest EMD"][1][0])
    md = ok("report", SIGNAL, "--target-column", "level", "--id-column", "t", "-f", "md",
            "-q").stdout
    assert md.startswith("# What is the model getting wrong? signal.parquet")
    assert "| class | rows | mean EMD |" in md and "## Too high or too low?" in md
    assert "<svg" not in md and "100,000 rows" in md


def test_markdown_has_the_tables_of_the_page(tree_case):
    d, space = tree_case
    md = ok("report", d / "p.npy", d / "c.npy", *space, "-f", "md", "-q").stdout
    assert "| b1 ← B |" in md
    assert "## Where the error mass goes" in md and "## Notes" in md
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in lines)


def test_format_from_the_extension_and_stdout(tree_case, tmp_path):
    d, space = tree_case
    ok("report", d / "p.npy", d / "c.npy", *space, "-o", tmp_path / "r.md", "-q")
    assert (tmp_path / "r.md").read_text().startswith("# What is the model")
    ok("report", d / "p.npy", d / "c.npy", *space, "-o", tmp_path / "r.json", "-q")
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "emdcli.report/1"
    piped = ok("report", d / "p.npy", d / "c.npy", *space, "-o", "-", "-q").stdout
    assert piped.startswith("<!DOCTYPE html>")  # not a terminal: HTML


def test_html_without_matplotlib_says_how_to_get_it(tree_case, tmp_path, monkeypatch):
    from emdcli.diagnose import figures

    d, space = tree_case
    monkeypatch.setattr(figures, "available", lambda: False)
    out = tmp_path / "o"
    out.mkdir()
    r = invoke("report", d / "p.npy", d / "c.npy", *space, "-o", out / "r.html")
    assert r.exit_code == 2 and "pip install 'emdcli[plot]'" in r.stderr
    assert os.listdir(out) == []
    ok("report", d / "p.npy", d / "c.npy", *space, "-o", out / "r.md", "-q")  # md still works


# ----------------------------------------------------------------------------- accumulators


def test_tallies_merge_into_the_one_pass_result_and_stay_bounded():
    from emdcli.api import prepare
    from emdcli.diagnose.accumulate import Summary, describe, histogram, measure, new_tally
    from emdcli.spaces import Chain

    rng = np.random.default_rng(3)
    p = rng.random((500, 6)) + 0.01
    c = rng.integers(0, 6, 500)
    space = Chain.uniform(6)
    m = measure(prepare(p, c, "l1", np.float64, True), space, np.float64)
    one = new_tally(space, 2, 5)
    one.add(m, m.col_abs[0], m.col_signed[0], np.arange(500))
    halves = []
    for lo, hi in ((0, 200), (200, 500)):
        mm = measure(prepare(p[lo:hi], c[lo:hi], "l1", np.float64, True), space, np.float64)
        t = new_tally(space, 2, 5)
        t.add(mm, mm.col_abs[0], mm.col_signed[0], np.arange(lo, hi))
        halves.append(t)
    merged = halves[0].merge(halves[1])
    for k in one.classes:
        np.testing.assert_allclose(merged.classes[k], one.classes[k], rtol=1e-12)
    np.testing.assert_allclose(merged.flow_abs, one.flow_abs, rtol=1e-12)
    assert merged.worst.ids == one.worst.ids == list(np.argsort(-m.emd, kind="stable")[:5])
    # past the exact limit the summaries keep a sketch: bounded, quantiles approximate
    s = Summary("emd")
    s.EXACT_LIMIT = 100
    v = rng.random(1000) * 3
    s.add(v)
    d = describe(s)
    assert d["approximate"] and s.parts == [] and d["p50"] == pytest.approx(np.median(v), rel=2e-3)
    counts = histogram(s, np.linspace(0, 3, 7))
    assert counts.sum() == 1000
    np.testing.assert_array_equal(counts, np.histogram(v, np.linspace(0, 3, 7))[0])


def test_ranks_break_ties_as_argmax():
    from emdcli.api import prepare
    from emdcli.diagnose.accumulate import measure
    from emdcli.spaces import Chain

    p = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    c = np.array([2, 2, 0])
    m = measure(prepare(p, c, "l1", np.float64, True), Chain.uniform(4), np.float64)
    assert m.rank.tolist() == [2, 1, 1] and m.pred.tolist() == [0, 1, 3]
    assert m.ce[2] == pytest.approx(-np.log(1e-12))  # p = 0 clipped at 1e-12
    assert m.emd.tolist() == pytest.approx([1.0, 5 / 7, 3.0])


# ----------------------------------------------------------------------------- bad input


def _bad(r, out, *words):
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emd: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for w in words:
        assert w in lines[0], lines[0]
    assert os.listdir(out) == [], os.listdir(out)  # no report, no temporary file
    return lines[0]


def test_bad_input_is_one_line_and_leaves_nothing(tree_case, tmp_path):
    d, space = tree_case
    out = tmp_path / "out"
    out.mkdir()
    p = np.load(d / "p.npy")
    p[250, 3] = np.nan
    np.save(d / "bad.npy", p)
    line = _bad(invoke("report", d / "bad.npy", d / "c.npy", *space, "--batch-size", "64",
                       "-o", out / "r.html"), out, "bad.npy")
    assert re.search(r"\brow 250\b", line) and re.search(r"\bcolumn 3\b", line)
    _bad(invoke("report", d / "p.npy", d / "c.npy", "--tree", d / "missing.csv",
                "-o", out / "r.html"), out, "missing.csv")
    _bad(invoke("report", d / "p.npy", d / "c.npy", *space, "-o", out / "r.txt"), out,
         "r.txt")
    _bad(invoke("report", d / "p.npy", d / "c.npy", *space, "-o", out / "no" / "r.html"),
         out, "does not exist")
    _bad(invoke("report", d / "p.npy", d / "c.npy", "--node-names", "x", "-o", out / "r.md"),
         out, "--node-names needs --tree")
    _bad(invoke("report", d / "p.npy", d / "c.npy", *space, "--node-names", "nope",
                "-o", out / "r.md"), out, "no column 'nope'")
    np.save(d / "c_short.npy", np.load(d / "c.npy")[:10])
    _bad(invoke("report", d / "p.npy", d / "c_short.npy", *space, "-o", out / "r.json"), out,
         "c_short.npy")
    _bad(invoke("report", d / "p.npy", d / "c.npy", *space, "-f", "md", "-o", out / "r.json"),
         out, "contradicts")


def test_bad_input_in_a_real_process(tmp_path):
    np.save(tmp_path / "p.npy", -np.ones((3, 4)))
    np.save(tmp_path / "c.npy", np.zeros(3, dtype=np.int64))
    r = subprocess.run([sys.executable, "-m", "emdcli.cli", "report", str(tmp_path / "p.npy"),
                        str(tmp_path / "c.npy"), "-o", str(tmp_path / "r.html")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("emd: error: ") and "p.npy" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "p.npy"]


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("width", [80, 120])
def test_help_fits_and_shows_examples(width):
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["report", "--help"], env={"COLUMNS": str(width)},
                           terminal_width=width)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert "Usage: emd report [OPTIONS] PRED [TARGET]" in r.stdout
    flat = " ".join(" ".join(line.replace("│", " ").split()) for line in lines)
    for opt in ("--group-by", "--top", "--worst", "--tree", "--positions", "--node-names",
                "--format", "html", "md", "json", "pip install 'emdcli[plot]'"):
        assert opt in flat, opt
    assert "Examples:" in r.stdout
    root = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}, terminal_width=100)
    assert re.search(r"\breport\b", root.stdout)


def test_worst_rows_keep_the_earlier_of_equal_rows():
    from emdcli.diagnose.accumulate import Measured, Worst

    emd = np.array([1.0, 2.0, 2.0, 0.0, 2.0, 2.0, 1.0, 2.0])
    z = np.zeros_like(emd)
    m = Measured(emd, z, z, z, z, z, z, None, None)
    w = Worst(3)
    w.add(m, list(range(8)))
    assert [r["id"] for r in w.rows()] == [1, 2, 4]



def test_a_job_whose_statistics_nobody_reads_only_counts_its_rows(tmp_path):
    """--quiet without --summary: a Count; a summary file or a dataset's _summary.json
    keep the statistics on."""
    from emdcli import report
    from emdcli.jobs import plan as plans

    assert plans.outputs(statistics=False).statistics is False
    assert plans.outputs(summary=str(tmp_path / "s.csv"), statistics=False).statistics
    assert plans.outputs(str(tmp_path / "ds") + "/", statistics=False).statistics
    c = report.new_summary("emd", "split", statistics=False)
    c.add(np.ones(5), None, np.zeros(5))
    c.merge(report.new_summary("emd", statistics=False).merge(c))
    assert c.count == 10 and c.stats() == {"count": 10} and c.line() == "emd: count=10"

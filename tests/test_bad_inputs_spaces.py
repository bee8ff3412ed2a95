"""Extreme and bad inputs to ``spaces`` and ``treefiles``.

A deep tree is good input: paths thousands of nodes deep, in every tree format, must load
and give the EMD of the equivalent chain. Everything else that is wrong (binary files,
ragged matrices, garbage and truncated tree files) must raise one :class:`EMDInputError`,
one line long, naming the file — never another exception type.
"""

import json
import random
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emdcli import EMDInputError, emd
from emdcli.spaces import Chain, Ground, Tree
from emdcli.treefiles import load_tree, parse_tree_text, read_bins


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("bad-inputs",) + key).encode()))


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


# ----------------------------------------------------------------------------- deep trees


def path_text(fmt, w):
    """A path n0 (root) — n1 — … — n_D, the edge above n_i costing w[i−1], as a file."""
    depth, w = len(w), [float(v) for v in w]
    if fmt == "csv":
        rows = [f"n{i},n{i - 1},{w[i - 1]!r}" for i in range(1, depth + 1)]
        return "node,parent,weight\nn0,,\n" + "\n".join(rows) + "\n"
    if fmt == "nwk":
        inner = "".join(f")n{i}:{w[i - 1]!r}" for i in range(depth - 1, 0, -1))
        return "(" * depth + f"n{depth}:{w[depth - 1]!r}" + inner + ")n0;\n"
    if fmt == "json":  # nested {"name", "weight", "children"}, nested depth deep
        opens = ['{"name": "n0", "children": [']
        opens += [f'{{"name": "n{i}", "weight": {w[i - 1]!r}, "children": [' for i in range(1, depth)]
        leaf = f'{{"name": "n{depth}", "weight": {w[depth - 1]!r}}}'
        return "".join(opens) + leaf + "]}" * depth
    assert fmt == "flat.json"
    return json.dumps({"n0": None, **{f"n{i}": [f"n{i - 1}", w[i - 1]] for i in range(1, depth + 1)}})


@pytest.mark.parametrize("fmt", ["csv", "nwk", "json", "flat.json"])
@pytest.mark.parametrize("depth", [3000, 5000, 20000])
def test_deep_path_tree_is_the_chain(tmp_path, fmt, depth):
    w = rng_for(fmt, depth).uniform(0.1, 2.0, depth)
    path = write(tmp_path, f"path.{fmt}", path_text(fmt, w))
    names = [f"n{i}" for i in range(depth + 1)]
    assert load_tree(path).bin_names == [names[-1]]  # by default the one leaf is the bin
    tree = load_tree(path, bins=names)  # every node a bin, root first: a chain
    assert tree.names == tuple(names) and tree.n == depth + 1
    np.testing.assert_allclose(tree.weight[1:], w)
    rng = rng_for("rows", fmt, depth)
    p, q = rng.uniform(0.0, 1.0, (2, 3, depth + 1))
    x = np.concatenate([[0.0], np.cumsum(w)])
    want = emd(p, q, positions=x)
    np.testing.assert_allclose(emd(p, q, space=tree), want, rtol=1e-9)
    np.testing.assert_allclose(emd(p, q, space=Chain.from_positions(x)), want, rtol=1e-12)
    # leaf first: the same chain mirrored
    backwards = tree.with_bins(names[::-1])
    np.testing.assert_allclose(emd(p[:, ::-1], q[:, ::-1], space=backwards), want, rtol=1e-9)


def test_deep_unit_path_equals_the_uniform_chain():
    depth = 5000
    text = "(" * depth + f"n{depth}" + "".join(f")n{i}" for i in range(depth - 1, -1, -1)) + ";"
    nodes, parents, weights = parse_tree_text(text, "path.nwk")
    tree = Tree.from_edges(nodes, parents, weights, bins=[f"n{i}" for i in range(depth + 1)])
    p, q = rng_for("unit").uniform(0.0, 1.0, (2, 4, depth + 1))
    np.testing.assert_allclose(emd(p, q, space=tree), emd(p, q), rtol=1e-9)


@pytest.mark.parametrize("fmt", ["json", "nwk"])
def test_very_deep_nesting_is_read(fmt):
    depth = 100_000
    text = path_text(fmt, np.ones(depth))
    nodes, parents, weights = parse_tree_text(text, f"deep.{fmt}")
    tree = Tree.from_edges(nodes, parents, weights)
    assert tree.n_nodes == depth + 1 and tree.bin_names == [f"n{depth}"]
    dist, hops = tree.depth()
    assert hops[-1] == depth and dist[-1] == depth


def test_deep_json_errors_are_located():
    depth = 3000
    text = '{"name": "r", "children": [' * depth + '{"name": "x"},' + "]}" * depth
    with pytest.raises(EMDInputError, match=r"not valid JSON: .*line 1, column \d+"):
        parse_tree_text(text, "deep.json")
    with pytest.raises(EMDInputError, match="appears twice"):
        parse_tree_text('{"name": "r", "children": [' * depth + '{"name": "x", "name": "y"}'
                        + "]}" * depth, "deep.json")
    # a weight or a parent nested far too deep is reported briefly, not by repr
    deep = "[" * 5000 + "]" * 5000
    for text in ('{"r": null, "a": ' + deep + "}", '{"r": null, "a": ["r", ' + deep + "]}"):
        with pytest.raises(EMDInputError) as info:
            Tree.from_edges(*parse_tree_text(text, "t.json"))
        assert len(str(info.value)) < 300


def test_deep_path_ground_matrix_is_the_chains():
    w = rng_for("ground").uniform(0.1, 2.0, 300)
    names = [f"n{i}" for i in range(301)]
    tree = Tree.from_edges(names, [""] + names[:-1], [0.0, *w], bins=names)
    x = np.concatenate([[0.0], np.cumsum(w)])
    np.testing.assert_allclose(tree.ground_matrix(), Chain.from_positions(x).ground_matrix(),
                               atol=1e-9)


# ----------------------------------------------------------------------------- binary files


def test_binary_bins_file_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "bins.txt", b"a\nb\n\x80\x81\x82\nc\n")
    with pytest.raises(EMDInputError) as info:
        read_bins(path)
    assert info.value.source == path and "line 3" in str(info.value)
    assert "not UTF-8" in str(info.value) and "\n" not in str(info.value)
    zeros = write(tmp_path, "zeros.bin", b"a\n\x00\x00\x00\n")
    with pytest.raises(EMDInputError, match="line 2 holds a NUL"):
        read_bins(zeros)
    png = write(tmp_path, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(EMDInputError, match="line 1 is not UTF-8"):
        read_bins(png)
    with pytest.raises(EMDInputError, match="cannot read bins file"):
        read_bins(str(tmp_path))  # a directory


@pytest.mark.parametrize(
    "name,good",
    [
        ("t.csv", "node,parent,weight\nr,,\na,r,1\n"),
        ("t.nwk", "((a,b)x,\nc)r;\n"),
        ("t.json", '{"r": null,\n "a": "r",\n "b": "r"}'),
        ("nested.json", '{"name": "r",\n "children": [{"name": "a"}]}'),
        ("sniffed", "((a,b)x,c)r;\n"),
    ],
)
@pytest.mark.parametrize("junk", [b"\xff\xfe", b"\xe9", b"\x00"])
def test_binary_tree_file_names_the_file_and_line(tmp_path, name, good, junk):
    lines = good.encode().split(b"\n")
    lines.insert(2, b"x" + junk + b"y")
    path = write(tmp_path, name, b"\n".join(lines))
    with pytest.raises(EMDInputError) as info:
        load_tree(path)
    message = str(info.value)
    assert info.value.source == path and message.startswith(path)
    assert "cannot read tree file: line 3" in message and "\n" not in message


def test_utf16_tree_file_is_reported_as_binary(tmp_path):
    path = write(tmp_path, "t.csv", "node,parent\nr,\na,r\n".encode("utf-16"))
    with pytest.raises(EMDInputError, match="line 1 is not UTF-8"):
        load_tree(path)


# ----------------------------------------------------------------------------- library constructors

RAGGED_GROUND = [
    [[0, 1], [1]],
    [[0, 1, 2], [1, 0], [2, 1, 0]],
    np.array([[0, 1], [1]], dtype=object),
    np.array([np.zeros(2), np.zeros(3)], dtype=object),
    [["0", "1"], ["1", "0"]],
    [[0, "x"], [1, 0]],
    [[0, 1j], [1j, 0]],
    [[0, 10**400], [10**400, 0]],
    np.array([[0, 1], [1, 0]], dtype="datetime64[D]"),
    {"a": 1},
    "0 1; 1 0",
    [[0, [1]], [1, 0]],
]


@pytest.mark.parametrize("matrix", RAGGED_GROUND, ids=range(len(RAGGED_GROUND)))
def test_ragged_or_non_numeric_ground_matrix(matrix):
    with pytest.raises(EMDInputError) as info:
        Ground.from_matrix(matrix, source="D.npy")
    assert info.value.source == "D.npy" and "\n" not in str(info.value)


def test_ragged_ground_message():
    with pytest.raises(EMDInputError, match="rectangular"):
        Ground.from_matrix([[0, 1], [1]])
    with pytest.raises(EMDInputError, match="not text"):
        Ground.from_matrix([["0", "1"], ["1", "0"]])
    with pytest.raises(EMDInputError, match="not complex"):
        Ground.from_matrix(np.zeros((2, 2), dtype=complex))
    good = Ground.from_matrix(np.array([[0, 1], [1, 0]], dtype=object))
    assert good.matrix.dtype == np.float64


BAD_POSITIONS = [[[0, 1], [2]], ["0", "1", "2"], [0, "x", 2], "0,1,2", [0, 1j, 2], None,
                 object(), [0, [1], 2], [0, 10**400], np.array(["2020-01-01"], dtype="M8[D]"),
                 [], [[0, 1, 2]], [0, 2, 1], [0, np.nan, 2]]


@pytest.mark.parametrize("positions", BAD_POSITIONS, ids=range(len(BAD_POSITIONS)))
def test_bad_positions(positions):
    with pytest.raises(EMDInputError) as info:
        Chain.from_positions(positions)
    assert info.value.source == "positions"
    p = np.full((1, 3), 1 / 3)
    if positions is not None:  # None is the default chain
        with pytest.raises(EMDInputError):
            emd(p, p, positions=positions)


BAD_EDGES = [
    (None, None, None, None, "list of node names"),
    (["r", "a"], None, None, None, "parents"),
    (["r", "a"], ["", "r"], 5, None, "parents and weights"),
    (["r", "a"], ["", "r", "r"], None, None, "3 parents"),
    ([], [], None, None, "no nodes"),
    (["r", None], ["", "r"], None, None, "None"),
    (["r", ""], ["", "r"], None, None, "empty name"),
    (["r", ["a"]], ["", "r"], None, None, "not a node name"),
    (["r", "a"], ["", {"r": 1}], None, None, "not a node name"),
    (["r", "a"], ["", "r"], [0, [1, 2]], None, "non-numeric"),
    (["r", "a"], ["", "r"], [0, True], None, "non-numeric"),
    (["r", "a"], ["", "r"], [0, 10**400], None, "non-numeric"),
    (["r", "a"], ["", "r"], [0, "1e999"], None, "finite"),
    (["r", "a"], ["", "r"], [0, -np.inf], None, "finite"),
    (["r", "a"], ["", "a"], None, None, "cycle"),
    (["r", "a", "b"], ["", "b", "a"], None, None, "cycle"),
    (["r", "a"], ["r", "r"], None, None, "no root"),
    (["r", "a"], ["", "r"], None, "a", "not one string"),
    (["r", "a"], ["", "r"], None, 5, "list of node names"),
    (["r", "a"], ["", "r"], None, [None], "not a node name"),
    (["r", "a"], ["", "r"], None, [], "no bins"),
    (["r", "a"], ["", "r"], None, ["a"] * 3, "named twice"),
]


@pytest.mark.parametrize("nodes,parents,weights,bins,needle", BAD_EDGES, ids=[c[-1] for c in BAD_EDGES])
def test_bad_edge_lists(nodes, parents, weights, bins, needle):
    with pytest.raises(EMDInputError, match=needle) as info:
        Tree.from_edges(nodes, parents, weights, bins=bins, source="t.csv")
    assert info.value.source == "t.csv" and "\n" not in str(info.value)


def test_with_bins_validates():
    tree = Tree.from_edges(["r", "a", "b"], ["", "r", "r"])
    for bins, needle in ((None, "list of node names"), ("ab", "not one string"),
                         (["a", "zz"], "not a node"), (["a", "a"], "named twice")):
        with pytest.raises(EMDInputError, match=needle):
            tree.with_bins(bins)


def test_number_names_and_missing_parents_are_accepted():
    tree = Tree.from_edges([0, 1, 2], [None, 0, np.int64(0)], [0, 1, 2])
    assert tree.names == ("0", "1", "2") and tree.bin_names == ["1", "2"]
    nan_root = Tree.from_edges(["r", "a"], [float("nan"), "r"])  # pandas' empty cell
    assert nan_root.bin_names == ["a"]
    assert Tree.from_edges(["r", "a"], ["", "r"], bins=np.array(["a"])).bin_names == ["a"]


def test_load_tree_refuses_a_string_of_bins(tmp_path):
    path = write(tmp_path, "t.nwk", "(a,b)r;")
    with pytest.raises(EMDInputError, match="not one string"):
        load_tree(path, bins="bins.txt")


# ----------------------------------------------------------------------------- malformed files

MORE_MALFORMED = [
    ("empty.nwk", "", "holds no tree"),
    ("blank.nwk", "  \n[only a comment]\n", "holds no tree"),
    ("emptyleaf.nwk", "();", "leaf has no name"),
    ("nolength.nwk", "(a:,b)r;", "no branch length"),
    ("twolengths.nwk", "(a:1:2,b)r;", "expected ',' or ')'"),
    ("line.nwk", "(a,\n b:x)r;", "line 2, column 4"),
    ("open.nwk", "((a,b)", "the end of the file"),
    ("headeronly.csv", "node,parent,weight\n", "no nodes"),
    ("blank.csv", "\n\n", "header"),
    ("selfroot.csv", "node,parent\nr,r\n", "no root"),
    ("twice.csv", "node,parent\nr,\nr,\n", "twice"),
    ("hugefield.csv", "node,parent\nr,\n\"" + "a" * 200_000 + "\",r\n", "bad CSV at line 3"),
    ("number.json", "3", "found a number"),
    ("string.json", '"r"', "found a string"),
    ("null.json", "null", "found null"),
    ("list.json", '[{"name": "r"}]', "found a list"),
    ("emptyobj.json", "{}", "names no nodes"),
    ("dupkey.json", '{"r": null, "a": "r", "a": "r"}', "'a' appears twice"),
    ("kids5.json", '{"name": "r", "children": 5}', "not a list"),
    ("kidsobj.json", '{"name": "r", "children": {"name": "a"}}', "not a list"),
    ("namenull.json", '{"name": null, "children": []}', "has the name None"),
    ("namelist.json", '{"name": ["r"]}', "has the name"),
    ("nameempty.json", '{"name": "r", "children": [{"name": ""}]}', "has the name ''"),
    ("weighttrue.json", '{"name": "r", "children": [{"name": "a", "weight": true}]}', "non-numeric"),
    ("emptykey.json", '{"r": null, "": "r"}', "empty name"),
    ("longint.json", '{"r": null, "a": ["r", 1' + "0" * 5000 + "]}", "not valid JSON"),
    ("nan.json", '{"r": null, "a": ["r", NaN]}', "finite"),
    ("trailing.json", '{"r": null}\n{"a": "r"}', "not valid JSON"),
]


@pytest.mark.parametrize("name,text,needle", MORE_MALFORMED, ids=[c[0] for c in MORE_MALFORMED])
def test_more_malformed_tree_files(tmp_path, name, text, needle):
    path = write(tmp_path, name, text)
    with pytest.raises(EMDInputError) as info:
        load_tree(path)
    message = str(info.value)
    assert info.value.source == path and message.startswith(path), message
    assert "\n" not in message and needle in message, message


# ----------------------------------------------------------------------------- fuzzing

VALID = {
    "t.csv": "node,parent,weight,note\nr,,,root\nx,r,1.5,\na,x,1,\"q,1\"\nb,x,2,\nc,r,3,\n",
    "t.tsv": "node\tparent\tweight\nr\t\t\nx\tr\t1.5\na\tx\t1\nb\tr\t2\n",
    "t.nwk": "((a:1,'b c':2)x:1.5[&note],c:3e0)r;\n",
    "nested.json": '{"name": "r", "children": [{"name": "x", "weight": 1.5, "children": '
                   '[{"name": "a"}, {"name": "b", "weight": 2}]}, {"name": "c", "weight": 3}]}',
    "flat.json": '{"r": null, "x": ["r", 1.5], "a": "x", "b": ["x", 2], "c": ["r", 3]}',
    "sniffed": "((a,b)x,c)r;",
    "sniffed2": '{"r": null, "a": "r"}',
}
PIECES = list("(),:;[]'\"{}\n\t ,.-+e0123456789abrx") + [
    "\x00", "é", "\u2028", "\r", "NaN", "1e999", "-1", "true", "null", "[[[", "]]]", '"name"',
    '"children"', "node", "parent",
]


def expect_input_error(path, bins=None):
    try:
        load_tree(path, bins=bins)
    except EMDInputError as e:
        message = str(e)
        assert e.source == path and message.startswith(path) and "\n" not in message, message


def mutate(rng, text):
    op = rng.randrange(5)
    if op == 0:
        return text[: rng.randrange(len(text) + 1)]
    if op == 1:
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice(PIECES) + text[i:]
    if op == 2:
        i = rng.randrange(len(text))
        return text[:i] + text[i + 1 :]
    if op == 3:
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(PIECES) + text[i + 1 :]
        return text
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(40)))


def test_mutated_tree_files_raise_only_input_errors(tmp_path):
    rng = random.Random(20240611)
    for _ in range(1500):
        name = rng.choice(sorted(VALID))
        data = mutate(rng, VALID[name]).encode()
        if rng.random() < 0.05:
            data = data.replace(b"\xc3\xa9", b"\xe9")  # a stray Latin-1 byte
        bins = rng.choice([None, None, ["a", "c"], ["r", "x"], ["zz"], []])
        expect_input_error(write(tmp_path, name, data), bins)


def test_every_truncation_of_every_format(tmp_path):
    for name, text in VALID.items():
        for cut in range(len(text)):
            expect_input_error(write(tmp_path, name, text[:cut]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["t.csv", "t.tsv", "t.nwk", "t.json", "t.tree", "sniffed"]),
    data=st.one_of(
        st.binary(max_size=60),
        st.lists(st.sampled_from(PIECES), max_size=40).map(lambda parts: "".join(parts).encode()),
    ),
)
def test_random_bytes_raise_only_input_errors(tmp_path, name, data):
    expect_input_error(write(tmp_path, name, data))


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=3),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "weight", "children", "r", "a", "b"]), kids, max_size=3),
    max_leaves=12,
))
def test_random_json_values_raise_only_input_errors(value):
    text = json.dumps(value)
    try:
        nodes, parents, weights = parse_tree_text(text, "t.json")
        Tree.from_edges(nodes, parents, weights, source="t.json")
    except EMDInputError as e:
        assert "\n" not in str(e)


def test_spaces_leave_the_callers_arrays_writable():
    import numpy as np

    from emdcli.spaces import Chain, Ground

    x = np.array([0.0, 1.0, 3.0])
    chain = Chain.from_positions(x)
    d = np.array([[0.0, 1.0], [1.0, 0.0]])
    ground = Ground.from_matrix(d)
    assert x.flags.writeable and d.flags.writeable
    assert not chain.positions.flags.writeable
    x[0] = -5.0  # the caller may reuse its array; the space keeps what it validated
    d[0, 1] = 7.0
    assert chain.positions[0] == 0.0 and ground.matrix[0, 1] == 1.0

"""Tree files (CSV, Newick, JSON flat map, JSON nested) → Tree, and malformed trees.

The same random tree is written in every format; the trees read back must give the same
bins, in the same order, and the same path distances. Every malformed tree must raise
:class:`EMDInputError` naming the node at fault (or the file, where no node is at fault).
"""

import csv
import io
import json
import os
import sys
import zlib

import numpy as np
import pytest

from emdcli import EMDInputError, emd
from emdcli.spaces import Tree
from emdcli.treefiles import load_tree, parse_tree_text, read_bins

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive  # noqa: E402


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("treefiles",) + key).encode()))


# ----------------------------------------------------------------------------- writers


class SmallTree:
    """A random tree as plain Python: ``children`` in order, names, weights; the node list
    ``pre`` is the depth-first pre-order, so the leaves in ``pre`` order are the default bins
    of every format."""

    def __init__(self, rng, n_nodes, weights="real", odd_names=False):
        up = [-1] + [int(rng.integers(0, i)) for i in range(1, n_nodes)]
        plain = [f"n{i}" for i in range(n_nodes)]
        odd = ["a b", "x'y", "c(1)", "d:e", "f,g", "h;i", "[j]", "k\"l", "ü ñ", "m\tn"]
        names = []
        for i in range(n_nodes):
            if odd_names and rng.uniform() < 0.5:
                names.append(f"{odd[int(rng.integers(0, len(odd)))]}{i}")
            else:
                names.append(plain[i])
        self.names = names
        self.root = names[0]
        self.parent = {names[i]: (names[up[i]] if up[i] >= 0 else None) for i in range(n_nodes)}
        if weights == "int":
            w = [float(rng.integers(0, 5)) for _ in range(n_nodes)]
        elif weights == "one":
            w = [1.0] * n_nodes
        else:
            w = [float(rng.uniform(0.05, 3.0)) for _ in range(n_nodes)]
        self.weight = {names[i]: w[i] for i in range(1, n_nodes)}
        self.children = {v: [] for v in names}
        for i in range(1, n_nodes):
            self.children[names[up[i]]].append(names[i])
        for v in names:  # children in a random order
            kids = self.children[v]
            self.children[v] = [kids[j] for j in rng.permutation(len(kids))]
        self.pre = []
        stack = [self.root]
        while stack:
            v = stack.pop()
            self.pre.append(v)
            stack.extend(reversed(self.children[v]))
        self.leaves = [v for v in self.pre if not self.children[v]]

    def w(self, v):
        return self.weight.get(v, 0.0)

    def csv(self, order=None, weight=True, extra=True):
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        header = ["node", "parent"] + (["weight"] if weight else [])
        if extra:  # extra columns, and node/parent not first
            header = ["note"] + header + ["hops"]
        out.writerow(header)
        for v in order or self.pre:
            row = {"node": v, "parent": self.parent[v] or "", "weight": repr(self.w(v)) if v != self.root else "",
                   "note": f"about {v}", "hops": 7}
            out.writerow([row[h] for h in header])
        return buf.getvalue()

    def newick(self, rng=None, unnamed_internal=False, comments=False, always_quote=False):
        def label(v):
            if always_quote or any(ch in v for ch in " ()[]':;,\t") or not v:
                return "'" + v.replace("'", "''") + "'"
            return v

        def note():
            if comments and rng is not None and rng.uniform() < 0.4:
                return "[&note=" + str(int(rng.integers(0, 99))) + "]"
            return ""

        def rec(v):
            kids = self.children[v]
            text = ""
            if kids:
                text = "(" + ",".join(note() + rec(c) for c in kids) + ")"
            if not (unnamed_internal and kids):
                text += label(v)
            text += note()
            if v != self.root:
                text += f":{note()}{self.w(v)!r}"
            return text

        return rec(self.root) + note() + ";\n"

    def json_flat(self, rng, implicit_root=False):
        data = {}
        for v in self.pre:
            p = self.parent[v]
            if p is None:
                if not implicit_root:
                    data[v] = None
                continue
            wt = self.w(v)
            data[v] = p if (wt == 1.0 and rng.uniform() < 0.5) else [p, wt]
        return json.dumps(data, ensure_ascii=False)

    def json_nested(self, rng):
        def rec(v):
            item = {"name": v}
            if v != self.root and not (self.w(v) == 1.0 and rng.uniform() < 0.5):
                item["weight"] = self.w(v)
            if self.children[v]:
                item["children"] = [rec(c) for c in self.children[v]]
            return item

        return json.dumps(rec(self.root), ensure_ascii=False, indent=1)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def dists(rng, b, n):
    a = rng.uniform(0.05, 1.0, (b, n)) ** 2
    return a / a.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- same tree, every format


@pytest.mark.parametrize("weights", ["real", "int", "one"])
@pytest.mark.parametrize("seed", range(8))
def test_every_format_gives_the_same_tree(tmp_path, seed, weights):
    rng = rng_for("formats", seed, weights)
    t = SmallTree(rng, int(rng.integers(1, 25)), weights=weights, odd_names=seed % 2 == 1)
    want_d = naive.tree_path_matrix(t.parent, t.weight, t.leaves)
    files = {
        "csv": write(tmp_path, "t.csv", t.csv()),
        "nwk": write(tmp_path, "t.nwk", t.newick(rng)),
        "newick-comments": write(tmp_path, "t2.tre", t.newick(rng, comments=True, always_quote=seed % 3 == 0)),
        "newick-unnamed": write(tmp_path, "t3.newick", t.newick(rng, unnamed_internal=True)),
        "json-flat": write(tmp_path, "t.json", t.json_flat(rng)),
        "json-nested": write(tmp_path, "t2.json", t.json_nested(rng)),
    }
    if weights == "one":
        files["csv-no-weight"] = write(tmp_path, "t2.csv", t.csv(weight=False))
    if len(t.pre) > 1:
        files["json-flat-implicit-root"] = write(tmp_path, "t3.json", t.json_flat(rng, implicit_root=True))
    p, q = dists(rng, 3, len(t.leaves)), dists(rng, 3, len(t.leaves))
    want_v = np.array([naive.hemd(p[b], q[b], t.parent, t.weight, t.leaves, 2.0) for b in range(3)])
    for kind, path in files.items():
        tree = load_tree(path)
        assert tree.bin_names == t.leaves, kind
        assert tree.source == path
        np.testing.assert_allclose(tree.ground_matrix(), want_d, rtol=1e-12, atol=1e-12, err_msg=kind)
        assert tree.n_nodes == len(t.pre), kind
        if kind != "newick-unnamed":
            assert sorted(tree.names) == sorted(t.pre), kind
            for v in range(1, tree.n_nodes):
                assert t.parent[tree.names[v]] == tree.names[tree.parent[v]], kind
                assert tree.weight[v] == t.weight[tree.names[v]], kind
        np.testing.assert_allclose(emd(p, q, space=tree, rho=2.0), want_v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_csv_with_bins_matches_newick_with_the_same_bins(tmp_path, seed):
    rng = rng_for("shuffled", seed)
    t = SmallTree(rng, 15)
    order = [t.pre[i] for i in rng.permutation(len(t.pre))]
    bins = [t.pre[i] for i in rng.permutation(len(t.pre))[:8]]  # internal nodes included
    a = load_tree(write(tmp_path, "t.csv", t.csv(order=order)), bins=bins)
    b = load_tree(write(tmp_path, "t.nwk", t.newick(rng, comments=True)), bins=bins)
    c = load_tree(write(tmp_path, "t.json", t.json_nested(rng)), bins=bins)
    assert a.bin_names == b.bin_names == c.bin_names == bins
    want = naive.tree_path_matrix(t.parent, t.weight, bins)
    for tree in (a, b, c):
        np.testing.assert_allclose(tree.ground_matrix(), want, rtol=1e-12, atol=1e-12)
    # without bins, the CSV's default bins are the leaves in *its* file order
    assert load_tree(write(tmp_path, "u.csv", t.csv(order=order))).bin_names == [
        v for v in order if not t.children[v]
    ]


# ----------------------------------------------------------------------------- Newick details


def test_newick_lengths_quotes_comments_and_unnamed_nodes():
    nodes, parents, weights = parse_tree_text(
        "(('a b':1.5,'it''s'[c]:2e-1,c)[&&NHX:x=1]:3,'[d]':0,e:[x]4)root:9;\n",
        "t.nwk",
    )
    assert nodes == ["root", "_1", "a b", "it's", "c", "[d]", "e"]
    assert parents == ["", "root", "_1", "_1", "_1", "root", "root"]
    assert [float(w) for w in weights[1:]] == [3.0, 1.5, 0.2, 1.0, 0.0, 4.0]
    tree = Tree.from_edges(nodes, parents, weights)
    assert tree.bin_names == ["a b", "it's", "c", "[d]", "e"]


@pytest.mark.parametrize("name", ["t.nwk", "t.tre", "t.newick"])
def test_newick_file_may_start_with_a_comment(name):
    nodes, parents, _ = parse_tree_text("[&R] (a:1,b:2)r;", name)
    assert nodes == ["r", "a", "b"]


def test_newick_unnamed_internal_nodes_are_named_by_position():
    nodes, parents, _ = parse_tree_text("((a,b),(c,(d,e)));", "t.nwk")
    assert nodes == ["_0", "_1", "a", "b", "_4", "c", "_6", "d", "e"]
    assert parents == ["", "_0", "_1", "_1", "_0", "_4", "_4", "_6", "_6"]


@pytest.mark.parametrize("name", ["t.txt", "t", "t.dat"])
def test_format_is_sniffed_from_the_content(name):
    assert parse_tree_text("(a:2,b)r;", name)[0] == ["r", "a", "b"]
    assert parse_tree_text(' {"a": "r", "b": ["r", 2]}', name)[0] == ["r", "a", "b"]
    assert parse_tree_text("node,parent\nr,\na,r\n", name)[0] == ["r", "a"]


def test_json_flat_implicit_root_comes_before_its_children():
    nodes, parents, weights = parse_tree_text('{"a": "r", "b": ["r", 2.5], "c": ["a"]}', "t.json")
    assert nodes == ["r", "a", "b", "c"]
    assert parents == ["", "r", "r", "a"]
    tree = Tree.from_edges(nodes, parents, weights)
    assert tree.bin_names == ["b", "c"]
    np.testing.assert_allclose(tree.ground_matrix(), [[0, 4.5], [4.5, 0]])


def test_csv_details(tmp_path):
    # BOM, spaces around values, extra columns, empty weight → 1, a chosen weight column
    text = "\ufeffnode,parent,weight,hops\nr, ,,0\n a ,r,2,5\nb, r ,,3\n"
    tree = load_tree(write(tmp_path, "t.csv", text))
    assert tree.bin_names == ["a", "b"]
    np.testing.assert_allclose(tree.ground_matrix(), [[0, 3], [3, 0]])
    hops = load_tree(write(tmp_path, "t.csv", text), weight_column="hops")
    np.testing.assert_allclose(hops.ground_matrix(), [[0, 8], [8, 0]])
    with pytest.raises(EMDInputError, match="no weight column 'depth'"):
        load_tree(write(tmp_path, "t.csv", text), weight_column="depth")
    tsv = load_tree(write(tmp_path, "t.tsv", "node\tparent\tweight\nr\t\t\na\tr\t4\nb\tr\t1\n"))
    np.testing.assert_allclose(tsv.ground_matrix(), [[0, 5], [5, 0]])
    quoted = load_tree(write(tmp_path, "q.csv", 'node,parent,weight\nr,,\n"a,1",r,2\n"b ""x""",r,1\n'))
    assert quoted.bin_names == ["a,1", 'b "x"']


def test_read_bins(tmp_path):
    path = write(tmp_path, "bins.txt", "# a comment\n\n b \na\n  # another\nc\n")
    assert read_bins(path) == ["b", "a", "c"]
    with pytest.raises(EMDInputError, match="names no nodes"):
        read_bins(write(tmp_path, "empty.txt", "# nothing\n\n"))
    with pytest.raises(EMDInputError, match="cannot read bins file"):
        read_bins(str(tmp_path / "missing.txt"))
    binary = tmp_path / "bins.bin"
    binary.write_bytes(b"a\n\xff\xfe\n")
    with pytest.raises(EMDInputError, match="cannot read bins file: line 2 is not UTF-8"):
        read_bins(str(binary))


def test_unreadable_tree_files(tmp_path):
    with pytest.raises(EMDInputError, match="no such tree file"):
        load_tree(str(tmp_path / "missing.csv"))
    with pytest.raises(EMDInputError, match="cannot read tree file"):
        load_tree(str(tmp_path))  # a directory
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"node,parent\nr,\n\xe9,r\n")
    with pytest.raises(EMDInputError, match="cannot read tree file: line 3 is not UTF-8"):
        load_tree(str(bad))


def test_sample_tree_and_bins():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sample_data")
    tree = load_tree(os.path.join(here, "imagenet_wordnet_tree.csv"))
    assert (tree.n_nodes, tree.n) == (1371, 1000)
    bins = read_bins(os.path.join(here, "imagenet_bins.txt"))
    assert len(bins) == 1000 and sorted(bins) == sorted(tree.bin_names)
    assert load_tree(os.path.join(here, "imagenet_wordnet_tree.csv"), bins=bins).bin_names == bins


# ----------------------------------------------------------------------------- malformed trees

# (file name, text, bins or None, substrings the message must contain)
MALFORMED = [
    ("dup.csv", "node,parent,weight\nr,,\na,r,1\nb,r,1\na,r,2\n", None, ["'a'", "twice"]),
    ("dup.json", '{"name": "r", "children": [{"name": "a"}, {"name": "a"}]}', None, ["'a'", "twice"]),
    ("dup.nwk", "((a,b)x,a)r;", None, ["'a'", "twice"]),
    ("roots.csv", "node,parent,weight\nr,,\ns,,\na,r,1\n", None, ["'r'", "'s'", "2 roots"]),
    ("roots.json", '{"r": null, "s": null, "a": "r"}', None, ["'r'", "'s'", "2 roots"]),
    ("roots-implicit.json", '{"a": "r", "b": "s"}', None, ["'r'", "'s'", "2 roots"]),
    ("noroot.csv", "node,parent,weight\nr,a,\na,r,1\n", None, ["no root"]),
    ("noroot.json", '{"r": "a", "a": "r"}', None, ["no root"]),
    ("unknown.csv", "node,parent,weight\nr,,\na,r,1\nb,zz,1\n", None, ["'b'", "'zz'", "unknown parent"]),
    ("cycle.csv", "node,parent,weight\nr,,\nb,c,1\nc,b,1\na,r,1\n", None, ["'b'", "cycle"]),
    ("selfloop.csv", "node,parent,weight\nr,,\na,a,1\n", None, ["'a'", "cycle"]),
    ("cycle.json", '{"r": null, "b": "c", "c": "b"}', None, ["'b'", "cycle"]),
    ("neg.csv", "node,parent,weight\nr,,\na,r,-1\nb,r,1\n", None, ["'a'", "-1"]),
    ("neg.nwk", "(a:-0.5,b:1)r;", None, ["'a'", "-0.5"]),
    ("neg.json", '{"name": "r", "children": [{"name": "a", "weight": -2}, {"name": "b"}]}', None, ["'a'", "-2"]),
    ("neg-flat.json", '{"r": null, "a": ["r", -3], "b": "r"}', None, ["'a'", "-3"]),
    ("nan.csv", "node,parent,weight\nr,,\na,r,nan\nb,r,1\n", None, ["'a'", "nan"]),
    ("inf.csv", "node,parent,weight\nr,,\na,r,inf\nb,r,1\n", None, ["'a'", "inf"]),
    ("text.csv", "node,parent,weight\nr,,\na,r,heavy\nb,r,1\n", None, ["'a'", "non-numeric", "'heavy'"]),
    ("text.nwk", "(a:heavy,b:1)r;", None, ["'a'", "non-numeric", "'heavy'"]),
    ("text.json", '{"name": "r", "children": [{"name": "a", "weight": "heavy"}, {"name": "b"}]}', None,
     ["'a'", "non-numeric", "'heavy'"]),
    ("null.json", '{"name": "r", "children": [{"name": "a", "weight": null}, {"name": "b"}]}', None,
     ["'a'", "non-numeric"]),
    ("text-flat.json", '{"r": null, "a": ["r", "heavy"]}', None, ["'a'", "non-numeric"]),
    ("bin-missing.csv", "node,parent,weight\nr,,\na,r,1\nb,r,1\n", ["a", "zz"], ["'zz'", "not a node"]),
    ("bin-twice.csv", "node,parent,weight\nr,,\na,r,1\nb,r,1\n", ["a", "b", "a"], ["'a'", "named twice"]),
    ("bin-twice.nwk", "(a,b)r;", ["r", "b", "r"], ["'r'", "named twice"]),
    ("header.csv", "name,parent,weight\nr,,\na,r,1\n", None, ["node", "header"]),
    ("header2.csv", "node,up,weight\nr,,\na,r,1\n", None, ["parent", "header"]),
    ("headerless.csv", "r,,\na,r,1\n", None, ["node", "header"]),
    ("empty.csv", "", None, ["header"]),
    ("bad.json", '{"r": null, "a": "r",}', None, ["not valid JSON"]),
    ("bad2.json", '{"name": "r", "children": [{"name": "a"}', None, ["not valid JSON"]),
    ("list.json", '["r", "a"]', None, ["JSON object"]),
    ("noname.json", '{"name": "r", "children": [{"weight": 1}]}', None, ['"name"']),
    ("open.nwk", "((a,b),c;", None, ["Newick"]),
    ("open2.nwk", "((a,b),c", None, ["Newick"]),
    ("close.nwk", "(a,b),c);", None, ["Newick"]),
    ("close2.nwk", "(a,b));", None, ["Newick"]),
    ("nosemi.nwk", "(a,b)r", None, ["Newick", "';'"]),
    ("two.nwk", "(a,b)r;(c,d)s;", None, ["Newick", "';'"]),
    ("quote.nwk", "('a,b)r;", None, ["quote"]),
    ("comment.nwk", "(a,b[x)r;", None, ["comment"]),
    ("noleafname.nwk", "(,b)r;", None, ["leaf has no name"]),
]


@pytest.mark.parametrize("name,text,bins,needles", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_trees_are_input_errors_naming_the_node(tmp_path, name, text, bins, needles):
    path = write(tmp_path, name, text)
    with pytest.raises(EMDInputError) as info:
        load_tree(path, bins=bins)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.source == path
    assert message.startswith(path)
    for needle in needles:
        assert needle in message, message


def test_csv_errors_give_the_row():
    with pytest.raises(EMDInputError) as info:
        Tree.from_edges(*parse_tree_text("node,parent,weight\nr,,\na,r,1\nb,r,x\n", "t.csv"))
    assert info.value.row == 2
    with pytest.raises(EMDInputError) as info:
        Tree.from_edges(*parse_tree_text("node,parent,weight\nr,,\na,r,1\na,r,1\n", "t.csv"))
    assert info.value.row == 2


def test_distinct_names_differing_in_spacing_are_not_duplicates():
    # JSON keys are taken verbatim, so "a" and "a " are two nodes
    nodes, parents, weights = parse_tree_text('{"r": null, "a": "r", "a ": "r"}', "t.json")
    assert Tree.from_edges(nodes, parents, weights).n == 2


def test_cycle_error_names_a_node_on_the_cycle():
    with pytest.raises(EMDInputError) as info:
        Tree.from_edges(["r", "d", "b", "c"], ["", "b", "c", "b"])
    assert "'b'" in str(info.value) or "'c'" in str(info.value)


@pytest.mark.parametrize("value", ["[]", '{"x": 1}'])
def test_json_flat_map_with_bad_value_is_an_input_error(value):
    with pytest.raises(EMDInputError):
        parse_tree_text('{"r": null, "a": ' + value + "}", "t.json")


def test_unnamed_internal_name_does_not_collide_with_a_real_node():
    nodes, parents, weights = parse_tree_text("((a,b),_1);", "t.nwk")
    tree = Tree.from_edges(nodes, parents, weights)
    assert tree.n == 3 and "_1" in tree.bin_names

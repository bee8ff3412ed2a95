"""Tree files → :class:`emdcli.spaces.Tree`.

- CSV edge list with a header ``node,parent[,weight]`` (extra columns ignored; the root has
  an empty parent; weight defaults to 1, or is read from ``weight_column``).
- Newick with branch lengths, e.g. ``((a:1,b:2)x:1,c:3)root;`` (a missing length is 1;
  an unnamed internal node is named ``_k``, k its 0-based position in the file).
- JSON, either a flat map ``{"child": "parent", …}`` (the root maps to null; a value may
  also be ``["parent", weight]``) or nested ``{"name": …, "weight": …, "children": [...]}``.

Bins default to the leaves in the order they first appear in the file.
"""

import csv
import json
import os

from .errors import EMDInputError
from .spaces import Tree

NEWICK_EXT = (".nwk", ".newick", ".tre", ".tree", ".nw")


def load_tree(path, *, bins=None, weight_column=None):
    """Read a CSV, Newick or JSON tree file; ``bins`` optionally names the bin nodes;
    ``weight_column`` (CSV only) the column of edge weights (default ``weight``)."""
    name = str(path)
    try:
        with open(name, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise EMDInputError("no such tree file", source=name) from None
    except (OSError, UnicodeDecodeError) as e:
        raise EMDInputError(f"cannot read tree file: {e}", source=name) from None
    nodes, parents, weights = parse_tree_text(text, name, weight_column)
    return Tree.from_edges(nodes, parents, weights, bins=bins, source=name)


def parse_tree_text(text, name="<tree>", weight_column=None):
    """(nodes, parents, weights) in file order, from the text of any supported format:
    by extension (.json, .nwk/.newick/.tre/.tree/.nw, .csv/.tsv), else by the first
    character (``{`` JSON, ``(`` or ``[`` Newick, else CSV)."""
    ext = os.path.splitext(name)[1].lower()
    head = text.lstrip()[:1]
    if ext == ".json" or (ext not in NEWICK_EXT + (".csv", ".tsv") and head == "{"):
        kind = "json"
    elif ext in NEWICK_EXT or (ext not in (".csv", ".tsv") and head in ("(", "[")):
        kind = "newick"
    else:
        kind = "csv"
    if weight_column and kind != "csv":
        raise EMDInputError(
            "a weight column applies only to CSV trees", source=name,
            hint="Newick and JSON trees carry their own branch lengths",
        )
    if kind == "json":
        return _parse_json(text, name)
    if kind == "newick":
        return _parse_newick(text, name)
    return _parse_csv(text, name, weight_column or "weight", "\t" if ext == ".tsv" else ",")


def _parse_csv(text, name, weight_column, delimiter):
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    fields = reader.fieldnames or []
    missing = [c for c in ("node", "parent") if c not in fields]
    if missing:
        raise EMDInputError(
            f"the header has no {' or '.join(missing)} column (it has: {', '.join(fields)})",
            source=name, hint="a tree CSV starts with a header line node,parent[,weight]",
        )
    if weight_column != "weight" and weight_column not in fields:
        raise EMDInputError(f"no weight column {weight_column!r} in the header", source=name)
    nodes, parents, weights = [], [], []
    for i, row in enumerate(reader):
        node = (row["node"] or "").strip()
        if not node:
            raise EMDInputError("empty node name", source=name, row=i)
        nodes.append(node)
        parents.append((row["parent"] or "").strip())
        w = (row.get(weight_column) or "").strip() if weight_column in fields else ""
        weights.append(w if w else 1.0)
    return nodes, parents, weights


def _parse_json(text, name):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise EMDInputError(f"not valid JSON: {e}", source=name) from None
    nodes, parents, weights = [], [], []
    if isinstance(data, dict) and ("children" in data or "name" in data):
        stack = [(data, "")]
        while stack:
            item, parent = stack.pop()
            if not isinstance(item, dict) or "name" not in item:
                raise EMDInputError(
                    "every nested node needs a \"name\"", source=name,
                    hint='use {"name": ..., "weight": ..., "children": [...]}',
                )
            nodes.append(str(item["name"]))
            parents.append(parent)
            weights.append(item.get("weight", 1.0))
            stack.extend((c, str(item["name"])) for c in reversed(item.get("children", [])))
        return nodes, parents, weights
    if not isinstance(data, dict):
        raise EMDInputError(
            "expected a JSON object", source=name,
            hint='use {"child": "parent", ...} or {"name": ..., "children": [...]}',
        )
    children = set(data)
    for child, value in data.items():
        if isinstance(value, list) and 1 <= len(value) <= 2:
            parent, weight = (value + [1.0])[:2]
        else:
            parent, weight = value, 1.0
        if not (parent is None or isinstance(parent, str)):
            raise EMDInputError(
                f"node {child!r} has parent {json.dumps(value)}", source=name,
                hint='a flat map gives each node "parent", ["parent", weight] or null',
            )
        if parent is not None and parent not in children:
            # a parent named only as a value is the root; add it once, before its children
            nodes.append(str(parent))
            parents.append("")
            weights.append(0.0)
            children.add(parent)
        nodes.append(str(child))
        parents.append("" if parent is None else str(parent))
        weights.append(weight)
    return nodes, parents, weights


def _parse_newick(text, name):
    """A small recursive-descent Newick reader (quoted names and [comments] allowed)."""
    tokens = _newick_tokens(text, name)
    nodes, parents, weights = [], [], []
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def subtree(parent):
        index = len(nodes)
        nodes.append(None)
        parents.append(parent)
        weights.append(1.0)
        kids = []
        if peek() == "(":
            take()
            while True:
                kids.append(len(nodes))
                subtree(index)
                tok = take()
                if tok == ")":
                    break
                if tok != ",":
                    found = tok[1] if isinstance(tok, tuple) else tok
                    raise EMDInputError(
                        f"expected ',' or ')' in Newick, found {found!r}", source=name
                    )
        label = ""
        if isinstance(peek(), tuple):
            label = take()[1]
        if peek() == ":":
            take()
            length = take()
            length = length[1] if isinstance(length, tuple) else length
            try:
                weights[index] = float(length)
            except (TypeError, ValueError):
                raise EMDInputError(
                    f"node {label or '(unnamed)'!r} has a non-numeric branch length {length!r}",
                    source=name,
                ) from None
        if not label:
            if not kids:
                raise EMDInputError("a leaf has no name in the Newick tree", source=name)
            label = index  # named after parsing, clear of the real names
        nodes[index] = label

    subtree(None)
    if take() != ";" or pos != len(tokens):
        raise EMDInputError("the Newick tree must end with a single ';'", source=name)
    taken = {v for v in nodes if not isinstance(v, int)}
    names = []
    for v in nodes:  # an unnamed node holds its position: name it _k, clear of real names
        if isinstance(v, int):
            label = f"_{v}"
            while label in taken:
                label = "_" + label
            taken.add(label)
            v = label
        names.append(v)
    return names, ["" if p is None else names[p] for p in parents], weights


def _newick_tokens(text, name):
    tokens, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "[":
            end = text.find("]", i)
            if end < 0:
                raise EMDInputError("unclosed [comment] in Newick", source=name)
            i = end + 1
        elif ch in "(),:;":
            tokens.append(ch)
            i += 1
        elif ch == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise EMDInputError("unclosed quote in Newick", source=name)
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            tokens.append(("name", "".join(buf)))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in "(),:;[" and not text[j].isspace():
                j += 1
            tokens.append(("name", text[i:j]))
            i = j
    return tokens


def read_bins(path):
    """``--bins FILE``: one node name per line (blank lines and ``#`` comments skipped)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            names = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as e:
        raise EMDInputError(f"cannot read bins file: {e.strerror}", source=str(path)) from None
    if not names:
        raise EMDInputError("the bins file names no nodes", source=str(path))
    return names

"""Tree files → :class:`emdcli.spaces.Tree`.

- CSV edge list with a header ``node,parent[,weight]`` (extra columns ignored; the root has
  an empty parent; weight defaults to 1, or is read from ``weight_column``).
- Newick with branch lengths, e.g. ``((a:1,b:2)x:1,c:3)root;`` (a missing length is 1;
  an unnamed internal node is named ``_k``, k its 0-based position in the file).
- JSON, either a flat map ``{"child": "parent", …}`` (the root maps to null; a value may
  also be ``["parent", weight]``) or nested ``{"name": …, "weight": …, "children": [...]}``.

Bins default to the leaves in the order they first appear in the file. Every reader is
iterative, so a tree of any depth is read; every bad file raises one :class:`EMDInputError`.
"""

import csv
import io
import json
import os
import re
from json.decoder import scanstring
from json.scanner import NUMBER_RE

from .errors import EMDInputError
from .spaces import Tree, _brief

NEWICK_EXT = (".nwk", ".newick", ".tre", ".tree", ".nw")


def load_tree(path, *, bins=None, weight_column=None):
    """Read a CSV, Newick or JSON tree file; ``bins`` optionally names the bin nodes;
    ``weight_column`` (CSV only) the column of edge weights (default ``weight``)."""
    name = str(path)
    if isinstance(bins, (str, bytes)):
        raise EMDInputError(
            "bins must be a list of node names, not one string", source=name,
            hint="read a bins file with emdcli.treefiles.read_bins",
        )
    text = _read_text(name, "tree")
    nodes, parents, weights = parse_tree_text(text, name, weight_column)
    return Tree.from_edges(nodes, parents, weights, bins=bins, source=name)


def _read_text(name, what):
    """The file's text (UTF-8, optional BOM); a missing, unreadable or binary file is an
    :class:`EMDInputError` naming the file (and the line of the first bad byte)."""
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        message = "no such tree file" if what == "tree" else f"cannot read {what} file: no such file"
        raise EMDInputError(message, source=name) from None
    except OSError as e:
        raise EMDInputError(f"cannot read {what} file: {e.strerror or e}", source=name) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise EMDInputError(
            f"cannot read {what} file: line {line} is not UTF-8 text "
            f"(byte 0x{data[e.start]:02x}); is it a binary file?", source=name,
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise EMDInputError(
            f"cannot read {what} file: line {text.count(chr(10), 0, nul) + 1} holds a NUL "
            "byte; is it a binary file?", source=name,
        )
    return text


def _where(text, offset):
    """``line L, column C`` (1-based) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - text.rfind(chr(10), 0, offset)}"


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


# ----------------------------------------------------------------------------- CSV


def _parse_csv(text, name, weight_column, delimiter):
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    nodes, parents, weights = [], [], []
    try:
        fields = reader.fieldnames or []
        missing = [c for c in ("node", "parent") if c not in fields]
        if missing:
            found = ", ".join(_brief(f) for f in fields) if fields else "nothing"
            raise EMDInputError(
                f"the header has no {' or '.join(missing)} column (it has: {found})",
                source=name, hint="a tree CSV starts with a header line node,parent[,weight]",
            )
        if weight_column != "weight" and weight_column not in fields:
            raise EMDInputError(f"no weight column {weight_column!r} in the header", source=name)
        for i, row in enumerate(reader):
            node = (row["node"] or "").strip()
            if not node:
                raise EMDInputError("empty node name", source=name, row=i)
            nodes.append(node)
            parents.append((row["parent"] or "").strip())
            w = (row.get(weight_column) or "").strip() if weight_column in fields else ""
            weights.append(w if w else 1.0)
    except csv.Error as e:
        raise EMDInputError(f"bad CSV at line {reader.reader.line_num}: {e}", source=name) from None
    if not nodes:
        raise EMDInputError("the tree file has a header but no nodes", source=name)
    return nodes, parents, weights


# ----------------------------------------------------------------------------- JSON


def _parse_json(text, name):
    data = _json_loads(text, name)
    nodes, parents, weights = [], [], []
    if isinstance(data, dict) and ("children" in data or "name" in data):
        stack = [(data, "")]
        while stack:
            item, parent = stack.pop()
            if not isinstance(item, dict) or "name" not in item:
                raise EMDInputError(
                    f"every nested node needs a \"name\" (node {len(nodes)} has none)",
                    source=name, hint='use {"name": ..., "weight": ..., "children": [...]}',
                )
            label = item["name"]
            if isinstance(label, bool) or not isinstance(label, (str, int, float)) or label == "":
                raise EMDInputError(
                    f"node {len(nodes)} has the name {_brief(label)}", source=name,
                    hint="a node's name is a non-empty string",
                )
            label = str(label)
            kids = item.get("children")
            if kids is None:
                kids = []
            if not isinstance(kids, list):
                raise EMDInputError(
                    f"node {label!r} has \"children\": {_brief(kids)}, not a list", source=name
                )
            nodes.append(label)
            parents.append(parent)
            weights.append(item.get("weight", 1.0))
            stack.extend((c, label) for c in reversed(kids))
        return nodes, parents, weights
    if not isinstance(data, dict):
        raise EMDInputError(
            f"expected a JSON object, found {_json_kind(data)}", source=name,
            hint='use {"child": "parent", ...} or {"name": ..., "children": [...]}',
        )
    if not data:
        raise EMDInputError("the JSON object names no nodes", source=name)
    children = set(data)
    for child, value in data.items():
        if isinstance(value, list) and 1 <= len(value) <= 2:
            parent, weight = (value + [1.0])[:2]
        else:
            parent, weight = value, 1.0
        if not (parent is None or isinstance(parent, str)):
            raise EMDInputError(
                f"node {child!r} has parent {_brief(value)}", source=name,
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


def _json_kind(value):
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    return "null" if value is None else kinds.get(type(value), "a number")


def _json_loads(text, name):
    """json.loads, refusing duplicate keys; nesting too deep for the C scanner is read by
    :func:`_json_iterative` instead."""

    def pairs(items):
        out = dict(items)
        if len(out) != len(items):
            seen = set()
            dup = next(k for k, _ in items if k in seen or seen.add(k))
            raise EMDInputError(f"key {dup!r} appears twice in one JSON object", source=name)
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except EMDInputError:
        raise
    except json.JSONDecodeError as e:
        raise EMDInputError(f"not valid JSON: {e}", source=name) from None
    except RecursionError:
        return _json_iterative(text, name, pairs)
    except ValueError as e:  # e.g. an integer longer than Python converts
        raise EMDInputError(f"not valid JSON: {e}", source=name) from None


_WS = re.compile(r"[ \t\n\r]*")
_LITERALS = (("null", None), ("true", True), ("false", False), ("NaN", float("nan")),
             ("Infinity", float("inf")), ("-Infinity", float("-inf")))


def _json_iterative(s, name, pairs):
    """JSON text → value like json.loads, with an explicit stack (no recursion limit)."""

    def fail(msg, i):
        raise EMDInputError(f"not valid JSON: {msg}: {_where(s, i)}", source=name)

    def key_at(i):
        if s[i : i + 1] != '"':
            fail("expecting property name enclosed in double quotes", i)
        try:
            key, i = scanstring(s, i + 1)
        except json.JSONDecodeError as e:
            fail(e.msg, e.pos)
        i = _WS.match(s, i).end()
        if s[i : i + 1] != ":":
            fail("expecting ':' delimiter", i)
        return key, _WS.match(s, i + 1).end()

    stack = []  # open containers: ["[", items] or ["{", (key, value) pairs, pending key]
    i = _WS.match(s, 0).end()
    while True:
        ch = s[i : i + 1]
        if ch == "{":
            i = _WS.match(s, i + 1).end()
            if s[i : i + 1] != "}":
                key, i = key_at(i)
                stack.append(["{", [], key])
                continue
            value, i = pairs([]), i + 1
        elif ch == "[":
            i = _WS.match(s, i + 1).end()
            if s[i : i + 1] != "]":
                stack.append(["[", []])
                continue
            value, i = [], i + 1
        elif ch == '"':
            try:
                value, i = scanstring(s, i + 1)
            except json.JSONDecodeError as e:
                fail(e.msg, e.pos)
        else:
            value, i = _json_scalar(s, i, fail)
        while True:  # a value is complete: file it, closing every container it completes
            i = _WS.match(s, i).end()
            if not stack:
                if i != len(s):
                    fail("extra data", i)
                return value
            top, sep = stack[-1], s[i : i + 1]
            if top[0] == "[":
                top[1].append(value)
                close = "]"
            else:
                top[1].append((top[2], value))
                close = "}"
            if sep == ",":
                i = _WS.match(s, i + 1).end()
                if top[0] == "{":
                    top[2], i = key_at(i)
                break
            if sep != close:
                fail(f"expecting ',' or '{close}'", i)
            stack.pop()
            value, i = (top[1] if close == "]" else pairs(top[1])), i + 1


def _json_scalar(s, i, fail):
    """A JSON number or literal at ``s[i:]``: (value, end)."""
    m = NUMBER_RE.match(s, i)
    if m:
        whole, frac, exp = m.groups()
        try:
            value = float(whole + (frac or "") + (exp or "")) if frac or exp else int(whole)
        except ValueError as e:
            fail(str(e), i)
        return value, m.end()
    for word, value in _LITERALS:
        if s.startswith(word, i):
            return value, i + len(word)
    fail("expecting value", i)


# ----------------------------------------------------------------------------- Newick


def _parse_newick(text, name):
    """An iterative Newick reader (quoted names and [comments] allowed, any depth)."""
    tokens = _newick_tokens(text, name)
    if not tokens:
        raise EMDInputError("the Newick file holds no tree", source=name)
    nodes, parents, weights, open_ = [], [], [], []
    pos = 0

    def fail(msg, at=None):
        if at is None:
            at = tokens[pos][2] if pos < len(tokens) else len(text)
        raise EMDInputError(f"{msg} in Newick at {_where(text, at)}", source=name)

    def new_node():
        nodes.append(None)
        parents.append(open_[-1] if open_ else None)
        weights.append(1.0)
        return len(nodes) - 1

    def finish(index, leaf):  # the label and ":length" after a leaf or a ')'
        nonlocal pos
        label = ""
        if pos < len(tokens) and tokens[pos][0] == "name":
            label = tokens[pos][1]
            pos += 1
        if pos < len(tokens) and tokens[pos][0] == ":":
            pos += 1
            if pos >= len(tokens) or tokens[pos][0] != "name":
                fail(f"node {label or '(unnamed)'!r} has ':' but no branch length")
            length = tokens[pos][1]
            try:
                weights[index] = float(length)
            except ValueError:
                fail(f"node {label or '(unnamed)'!r} has a non-numeric branch length {length!r}")
            pos += 1
        if not label:
            if leaf:
                fail("a leaf has no name")
            label = index  # named after parsing, clear of the real names
        nodes[index] = label

    while True:
        while pos < len(tokens) and tokens[pos][0] == "(":
            open_.append(new_node())
            pos += 1
        finish(new_node(), leaf=True)
        while open_:
            kind = tokens[pos][0] if pos < len(tokens) else None
            if kind == ",":
                pos += 1
                break
            if kind != ")":
                found = "the end of the file" if kind is None else repr(tokens[pos][1])
                fail(f"expected ',' or ')', found {found}")
            pos += 1
            finish(open_.pop(), leaf=False)
        else:
            break
    if pos >= len(tokens) or tokens[pos][0] != ";" or pos + 1 != len(tokens):
        fail("the tree must end with a single ';'")
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
    """[(kind, text, offset)]: kind is one of ``(),:;`` or ``name``."""
    tokens, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "[":
            end = text.find("]", i)
            if end < 0:
                raise EMDInputError(f"unclosed [comment] in Newick at {_where(text, i)}", source=name)
            i = end + 1
        elif ch in "(),:;":
            tokens.append((ch, ch, i))
            i += 1
        elif ch == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise EMDInputError(f"unclosed quote in Newick at {_where(text, i)}", source=name)
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            tokens.append(("name", "".join(buf), i))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in "(),:;[" and not text[j].isspace():
                j += 1
            tokens.append(("name", text[i:j], i))
            i = j
    return tokens


def read_bins(path):
    """``--bins FILE``: one node name per line (blank lines and ``#`` comments skipped)."""
    text = _read_text(str(path), "bins")
    lines = io.StringIO(text, newline=None)
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise EMDInputError("the bins file names no nodes", source=str(path))
    return names

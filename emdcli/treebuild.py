"""Trees built from a ground matrix, so that any N classes get an O(N) tree EMD.

:func:`build_tree` turns D (N, N) into a rooted :class:`emdcli.spaces.Tree` whose path
metric approximates D (exactly, when D is a tree metric and ``method="nj"``, or an
ultrametric and ``method="average"``/``"complete"``); :func:`distortion` says how well;
:func:`write_tree` writes it as CSV, Newick or JSON that :func:`emdcli.treefiles.load_tree`
reads back with the bins in class order.
"""

import json
import os
import re

import numpy as np

from .errors import EMDInputError
from .spaces import Tree, _float_array

METHODS = ("nj", "average", "complete", "ward")
CONTRACT = 1e-12  # internal NJ edges shorter than this × max(D) are contracted


def build_tree(D, *, method="nj", root=None, classes=None):
    """A rooted tree with one leaf per class (named ``classes``, default ``"0"…"N-1"``;
    bins in class order) whose path length between leaves i and j approximates ``D_ij``.

    - ``nj``: neighbour joining (Saitou & Nei 1987) in O(N³): join the pair minimising
      ``Q_ij = (n − 2) D_ij − Σ_k D_ik − Σ_k D_jk``, at lengths ``D_ij / 2 ± (r_i − r_j) /
      (2 (n − 2))``; recovers any tree metric exactly. A negative branch length (D not a
      tree metric) is clamped to 0, its partner taking all of ``D_ij``; internal edges
      shorter than 1e-12 × max D (multifurcations NJ resolves in binary steps) are
      contracted. Rooted at the midpoint of the longest leaf-to-leaf path, or, with
      ``root=CLASS``, at that class's leaf: a root node joined to the leaf by a 0-length
      edge (so the class stays a leaf and the path metric is unchanged).
    - ``average`` | ``complete`` | ``ward``: SciPy's agglomerative ``linkage`` on D; a merge
      at height h puts its cluster's node h/2 above the leaves, so the path length between
      two leaves is the height at which they merge (exactly D for an ultrametric D with
      average or complete linkage). Needs ``pip install 'emdcli[tree]'``.
    """
    d = _square(D)
    names = _class_names(classes, d.shape[0])
    if method not in METHODS:
        raise EMDInputError(f"unknown method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    if method == "nj":
        edges = _contract(_nj(d), d.shape[0], CONTRACT * float(d.max(initial=0.0)))
        if root is None:
            edges, top = _midpoint(edges, d.shape[0])
        else:
            edges, top = _at_leaf(edges, _class_index(root, names), d.shape[0])
        parent, weight = _orient(edges, top)
    else:
        if root is not None:
            raise EMDInputError("root applies to method 'nj' only",
                                hint="a linkage tree is rooted at its last merge")
        parent, weight = _linkage_tree(d, method)
    return _as_tree(parent, weight, names)


def distortion(tree, D):
    """How well the tree's path metric T reproduces D over the pairs i < j: a dict with
    ``pairs``, ``mean_rel_error`` and ``max_rel_error`` of ``|T_ij − D_ij| / D_ij`` (over
    the pairs with D_ij > 0; ``zero_pairs`` counts the others and ``zero_pairs_max_tree``
    is their largest T_ij) and ``spearman``, the rank correlation of T and D (ties get
    their average rank; NaN when either is constant)."""
    d = _square(D)
    if d.shape[0] != tree.n:
        raise EMDInputError(f"the tree has {tree.n} bins but D is {d.shape[0]} × {d.shape[0]}")
    iu = np.triu_indices(d.shape[0], 1)
    dv, tv = d[iu], tree.ground_matrix()[iu]
    pos = dv > 0
    rel = np.abs(tv[pos] - dv[pos]) / dv[pos]
    return {
        "pairs": int(dv.size),
        "mean_rel_error": float(rel.mean()) if rel.size else float("nan"),
        "max_rel_error": float(rel.max()) if rel.size else float("nan"),
        "spearman": spearman(dv, tv),
        "zero_pairs": int(dv.size - pos.sum()),
        "zero_pairs_max_tree": float(tv[~pos].max()) if (~pos).any() else 0.0,
    }


def spearman(a, b):
    """Spearman's rank correlation of two 1-D arrays: the Pearson correlation of their
    ranks, ties given their average rank. Values closer than 1e-12 × the largest are ties
    (rounded to that grid first), so that rounding noise does not order equal distances."""
    if np.size(a) < 2:
        return float("nan")  # (one pair or none: no ranks to correlate)
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


def _ranks(x):
    scale = float(np.abs(x).max(initial=0.0))
    if scale > 0:
        x = np.round(x * (1e12 / scale))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


# ----------------------------------------------------------------------------- inputs


def _square(D):
    """D as a float64 N × N matrix: finite, >= 0, zero diagonal (as ``Ground.from_matrix``
    checks, without its triangle-inequality scan) and symmetric."""
    d = _float_array(D, "the ground matrix", None)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.size == 0:
        raise EMDInputError(f"a ground matrix must be N × N, got shape {d.shape}")
    for bad, what in ((~np.isfinite(d), "not finite"), (d < 0, "negative"),
                      (np.eye(d.shape[0], dtype=bool) & (d != 0), "on the diagonal and not 0")):
        if bad.any():
            r, c = divmod(int(np.flatnonzero(bad.ravel())[0]), d.shape[1])
            raise EMDInputError(f"entry is {what} ({float(d[r, c])!r})", row=r, column=c,
                                hint="ground distances are finite, >= 0, 0 on the diagonal")
    if not np.allclose(d, d.T, rtol=1e-12, atol=0):
        raise EMDInputError("the ground matrix is not symmetric; a tree's distances are",
                            hint="symmetrise it, e.g. (D + D.T) / 2")
    return 0.5 * (d + d.T)


def _class_names(classes, n):
    if classes is None:
        return [str(i) for i in range(n)]
    if isinstance(classes, (str, bytes)):
        raise EMDInputError("classes must be a list of names, not one string", source="classes")
    names = [str(c) for c in classes]
    if len(names) != n:
        raise EMDInputError(f"{len(names)} class names for {n} classes", source="classes",
                            hint="give one name per row of the ground matrix")
    seen = set()
    for i, v in enumerate(names):
        if not v.strip() or v != v.strip() or not v.isprintable():
            raise EMDInputError(f"class {i} has the name {v!r}", source="classes",
                                hint="names are non-empty, printable, without outer spaces")
        if v in seen:
            raise EMDInputError(f"class name {v!r} appears twice", source="classes", row=i)
        seen.add(v)
    return names


def _class_index(root, names):
    if isinstance(root, (int, np.integer)) and not isinstance(root, bool) and str(root) not in names:
        if 0 <= root < len(names):
            return int(root)
    try:
        return names.index(str(root))
    except ValueError:
        raise EMDInputError(f"no class named {str(root)!r} to root the tree at", source="root") from None


def read_classes(path):
    """``--classes FILE``: one class name per line, in class-index order (blank lines and
    ``#`` comments skipped)."""
    from .treefiles import _read_text

    text = _read_text(str(path), "classes")
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise EMDInputError("the classes file names no classes", source=str(path))
    return names


# ----------------------------------------------------------------------------- neighbour joining


def _nj(d):
    """Unrooted NJ tree: edges (a, b, length); leaves 0…N−1, internal nodes N, N+1, …
    The active distances live in ``a[:m, :m]``: a joined pair's node takes the slot of
    one, the last slot moves into the other's (vectorised O(m²) per join)."""
    n = d.shape[0]
    a = d.copy()
    ids = np.arange(n)
    r = a.sum(axis=1)
    q = np.empty_like(a)
    edges, new, m = [], n, n
    while m > 2:
        if m < 0.8 * a.shape[0]:  # keep the active block contiguous and in cache
            a, q = np.ascontiguousarray(a[:m, :m]), np.empty((m, m))
        av, qv = a[:m, :m], q[:m, :m]
        s = r[:m] / (m - 2)  # argmin of Q/(m − 2) = D_ij − s_i − s_j: per row, then over rows
        np.subtract(av, s[None, :], out=qv)
        np.fill_diagonal(qv, np.inf)
        best = qv.argmin(axis=1)
        rows = np.arange(m)
        i = int(np.argmin(qv[rows, best] - s))
        i, j = sorted((i, int(best[i])))
        dij = av[i, j]
        di = min(max(0.5 * dij + 0.5 * (s[i] - s[j]), 0.0), dij)
        edges += [(int(ids[i]), new, di), (int(ids[j]), new, dij - di)]
        du = np.maximum(0.5 * (av[i] + av[j] - dij), 0.0)  # < 0 only off the triangle inequality
        du[i] = du[j] = 0.0
        r[:m] += du - av[i] - av[j]
        r[i] = du.sum()
        av[i, :] = du
        av[:, i] = du
        last = m - 1
        if j != last:
            av[j, :] = av[last, :]
            av[:, j] = av[:, last]
            av[j, j] = 0.0
            r[j], ids[j] = r[last], ids[last]
        ids[i] = new
        new, m = new + 1, m - 1
    if m == 2:
        edges.append((int(ids[0]), int(ids[1]), float(a[0, 1])))
    return edges


def _contract(edges, n, tol):
    """Merge the ends of internal edges (both ends ≥ n) of length ≤ tol; renumber the
    internal nodes n, n+1, … in order of first appearance."""
    top = {}

    def find(v):
        while top.get(v, v) != v:
            v = top[v]
        return v

    for u, v, w in edges:
        if u >= n and v >= n and w <= tol:
            top[find(u)] = find(v)
    out, number = [], {}
    for u, v, w in edges:
        u, v = find(u), find(v)
        if u == v:
            continue
        u, v = (number.setdefault(x, n + len(number)) if x >= n else x for x in (u, v))
        out.append((u, v, w))
    return out


def _adjacency(edges):
    adj = {}
    for u, v, w in edges:
        adj.setdefault(u, []).append((v, w))
        adj.setdefault(v, []).append((u, w))
    return adj


def _farthest(adj, start, n):
    """(farthest leaf from ``start``, its distance, parent map) over the tree."""
    dist, up, stack = {start: 0.0}, {start: None}, [start]
    while stack:
        v = stack.pop()
        for x, w in adj[v]:
            if x not in dist:
                dist[x], up[x] = dist[v] + w, v
                stack.append(x)
    leaves = [v for v in range(n) if v in dist]
    far = max(leaves, key=lambda v: (dist[v], -v))
    return far, dist, up


def _midpoint(edges, n):
    """Root at the midpoint of the longest leaf-to-leaf path: (edges, root node)."""
    if not edges:
        return edges, 0
    adj = _adjacency(edges)
    a, _, _ = _farthest(adj, 0, n)
    b, dist, up = _farthest(adj, a, n)
    half, v = dist[b] / 2.0, b  # walk up from b towards a until past the middle
    while up[v] is not None and dist[up[v]] >= half:
        v = up[v]
    u = up[v]  # dist[u] < half <= dist[v] (or v is a: a zero-length diameter)
    if u is None:  # every distance is 0: root beside a leaf, which stays a leaf
        return _at_leaf(edges, v, n) if v < n else (edges, v)
    length = dist[v] - dist[u]
    t = half - dist[u]  # from u along the edge to v
    tol = 1e-12 * max(dist[b], 1e-300)
    if length - t <= tol and v >= n:
        return edges, v
    if t <= tol and u >= n:
        return edges, u
    return _split(edges, u, v, min(max(t, 0.0), length))


def _at_leaf(edges, leaf, n):
    """Root at class ``leaf``: a new root joined to it by a 0-length edge."""
    if not edges:
        return edges, leaf
    nbr, w = _adjacency(edges)[leaf][0]
    return _split(edges, leaf, nbr, 0.0)


def _split(edges, u, v, t):
    """Insert a node on edge (u, v), ``t`` from u; it becomes the root."""
    root = 1 + max(max(a, b) for a, b, _ in edges)
    out = []
    for a, b, w in edges:
        if {a, b} == {u, v}:
            out += [(u, root, t), (v, root, max(w - t, 0.0))]
        else:
            out.append((a, b, w))
    return out, root


def _orient(edges, root):
    """parent (nodes,) with −1 at the root, weight (nodes,) of each node's edge."""
    size = 1 + max([root] + [max(a, b) for a, b, _ in edges])
    parent = np.full(size, -1, dtype=np.int64)
    weight = np.zeros(size)
    adj = _adjacency(edges)
    seen, stack = {root}, [root]
    while stack:
        v = stack.pop()
        for x, w in adj.get(v, ()):
            if x not in seen:
                seen.add(x)
                parent[x], weight[x] = v, w
                stack.append(x)
    return parent, weight


# ----------------------------------------------------------------------------- linkage


def _linkage_tree(d, method):
    try:
        from scipy.cluster.hierarchy import linkage
    except ImportError:
        raise EMDInputError(
            f"method {method!r} needs SciPy", hint="pip install 'emdcli[tree]', or use method nj"
        ) from None
    n = d.shape[0]
    parent = np.full(max(2 * n - 1, 1), -1, dtype=np.int64)
    weight = np.zeros(parent.shape[0])
    if n < 2:
        return parent, weight
    z = linkage(d[np.triu_indices(n, 1)], method=method)
    height = np.zeros(2 * n - 1)
    for k, (x, y, h, _) in enumerate(z):
        node, h = n + k, max(float(h), height[int(x)], height[int(y)])
        height[node] = h
        for child in (int(x), int(y)):
            parent[child], weight[child] = node, (h - height[child]) / 2.0
    return parent, weight


def _as_tree(parent, weight, names):
    """The Tree: leaves 0…N−1 named after the classes (bins in that order), then the
    internal nodes ``_n1``, ``_n2``, … and the root ``_root`` (more leading underscores if
    a class is named so)."""
    n = len(names)
    root = int(np.flatnonzero(parent < 0)[0]) if parent.size > n else None
    taken, prefix = set(names), "_"
    while any(v.startswith(prefix) and (v[len(prefix):] == "root" or v[len(prefix) + 1:].isdigit())
              for v in taken):
        prefix += "_"
    nodes = list(names)
    for k in range(n, parent.size):
        nodes.append(f"{prefix}root" if k == root else f"{prefix}n{k - n + 1}")
    parents = ["" if p < 0 else nodes[p] for p in parent.tolist()]
    return Tree.from_edges(nodes, parents, weight.tolist(), bins=list(names), source="built tree")


# ----------------------------------------------------------------------------- writing

WRITERS = {".csv": "csv", ".nwk": "newick", ".newick": "newick", ".tre": "newick",
           ".tree": "newick", ".nw": "newick", ".json": "json"}
_PLAIN = re.compile(r"[^\s(),:;\[\]']+")


def tree_format(path):
    """"csv" | "newick" | "json" by the extension of ``path`` (else an error)."""
    kind = WRITERS.get(os.path.splitext(str(path))[1].lower())
    if kind is None:
        raise EMDInputError("a tree is written as .csv, .nwk (Newick) or .json", source=str(path))
    return kind


def default_bins_path(path):
    """Where :func:`write_tree` puts the bin order when the file cannot hold it."""
    return os.path.splitext(str(path))[0] + ".bins.txt"


def write_tree(tree, path, *, bins_path=None):
    """Write ``tree`` to ``path`` (.csv edge list, .nwk Newick, .json flat map) atomically.

    CSV and JSON list the bins first, in bin order, so that the bins read back as "the
    leaves in file order"; Newick lists leaves in depth-first order (children by their
    first bin), so when that order is not the bin order the bins also go, one per line, to
    ``bins_path`` (default ``<path without extension>.bins.txt``; pass it as ``--bins``).
    Returns the bins file written, or None. Weights are written as ``repr`` (exact).
    """
    from .io import atomic

    text, leaves = _TEXT[tree_format(path)](tree)
    files = [(path, text)]
    if leaves != tree.bin_names:
        bins_path = bins_path or default_bins_path(path)
        files.append((bins_path, "\n".join(tree.bin_names) + "\n"))
    outs = [atomic.AtomicPath(p) for p, _ in files]
    try:
        for out, (_, body) in zip(outs, files):
            with open(out.tmp, "w", encoding="utf-8", newline="") as f:
                f.write(body)
        for out in outs:
            out.commit()
    except OSError as e:
        for out in outs:
            out.abort()
        raise atomic.output_error(path, e) from None
    except BaseException:
        for out in outs:
            out.abort()
        raise
    return files[1][0] if len(files) > 1 else None


def _file_order(tree):
    """Node indices: the bins in bin order, then every other node in pre-order."""
    first = tree.bin_node.tolist()
    is_bin = np.zeros(tree.n_nodes, dtype=bool)
    is_bin[first] = True
    return first + [v for v in range(tree.n_nodes) if not is_bin[v]]


def _leaves_in(tree, order):
    has_child = np.zeros(tree.n_nodes, dtype=bool)
    has_child[tree.parent[1:]] = True
    return [tree.names[v] for v in order if not has_child[v]]


def _csv_text(tree):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["node", "parent", "weight"])
    order = _file_order(tree)
    for v in order:
        p = int(tree.parent[v])
        w.writerow([tree.names[v], "" if p < 0 else tree.names[p], repr(float(tree.weight[v]))])
    return buf.getvalue(), _leaves_in(tree, order)


def _json_text(tree):
    order = _file_order(tree)
    lines = []
    for v in order:
        p = int(tree.parent[v])
        value = None if p < 0 else [tree.names[p], float(tree.weight[v])]
        lines.append(f"  {json.dumps(tree.names[v])}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n", _leaves_in(tree, order)


def _newick_text(tree):
    """Iterative Newick writer: ``(child,child)name:length``, names quoted when needed."""
    first = np.full(tree.n_nodes, np.iinfo(np.int64).max)
    first[tree.bin_node] = np.arange(tree.n)
    for v in range(tree.n_nodes - 1, 0, -1):  # children follow parents: a reverse sweep
        first[tree.parent[v]] = min(first[tree.parent[v]], first[v])
    kids = [[] for _ in range(tree.n_nodes)]
    for v in range(1, tree.n_nodes):
        kids[tree.parent[v]].append(v)
    def label(v):
        return _quote(tree.names[v]) + (f":{float(tree.weight[v])!r}" if v else "")

    parts, leaves, stack = [], [], [("node", 0)]
    while stack:
        what, v = stack.pop()
        if what == ",":
            parts.append(",")
        elif what == "close":
            parts.append(")" + label(v))
        elif kids[v]:
            parts.append("(")
            stack.append(("close", v))
            ordered = sorted(kids[v], key=lambda c: first[c])
            for k, c in enumerate(reversed(ordered)):
                if k:
                    stack.append((",", None))
                stack.append(("node", c))
        else:
            leaves.append(tree.names[v])
            parts.append(label(v))
    return "".join(parts) + ";\n", leaves


def _quote(name):
    return name if _PLAIN.fullmatch(name) else "'" + name.replace("'", "''") + "'"


_TEXT = {"csv": _csv_text, "json": _json_text, "newick": _newick_text}

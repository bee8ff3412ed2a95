"""Spaces over which distances are taken, validated once and flattened into arrays."""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import EMDInputError


@dataclass(frozen=True)
class Chain:
    """Ordered bins at strictly increasing ``positions`` x (N,), float64.

    ``gaps`` d (N−1,) are ``x_{i+1} − x_i``; the ground distance is ``|x_i − x_j|``.
    """

    positions: np.ndarray

    @classmethod
    def uniform(cls, n):
        """Bins at 0, 1, …, n−1 (unit gaps)."""
        return cls(np.arange(n, dtype=np.float64))

    @classmethod
    def for_width(cls, positions, n):
        """n bins at ``positions`` (validated), or at 0 … n−1 when positions is None."""
        return cls.uniform(n) if positions is None else cls.from_positions(positions, n)

    @classmethod
    def from_positions(cls, positions, n=None):
        """Validate ``positions`` (1-D, finite, strictly increasing, length ``n`` if given)."""
        x = _float_array(positions, "positions", "positions")
        if x.ndim != 1:
            raise EMDInputError(
                f"positions must be a 1-D list of numbers, got shape {x.shape}",
                source="positions",
            )
        if n is not None and x.shape[0] != n:
            raise EMDInputError(
                f"{x.shape[0]} positions given for {n} bins",
                source="positions",
                hint="give one position per bin",
            )
        if x.shape[0] < 1:
            raise EMDInputError("no positions given", source="positions")
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise EMDInputError(
                f"position {bad[0]} is {float(x[bad[0]])}", source="positions",
                hint="positions must be finite",
            )
        steps = np.flatnonzero(np.diff(x) <= 0)
        if steps.size:
            i = steps[0]
            raise EMDInputError(
                f"positions must be strictly increasing, but x[{i}] = {float(x[i])!r} "
                f"and x[{i + 1}] = {float(x[i + 1])!r}",
                source="positions",
            )
        if isinstance(positions, np.ndarray) and np.shares_memory(x, positions):
            x = x.copy()  # the caller's array stays theirs: writable, and not ours to follow
        x.setflags(write=False)
        return cls(x)

    @property
    def n(self):
        return self.positions.shape[0]

    @property
    def gaps(self):
        """d (N−1,): the cost of moving unit mass across each gap."""
        return np.ascontiguousarray(np.diff(self.positions))

    def ground_matrix(self):
        """M (N, N) with ``M_ij = |x_i − x_j|``."""
        x = self.positions
        return np.abs(x[:, None] - x[None, :])


@dataclass(frozen=True)
class Tree:
    """A rooted tree flattened so that every parent precedes its children.

    names (nodes,): node names in that order, root first; parent (nodes,) int64 with
    ``parent[0] = −1`` and ``parent[v] < v``; weight (nodes,) float64, the cost of the edge
    v → parent(v) (0 for the root); bin_node (N,) int64, the node of each bin;
    count (nodes,) int64, the number of bins in each subtree; file_index (nodes,) int64,
    each node's position in the file it came from. Build it with
    :meth:`from_edges` (or ``emdcli.treefiles.load_tree``), which validates.
    """

    names: tuple
    parent: np.ndarray
    weight: np.ndarray
    bin_node: np.ndarray
    count: np.ndarray
    file_index: np.ndarray
    source: str | None = None

    @classmethod
    def from_edges(cls, nodes, parents, weights=None, bins=None, source=None):
        """Validate an edge list and flatten it.

        nodes: node names in file order; parents: the parent of each (None or "" for the
        root); weights: edge costs (default 1); bins: node names carrying the bins, in bin
        order (default: the leaves in file order).
        """
        nodes, parents, weights = _edge_lists(nodes, parents, weights, source)
        index = {}
        for i, v in enumerate(nodes):
            if v in index:
                raise EMDInputError(f"node {v!r} appears twice", source=source, row=i)
            index[v] = i
        roots = [v for v, p in zip(nodes, parents) if p == ""]
        if len(roots) != 1:
            what = "no root" if not roots else f"{len(roots)} roots ({', '.join(map(repr, roots[:5]))})"
            raise EMDInputError(
                f"the tree has {what}", source=source,
                hint="exactly one node must have an empty parent",
            )
        up = np.full(len(nodes), -1, dtype=np.int64)
        w = np.zeros(len(nodes), dtype=np.float64)
        for i, (v, p, wt) in enumerate(zip(nodes, parents, weights)):
            if p == "":
                continue
            if p not in index:
                raise EMDInputError(f"node {v!r} has unknown parent {p!r}", source=source, row=i)
            try:
                if isinstance(wt, (bool, np.bool_)):
                    raise TypeError
                wt = float(wt)
            except (TypeError, ValueError, OverflowError):
                raise EMDInputError(
                    f"node {v!r} has a non-numeric weight {_brief(wt)}", source=source, row=i
                ) from None
            if not (np.isfinite(wt) and wt >= 0):
                raise EMDInputError(
                    f"node {v!r} has weight {wt!r}; edge weights must be finite and >= 0",
                    source=source, row=i,
                )
            up[i], w[i] = index[p], wt
        order = _preorder(up, index[roots[0]])
        if len(order) < len(nodes):
            seen = np.zeros(len(nodes), dtype=bool)
            seen[order] = True
            v, path = int(np.flatnonzero(~seen)[0]), set()
            while v not in path:  # climb until a node repeats: that one is on the cycle
                path.add(v)
                v = int(up[v])
            stray = nodes[v]
            raise EMDInputError(
                f"node {stray!r} is on a cycle and never reaches the root {roots[0]!r}",
                source=source,
            )
        if bins is None:
            has_child = np.zeros(len(nodes), dtype=bool)
            has_child[up[up >= 0]] = True
            bins = [v for i, v in enumerate(nodes) if not has_child[i]]
        return cls._flatten(nodes, up, w, np.arange(len(nodes)), order, bins, source)

    @classmethod
    def _flatten(cls, nodes, up, w, file_index, order, bins, source):
        order = np.asarray(order, dtype=np.int64)
        new = np.empty(len(nodes), dtype=np.int64)
        new[order] = np.arange(len(nodes))
        parent = np.where(up[order] >= 0, new[np.maximum(up[order], 0)], -1)
        names = tuple(nodes[i] for i in order)
        pos = {v: i for i, v in enumerate(names)}
        bins = _names(bins, "bins", source)
        bin_node = np.empty(len(bins), dtype=np.int64)
        seen = set()
        for k, b in enumerate(bins):
            if b not in pos:
                raise EMDInputError(f"bin {b!r} is not a node of the tree", source=source)
            if b in seen:
                raise EMDInputError(f"bin {b!r} is named twice", source=source)
            seen.add(b)
            bin_node[k] = pos[b]
        if not len(bins):
            raise EMDInputError("the tree has no bins", source=source)
        count = np.bincount(bin_node, minlength=len(names)).astype(np.int64)
        for v in range(len(names) - 1, 0, -1):
            count[parent[v]] += count[v]
        return cls(names, parent, w[order], bin_node, count, file_index[order], source)

    def with_bins(self, bins):
        """The same tree with the bins on the nodes named by ``bins`` (in that order)."""
        return Tree._flatten(
            list(self.names), self.parent, self.weight, self.file_index,
            np.arange(len(self.names)), bins, self.source,
        )

    def in_file_order(self, names):
        """``names`` (nodes of this tree) sorted by their position in the tree file;
        raises naming the first one that is not a node."""
        pos = {v: i for i, v in enumerate(self.names)}
        for v in names:
            if v not in pos:
                raise EMDInputError(f"bin {v!r} is not a node of the tree", source=self.source)
        return sorted(names, key=lambda v: self.file_index[pos[v]])

    @property
    def n(self):
        """Number of bins N."""
        return self.bin_node.shape[0]

    @property
    def n_nodes(self):
        return self.parent.shape[0]

    @property
    def bin_names(self):
        return [self.names[i] for i in self.bin_node]

    def depth(self):
        """(nodes,) path length from each node to the root, and (nodes,) edge counts."""
        dist = np.zeros(self.n_nodes)
        hops = np.zeros(self.n_nodes, dtype=np.int64)
        for v in range(1, self.n_nodes):
            dist[v] = dist[self.parent[v]] + self.weight[v]
            hops[v] = hops[self.parent[v]] + 1
        return dist, hops

    def stats(self, max_pairs_bins=20000):
        """Sizes, depths and the largest bin-to-bin path length (None above
        ``max_pairs_bins`` bins, where the N × N matrix would be too big)."""
        dist, hops = self.depth()
        has_child = np.zeros(self.n_nodes, dtype=bool)
        has_child[self.parent[1:]] = True
        leaves = np.flatnonzero(~has_child)
        on_internal = int(has_child[self.bin_node].sum())
        diameter = float(self.ground_matrix().max()) if self.n <= max_pairs_bins else None
        return {
            "nodes": self.n_nodes,
            "leaves": int(leaves.size),
            "internal": int(self.n_nodes - leaves.size),
            "bins": self.n,
            "bins_on_internal_nodes": on_internal,
            "root": self.names[0],
            "max_depth_edges": int(hops[leaves].max()),
            "max_depth": float(dist[leaves].max()),
            "max_bin_distance": diameter,
            "total_weight": float(self.weight.sum()),
        }

    def ground_matrix(self):
        """D (N, N): the path length between the nodes of each pair of bins.

        ``D_ab = Σ_v w_v |A_av − A_bv|`` with ``A_av = [v is on the path from bin a to the
        root]``, i.e. ``depth_a + depth_b − 2 (A diag(w) Aᵀ)_ab``.
        """
        a = np.zeros((self.n, self.n_nodes))
        rows, v = np.arange(self.n), self.bin_node.copy()
        while rows.size:  # all bins climb together, one edge a step
            up = v > 0
            rows, v = rows[up], v[up]
            a[rows, v] = 1.0
            v = self.parent[v]
        depth = a @ self.weight
        shared = (a * self.weight) @ a.T
        d = depth[:, None] + depth[None, :] - 2.0 * shared
        np.fill_diagonal(d, 0.0)
        return np.maximum(d, 0.0)


def _preorder(up, root):
    """Node indices in depth-first pre-order from ``root``, children in file order."""
    children = [[] for _ in range(len(up))]
    for v, p in enumerate(up.tolist()):
        if p >= 0:
            children[p].append(v)
    order, stack = [], [root]
    while stack:
        v = stack.pop()
        order.append(v)
        stack.extend(reversed(children[v]))
    return order


@dataclass(frozen=True)
class Ground:
    """A ground-distance matrix D (N, N), float64: finite, non-negative, zero diagonal.

    ``notes`` lists what is odd but allowed (asymmetry, triangle-inequality violations).
    """

    matrix: np.ndarray
    notes: tuple = ()
    source: str | None = None

    @classmethod
    def from_matrix(cls, matrix, source=None):
        d = _float_array(matrix, "the ground matrix", source)
        if d.size == 0:
            raise EMDInputError("the ground matrix is empty", source=source)
        if d.ndim != 2 or d.shape[0] != d.shape[1]:
            raise EMDInputError(f"a ground matrix must be N × N, got shape {d.shape}", source=source)
        for bad, what in ((~np.isfinite(d), "not finite"), (d < 0, "negative")):
            if bad.any():
                r, c = divmod(int(np.flatnonzero(bad.ravel())[0]), d.shape[1])
                raise EMDInputError(
                    f"entry is {what} ({float(d[r, c])!r})", source=source, row=r, column=c,
                    hint="ground distances must be finite and >= 0",
                )
        diag = np.flatnonzero(np.diag(d) != 0)
        if diag.size:
            i = int(diag[0])
            raise EMDInputError(
                f"diagonal entry is {float(d[i, i])!r}, not 0", source=source, row=i, column=i,
                hint="the distance from a bin to itself must be 0",
            )
        notes = []
        if not np.allclose(d, d.T, rtol=1e-12, atol=0):
            notes.append("the ground matrix is not symmetric")
        worst = _triangle_excess(d)
        if worst > 1e-9 * max(1.0, float(d.max())):
            notes.append(
                f"the ground matrix breaks the triangle inequality (by up to {worst!r}); "
                "the EMD is then not a metric"
            )
        if isinstance(matrix, np.ndarray) and np.shares_memory(d, matrix):
            d = d.copy()  # the caller's array stays theirs: writable, and not ours to follow
        d.setflags(write=False)
        return cls(d, tuple(notes), source)

    @property
    def n(self):
        return self.matrix.shape[0]


def _triangle_excess(d, exact_up_to=256, samples=1 << 21):
    """max(D_ij − D_ik − D_kj, 0): over all triples for N ≤ ``exact_up_to``, else over a
    fixed random sample of triples (the check only decides whether to warn)."""
    n = d.shape[0]
    if n <= exact_up_to:
        block = max(1, (1 << 24) // (n * n))
        worst = 0.0
        for k0 in range(0, n, block):
            via = np.min(d[:, k0 : k0 + block, None] + d[None, k0 : k0 + block, :], axis=1)
            worst = max(worst, float(np.max(d - via)))
        return worst
    rng = np.random.default_rng(0)
    i, j, k = rng.integers(0, n, (3, samples))
    return max(0.0, float(np.max(d[i, j] - d[i, k] - d[k, j])))


def _float_array(values, what, source):
    """``values`` as a float64 array; ragged, textual, complex or otherwise non-numeric
    data is an :class:`EMDInputError` (numpy's own errors never escape)."""
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        raise EMDInputError(
            f"{what} must be a rectangular array of numbers (rows of unequal length?)",
            source=source,
        ) from None
    kind = {"U": "text", "S": "bytes", "V": "records", "M": "dates", "m": "durations",
            "c": "complex numbers"}.get(raw.dtype.kind)
    if kind:
        raise EMDInputError(f"{what} must be real numbers, not {kind}", source=source)
    try:
        if raw.dtype.kind == "O" and any(
            isinstance(x, (str, bytes, complex)) for x in raw.ravel().tolist()
        ):
            raise TypeError
        return raw.astype(np.float64, copy=False)
    except (ValueError, TypeError, OverflowError):
        raise EMDInputError(
            f"{what} must be a rectangular array of real numbers", source=source
        ) from None


def _brief(value, width=60):
    """A short, one-line repr of any value (safe on deeply nested data)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deep; an int too long to print
        text = f"a {type(value).__name__}"
    return text if len(text) <= width else text[: width - 3] + "..."


def _name(v):
    """A node name as text; None, "" and non-scalar values are not names."""
    if isinstance(v, str):
        return v
    if isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_, complex)):
        return str(v)
    raise TypeError


def _names(values, what, source):
    """A list of node names from any iterable (a single string is refused)."""
    if isinstance(values, (str, bytes)):
        raise EMDInputError(f"{what} must be a list of node names, not one string", source=source)
    try:
        values = list(values)
    except TypeError:
        raise EMDInputError(
            f"{what} must be a list of node names, got {type(values).__name__}", source=source
        ) from None
    out = []
    for i, v in enumerate(values):
        try:
            out.append(_name(v))
        except TypeError:
            raise EMDInputError(
                f"{what} item {i} is {_brief(v)}, not a node name", source=source
            ) from None
    return out


def _edge_lists(nodes, parents, weights, source):
    """(names, parent names with "" for the root, weights), checked for equal lengths."""
    nodes = _names(nodes, "nodes", source)
    for i, v in enumerate(nodes):
        if not v.strip():
            raise EMDInputError(f"node {i} has an empty name", source=source, row=i)
    try:
        parents = list(parents)
        weights = [1.0] * len(nodes) if weights is None else list(weights)
    except TypeError:
        raise EMDInputError(
            "parents and weights must be lists, one item per node", source=source
        ) from None
    if not (len(parents) == len(weights) == len(nodes)):
        raise EMDInputError(
            f"{len(nodes)} nodes, {len(parents)} parents and {len(weights)} weights",
            source=source, hint="give one parent and one weight per node",
        )
    if not nodes:
        raise EMDInputError("the tree has no nodes", source=source)
    ups = []
    for i, p in enumerate(parents):
        if p is None or p == "" or (isinstance(p, float) and math.isnan(p)):
            ups.append("")
            continue
        try:
            ups.append(_name(p))
        except TypeError:
            raise EMDInputError(
                f"node {nodes[i]!r} has parent {_brief(p)}, not a node name",
                source=source, row=i,
            ) from None
    return nodes, ups, weights


def space_for(space, positions, n):
    """The validated space for rows of ``n`` bins: a Chain (default), Tree or Ground."""
    if space is None:
        space = Chain.uniform(n) if positions is None else positions
    if isinstance(space, (Chain, Tree, Ground)):
        if space.n != n:
            kind = type(space).__name__.lower()
            raise EMDInputError(
                f"the {kind} has {space.n} bins but the rows have {n}",
                source="positions" if kind == "chain" else (space.source or kind),
                hint="the space needs one bin per column",
            )
        return space
    if positions is not None and space is positions:
        return Chain.from_positions(positions, n)
    raise EMDInputError(f"space must be a Chain, Tree or Ground, got {type(space).__name__}")

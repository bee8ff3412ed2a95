"""A report's content as one JSON-ready document: what HTML, Markdown and JSON all show.

Per set of rows (all, and each group) a *section*: the summary of EMD, EMD² and cross
entropy, the top-1 / top-k accuracy, every target class (count, mean EMD, accuracy,
sorted by mean EMD), a histogram of the EMD, the worst rows, and

- on a tree, the edges by error mass ``M_v = Σ_rows w_v |φ_v|`` (``Σ_v M_v = Σ_rows
  EMD``) and per internal node u the error inside its subtree ``I_u = Σ_{v below u} M_v``
  (confusions among u's bins) beside the mass ``M_u`` crossing the edge above it
  (confusions between u's bins and the rest);
- on a chain, per gap the mean signed flow ``φ̄_i = mean_rows (F_p(x_i) − F_q(x_i))``
  (> 0: predicted mass sits left of the target's, the prediction is too low) and the
  mean |φ_i|, the bias ``E_p[x] − E_q[x] = −Σ_i d_i φ̄_i`` and the class error
  ``x[argmax p] − x[c]``.
"""

import numpy as np

from ..spaces import Chain
from .accumulate import EPS, describe, histogram

SCHEMA = "emdcli.report/1"
HIST_BINS = 40
SECTION_KEYS = ("count", "summary", "accuracy", "classes", "histogram", "worst_rows",
                "tree", "chain")
NOTES = {
    "cross_entropy": f"Cross entropy in nats: −log p(target class) for class targets, "
                     f"−Σ q log p for target rows; p is clipped at {EPS:g} first.",
    "accuracy": "Top-1: the largest predicted mass is the target class (ties go to the "
                "first bin); top-k: the target class is among the k largest. For target "
                "rows the target class is the bin of largest target mass.",
    "tree": "Error mass of an edge: Σ over rows of w·|φ|, φ the predicted minus the "
            "target mass below the edge; the edge masses add up to the sum of the EMDs. "
            "Inside a node: the error mass on the edges below it (confusions among its "
            "bins); across: the mass on the edge above it (its bins against the rest).",
    "chain": "φ_i = F_p(x_i) − F_q(x_i), the predicted minus the target CDF at gap i: "
             "φ > 0 means predicted mass sits left of (below) the target's — the model "
             "predicts too low there; φ < 0, too high. Bias = E_p[x] − E_q[x] = −Σ d_i φ̄_i.",
}


def document(result, source=None):
    """The report of a :class:`~.job.Result` as a dict (see :data:`SECTION_KEYS`);
    ``source`` describes the inputs (a dict, given as it is)."""
    from .. import __version__

    space, spec = result.space, result.spec
    tree = not isinstance(space, Chain)
    edges = _hist_edges([result.all] + list(result.groups.values()))
    names = result.class_names()
    doc = {
        "schema": SCHEMA,
        "emdcli": __version__,
        "inputs": dict(source or {}),
        "space": _space(result),
        "options": {"top_k": spec.top_k, "worst": spec.worst, "epsilon": EPS,
                    "normalize": spec.normalize, "dtype": spec.dtype,
                    "group_by": spec.inputs.group_by},
        "notes": [NOTES["cross_entropy"], NOTES["accuracy"], NOTES["tree" if tree else "chain"]],
        "seconds": result.seconds,
        "all": section(result, result.all, names, edges),
        "groups": [dict(group=k, **section(result, t, names, edges))
                   for k, t in result.groups.items()],
    }
    return _finite(doc)


def _hist_edges(tallies):
    """:data:`HIST_BINS` bins from 0 to the largest p99 of the EMD (the rows above are
    counted apart: a few outliers do not squash the histogram), or to the max."""
    tops = [describe(t.summaries["emd"]) for t in tallies]
    hi = max([d["p99"] or 0.0 for d in tops] + [0.0])
    top = max([d["max"] or 0.0 for d in tops] + [0.0])
    if hi <= 0 or top <= 1.25 * hi:
        hi = top
    return np.linspace(0.0, hi if hi > 0 else 1.0, HIST_BINS + 1)


def _space(result):
    space = result.space
    if isinstance(space, Chain):
        x = space.positions
        return {"kind": "chain", "bins": int(space.n), "first": float(x[0]), "last": float(x[-1])}
    return {"kind": "tree", "bins": int(space.n), "nodes": int(space.n_nodes),
            "root": result.node_name(0), "source": space.source}


def section(result, tally, names, edges):
    """The section of one :class:`~.accumulate.Tally`."""
    n, k = tally.n, tally.top_k
    c = tally.classes
    return {
        "count": int(n),
        "summary": {key: describe(s) for key, s in tally.summaries.items()},
        "accuracy": {"top1": _ratio(c["top1"].sum(), n), "topk": _ratio(c["topk"].sum(), n),
                     "k": k},
        "classes": _classes(tally, names),
        "histogram": _histogram(tally, edges),
        "worst_rows": [dict(r, target=names[r["target"]], predicted=names[r.pop("pred")])
                       for r in tally.worst.rows()],
        "tree": None if isinstance(result.space, Chain) else _tree(result, tally),
        "chain": _chain(result.space, tally) if isinstance(result.space, Chain) else None,
    }


def _histogram(tally, edges):
    """Counts in the bins ``edges`` and the count of rows ``above`` the last edge."""
    s = tally.summaries["emd"]
    top = s.stats().get("max")
    if top is None or top <= edges[-1]:  # every value in the (closed) last bin
        return {"edges": edges.tolist(), "counts": histogram(s, edges).tolist(), "above": 0}
    counts = histogram(s, np.append(edges, np.inf))
    return {"edges": edges.tolist(), "counts": counts[:-1].tolist(), "above": int(counts[-1])}


def _ratio(a, b):
    return float(a) / b if b else None


def _classes(tally, names):
    """Every target class that occurs: sorted by mean EMD (largest first), then index."""
    c = tally.classes
    seen = np.flatnonzero(c["count"] > 0)
    count = c["count"][seen]
    mean = c["emd"][seen] / count
    order = seen[np.lexsort((seen, -mean))]
    out = []
    for i in order.tolist():
        m = c["count"][i]
        out.append({"class": names[i], "index": i, "count": int(m),
                    "mean_emd": c["emd"][i] / m, "mean_emd2": c["emd2"][i] / m,
                    "mean_cross_entropy": c["cross_entropy"][i] / m,
                    "top1": c["top1"][i] / m, "topk": c["topk"][i] / m,
                    "predicted": int(c["predicted"][i])})
    return out


def _tree(result, tally):
    """Edges by error mass and internal nodes by the error inside their subtree."""
    space, n = result.space, max(tally.n, 1)
    mass = np.zeros(space.n_nodes)
    mass[1:] = space.weight[1:] * tally.flow_abs  # column v − 1: the edge above node v
    total = float(mass.sum())
    inside = np.zeros(space.n_nodes)
    parent = space.parent
    for v in range(space.n_nodes - 1, 0, -1):  # children after parents: one sweep up
        inside[parent[v]] += inside[v] + mass[v]
    share = (lambda a: float(a) / total if total > 0 else 0.0)
    worst = result.spec.worst
    edges = []
    for v in np.lexsort((np.arange(space.n_nodes), -mass))[:worst].tolist():
        if v == 0 or mass[v] <= 0:
            continue
        child, up = result.node_name(v), result.node_name(int(parent[v]))
        edges.append({"edge": f"{child} ← {up}", "child": child, "parent": up,
                      "weight": float(space.weight[v]), "mass": float(mass[v]),
                      "per_row": float(mass[v]) / n, "share": share(mass[v])})
    internal = np.zeros(space.n_nodes, dtype=bool)
    internal[parent[1:]] = True
    internal[0] = False
    cand = np.flatnonzero(internal)
    nodes = []
    for v in cand[np.lexsort((cand, -inside[cand]))][:worst].tolist():
        if inside[v] <= 0:
            continue
        kept = inside[v] + mass[v]
        nodes.append({"node": result.node_name(v), "bins": int(space.count[v]),
                      "inside": float(inside[v]), "inside_share": share(inside[v]),
                      "across": float(mass[v]), "across_share": share(mass[v]),
                      "stays_inside": float(inside[v] / kept) if kept > 0 else None})
    return {"total_mass": total, "per_row": total / n, "edges": edges, "nodes": nodes}


def _chain(space, tally):
    """Per gap: the mean signed and absolute flow; the bias and the class error."""
    n = max(tally.n, 1)
    x, d = space.positions, space.gaps
    mean = tally.flow_signed / n
    gaps = [{"from": float(a), "to": float(b), "mean_flow": float(f), "mean_abs_flow": float(g)}
            for a, b, f, g in zip(x[:-1].tolist(), x[1:].tolist(), mean.tolist(),
                                  (tally.flow_abs / n).tolist())]
    err_sum, abs_sum = tally.class_error
    return {"gaps": gaps, "bias": float(-(d * mean).sum()) + 0.0 if tally.n else None,
            "mean_class_error": float(err_sum) / n if tally.n else None,
            "mean_abs_class_error": float(abs_sum) / n if tally.n else None}


def _finite(obj):
    """``obj`` with non-finite floats as None (JSON has no nan)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj

"""Streaming accumulators of a report: per batch, bounded memory, mergeable.

:func:`measure` turns a validated batch into per-row numbers (one flows pass, one rank
pass): the EMD ``Σ w|φ|``, EMD² ``Σ w φ²``, the cross entropy, the target class, the
predicted class ``argmax p`` and the target's rank, and per group of rows the column sums
``Σ_rows |φ_e|`` and ``Σ_rows φ_e``. A :class:`Tally` adds those up for one set of rows:
three :class:`~emdcli.report.Summary` (exact up to a limit, then a sketch), per-class
sums by ``np.bincount``, per-edge sums, and a bounded heap of the worst rows
(:class:`Worst`). Nothing grows with the row count beyond the summaries' limit.
"""

from typing import NamedTuple

import numpy as np

from .. import rows
from ..report import Summary
from ..spaces import Chain

EPS = 1e-12  # p is clipped at EPS in the cross entropy: −log max(p, EPS)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
GROUP_EXACT_LIMIT = 1 << 18  # a group's summaries keep at most this many values exactly
SLICE_ELEMENTS = 1 << 22  # a batch is measured in slices of at most this many flows (32 MiB)


class Measured(NamedTuple):
    """Per-row numbers of one batch (B,) and the flow column sums (groups, E)."""

    emd: np.ndarray
    emd2: np.ndarray
    ce: np.ndarray
    target: np.ndarray
    pred: np.ndarray
    rank: np.ndarray
    p_target: np.ndarray
    col_abs: np.ndarray
    col_signed: np.ndarray

    def take(self, pick):
        """The rows ``pick`` (a mask or indices), column sums left out."""
        return Measured(*(a[pick] for a in self[:7]), None, None)


def _rows(batch, lo, hi):
    """Rows lo…hi of a :class:`rows.Batch` (views)."""
    x, sx, kind, t, st = batch
    cut = (lambda a: a[lo:hi] if a.shape[0] else a)
    return rows.Batch(x[lo:hi], cut(sx), kind, t[lo:hi], cut(st))


def _chunks(b):
    import numba

    return max(1, min(4 * numba.get_num_threads(), b))


def measure(batch, space, work_dtype, label=None, n_labels=1):
    """:class:`Measured` of a :class:`rows.Batch` on a Chain or Tree.

    The values and flows are taken in ``work_dtype`` (float32 rows read as stored).
    ``label`` (B,) int64 in ``0 … n_labels−1`` splits the column sums by group.
    Cross entropy: ``−log max(p_c, EPS)`` for a class target c, ``−Σ_k q_k log max(p_k,
    EPS)`` for a target row q (whose class is then ``argmax q``).
    """
    from ..transport import flow_weights, value_flows
    from ..kernels import ranks as kernels

    x, sx, kind, t, st = batch
    b = x.shape[0]
    dt = np.dtype(work_dtype).type
    w = np.ascontiguousarray(flow_weights(space), dtype=np.float64)
    label = np.zeros(b, dtype=np.int64) if label is None else label
    c = np.ascontiguousarray(t if kind == "classes" else np.argmax(t, axis=1), dtype=np.int64)
    values, sq = np.empty(b, dtype=dt), np.empty(b)
    rank, top, pred = np.empty(b, np.int64), np.empty(b), np.empty(b, np.int64)
    edges = w.shape[0]
    step = b if SLICE_ELEMENTS is None else max(16, SLICE_ELEMENTS // max(edges, x.shape[1]))
    chunks = _chunks(min(b, step))
    acc_abs = np.zeros((chunks, n_labels, edges))
    acc_signed = np.zeros_like(acc_abs)
    for lo in range(0, b, step):  # slices whose flows stay in cache between the passes
        hi = min(b, lo + step)
        part = _rows(batch, lo, hi)
        values[lo:hi], f, _ = value_flows(part, space, 1.0, dt)
        kernels.flow_columns(f, w, label[lo:hi], sq[lo:hi], acc_abs, acc_signed)
        kernels.class_ranks(part.x, c[lo:hi], rank[lo:hi], top[lo:hi])
        pred[lo:hi] = np.argmax(part.x, axis=1)  # numpy's is vectorised; ties: the first bin
    p_c = top if sx.shape[0] == 0 else top / (1.0 / sx.astype(np.float64))
    if kind == "classes":
        ce = -np.log(np.maximum(p_c, EPS))
    else:
        p = rows.scaled(x, sx).astype(np.float64, copy=False)
        q = rows.scaled(t, st).astype(np.float64, copy=False)
        ce = -np.einsum("ij,ij->i", q, np.log(np.maximum(p, EPS)))
    return Measured(values.astype(np.float64, copy=False), sq, ce, c, pred, rank, p_c,
                    acc_abs.sum(axis=0), acc_signed.sum(axis=0))


class Worst:
    """The ``k`` rows of largest EMD seen so far (earlier rows first among equals):
    ``emd``, ``emd2``, ``target``, ``pred``, ``p_target`` arrays and ``ids``, ``groups`` lists."""

    FIELDS = ("emd", "emd2", "target", "pred", "p_target")

    def __init__(self, k):
        self.k = k
        self.cols = {f: np.empty(0) for f in self.FIELDS}
        self.order = np.empty(0, dtype=np.int64)  # arrival number, for ties
        self.ids, self.groups, self.seen = [], [], 0

    def add(self, m, ids, groups=None):
        """Rows of the :class:`Measured` ``m`` with their ``ids`` (and ``groups``)."""
        n = m.emd.shape[0]
        pick = np.arange(n)
        if n > self.k:
            pick = np.lexsort((np.arange(n), -m.emd))[:self.k]  # earlier rows first among equals
        new = {f: getattr(m, f)[pick] for f in self.FIELDS}
        ids = np.asarray(ids)[pick].tolist()
        grp = [None] * len(pick) if groups is None else np.asarray(groups)[pick].tolist()
        self._keep(new, self.seen + pick, ids, grp)
        self.seen += n

    def _keep(self, new, order, ids, groups):
        cols = {f: np.concatenate([self.cols[f], new[f].astype(np.float64)]) for f in self.FIELDS}
        order = np.concatenate([self.order, order])
        ids, groups = self.ids + ids, self.groups + groups
        keep = np.lexsort((order, -cols["emd"]))[:self.k]
        self.cols = {f: v[keep] for f, v in cols.items()}
        self.order = order[keep]
        self.ids, self.groups = [ids[i] for i in keep], [groups[i] for i in keep]

    def merge(self, other):
        """Add another part's worst rows (its rows numbered after this one's)."""
        self._keep(other.cols, other.order + self.seen, other.ids, other.groups)
        self.seen += other.seen
        return self

    def rows(self):
        """The kept rows, worst first, as dicts."""
        out = []
        for i in range(len(self.ids)):
            row = {f: float(self.cols[f][i]) for f in self.FIELDS}
            row["target"], row["pred"] = int(row["target"]), int(row["pred"])
            out.append(dict(id=self.ids[i], group=self.groups[i], **row))
        return out


class Tally:
    """Everything a report says about one set of rows (all of them, or one group).

    ``n_classes`` bins, ``n_edges`` flow columns; ``positions`` (chain) for the class
    error ``x[argmax p] − x[c]``; ``top_k`` for the top-k accuracy; ``worst`` rows kept.
    """

    def __init__(self, n_classes, n_edges, top_k, worst, positions=None, exact_limit=None):
        self.n, self.top_k, self.positions = 0, top_k, positions
        self.summaries = {k: Summary(k) for k in ("emd", "emd2", "cross_entropy")}
        if exact_limit is not None:
            for s in self.summaries.values():
                s.EXACT_LIMIT = exact_limit
        self.classes = {k: np.zeros(n_classes) for k in
                        ("count", "emd", "emd2", "cross_entropy", "top1", "topk", "predicted")}
        self.flow_abs, self.flow_signed = np.zeros(n_edges), np.zeros(n_edges)
        self.class_error = np.zeros(2)  # Σ (x[pred] − x[c]), Σ |x[pred] − x[c]|
        self.worst = Worst(worst)

    def add(self, m, col_abs, col_signed, ids, groups=None):
        """Add the rows of the :class:`Measured` ``m`` (their flow column sums apart)."""
        n = m.emd.shape[0]
        if not n:
            return
        self.n += n
        for k, v in (("emd", m.emd), ("emd2", m.emd2), ("cross_entropy", m.ce)):
            self.summaries[k].add(v)
        size = self.classes["count"].shape[0]
        c = self.classes
        c["count"] += np.bincount(m.target, minlength=size)
        c["predicted"] += np.bincount(m.pred, minlength=size)
        for k, v in (("emd", m.emd), ("emd2", m.emd2), ("cross_entropy", m.ce),
                     ("top1", m.rank == 0), ("topk", m.rank < self.top_k)):
            c[k] += np.bincount(m.target, weights=v, minlength=size)
        self.flow_abs += col_abs
        self.flow_signed += col_signed
        if self.positions is not None:
            err = self.positions[m.pred] - self.positions[m.target]
            self.class_error += (err.sum(), np.abs(err).sum())
        self.worst.add(m, ids, groups)

    def merge(self, other):
        """Add another tally of the same space (a part computed apart)."""
        self.n += other.n
        for k, s in self.summaries.items():
            s.merge(other.summaries[k])
        for k, v in self.classes.items():
            v += other.classes[k]
        self.flow_abs += other.flow_abs
        self.flow_signed += other.flow_signed
        self.class_error += other.class_error
        self.worst.merge(other.worst)
        return self


def new_tally(space, top_k, worst, group=False):
    """A :class:`Tally` sized for ``space`` (a Chain or a Tree)."""
    chain = isinstance(space, Chain)
    edges = space.n - 1 if chain else space.n_nodes - 1
    return Tally(space.n, edges, top_k, worst, space.positions if chain else None,
                 GROUP_EXACT_LIMIT if group else None)


# ----------------------------------------------------------------------------- summaries


def _values(summary):
    """The kept values of an exact Summary, else None (it holds a sketch)."""
    if summary.sketch is not None:
        return None
    return np.concatenate(summary.parts) if summary.parts else np.empty(0)


def describe(summary):
    """count, mean, std, min, the :data:`QUANTILES` (``p05`` …) and max of a Summary;
    ``approximate`` when the quantiles come from its sketch (within a relative 1e-4)."""
    s = summary.stats()
    out = {"count": s["count"], "nonfinite": s["nonfinite"]}
    values = _values(summary)
    qs = {}
    if values is None:
        qs = {q: summary.sketch.quantile(q) for q in QUANTILES}
    elif values.size:
        qs = dict(zip(QUANTILES, np.quantile(values, QUANTILES).tolist()))
    for k in ("mean", "std", "min"):
        out[k] = s.get(k)
    for q in QUANTILES:
        out[f"p{round(q * 100):02d}"] = qs.get(q)
    out["max"] = s.get("max")
    out["approximate"] = values is None
    return out


def histogram(summary, edges):
    """Counts of a Summary's values in the bins ``edges`` (the sketch's buckets when it
    has one: each within a relative 1e-4 of its values). The last bin is closed."""
    values = _values(summary)
    if values is not None:
        return np.histogram(values, edges)[0]
    sk = summary.sketch
    reps = np.array([sk._value(sk.pos.lo + i) for i in range(sk.pos.counts.size)])
    counts, _ = np.histogram(np.clip(reps, edges[0], edges[-1]), edges, weights=sk.pos.counts)
    counts[0] += sk.zeros
    return counts.astype(np.int64)

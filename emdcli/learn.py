"""Ground distances learned from data, for classes with no known relation.

- :func:`learn_ground`: the distances between the class centroids of a network's own
  features, as Hou et al. learn the ground distance matrix (below).
- :func:`from_confusion`: distances from a classifier's confusion matrix (common practice,
  not Hou et al.'s method).

Both return an N × N float64 matrix that passes :meth:`emdcli.spaces.Ground.from_matrix`
(finite, non-negative, zero diagonal; symmetric by construction), ready for ``--ground`` or
:func:`emdcli.build_tree`.
"""

import numpy as np
from numba import njit

from .kernels import jit  # noqa: F401 (before any kernel loads)
from .errors import EMDInputError
from .spaces import Ground, _float_array

METRICS = ("euclidean", "sqeuclidean", "cosine")
BATCH_BYTES = 16 << 20  # features read (or sliced) at a time: bounded memory at any size


def learn_ground(features, labels=None, *, n_classes=None, metric="euclidean", batch_rows=None):
    """D (N, N): distances between the class centroids of ``features``.

    Hou, Yu & Samaras, "Squared Earth Mover's Distance-based Loss for Training Deep Neural
    Networks" (arXiv:1611.05916), the section on learning the ground distance matrix when no
    inter-class relation is known: "a method to automatically learn this matrix using the
    CNN's own features" (abstract). Each class is summarised by the centroid of its
    feature vectors, ``c_k = mean{x_r : y_r = k}``, and ``D_ij = ‖c_i − c_j‖₂`` (``metric=
    "euclidean"``), ``‖c_i − c_j‖₂²`` ("sqeuclidean", not a metric: the triangle inequality
    may fail) or ``1 − c_i·c_j / (‖c_i‖ ‖c_j‖)`` ("cosine"). The seed copy of the paper in
    this project holds only its abstract, so no section number is cited from it.

    features: (R, F) numbers with ``labels`` (R,) integer classes in 0…N−1; or, with
    ``labels=None``, an iterable of ``(features, labels)`` batches (streamed: memory is
    bounded by one batch plus the N × F sums). Sums are float64 whatever the input dtype,
    each class's rows added in row order, so any batching gives the same bits.
    n_classes: N (default: the largest label + 1). Every class needs at least one row.
    """
    centroids, _ = class_centroids(features, labels, n_classes=n_classes, batch_rows=batch_rows)
    d = centroid_ground(centroids, metric)
    Ground.from_matrix(d, source="the learned ground matrix")
    return d


def class_centroids(features, labels=None, *, n_classes=None, batch_rows=None):
    """(centroids (N, F) float64, counts (N,) int64) of ``features`` by class (see
    :func:`learn_ground` for the arguments); errors name the row (0-based, over all
    batches) and ``source`` "features" or "labels"."""
    sums = CentroidSums(n_classes)
    if labels is None:
        if isinstance(features, np.ndarray):
            raise EMDInputError("labels are missing", source="labels",
                                hint="give labels, or an iterable of (features, labels) batches")
        for item in features:
            try:
                x, y = item
            except (TypeError, ValueError):
                raise EMDInputError(
                    "each batch must be a (features, labels) pair", source="features"
                ) from None
            sums.add(x, y)
    else:
        x, y = _features(features), _labels_array(labels)
        if x.shape[0] != y.shape[0]:
            raise EMDInputError(
                f"{x.shape[0]} feature rows but {y.shape[0]} labels", source="labels",
                hint="give one label per feature row",
            )
        step = batch_rows or max(1, BATCH_BYTES // max(x.shape[1] * x.dtype.itemsize, 1))
        for start in range(0, max(x.shape[0], 1), step):
            sums.add(x[start:start + step], y[start:start + step])
    return sums.result()


class CentroidSums:
    """Per-class float64 feature sums and row counts, fed one batch at a time by
    :meth:`add`; :meth:`result` gives the centroids. Labels beyond the current size grow
    the sums when ``n_classes`` is not fixed."""

    def __init__(self, n_classes=None):
        if n_classes is not None and (isinstance(n_classes, bool) or int(n_classes) != n_classes
                                      or n_classes < 1):
            raise EMDInputError(f"n_classes must be a positive integer, got {n_classes!r}")
        self.fixed = None if n_classes is None else int(n_classes)
        self.sums = self.counts = None
        self.rows = 0
        self.top = -1  # the largest label seen

    def add(self, features, labels):
        """Add a batch: ``features`` (B, F), ``labels`` (B,) integer classes."""
        x, y = _features(features, self.rows), _labels_array(labels, self.rows)
        if x.shape[0] != y.shape[0]:
            raise EMDInputError(
                f"a batch has {x.shape[0]} feature rows but {y.shape[0]} labels",
                source="labels", row=self.rows, hint="give one label per feature row",
            )
        if self.sums is not None and x.shape[1] != self.sums.shape[1]:
            raise EMDInputError(
                f"rows have {x.shape[1]} features but earlier rows have {self.sums.shape[1]}",
                source="features", row=self.rows,
            )
        if not y.size:
            if self.sums is None:
                self.sums = np.zeros((self.fixed or 0, x.shape[1]))
                self.counts = np.zeros(self.fixed or 0, dtype=np.int64)
            return
        self._check_range(y)
        self._grow(int(y.max()) + 1, x.shape[1])
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        bad = _accumulate(self.sums, self.counts, np.ascontiguousarray(x), y)
        if bad >= 0:
            cols = np.flatnonzero(~np.isfinite(x[bad]))
            what = f"is {float(x[bad, cols[0]])!r}" if cols.size else "sums to an overflow"
            raise EMDInputError(
                f"feature {what}", source="features", row=self.rows + bad,
                column=int(cols[0]) if cols.size else None, hint="features must be finite",
            )
        self.rows += x.shape[0]

    def _check_range(self, y):
        low = np.flatnonzero(y < 0)
        high = np.flatnonzero(y >= self.fixed) if self.fixed is not None else low[:0]
        if low.size or high.size:
            r = int(min(low[:1].tolist() + high[:1].tolist()))
            span = f"0…{self.fixed - 1}" if self.fixed is not None else "0 or more"
            raise EMDInputError(
                f"label {int(y[r])} is out of range (classes are {span})",
                source="labels", row=self.rows + r,
            )

    def _grow(self, n, width):
        n = max(n, self.fixed or 0)
        if self.sums is None:
            self.sums = np.zeros((n, width))
            self.counts = np.zeros(n, dtype=np.int64)
        elif n > self.sums.shape[0]:
            extra = max(n, 2 * self.sums.shape[0]) - self.sums.shape[0]
            self.sums = np.concatenate([self.sums, np.zeros((extra, width))])
            self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])
        self.top = max(self.top, n - 1)

    def result(self):
        """(centroids (N, F), counts (N,)); a class with no rows is an error naming it."""
        if self.sums is None or self.rows == 0:
            raise EMDInputError("no feature rows", source="features")
        n = self.fixed if self.fixed is not None else self.top + 1
        counts = self.counts[:n]
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            more = f" (and {empty.size - 1} more)" if empty.size > 1 else ""
            raise EMDInputError(
                f"class {int(empty[0])} has no rows{more}", source="labels",
                hint="every class needs at least one labelled feature row (or give fewer classes)",
            )
        return self.sums[:n] / counts[:, None], counts.copy()


def centroid_ground(centroids, metric="euclidean"):
    """D (N, N) between the rows of ``centroids`` (N, F): euclidean, sqeuclidean or cosine
    (formulas in :func:`learn_ground`); symmetric, zero diagonal, float64.

    Euclidean forms use the Gram matrix of the centred centroids,
    ``‖c_i − c_j‖² = g_ii + g_jj − 2 g_ij`` (one BLAS product; an absolute error of about
    1e-16 · ‖c‖², clamped at 0)."""
    if metric not in METRICS:
        raise EMDInputError(f"unknown metric {metric!r}", hint=f"choose one of {', '.join(METRICS)}")
    c = np.asarray(centroids, dtype=np.float64)
    if metric == "cosine":
        norm = np.sqrt(np.einsum("ij,ij->i", c, c))
        zero = np.flatnonzero(norm == 0)
        if zero.size:
            raise EMDInputError(
                f"class {int(zero[0])}'s centroid is the zero vector; its cosine distance is "
                "undefined", source="features", hint="use --metric euclidean",
            )
        u = c / norm[:, None]
        d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
    else:
        c = c - c.mean(axis=0)
        g = c @ c.T
        sq = np.diag(g).copy()
        d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)
        # the Gram form loses ~1e-16·‖c‖² absolute: pairs that close, again directly
        i, j = np.nonzero(np.triu(d <= 1e-8 * max(float(sq.max(initial=0.0)), 1e-300), 1))
        for lo in range(0, i.size, 4096):
            k = slice(lo, lo + 4096)
            diff = c[i[k]] - c[j[k]]
            d[i[k], j[k]] = d[j[k], i[k]] = np.einsum("ij,ij->i", diff, diff)
        if metric == "euclidean":
            d = np.sqrt(d)
    d = 0.5 * (d + d.T)  # exactly symmetric
    np.fill_diagonal(d, 0.0)
    return d


def from_confusion(confusion):
    """D (N, N) from a confusion matrix C (N, N), rows the true class, columns the predicted
    one (counts or rates).

    A common practice, not Hou et al.'s method: classes a classifier confuses are close.
    ``P = C / rowsum(C)`` (each true class's prediction rates), ``S = (P + Pᵀ) / 2`` (the
    mean rate at which i and j are taken for each other), ``D_ij = 1 − S_ij`` off the
    diagonal and 0 on it. D is symmetric, in [0, 1] (1: never confused), and positive off
    the diagonal unless two classes are always predicted as each other (then an error).
    """
    c = _float_array(confusion, "the confusion matrix", "confusion")
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.size == 0:
        raise EMDInputError(f"a confusion matrix must be N × N, got shape {c.shape}",
                            source="confusion")
    for bad, what in ((~np.isfinite(c), "not finite"), (c < 0, "negative")):
        if bad.any():
            r, k = divmod(int(np.flatnonzero(bad.ravel())[0]), c.shape[1])
            raise EMDInputError(f"entry is {what} ({float(c[r, k])!r})", source="confusion",
                                row=r, column=k, hint="counts or rates are finite and >= 0")
    total = c.sum(axis=1)
    empty = np.flatnonzero(total <= 0)
    if empty.size:
        raise EMDInputError(
            f"class {int(empty[0])} has no predictions (its row sums to 0)", source="confusion",
            row=int(empty[0]), hint="rows are the true classes; each needs some rows counted",
        )
    p = c / total[:, None]
    d = np.clip(1.0 - 0.5 * (p + p.T), 0.0, 1.0)
    np.fill_diagonal(d, 0.0)
    same = np.argwhere((d <= 0.0) & ~np.eye(d.shape[0], dtype=bool))
    if same.size:
        i, j = (int(v) for v in same[0])
        raise EMDInputError(
            f"classes {i} and {j} are always predicted as each other; their distance would be 0",
            source="confusion", row=i, column=j,
        )
    return d


def _features(x, offset=0):
    """A batch of features as a 2-D numeric array (no copy when it is one already)."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiub":
        x = _float_array(x, "features", "features")
    if x.ndim != 2:
        raise EMDInputError(f"features must be 2-D (rows × features), got shape {x.shape}",
                            source="features", row=offset or None)
    if x.shape[1] == 0:
        raise EMDInputError("features have no columns", source="features")
    return x


def _labels_array(y, offset=0):
    """A batch of labels as int64 (B,); floats must be whole numbers."""
    try:
        y = np.asarray(y)
    except (TypeError, ValueError):
        raise EMDInputError("labels must be a 1-D array of integers", source="labels") from None
    if y.ndim != 1:
        raise EMDInputError(f"labels must be 1-D, got shape {y.shape}", source="labels")
    if y.dtype.kind in "iu":
        return y.astype(np.int64, copy=False)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            r = int(bad[0])
            raise EMDInputError(f"label {float(y[r])!r} is not an integer class",
                                source="labels", row=offset + r)
        return y.astype(np.int64)
    kind = "true/false" if y.dtype.kind == "b" else str(y.dtype)
    raise EMDInputError(f"labels must be integers, not {kind}", source="labels")


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _accumulate(sums, counts, x, y):
    """sums[y_r] += x_r, counts[y_r] += 1 over the rows; returns the first row with a
    non-finite value (its sum is not finite), else −1. ``reassoc`` only lets the row's
    check sum vectorise (NaN and inf stay visible); the class sums add in row order."""
    for r in range(x.shape[0]):
        k = y[r]
        row = sums[k]
        xr = x[r]
        total = 0.0
        for f in range(x.shape[1]):
            v = np.float64(xr[f])
            row[f] += v
            total += v
        if not np.isfinite(total):
            return r
        counts[k] += 1
    return -1

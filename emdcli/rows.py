"""Validation and normalisation of prediction and target batches (numpy only).

Every check raises :class:`EMDInputError` naming the first offending row and column
(0-based, relative to the batch; callers streaming a file shift it).
"""

import numpy as np

from .errors import EMDInputError

NORMALIZE = ("l1", "softmax", "none")
DTYPES = {"float64": np.float64, "float32": np.float32}
# Relative tolerance for "equal mass" under normalize="none".
MASS_RTOL = {np.float64: 1e-9, np.float32: 1e-5}


def resolve_dtype(dtype):
    """``"float64"``/``"float32"`` or a numpy float dtype → ``np.float64``/``np.float32``."""
    try:
        key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        key = None
    if key not in DTYPES:
        raise EMDInputError(f"dtype must be float64 or float32, got {dtype!r}")
    return DTYPES[key]


def _first(mask):
    """(row, column) of the first True in a 2-D mask, in row-major order."""
    flat = int(np.flatnonzero(mask.ravel())[0])
    return divmod(flat, mask.shape[1])


def _check_finite(a, source, raw=None):
    """All finite; ``raw`` is the array before the cast to ``a.dtype`` (to spot overflow)."""
    if not np.isfinite(a).all():
        r, c = _first(~np.isfinite(a))
        if raw is not None and np.isfinite(raw[r, c]):
            raise EMDInputError(
                f"value {float(raw[r, c])!r} overflows {a.dtype}", source=source, row=r, column=c,
                hint="rescale the row or use --dtype float64",
            )
        raise EMDInputError(
            f"value is {float(a[r, c])}", source=source, row=r, column=c,
            hint="remove or impute non-finite values",
        )


def _check_rows(a, source, *, logits=False, raw=None):
    """2-D, finite; unless ``logits``: non-negative and each row with positive, finite mass.

    Returns the row sums (B,). The common case costs two passes (the sums and the
    minimum); the offending element is located only when a check fails.
    """
    if a.ndim != 2:
        raise EMDInputError(
            f"expected a 2-D array of rows × bins, got shape {a.shape}", source=source
        )
    if a.shape[0] and a.shape[1] < 1:
        raise EMDInputError("rows have no bins", source=source)
    with np.errstate(over="ignore", invalid="ignore"):
        sums = a.sum(axis=1)
    if not np.isfinite(sums).all():  # a NaN/inf inside, or a finite row whose sum overflows
        _check_finite(a, source, raw)
        if not logits:
            raise EMDInputError(
                f"row sum overflows {a.dtype}", source=source,
                row=int(np.flatnonzero(~np.isfinite(sums))[0]), hint="rescale the row",
            )
    if logits:
        return sums
    if a.size and a.min() < 0:
        r, c = _first(a < 0)
        raise EMDInputError(
            f"negative mass {float(a[r, c])!r}", source=source, row=r, column=c,
            hint="masses must be >= 0; for logits use --normalize softmax",
        )
    zero = np.flatnonzero(sums <= 0)
    if zero.size:
        raise EMDInputError(
            "row sums to zero and cannot be a distribution", source=source, row=int(zero[0]),
            hint="drop the row or give it some mass",
        )
    return sums


def prepare_pred(pred, normalize, dtype, check=True):
    """Predictions (B, N) → distributions (B, N) of ``dtype``, C-contiguous.

    ``l1``: ``p = x / Σx``; ``softmax``: ``p = exp(x − max x) / Σ exp(…)``; ``none``: as given.
    """
    if normalize not in NORMALIZE:
        raise EMDInputError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    x = np.asarray(pred)
    if x.dtype.kind not in "fiub":
        raise EMDInputError(f"predictions must be numbers, got dtype {x.dtype}", source="pred")
    with np.errstate(over="ignore"):  # an overflowing cast is reported by the checks
        raw, x = x, np.ascontiguousarray(x, dtype=dtype)
    sums = _check_rows(x, "pred", logits=normalize == "softmax", raw=raw) if check else None
    if normalize == "l1":
        return x / (x.sum(axis=1) if sums is None else sums)[:, None]
    if normalize == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x


def prepare_target(target, n_rows, n_bins, normalize, dtype, check=True):
    """Targets → ``("rows", Q (B, N))`` or ``("classes", c (B,) int64)``.

    Rows are l1-normalised unless ``normalize == "none"``; a 1-D target is class indices.
    """
    t = np.asarray(target)
    if t.dtype.kind not in "fiub":
        raise EMDInputError(f"targets must be numbers, got dtype {t.dtype}", source="target")
    if t.ndim == 0:
        raise EMDInputError(
            "target is a single number", source="target",
            hint="give (B,) class indices or (B, N) rows",
        )
    if t.ndim == 1:
        return "classes", prepare_classes(t, n_rows, n_bins, check)
    if check:
        if t.ndim == 2 and t.shape[1] != n_bins:
            raise EMDInputError(
                f"target rows have {t.shape[1]} bins but predictions have {n_bins}",
                source="target", hint="both inputs need the same bins",
            )
        _check_rows_count(t, n_rows)
    with np.errstate(over="ignore"):
        q = np.ascontiguousarray(t, dtype=dtype)
    sums = _check_rows(q, "target", raw=t) if check else None
    if normalize != "none":
        q = q / (q.sum(axis=1) if sums is None else sums)[:, None]
    return "rows", q


def _check_rows_count(t, n_rows):
    if t.shape[0] != n_rows:
        raise EMDInputError(
            f"target has {t.shape[0]} rows but predictions have {n_rows}",
            source="target", hint="give one target per prediction row",
        )


def prepare_classes(t, n_rows, n_bins, check=True):
    """Class indices (B,) → int64, each in ``0 … n_bins−1``."""
    t = np.asarray(t)
    if check:
        if t.dtype.kind == "b":
            raise EMDInputError(
                "class indices are booleans", source="target", hint="give integer class indices"
            )
        _check_rows_count(t, n_rows)
        if t.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
            if bad.size:
                raise EMDInputError(
                    f"class index {float(t[bad[0]])!r} is not an integer", source="target",
                    row=int(bad[0]), hint="1-D targets are class indices",
                )
        out = (t < 0) | (t >= n_bins)
        if out.any():
            r = int(np.flatnonzero(out)[0])
            raise EMDInputError(
                f"class index {t[r].item()} is out of range 0..{n_bins - 1}", source="target", row=r,
                hint="class indices are 0-based bin numbers",
            )
    return np.ascontiguousarray(t, dtype=np.int64)


def check_equal_mass(p, kind, q):
    """Under ``normalize="none"``: each pred row must carry its target's mass."""
    mass_p = p.sum(axis=1, dtype=np.float64)
    mass_q = np.ones_like(mass_p) if kind == "classes" else q.sum(axis=1, dtype=np.float64)
    rtol = MASS_RTOL[p.dtype.type]
    bad = np.flatnonzero(np.abs(mass_p - mass_q) > rtol * np.maximum(np.abs(mass_q), 1.0))
    if bad.size:
        r = int(bad[0])
        raise EMDInputError(
            f"prediction mass {float(mass_p[r])!r} differs from target mass {float(mass_q[r])!r}",
            source="pred", row=r, hint="use --normalize l1, or make the masses equal",
        )


def input_gradient(g, p, raw, normalize):
    """Chain rule from the distribution gradient ``g`` (B, N) to the raw input.

    ``l1``: ``(g − ⟨g, p⟩) / Σx``; ``softmax``: ``p ⊙ (g − ⟨g, p⟩)``; ``none``: ``g``.
    Both are unchanged by adding a constant to ``g``, so the projected gradient will do.
    """
    if normalize == "none":
        return g
    centred = g - np.einsum("ij,ij->i", g, p)[:, None]
    if normalize == "l1":
        return centred / np.asarray(raw, dtype=g.dtype).sum(axis=1, keepdims=True)
    return p * centred

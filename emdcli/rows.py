"""Validation and normalisation of prediction and target batches (numpy only).

Every check raises :class:`EMDInputError` naming the first offending row and column
(0-based, relative to the batch; callers streaming a file shift it).
"""

import sys
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from .errors import EMDInputError

NORMALIZE = ("l1", "softmax", "none")
GRAD_WRT = ("distribution", "input")
DTYPES = {"float64": np.float64, "float32": np.float32}
# Relative tolerance for "equal mass" under normalize="none".
MASS_RTOL = {np.float64: 1e-9, np.float32: 1e-5}
# Batches of at most this many values are reduced with numpy (the same bits as the Numba
# kernels), so a small job never loads Numba (:func:`numpy_twins`).
SMALL_ELEMENTS = 1 << 16
# Values the numpy twins take in a process before the kernels take over: ~0.3 s of their
# work, what loading Numba costs; past it (a loop of small batches: a training loop, a
# stream) the kernels, 1.7-20x faster once loaded, pay for themselves.
SMALL_BUDGET = 1 << 22
_SMALL_SEEN = [0]
# A whole job (``emd compute``: :func:`numpy_twins_job`) of at most this many values runs
# on the numpy twins, whatever its batches: ~0.4 s of their work (20-50 ns a value),
# less than loading Numba and its cached kernels (0.5-1 s a process)...
JOB_ELEMENTS = 1 << 24
# ... or of at most this many when its kernels are not compiled yet: ~1.5-3 s of their
# work, less than compiling them (4-5 s on a 2-core machine, `emd warmup`)
COLD_JOB_ELEMENTS = 1 << 26
# what a value costs the twins of a space's kernel, in chain values (the tree's twin:
# 37-75 ns a value on WordNet, ``kernels.small_tree``)
TWIN_COST = {"chain": 1, "tree": 4}
_JOB_TWINS = [False]


class Batch(NamedTuple):
    """A batch as the CPU kernels take it: rows ``x`` (B, N) as stored with their scale
    ``sx`` (``p = sx·x``, :func:`pred_rows`), and the targets: ``kind`` "rows" with ``t``
    (B, N) and scale ``st``, or "classes" with ``t`` (B,) int64 (:func:`target_rows`)."""

    x: np.ndarray
    sx: np.ndarray
    kind: str
    t: np.ndarray
    st: np.ndarray


def on_device(x):
    """True for an array already on the GPU: a numba device array, or anything exposing
    ``__cuda_array_interface__`` (CuPy; PyTorch CUDA tensors, those that require grad too).
    Imports nothing GPU-related."""
    if getattr(x, "__cuda_ndarray__", False):
        return True
    try:
        return hasattr(x, "__cuda_array_interface__")
    except RuntimeError:  # PyTorch refuses to export a tensor that requires grad
        return True


def detached(x):
    """x without autograd history: a PyTorch tensor that requires grad refuses to export
    its memory (to numpy or to numba), so the distances are taken of ``x.detach()``."""
    return x.detach() if getattr(x, "requires_grad", False) is True else x


def check_grad_wrt(grad_wrt):
    """Gradients are taken w.r.t. the normalised ``"distribution"`` or the raw ``"input"``."""
    if grad_wrt not in GRAD_WRT:
        raise EMDInputError(f"grad_wrt must be one of {', '.join(GRAD_WRT)}, got {grad_wrt!r}")


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


def unit_scale():
    """The empty row-scale array: every row as it is (scale 1)."""
    return np.empty(0, dtype=np.float64)


def numpy_twins(size):
    """Whether a batch of ``size`` values goes through the numpy twins of the kernels
    (``kernels.small``: the same bits): it is small (``SMALL_ELEMENTS``), Numba is not
    loaded in this process yet, and the twins have not yet been asked about
    ``SMALL_BUDGET`` values here, or it is a batch of a job that runs on the twins
    whole (:func:`numpy_twins_job`)."""
    if "numba" in sys.modules:
        return False
    if _JOB_TWINS[0]:
        return True
    if size > SMALL_ELEMENTS or _SMALL_SEEN[0] >= SMALL_BUDGET:
        return False
    _SMALL_SEEN[0] += size
    return True


def job_twins():
    """Whether this batch is a job's that runs on the numpy twins whole
    (:func:`numpy_twins_job`): the tree's twin (a numpy operation a bin and a node,
    milliseconds a call at any batch size) serves such jobs only."""
    return _JOB_TWINS[0] and "numba" not in sys.modules


@contextmanager
def numpy_twins_job(on=True):
    """Within this context (when ``on``), every batch, whatever its size, goes through the
    numpy twins of the kernels (the same bits) while Numba is not loaded: a job that
    would cost less on them than loading or compiling the kernels (``jobs.run``)."""
    before = _JOB_TWINS[0]
    _JOB_TWINS[0] = bool(on) or before
    try:
        yield
    finally:
        _JOB_TWINS[0] = before


def row_sums_min(a):
    """(Σ_i a[b, i], min_i a[b, i]) per row of a 2-D array, float64, in one parallel pass."""
    if a.shape[1] and numpy_twins(a.size):  # numpy, same bits: no Numba to load
        from .kernels.small import row_sums_min as small

        return small(a)
    from .kernels.rowstats import row_sums_min as kernel

    sums = np.empty(a.shape[0], dtype=np.float64)
    mins = np.empty(a.shape[0], dtype=np.float64)
    if a.shape[0]:
        kernel(a, sums, mins)
    return sums, mins


def _check_shape(a, source):
    if a.ndim != 2:
        raise EMDInputError(
            f"expected a 2-D array of rows × bins, got shape {a.shape}", source=source
        )
    if a.shape[0] and a.shape[1] < 1:
        raise EMDInputError("rows have no bins", source=source)


def _check_rows(a, source, *, logits=False, raw=None, dtype=None, stats=None):
    """2-D, finite; unless ``logits``: non-negative and each row with positive mass whose
    sum the dtype can hold. ``stats``: the rows' (sums, minima), already computed.

    Returns the row sums (B,) float64. The common case costs one pass (the sums and the
    minima together); the offending element is located only when a check fails.
    """
    _check_shape(a, source)
    sums, mins = row_sums_min(a) if stats is None else stats
    bad = ~np.isfinite(sums)
    if bad.any():  # a NaN/inf inside, or a finite row whose sum overflows float64
        _check_finite(a, source, raw)
    if logits:
        return sums
    bad |= sums > np.finfo(dtype or a.dtype).max  # a sum in the result dtype would overflow
    if bad.any():
        raise EMDInputError(
            f"row sum overflows {a.dtype}", source=source,
            row=int(np.flatnonzero(bad)[0]), hint="rescale the row",
        )
    negative = np.flatnonzero(mins < 0)
    if negative.size:
        r = int(negative[0])
        c = int(np.flatnonzero(a[r] < 0)[0])
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
    tiny = np.flatnonzero(sums < np.finfo(np.float64).tiny)
    if tiny.size:  # its reciprocal, the row's scale, would overflow
        r = int(tiny[0])
        raise EMDInputError(
            f"row mass {float(sums[r])!r} is below the smallest normal float64 and cannot be "
            "normalised", source=source, row=r, hint="rescale the row",
        )
    return sums


def _stored(x, dtype, as_stored):
    """x C-contiguous in ``dtype`` — or, with ``as_stored``, in its own float dtype when
    that is no wider than ``dtype`` (the kernels read float32 rows as they are)."""
    keep = as_stored and x.dtype in (np.float32, np.float64) and x.dtype.itemsize <= np.dtype(dtype).itemsize
    with np.errstate(over="ignore"):  # an overflowing cast is reported by the checks
        return np.ascontiguousarray(x, dtype=x.dtype if keep else dtype)


def check_sums(x, stats, dtype):
    """:func:`pred_rows`'s checks of rows x (B, N) read under ``check="kernel"``, on the
    (2, B) sums and minima the kernel wrote (``kernels.rowstats.RowSums``)."""
    _check_rows(x, "pred", raw=x, dtype=dtype, stats=(stats[0], stats[1]))


def pred_rows(pred, normalize, dtype, check=True, as_stored=False, logits=False):
    """Predictions (B, N) → ``(x, scale)``: x (B, N) of ``dtype``, C-contiguous (the input
    itself when it already is), and the distribution is ``p = scale[:, None] · x``.
    ``as_stored``: float32 rows stay float32 under a float64 ``dtype`` (for kernels that
    read either and accumulate in float64). ``check="kernel"`` (l1): checked, but from
    the sums and minima a kernel computes as it reads the rows: the scale comes back
    unfilled, (B,), for the kernel to fill, and :func:`check_sums` checks afterwards.

    ``l1``: scale = 1 / Σx (no copy is made: the EMD kernels take the scale);
    ``softmax``: x = :func:`softmax` (x), computed — or, with ``logits``, the logits as
    stored, checked, for a kernel that computes it; ``none``: x as given. The last two get
    the empty scale (1). :func:`scaled` materialises p.
    """
    if normalize not in NORMALIZE:
        raise EMDInputError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    x = np.asarray(detached(pred))
    if x.dtype.kind not in "fiub":
        raise EMDInputError(f"predictions must be numbers, got dtype {x.dtype}", source="pred")
    raw, x = x, _stored(x, dtype, as_stored and (normalize != "softmax" or logits))
    if check == "kernel" and normalize == "l1":
        _check_shape(x, "pred")
        return x, np.empty(x.shape[0], dtype=np.float64)
    sums = (_check_rows(x, "pred", logits=normalize == "softmax", raw=raw, dtype=dtype)
            if check else None)
    if normalize == "l1":
        return _l1(x, row_sums_min(x)[0] if sums is None else sums)
    if normalize == "softmax" and not logits:
        return softmax(x), unit_scale()
    return x, unit_scale()


def softmax(x):
    """``exp(x − max x) / Σ exp(…)`` per row (B, N), in x's dtype."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def target_rows(target, n_rows, n_bins, normalize, dtype, check=True, as_stored=False):
    """Targets → ``("rows", x (B, N), scale (B,))`` (as :func:`pred_rows` with ``l1``,
    or the empty scale under ``none``) or ``("classes", c (B,) int64, empty scale)``;
    a 1-D target is class indices."""
    t = np.asarray(detached(target))
    if t.dtype.kind not in "fiub":
        raise EMDInputError(f"targets must be numbers, got dtype {t.dtype}", source="target")
    if t.ndim == 0:
        raise EMDInputError(
            "target is a single number", source="target",
            hint="give (B,) class indices or (B, N) rows",
        )
    if t.ndim == 1:
        return "classes", prepare_classes(t, n_rows, n_bins, check), unit_scale()
    if check:
        if t.ndim == 2 and t.shape[1] != n_bins:
            raise EMDInputError(
                f"target rows have {t.shape[1]} bins but predictions have {n_bins}",
                source="target", hint="both inputs need the same bins",
            )
        _check_rows_count(t, n_rows)
    q = _stored(t, dtype, as_stored)
    sums = _check_rows(q, "target", raw=t, dtype=dtype) if check else None
    if normalize == "none":
        return "rows", q, unit_scale()
    return ("rows", *_l1(q, row_sums_min(q)[0] if sums is None else sums))


def _l1(x, sums):
    """(x, 1 / sums): the l1 normalisation as a row scale (checked rows have sums whose
    reciprocal is finite; unchecked zero rows give inf, as a division would)."""
    with np.errstate(divide="ignore", over="ignore"):
        return x, 1.0 / sums


def scaled(x, scale):
    """``scale[:, None] · x`` in x's dtype (x itself for the empty scale), computed as x
    divided by the row sum 1/scale (in float32 the scale of a row of subnormal masses
    would overflow, its sum does not)."""
    if scale.shape[0] == 0:
        return x
    return x / (1.0 / scale).astype(x.dtype)[:, None]


def prepare_pred(pred, normalize, dtype, check=True):
    """Predictions (B, N) → distributions (B, N) of ``dtype``, C-contiguous (see
    :func:`pred_rows`)."""
    return scaled(*pred_rows(pred, normalize, dtype, check))


def prepare_target(target, n_rows, n_bins, normalize, dtype, check=True):
    """Targets → ``("rows", Q (B, N))`` (normalised unless ``none``) or ``("classes", c)``."""
    kind, t, scale = target_rows(target, n_rows, n_bins, normalize, dtype, check)
    return kind, scaled(t, scale) if kind == "rows" else t


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
        if t.size and (t.min() < 0 or t.max() >= n_bins):  # (no (B,) temporaries)
            r = int(np.flatnonzero((t < 0) | (t >= n_bins))[0])
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


def input_gradient(g, x, scale, normalize):
    """Chain rule from the distribution gradient ``g`` (B, N) to the raw input, for the
    distribution ``p = scale[:, None] · x`` of :func:`pred_rows`.

    ``l1``: ``(g − ⟨g, p⟩) / Σx`` (1/Σx is the scale); ``softmax``: ``p ⊙ (g − ⟨g, p⟩)``
    (x is p); ``none``: ``g``. Both are unchanged by adding a constant to ``g``, so the
    projected gradient will do.
    """
    if normalize == "none":
        return g
    dots = np.einsum("ij,ij->i", g, x, dtype=np.float64)
    if normalize == "l1":
        dots *= scale
    centred = g - dots.astype(g.dtype)[:, None]
    if normalize == "l1":
        return centred * scale.astype(g.dtype)[:, None]
    return x * centred


SCRATCH_ALIGN = 64  # bytes: a cache line, and the lanes kernels' <8 x double> vectors


def aligned_empty(shape, dtype=np.float64):
    """An uninitialised array whose first element starts a 64-byte cache line (its rows
    too when a row's bytes are a multiple of 64, as the lanes kernels' tiles are). A large
    ``np.empty`` starts 16 bytes past a page, so every vector of a tile row straddled two
    lines: WordNet's tree lanes kernel, 512 × 1000, one thread, 1.13-1.26 -> 0.82-0.84 ms."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buf = np.empty(count * dt.itemsize + SCRATCH_ALIGN, dtype=np.uint8)
    skip = -buf.ctypes.data % SCRATCH_ALIGN
    return buf[skip:skip + count * dt.itemsize].view(dt).reshape(shape)

"""Public library functions: validate, normalise, dispatch to the kernels.

Everything here works on in-memory arrays; nothing knows about files or terminals.
"""

import threading
from typing import NamedTuple

import numpy as np

from . import rows
from .errors import EMDInputError
from .spaces import Chain, Ground, Tree, space_for

def _check_rho(rho):
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise EMDInputError(f"rho must be a number >= 1, got {rho!r}") from None
    if not (rho >= 1.0 and np.isfinite(rho)):
        raise EMDInputError(f"rho must be a finite number >= 1, got {rho!r}")
    return rho


def emd(
    pred,
    target,
    *,
    space=None,
    positions=None,
    rho=1.0,
    normalize="l1",
    dtype="float64",
    gradient=False,
    grad_wrt="distribution",
    check=True,
    device="cpu",
    out=None,
):
    """EMD^rho between each prediction row and its target, on a chain, a tree or a matrix.

    Chain (default, or ``positions``): ``Σ_i d_i |φ_i|^rho`` with ``φ_i = Σ_{j≤i}(p_j − q_j)``
    and gaps ``d_i = x_{i+1} − x_i``. Tree (``space=Tree``): ``Σ_{v≠root} w_v |φ̃_v|^rho`` with
    φ̃_v the mass difference in the subtree of v. rho = 1 is the exact EMD (1-Wasserstein
    distance under the chain's or tree's path metric), rho = 2 the relaxed EMD² loss.
    Ground matrix (``space=Ground``, rho = 1 only): ``Σ_i p_i D_ic`` for class targets, the
    transport LP (needs POT, ``pip install 'emdcli[lp]'``) for soft targets.

    pred: (B, N) masses (or logits with ``normalize="softmax"``).
    target: (B, N) masses, or (B,) integer class indices (one-hot targets, never built).
    space: a :class:`Chain`, :class:`Tree` or :class:`Ground` with N bins.
    positions: (N,) strictly increasing bin positions (a chain); default 0…N−1.
    normalize: ``"l1"`` (divide by the row sum), ``"softmax"``, or ``"none"`` (rows must
    already carry equal mass). Target rows are l1-normalised except under ``"none"``.
    dtype: ``"float64"`` (default) or ``"float32"`` for the data and results.
    gradient: also return the gradient (B, N) with respect to the normalised distribution
    (``grad_wrt="distribution"``: projected to sum zero per row) or the raw input
    (``grad_wrt="input"``: chain rule through the normalisation).
    check: validate the inputs (set False in a hot training loop you trust).
    device: ``"cpu"``, ``"cuda"`` (an NVIDIA GPU through numba.cuda) or ``"auto"``. Arrays
    already on the GPU (``__cuda_array_interface__``: numba, CuPy, PyTorch) are computed
    there and the results stay there; they are taken as given (no checks, no normalisation).
    out: (values (B,), gradients (B, N) or None), C-contiguous arrays of the result dtype
    to write the results into (CPU), as numpy's ``out=``; they are what is returned. (A
    batch whose checks fail raises, and may have written them first: large batches are
    checked from the row sums the kernels take as they read the rows.)

    Returns the distances (B,), or ``(distances, gradients)`` when ``gradient`` is true.
    """
    rho = _check_rho(rho)
    where = "cpu"
    if device != "cpu":
        from .gpu import resolve_device

        where = resolve_device(device)
    if rows.on_device(pred):  # stays on the GPU: taken as given, results left there
        from .gpu import emd_on_device

        sp = space_for(space, positions, pred.shape[1])
        if isinstance(sp, Ground):
            raise EMDInputError("a ground matrix has no GPU kernel", hint="use device cpu")
        return emd_on_device(pred, target, sp, rho=rho, gradient=gradient)
    rows.check_grad_wrt(grad_wrt)
    dt = rows.resolve_dtype(dtype)
    as_stored = where == "cpu" and not isinstance(space, Ground)  # CPU kernels read float32
    logits = as_stored and normalize == "softmax"  # the lanes kernels compute the softmax
    sums = bool(check) and where == "cpu" and _sums_in_kernel(pred, space, rho, normalize, dt)
    batch = prepare(pred, target, normalize, dt, "kernel" if sums else check, as_stored, logits)
    x, sx, kind, t, st = batch
    b, n = x.shape
    sp = space_for(space, positions, n)
    # how the kernels read x: computing its softmax, or its l1 sums for the checks, or not
    reads = _softmax_mode(sp, x.shape, rho, True, grad_wrt == "input") if logits else None
    if sums:
        from .kernels.rowstats import RowSums

        reads = RowSums(np.empty((2, b), dtype=np.float64))
    if logits and reads is None:  # the others take distributions
        batch = batch._replace(x=rows.softmax(x.astype(dt, copy=False)))
        x = batch.x
    values, g = _outputs(out, b, n, dt, gradient)
    if where == "cuda" or isinstance(sp, Ground):  # these kernels take distributions
        if where == "cuda" and isinstance(sp, Ground):
            raise EMDInputError("a ground matrix has no GPU kernel for the EMD",
                                hint="use device cpu")
        p, q = rows.scaled(x, sx), rows.scaled(t, st) if kind == "rows" else t
        if isinstance(sp, Ground):
            _ground(p, kind, q, sp, rho, values, g)
        else:
            from .gpu import chain_cuda, tree_cuda

            (chain_cuda if isinstance(sp, Chain) else tree_cuda)(p, kind, q, sp, rho, values, g)
    elif isinstance(sp, Chain):
        _chain(batch, sp, rho, values, g, reads)
    else:
        _tree(batch, sp, rho, values, g, reads)
    if sums:
        rows.check_sums(x, reads.stats, dt)
    if not gradient:
        return values
    if grad_wrt == "input" and not getattr(reads, "chain_rule", False):
        grad = rows.input_gradient(g, x, sx, normalize)
        if out is None:
            g = grad
        elif grad is not g:
            g[...] = grad
    return values, g


def _outputs(out, b, n, dt, gradient):
    """(values (B,), gradients (B, N) or None): ``out``'s arrays, checked, or new ones."""
    if out is None:
        return np.empty(b, dtype=dt), (np.empty((b, n), dtype=dt) if gradient else None)
    values, g = out[0], (out[1] if gradient else None)
    want = [(values, (b,))] + ([(g, (b, n))] if gradient else [])
    for a, shape in want:
        if not (isinstance(a, np.ndarray) and a.shape == shape and a.dtype == dt
                and a.flags.c_contiguous and a.flags.writeable):
            raise EMDInputError(f"out arrays must be writeable C-contiguous {np.dtype(dt).name} arrays "
                                f"of shapes (B,) and (B, N) = {(b,)} and {(b, n)}")
    return values, g


def _lanes_take(space, b, n, rho, itemsize):
    """Whether the chain's or tree's lanes kernel takes a batch of b rows of n bins stored
    with ``itemsize`` bytes on ``space`` (a Chain, None for one, or a Tree of n bins)."""
    if space is None or isinstance(space, Chain):
        from .kernels.chain_lanes import use_lanes

        return use_lanes(b, n, rho, itemsize)
    if not isinstance(space, Tree) or space.n != n:
        return False  # (a ground matrix; a tree of another width: space_for names it)
    from .kernels.tree_lanes import use_lanes

    return use_lanes(b, rho)


def _sums_in_kernel(pred, space, rho, normalize, dt):
    """Whether the l1 check of ``pred`` can take its row sums and minima from the lanes
    kernels as they read the rows (one pass over them, not two): C-contiguous float rows,
    stored as the kernels read them, a batch for the kernels (not the numpy twins,
    :func:`rows.numpy_twins`) that the chain's or tree's lanes kernel takes (a chain's rows
    wide enough: ``kernels.chain_lanes.takes_sums``)."""
    if not (normalize == "l1" and isinstance(pred, np.ndarray) and pred.ndim == 2
            and pred.dtype in (np.float32, np.float64) and pred.flags.c_contiguous
            and pred.dtype.itemsize <= np.dtype(dt).itemsize
            and not rows.numpy_twins(pred.size)  # (first: the lanes modules load Numba)
            and _lanes_take(space, *pred.shape, rho, pred.dtype.itemsize)):
        return False
    if isinstance(space, Tree):
        return True
    from .kernels.chain_lanes import takes_sums

    return takes_sums(pred.shape[1])


def _softmax_mode(sp, shape, rho, logits, chain_rule):
    """How the lanes kernels take rows x (B, N) = ``shape`` that are a softmax's logits
    (``logits``) or output, on space sp: a ``kernels.softmax.Softmax`` where they run
    (p = softmax(x) computed in their tiles, and with ``chain_rule`` the gradient through
    the softmax to x), None where they do not (small batches, other rho, other widths: the
    caller then takes the distributions to them). (Narrow float64 chains too: the softmax
    is the work there.)"""
    if rows.numpy_twins(shape[0] * shape[1]) or not _lanes_take(sp, *shape, rho, 4):
        return None
    from .kernels.softmax import Softmax

    return Softmax(logits, chain_rule)


def emd_softmax(p, target, *, space=None, rho=1.0, dtype="float64", out=None):
    """EMD^rho of distributions that are a softmax's output, ``p = softmax(z)`` (B, N),
    against ``target`` (B, N) rows or (B,) classes (as :func:`emd` with ``normalize=
    "none"``), and its gradient with respect to the logits z, ``p ⊙ (g − ⟨g, p⟩)`` with
    g = ∂E/∂p: for a caller that has computed the softmax (``emdcli.torch``), in one
    kernel pass where the lanes kernels run. Unchecked (a training loop's hot path).

    Returns ``(distances (B,), gradients (B, N))`` (into ``out`` when given, as in
    :func:`emd`). The gradients' array may be p itself: p is then overwritten (the lanes
    kernels read each block of rows before they write it; elsewhere p is copied first)."""
    rho = _check_rho(rho)
    dt = rows.resolve_dtype(dtype)
    batch = prepare(p, target, "none", dt, False, not isinstance(space, Ground))
    x, sx, kind, t, st = batch
    b, n = x.shape
    sp = space_for(space, None, n)
    values, g = _outputs(out, b, n, dt, True)
    softmax = _softmax_mode(sp, x.shape, rho, False, True)
    if (softmax is None or isinstance(sp, Ground)) and np.may_share_memory(g, x):
        x = x.copy()
        batch = rows.Batch(x, sx, kind, t, st)
    if isinstance(sp, Ground):
        _ground(x, kind, t, sp, rho, values, g)
    elif isinstance(sp, Chain):
        _chain(batch, sp, rho, values, g, softmax)
    else:
        _tree(batch, sp, rho, values, g, softmax)
    if softmax is None:
        g[...] = rows.input_gradient(g, x, sx, "softmax")
    return values, g


class LanesStep(NamedTuple):
    """The chain's or tree's lanes kernel for one space, rho, batch shape and way of
    reading the rows, resolved once (:func:`_lanes_step`). ``run(lane_rows, values, g)``:
    the kernel on a :class:`~.kernels.tiles.LaneRows` into values (B,) and g (B, N, or no
    columns). Called as ``step(z, c, values, g, scale=1.0)`` (:func:`softmax_step`): rows
    z (B, N), a softmax's output p (or the logits), c (B,) int64 class indices in range,
    all C-contiguous, float32 or float64 throughout, unchecked; g may be z, then
    overwritten; g is the gradient times ``scale`` (a loss's mean 1/B, in the kernel's
    write before rounding: no pass of its own).
    The same bits as :func:`emd_softmax` (or :func:`emd` of logits) with none of their
    per-call argument handling (about 0.2 ms a call, a third of a 512 × 1000 step, when
    a model's step has just evicted the caches)."""

    kernel: object  # kernels.chain_lanes.chain_lanes or kernels.tree_lanes.tree_lanes
    geometry: object  # the chain's gaps, or the tree's (parent, weight, bin_node, count)
    rho: float
    reads: object  # None, kernels.softmax.Softmax or kernels.rowstats.RowSums
    width: int  # of a scratch row
    runs: int  # blocks of rows

    def run(self, lane_rows, values, g, scale=1.0):
        reads = self.reads if scale == 1.0 else self.reads._replace(scale=float(scale))
        self.kernel(lane_rows, self.geometry, self.rho, values, g,
                    _chunk_scratch(self.width, self.runs), reads=reads)

    def __call__(self, z, c, values, g, scale=1.0):
        one = rows.unit_scale()
        self.run((z, z, c, one, one), values, g, scale)


def _lanes_step(sp, shape, rho, reads):
    """The :class:`LanesStep` of b rows of n bins (``shape``) on sp, a Chain or Tree."""
    b, n = shape
    if isinstance(sp, Chain):
        from .kernels import chain_lanes as lanes

        kernel, geometry, width = lanes.chain_lanes, sp.gaps, lanes.lanes_width(n, reads)
    else:
        from .kernels import tree_lanes as lanes

        kernel, width = lanes.tree_lanes, lanes.lanes_width(sp.n, sp.n_nodes)
        geometry = (sp.parent, sp.weight, sp.bin_node, sp.count)
    return LanesStep(kernel, geometry, rho, reads, width, -(-b // lanes.LANES))


def softmax_step(space, rho, shape, logits=False):
    """The :class:`LanesStep` for (B, N) = ``shape`` float rows on ``space`` (a
    :class:`Chain` or :class:`Tree` of N bins; None: the unit chain), the rows a softmax's
    output (or, with ``logits``, its logits), against class indices; or None where the
    lanes kernels do not take them (a ground matrix, other rho, a batch for the numpy
    twins: call :func:`emd_softmax` or :func:`emd` then)."""
    rho = _check_rho(rho)
    sp = space_for(space, None, shape[1])
    reads = _softmax_mode(sp, shape, rho, logits, True) if shape[0] else None
    return None if reads is None else _lanes_step(sp, shape, rho, reads)


def prepare(pred, target, normalize, dt, check, as_stored=True, logits=False):
    """Validated rows as a :class:`rows.Batch` ``(x, sx, kind, t, st)``: ``p = sx·x``
    (no copy for l1), targets as rows ``q = st·t`` or class indices (``kind``); under
    softmax with ``logits``, x the logits (:func:`rows.pred_rows`)."""
    x, sx = rows.pred_rows(pred, normalize, dt, check, as_stored, logits)
    b, n = x.shape
    kind, t, st = rows.target_rows(target, b, n, normalize, dt, check, as_stored)
    if kind == "rows" and t.dtype != x.dtype:  # one float32, one float64: both as float64
        x, t = x.astype(np.float64), t.astype(np.float64)
    if check and normalize == "none":
        rows.check_equal_mass(x, kind, t)
    return rows.Batch(x, sx, kind, t, st)


SCRATCH_KEPT = 32 << 20  # bytes: a scratch up to this size is kept for the thread's next call
_SCRATCH = threading.local()


def _chunk_scratch(width, runs=None):
    """(chunks, width) float64 scratch, uninitialised, on a cache line
    (:func:`.rows.aligned_empty`): a few contiguous runs of rows per Numba thread (at most
    ``runs``). The calling thread's last one is reused when it has this shape (a fresh one
    is fresh pages: 0.1 ms a call at 512 × 1000 on a chain)."""
    import numba

    chunks = 4 * numba.get_num_threads()
    shape = (chunks if runs is None else max(1, min(chunks, runs)), width)
    kept = getattr(_SCRATCH, "array", None)
    if kept is not None and kept.shape == shape:
        return kept
    scratch = rows.aligned_empty(shape)
    if scratch.nbytes <= SCRATCH_KEPT:
        _SCRATCH.array = scratch
    return scratch


def _chain(batch, chain, rho, values, g, reads=None):
    """EMD^rho of a :class:`rows.Batch` on a chain, into values (B,) and g (B, N) or None.
    Small batches (rho 1 or 2) go through the numpy twin of the kernel, which gives the
    same bits without loading Numba (:func:`rows.numpy_twins`). ``reads``: x under a
    softmax (:func:`_softmax_mode`) or its l1 sums left to the kernel
    (``kernels.rowstats.RowSums``)."""
    x, sx, kind, t, st = batch
    b, n = x.shape
    q, c = (t, None) if kind == "rows" else (None, t)
    if rho in (1.0, 2.0) and reads is None and rows.numpy_twins(x.size):
        from .kernels.small import chain_small, exact_products

        if exact_products(x, sx, st, *(() if q is None else (q,))):
            _into(values, g, *chain_small(x, q, c, sx, st, chain.gaps, rho, g is not None))
            return
    classes = c if c is not None else np.empty(0, dtype=np.int64)
    grads = g if g is not None else np.empty((b, 0), dtype=x.dtype)
    from .kernels import chain_lanes as lanes

    lane_rows = lanes.LaneRows(x, x if q is None else q, classes, sx, st)
    if reads is not None or lanes.use_lanes(b, n, rho, x.dtype.itemsize):
        _lanes_step(chain, x.shape, rho, reads).run(lane_rows, values, grads)  # (same bits)
        return
    from .kernels.chain import chain_batch

    chain_batch(lane_rows, chain.gaps, rho, values, grads, _chunk_scratch(n))


def _into(values, g, v, grad):
    """A numpy twin's float64 results into the outputs (float32 rounds as the kernels':
    inf past its range)."""
    with np.errstate(over="ignore"):
        values[:] = v
        if g is not None:
            g[:] = grad


def _tree(batch, tree, rho, values, g, reads=None):
    """:func:`_chain` on a tree (the numpy twin, ``kernels.small_tree``, for whole jobs
    only: :func:`rows.job_twins`)."""
    x, sx, kind, t, st = batch
    if kind == "classes":
        c, t = t, x  # t is not read for class targets
    else:
        c = np.full(x.shape[0], -1, dtype=np.int64)
    arrays = (tree.parent, tree.weight, tree.bin_node, tree.count)
    if rho in (1.0, 2.0) and reads is None and rows.job_twins():
        from .kernels.small import exact_products
        from .kernels.small_tree import tree_small

        if exact_products(x, sx, st, *(() if kind == "classes" else (t,))):
            _into(values, g, *tree_small(x, t, c, sx, st, arrays, rho, g is not None))
            return
    from .kernels import tree_lanes as lanes

    lane_rows = lanes.LaneRows(x, t, c, sx, st)
    if reads is not None or lanes.use_lanes(x.shape[0], rho):  # LANES rows side by side
        grads = g if g is not None else np.empty((x.shape[0], 0), dtype=x.dtype)
        _lanes_step(tree, x.shape, rho, reads).run(lane_rows, values, grads)
        return
    from .kernels import tree as kernels

    scratch = _chunk_scratch(tree.n_nodes)
    if g is None:
        kernels.tree_value(lane_rows, arrays, rho, values, scratch)
    else:
        kernels.tree_value_grad(lane_rows, arrays, rho, values, g, scratch)


def _one_hot_classes(q):
    """Class indices if every row of ``q`` has exactly one non-zero bin, else None."""
    nonzero = q != 0
    if (nonzero.sum(axis=1) == 1).all():
        return np.argmax(nonzero, axis=1).astype(np.int64)
    return None


def _ground(p, kind, q, ground, rho, values, g):
    from .kernels import ground as kernels

    if rho != 1.0:
        raise EMDInputError(
            "a ground matrix supports only the exact EMD (rho = 1)",
            hint="EMD^rho for rho > 1 needs a chain or a tree",
        )
    D = ground.matrix
    c = q if kind == "classes" else _one_hot_classes(q)
    if c is not None:
        if g is None:
            kernels.ground_value_class(p, c, D, values)
        else:
            kernels.ground_value_grad_class(p, c, D, values, g)
        return
    try:
        kernels.ground_lp(p, q, D, values, g)
    except ImportError:
        raise EMDInputError(
            "soft targets under a ground matrix need the transport LP, which needs POT",
            hint="pip install 'emdcli[lp]', use class-index targets, or use a chain or tree",
        ) from None


def emd2(pred, target, **kwargs):
    """The relaxed EMD² loss: :func:`emd` with rho = 2."""
    return emd(pred, target, rho=2.0, **kwargs)


def chain_hessian(positions):
    """Hessian of EMD² on the simplex, projected: (N, N), constant in p and q.

    ``H_kl = 2 Σ_{i=1}^{N−1} d_i ([k ≤ i] − i/N)([l ≤ i] − i/N)`` (the paper's eq. 12
    with its missing 1/N² restored). ``positions``: (N,) bin positions, a :class:`Chain`,
    or an int N for unit gaps.
    """
    if isinstance(positions, (int, np.integer)):
        if positions < 1:
            raise EMDInputError(f"the number of bins must be >= 1, got {positions}")
        chain = Chain.uniform(int(positions))
    elif isinstance(positions, Chain):
        chain = positions
    else:
        chain = Chain.from_positions(positions)
    n = chain.n
    i = np.arange(1, n)[:, None]  # 1 … N−1
    k = np.arange(1, n + 1)[None, :]  # 1 … N
    a = (k <= i) - i / n  # (N−1, N)
    return 2.0 * (a.T * chain.gaps) @ a

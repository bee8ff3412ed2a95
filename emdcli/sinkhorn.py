"""Public Sinkhorn distance: validation, the space's Gibbs kernel, dispatch.

λ is the paper's λ (entropic regularisation ``−(1/λ)⟨T, log T⟩``); POT's ``reg`` is 1/λ:
``sinkhorn(p, q, lam=λ)`` equals ``ot.sinkhorn2(p, q, M, reg=1/λ)`` once converged.
"""

from typing import NamedTuple

import numpy as np

from . import rows
from .errors import EMDInputError
from .gibbs import Solve, gibbs_for
from .spaces import Ground, Tree, space_for

FORMS = ("plain", "log")
KERNELS = ("auto", "structured", "dense")
CONVERGED_TOL = 1e-6  # how convergence is judged when tol = 0
DEFAULT_TOL = {np.float64: 1e-9, np.float32: 1e-5}  # float32 rounding floors near 1e-6


class SinkhornResult(NamedTuple):
    """values (B,), iterations (B,) int64, converged (B,) bool, errors (B,) = the final
    marginal error ‖T·1 − p‖₁, gradient (B, N) or None."""

    values: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    errors: np.ndarray
    gradient: np.ndarray | None


def check_params(lam, iters, tol, form, kernel="auto"):
    """Validate λ > 0, iters ≥ 1, tol ≥ 0, the form and the kernel choice."""
    try:
        lam, tol = float(lam), float(tol)
    except (TypeError, ValueError):
        raise EMDInputError("lam and tol must be numbers") from None
    if not (np.isfinite(lam) and lam > 0):
        raise EMDInputError(f"lam must be a finite number > 0, got {lam!r}",
                            hint="the paper's λ; POT's reg is 1/λ")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise EMDInputError(f"iters must be an integer >= 1, got {iters!r}")
    if not (tol >= 0 and np.isfinite(tol)):
        raise EMDInputError(f"tol must be a finite number >= 0, got {tol!r}")
    if form not in FORMS:
        raise EMDInputError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    if kernel not in KERNELS:
        raise EMDInputError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return lam, int(iters), tol


def sinkhorn(
    pred,
    target,
    *,
    lam,
    iters=100,
    tol=None,
    form="plain",
    space=None,
    positions=None,
    kernel="auto",
    normalize="l1",
    dtype="float64",
    gradient=False,
    grad_wrt="distribution",
    check=True,
    device="cpu",
):
    """Sinkhorn distance SD_λ between each prediction row and its target (Algorithm 1).

    pred (B, N), target (B, N) or (B,) class indices, space/positions/normalize/dtype as
    in :func:`emdcli.emd`. lam: the paper's λ (> 0; POT's reg = 1/λ). iters: iteration
    limit. tol: stop a row when ‖T·1 − p‖₁ < tol (0: always run the limit, convergence
    judged at 1e-6); default 1e-9 in float64 and 1e-5 in float32, whose rounding keeps the
    marginal error of some rows near 1e-6. form: ``"plain"`` (the paper's, instabilities and all) or ``"log"``
    (log-domain, finite for any λ). kernel: ``"structured"`` O(N) chain / O(nodes) tree
    passes, ``"dense"`` the full N × N matrix, ``"auto"`` structured unless the space is
    a ground matrix. Returns a :class:`SinkhornResult`; the gradient is log(u)/λ projected
    to sum zero (or chained to the raw input with ``grad_wrt="input"``). device:
    ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """
    dt = rows.resolve_dtype(dtype)
    if tol is None:
        tol = DEFAULT_TOL[dt]
    lam, iters, tol = check_params(lam, iters, tol, form, kernel)
    if device != "cpu":
        from .gpu import resolve_device

        device = resolve_device(device)
    rows.check_grad_wrt(grad_wrt)
    x, sx = rows.pred_rows(pred, normalize, dt, check)
    p = rows.scaled(x, sx)
    b, n = p.shape
    kind, q = rows.prepare_target(target, b, n, normalize, dt, check)
    if check and normalize == "none":
        rows.check_equal_mass(p, kind, q)
    if kind == "classes":
        onehot = np.zeros((b, n), dtype=dt)
        onehot[np.arange(b), q] = 1
        q = onehot
    sp = space_for(space, positions, n)
    if isinstance(sp, Ground) and kernel == "structured":
        raise EMDInputError("a ground matrix has no structured kernel", hint="use the dense kernel")
    run = Solve(lam, iters, tol, form == "log", kernel == "dense" or isinstance(sp, Ground),
                gradient)
    if device == "cuda":
        from .gpu import sinkhorn_cuda

        values, its, errors, G = sinkhorn_cuda(p, q, sp, run, dt)
    elif run.dense and not run.log_form:
        from .kernels.sinkhorn import dense_plain_batch

        g = gibbs_for(sp, lam, dt, False, dense=True)
        values, its, errors, G = dense_plain_batch(p, q, g.mat, g.mat2, run)
    else:
        values, its, errors, G = _structured(p, q, sp, run, dt)
    if gradient and grad_wrt == "input":
        G = rows.input_gradient(G, x, sx, normalize)
    judged = tol if tol > 0 else CONVERGED_TOL
    with np.errstate(invalid="ignore"):
        converged = np.isfinite(values) & np.isfinite(errors) & (errors < judged)
    return SinkhornResult(values.astype(dt), its, converged, errors, G)


LANES_SCRATCH_BYTES = 256 << 20  # above this, the lane solver's scratch is too big


def _structured(p, q, sp, run, dt):
    """Row solvers for a :class:`~emdcli.gibbs.Solve` ``run``: LANES rows at a time for the
    plain chain/tree form (when the batch fills the lanes and their scratch fits in
    LANES_SCRATCH_BYTES), else one row at a time."""
    import numba

    from .kernels.lanes import LANES, sinkhorn_lanes
    from .kernels.sinkhorn import N_SCRATCH, sinkhorn_batch

    log_form, dense, gradient = run.log_form, run.dense, run.gradient
    b, n = p.shape
    g = gibbs_for(sp, run.lam, dt, log_form, dense=dense)
    width = max(n, sp.n_nodes if isinstance(sp, Tree) else n)
    chunks = 4 * numba.get_num_threads()
    values = np.empty(b, dtype=np.float64)
    errors = np.empty(b, dtype=np.float64)
    its = np.empty(b, dtype=np.int64)
    G = np.empty((b, n) if gradient else (b, 0), dtype=dt)
    threads = numba.get_num_threads()
    lane_bytes = threads * N_SCRATCH * width * LANES * np.dtype(dt).itemsize
    with np.errstate(all="ignore"):
        if log_form or dense or b < LANES or lane_bytes > LANES_SCRATCH_BYTES:
            scratch = rows.aligned_empty((chunks, N_SCRATCH, width), dt)
            sinkhorn_batch(p, q, g, run, (values, its, errors, G), scratch)
        else:
            scratch = rows.aligned_empty((threads, N_SCRATCH, width, LANES), dt)
            sinkhorn_lanes(p, q, g, run, (values, its, errors, G), scratch)
    return values, its, errors, (G if gradient else None)

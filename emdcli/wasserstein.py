"""W_p on the line: validate, normalise, dispatch to :mod:`emdcli.kernels.quantile`.

``W_p^p(p, q) = ∫_0^1 |F_p^{-1}(t) − F_q^{-1}(t)|^P dt`` integrates the P-th power of the
gap between the two *quantile* functions over the mass; :func:`emdcli.emd` with ``rho``
integrates ``|F_p(x) − F_q(x)|^rho`` over the *positions*. Both are the EMD for P = rho = 1
and differ otherwise (POT's ``ot.wasserstein_1d(x, x, p, q, p=P)`` is this W_p^p).
"""

import numpy as np

from . import rows
from .errors import EMDInputError
from .spaces import Chain, space_for


def _check_power(power):
    try:
        power = float(power)
    except (TypeError, ValueError):
        raise EMDInputError(f"p must be a number >= 1, got {power!r}") from None
    if not (power >= 1.0 and np.isfinite(power)):
        raise EMDInputError(f"p must be a finite number >= 1, got {power!r}")
    return power


def wasserstein(pred, target, *, positions=None, space=None, p=2.0, normalize="l1",
                dtype="float64", gradient=False, grad_wrt="distribution", check=True):
    """W_p^p between each prediction row and its target on the line (a chain's positions).

    pred (B, N) masses (or logits with ``normalize="softmax"``); target (B, N) masses or
    (B,) class indices; positions (N,) increasing (default 0…N−1) or ``space`` a
    :class:`Chain`; ``p`` ≥ 1. With ``gradient``, also the gradient (B, N) with respect to
    the normalised prediction: the dual potentials, projected to sum zero per row
    (``grad_wrt="input"``: through the normalisation, as :func:`emdcli.emd`).
    Returns W_p^p (B,) (and the gradients) in ``dtype``.
    """
    power = _check_power(p)
    rows.check_grad_wrt(grad_wrt)
    dt = rows.resolve_dtype(dtype)
    x, sx = rows.pred_rows(pred, normalize, dt, check)
    b, n = x.shape
    kind, t, st = rows.target_rows(target, b, n, normalize, dt, check)
    chain = space_for(space, positions, n)
    if not isinstance(chain, Chain):
        raise EMDInputError("W_p is defined on the line: give positions (a chain), not a tree "
                            "or a ground matrix")
    if check and normalize == "none":
        rows.check_equal_mass(x, kind, t)
    values = np.empty(b, dtype=np.float64)
    g = np.empty((b, n), dtype=np.float64) if gradient else np.empty((b, 0))
    pos = chain.positions
    if b and kind == "classes":  # all of q at x_c: the cost of moving each bin there
        from .kernels.quantile import wasserstein_classes

        wasserstein_classes(x, sx, t, pos, power, values, g)
    elif b:
        from .kernels.quantile import wasserstein_rows

        wasserstein_rows(x, sx, t, st, pos, power, values, g)  # x, t C-contiguous rows
    values = values.astype(dt, copy=False)
    if not gradient:
        return values
    g = g.astype(dt, copy=False)
    if grad_wrt == "input":
        g = rows.input_gradient(g, x.astype(dt, copy=False), sx, normalize)
    return values, g

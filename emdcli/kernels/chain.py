"""Chain-space EMD^rho kernels (CPU, Numba).

Bins sit at increasing positions ``x_0 < … < x_{N-1}`` with gaps ``d_i = x_{i+1} − x_i``.
With ``phi_i = Σ_{j≤i} (p_j − q_j)`` (0-based, ``i = 0 … N−2``)::

    EMD^rho(p, q) = Σ_i d_i |phi_i|^rho
    g_k = rho Σ_i d_i sgn(phi_i) |phi_i|^(rho−1) ([k ≤ i] − (i+1)/N)

The gradient is the mass-conserving projection (it sums to zero). It is computed in
O(N) per row with a suffix sum: ``g_k = S_k − T/N`` with ``a_i = rho d_i s_i``,
``S_k = Σ_{i≥k} a_i`` and ``T = Σ_i (i+1) a_i``.

Layers: ``_row_*`` serial row kernels → ``chain_*`` parallel batch drivers (``prange``
over rows). Kernels never validate: ``emdcli.api`` does. Accumulation is in float64
whatever the storage dtype; results are stored in the dtype of ``out``.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _slope(phi, rho):
    """``sgn(phi) |phi|^(rho−1)`` with ``sgn(0) = 0``; cheap paths for rho = 1, 2."""
    if rho == 1.0:
        if phi > 0.0:
            return 1.0
        if phi < 0.0:
            return -1.0
        return 0.0
    if rho == 2.0:
        return phi
    a = abs(phi)
    if a == 0.0:
        return 0.0
    s = a ** (rho - 1.0)
    return s if phi > 0.0 else -s


@njit(cache=True, inline="always")
def _power(phi, rho):
    """``|phi|^rho`` with cheap paths for rho = 1, 2."""
    if rho == 1.0:
        return abs(phi)
    if rho == 2.0:
        return phi * phi
    return abs(phi) ** rho


@njit(cache=True, inline="always")
def _diff(p, q, c, i):
    """``p_i − q_i``, or ``p_i − [i = c]`` for a class target ``c ≥ 0`` (q unused)."""
    if c < 0:
        return np.float64(p[i]) - np.float64(q[i])
    if i == c:
        return np.float64(p[i]) - 1.0
    return np.float64(p[i])


@njit(cache=True)
def _row_value(p, q, c, d, rho):
    """EMD^rho of one row; ``p, q`` (N,), class ``c`` (−1: use q), ``d`` (N−1,)."""
    phi = 0.0
    total = 0.0
    for i in range(d.shape[0]):
        phi += _diff(p, q, c, i)
        total += d[i] * _power(phi, rho)
    return total


@njit(cache=True)
def _row_value_grad(p, q, c, d, rho, g):
    """EMD^rho of one row; writes the projected gradient into ``g`` (N,)."""
    n = p.shape[0]
    phi = 0.0
    total = 0.0
    weighted = 0.0  # T = Σ (i+1) a_i
    for i in range(n - 1):
        phi += _diff(p, q, c, i)
        total += d[i] * _power(phi, rho)
        a = rho * d[i] * _slope(phi, rho)
        weighted += (i + 1) * a
        g[i] = a
    mean = weighted / n
    suffix = 0.0
    g[n - 1] = -mean
    for k in range(n - 2, -1, -1):
        suffix += g[k]
        g[k] = suffix - mean
    return total


@njit(cache=True, parallel=True)
def chain_value(P, Q, d, rho, out):
    """``out[b] = EMD^rho(P[b], Q[b])``; P, Q (B, N), d (N−1,), out (B,)."""
    for b in prange(P.shape[0]):
        out[b] = _row_value(P[b], Q[b], -1, d, rho)


@njit(cache=True, parallel=True)
def chain_value_class(P, c, d, rho, out):
    """``out[b] = EMD^rho(P[b], onehot(c[b]))``; c (B,) int64."""
    for b in prange(P.shape[0]):
        out[b] = _row_value(P[b], P[b], c[b], d, rho)


@njit(cache=True, parallel=True)
def chain_value_grad(P, Q, d, rho, out, G):
    """Values into ``out`` (B,) and projected gradients into ``G`` (B, N)."""
    for b in prange(P.shape[0]):
        out[b] = _row_value_grad(P[b], Q[b], -1, d, rho, G[b])


@njit(cache=True, parallel=True)
def chain_value_grad_class(P, c, d, rho, out, G):
    """Values and projected gradients against one-hot targets of classes ``c`` (B,)."""
    for b in prange(P.shape[0]):
        out[b] = _row_value_grad(P[b], P[b], c[b], d, rho, G[b])

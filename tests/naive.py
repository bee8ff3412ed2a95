"""Slow, obviously-correct references written straight from SPEC.md section 1.

Everything is plain numpy/Python loops over one row, float64, 1-based indices where the
SPEC uses them. No cleverness: these are what the kernels are checked against.
"""

import numpy as np


def chain_ground(x):
    """Ground matrix of a chain: ``M_ij = |x_i − x_j|``."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    m = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            m[i, j] = abs(x[i] - x[j])
    return m


def _gaps_and_phi(p, q, x):
    """``d_i = x_{i+1} − x_i`` and ``φ_i = Σ_{j≤i} (p_j − q_j)``, for i = 1 … N−1."""
    p, q, x = (np.asarray(a, dtype=np.float64) for a in (p, q, x))
    n = len(p)
    d = [x[i + 1] - x[i] for i in range(n - 1)]  # d[i-1] is d_i
    phi = [sum(p[j] - q[j] for j in range(i + 1)) for i in range(n - 1)]  # phi[i-1] is φ_i
    return d, phi


def emd_rho(p, q, x, rho=1.0):
    """``EMD^ρ(p, q) = Σ_{i=1}^{N−1} d_i |φ_i|^ρ`` for one row."""
    d, phi = _gaps_and_phi(p, q, x)
    return float(sum(d[i] * abs(phi[i]) ** rho for i in range(len(d))))


def emd_rho_grad(p, q, x, rho=1.0):
    """The literal double sum ``g_k = ρ Σ_i d_i sgn(φ_i)|φ_i|^{ρ−1} ([k ≤ i] − i/N)``.

    k = 1 … N and i = 1 … N−1 (1-based, as in SPEC); sgn(0) = 0.
    """
    d, phi = _gaps_and_phi(p, q, x)
    n = len(d) + 1
    g = np.zeros(n)
    for k in range(1, n + 1):
        total = 0.0
        for i in range(1, n):
            slope = np.sign(phi[i - 1]) * abs(phi[i - 1]) ** (rho - 1.0)
            total += d[i - 1] * slope * ((1.0 if k <= i else 0.0) - i / n)
        g[k - 1] = rho * total
    return g


def onehot_emd(p, c, D):
    """EMD against a one-hot target at class ``c``: ``(Σ_i p_i D_ic, D[:, c] − mean)``."""
    p = np.asarray(p, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    value = float(sum(p[i] * D[i, c] for i in range(len(p))))
    col = D[:, c].copy()
    return value, col - col.mean()


def hessian_emd2(x):
    """``H_kl = 2 Σ_{i=1}^{N−1} d_i ([k ≤ i] − i/N)([l ≤ i] − i/N)`` as a literal loop."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    h = np.zeros((n, n))
    for k in range(1, n + 1):
        for l in range(1, n + 1):
            total = 0.0
            for i in range(1, n):
                a = (1.0 if k <= i else 0.0) - i / n
                b = (1.0 if l <= i else 0.0) - i / n
                total += (x[i] - x[i - 1]) * a * b
            h[k - 1, l - 1] = 2.0 * total
    return h


# ----------------------------------------------------------------------------- trees
#
# A tree is given as plain Python: ``parent`` maps every node name to its parent's name
# (None for the root), ``weight`` maps every non-root node to the cost of the edge to its
# parent, ``bins`` lists the nodes carrying the bins, in bin order.


def tree_path_to_root(parent, v):
    """The set of nodes u ≠ root on the path from ``v`` up to the root (the edges u → parent)."""
    path = set()
    while parent[v] is not None:
        path.add(v)
        v = parent[v]
    return path


def tree_path_matrix(parent, weight, bins):
    """D (N, N): ``D_ab = Σ_{u in path(a) △ path(b)} w_u``, the path length between bins."""
    paths = [tree_path_to_root(parent, b) for b in bins]
    n = len(bins)
    d = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            d[a, b] = sum(float(weight[u]) for u in paths[a] ^ paths[b])
    return d


def tree_phi(p, q, parent, bins):
    """``φ̃_v = Σ_{bins j in the subtree of v} (p_j − q_j)`` for every non-root v (a dict)."""
    paths = [tree_path_to_root(parent, b) for b in bins]
    phi = {}
    for v in parent:
        if parent[v] is None:
            continue
        phi[v] = float(sum(float(p[j]) - float(q[j]) for j in range(len(bins)) if v in paths[j]))
    return phi


def hemd(p, q, parent, weight, bins, rho=1.0):
    """``HEMD^ρ(p, q) = Σ_{v ≠ root} w_v |φ̃_v|^ρ`` by explicit subtree sums."""
    phi = tree_phi(p, q, parent, bins)
    return float(sum(float(weight[v]) * abs(phi[v]) ** rho for v in phi))


def hemd_grad(p, q, parent, weight, bins, rho=1.0):
    """``r_k = ρ Σ_{v on the path from bin k to the root} w_v sgn(φ̃_v)|φ̃_v|^{ρ−1}``, then
    ``g = r − mean(r)``, by explicit path sums (sgn(0) = 0)."""
    phi = tree_phi(p, q, parent, bins)
    r = np.zeros(len(bins))
    for k, b in enumerate(bins):
        for v in tree_path_to_root(parent, b):
            s = np.sign(phi[v]) * abs(phi[v]) ** (rho - 1.0) if phi[v] != 0 else 0.0
            r[k] += rho * float(weight[v]) * s
    return r - r.mean()


# -------------------------------------------------------------------------- sinkhorn


def sinkhorn_alg1(p, q, M, lam, iters):
    """The paper's Algorithm 1 for one row, literally, in float64.

    ``K = exp(−λM − 1)``, ``u = 1``; ``iters`` times ``u ← p ⊘ (K (q ⊘ Kᵀu))``; then
    ``v = q ⊘ Kᵀu``, ``SD = Σ u ⊙ ((K ⊙ M) v)`` and the gradient ``log(u)/λ`` minus its
    mean. Returns ``(SD, gradient)``.
    """
    p, q, M = (np.asarray(a, dtype=np.float64) for a in (p, q, M))
    K = np.exp(-lam * M - 1.0)
    u = np.ones(len(p))
    for _ in range(iters):
        u = p / (K @ (q / (K.T @ u)))
    v = q / (K.T @ u)
    value = float(np.sum(u * ((K * M) @ v)))
    g = np.log(u) / lam
    return value, g - g.mean()

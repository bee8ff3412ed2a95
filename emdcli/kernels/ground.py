"""EMD under an arbitrary ground matrix D (N, N).

One-hot targets have a closed form for any D: ``EMD(p, c) = Σ_i p_i D_ic`` with gradient
``D_{:,c}`` (projected to sum zero). Soft targets need the transport linear program,
solved row by row by POT's network simplex (``ot.emd2``) when POT is installed; its dual
potential ``u`` is the gradient.
"""

import numpy as np


def ground_value_class(P, c, D, out):
    """``out[b] = Σ_i P[b, i] D[i, c[b]]``; P (B, N), c (B,) int64, D (N, N)."""
    cols = D[:, c].T  # (B, N): the distance of every bin to each row's class
    np.einsum("bi,bi->b", P, cols, out=out, dtype=out.dtype, casting="same_kind")


def ground_value_grad_class(P, c, D, out, G):
    """Values into ``out`` (B,) and projected gradients ``D[:, c] − mean`` into ``G``."""
    cols = D[:, c].T
    np.einsum("bi,bi->b", P, cols, out=out, dtype=out.dtype, casting="same_kind")
    G[...] = cols - cols.mean(axis=1, keepdims=True)


def ground_lp(P, Q, D, out, G=None):
    """Exact EMD of soft targets by the transport LP (POT), row by row.

    Raises ImportError when POT is missing. Rows whose LP did not reach optimality get NaN.
    """
    import ot  # optional dependency: emdcli[lp]

    D = np.ascontiguousarray(D, dtype=np.float64)
    for b in range(P.shape[0]):
        p = np.asarray(P[b], dtype=np.float64)
        q = np.asarray(Q[b], dtype=np.float64)
        q = q * (p.sum() / q.sum())  # equal mass to rounding, as the LP requires
        value, log = ot.emd2(
            p, q, D, log=True, check_marginals=False, numItermax=max(100_000, 50 * D.size)
        )
        ok = log.get("warning") is None
        out[b] = value if ok else np.nan
        if G is not None:
            u = np.asarray(log["u"], dtype=np.float64)
            G[b] = u - u.mean() if ok else np.nan

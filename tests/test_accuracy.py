"""float64 accuracy at any width, where p and q nearly cancel.

The public ``emd(p, q, normalize="l1")`` (the row scale ``1/Σx`` applied in the kernels)
against a long-double reference written with plain numpy: ``s_j = p̂_j − q̂_j`` from the
exact differences ``p_j − q_j``, a long-double cumulative sum, and the residual
``phi_{N−1}`` (the reference's own scale rounding, ~1e-20) taken back in proportion to
p̂'s cumulative mass. On x86_64 ``np.longdouble`` has a 64-bit mantissa (2^11 × float64).
"""

import numpy as np
import pytest

from emdcli import emd
from emdcli.spaces import Tree

L = np.longdouble
RTOL = 1e-12
N = 10**6

pytestmark = pytest.mark.skipif(np.finfo(L).nmant < 63, reason="needs 80-bit long double")


def _normalised_differences(p, q):
    """(s, p̂) in long double: ``s_j = p_j/Σp − q_j/Σq``, q a row or a class index."""
    pl = p.astype(L)
    sp = pl.sum()
    if np.ndim(q) == 0:
        s = pl / sp
        s[int(q)] -= 1
        return s, pl / sp
    ql = q.astype(L)
    sq = ql.sum()
    # p − q is exact in long double (within 2^11 of each other); + q (1/Σp − 1/Σq)
    s = (pl - ql) / sp + ql * ((sq - sp) / (sp * sq))
    return s, pl / sp


def ref_chain(p, q, x, rho):
    s, w = _normalised_differences(p, q)
    phi = np.cumsum(s)
    phi = (phi - phi[-1] * np.cumsum(w))[:-1]
    return (np.diff(x.astype(L)) * np.abs(phi) ** rho).sum()


def near(rng, n, eps=1e-6):
    """Raw rows p and q = p (1 + eps·noise) (unnormalised: the l1 scale does it)."""
    p = rng.random(n) + 0.5
    return p, p * (1.0 + eps * rng.standard_normal(n))


def rel(got, want):
    return float(abs((L(got) - want) / want))


@pytest.mark.parametrize("rho", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("gaps", ["uniform", "positions"])
def test_chain_near_cancellation_at_a_million_bins(gaps, rho):
    rng = np.random.default_rng(7)
    p, q = near(rng, N)
    x = np.arange(N, dtype=float) if gaps == "uniform" else np.cumsum(rng.random(N) + 0.1)
    want = ref_chain(p, q, x, rho)
    kw = {} if gaps == "uniform" else {"positions": x}
    got = emd(p[None], q[None], rho=rho, normalize="l1", **kw)[0]
    assert rel(got, want) < RTOL
    # the float32 pipeline and the gradient run too and stay sane
    v, g = emd(p[None], q[None], rho=rho, normalize="l1", gradient=True, **kw)
    assert v[0] == got
    assert np.isfinite(g).all() and abs(g.sum()) < 1e-9 * np.abs(g).max() * np.sqrt(N)


@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_chain_class_target_near_cancellation(rho):
    rng = np.random.default_rng(8)
    c = N // 3
    p = 1e-7 * rng.random(N)
    p[c] = 1.0
    x = np.cumsum(rng.random(N) + 0.1)
    want = ref_chain(p, c, x, rho)
    got = emd(p[None], np.array([c]), positions=x, rho=rho, normalize="l1")[0]
    assert rel(got, want) < RTOL


def test_chain_batch_mixes_ordinary_and_cancelling_rows():
    rng = np.random.default_rng(9)
    n = 20_000
    p, q = near(rng, n, 1e-7)
    P = np.stack([p, rng.random(n), p])
    Q = np.stack([q, rng.random(n), q * 3.0])
    x = np.arange(n, dtype=float)
    got = emd(P, Q, rho=1.0, normalize="l1")
    for b in range(3):
        assert rel(got[b], ref_chain(P[b], Q[b], x, 1.0)) < RTOL


def path_tree(rng, n):
    """A path of n nodes, root first, a bin on every node, random edge weights."""
    names = [f"v{i}" for i in range(n)]
    w = np.concatenate([[0.0], rng.random(n - 1) + 0.1])
    return Tree.from_edges(names, [""] + names[:-1], w, bins=names), w


@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_tree_deep_path_near_cancellation(rho):
    rng = np.random.default_rng(10)
    n = 200_000
    tree, w = path_tree(rng, n)
    p, q = near(rng, n)
    # bins on the path root → leaf: phi_v sums bins v … n−1 (a suffix), weight w_v
    s, m = _normalised_differences(p, q)
    phi = np.cumsum(s[::-1])[::-1]
    phi = phi - phi[0] * np.cumsum(m[::-1])[::-1]
    want = (w[1:].astype(L) * np.abs(phi[1:]) ** rho).sum()
    got = emd(p[None], q[None], space=tree, rho=rho, normalize="l1")[0]
    assert rel(got, want) < RTOL
    # a chain is a path: the chain kernel agrees on the reversed bins
    x = np.concatenate([[0.0], np.cumsum(w[1:][::-1])])
    chain = emd(p[None, ::-1].copy(), q[None, ::-1].copy(), positions=x, rho=rho)[0]
    assert rel(chain, want) < RTOL


def test_tree_wide_near_cancellation_rows_and_classes():
    rng = np.random.default_rng(11)
    groups, per = 500, 400  # root → 500 internal nodes → 400 leaves each: 200 000 bins
    names = ["r"] + [f"g{i}" for i in range(groups)]
    parents = [""] + ["r"] * groups
    leaves = [f"l{i}" for i in range(groups * per)]
    names += leaves
    parents += [f"g{i // per}" for i in range(groups * per)]
    wg, wl = rng.random(groups) + 0.5, rng.random(groups * per) + 0.5
    tree = Tree.from_edges(names, parents, np.concatenate([[0.0], wg, wl]), bins=leaves)
    p, q = near(rng, groups * per)

    def want(s, m):
        r = s.sum()
        s = s - r * m  # the residual back in proportion to p̂
        grp = s.reshape(groups, per).sum(axis=1)
        return (wg.astype(L) * np.abs(grp)).sum() + (wl.astype(L) * np.abs(s)).sum()

    got = emd(p[None], q[None], space=tree, normalize="l1")[0]
    assert rel(got, want(*_normalised_differences(p, q))) < RTOL
    c = 12345
    pc = 1e-7 * rng.random(groups * per)
    pc[c] = 1.0
    got = emd(pc[None], np.array([c]), space=tree, normalize="l1")[0]
    assert rel(got, want(*_normalised_differences(pc, c))) < RTOL

"""The chain kernel's lanes (LANES rows side by side, ``kernels.tiles``) give the bits of
the one-row-at-a-time path: values and gradients, float32 and float64 storage, target
rows and class indices, with and without row scales, rho 1, 2 and a general rho, rows
whose residual takes the second pass, and batch/width remainders (B mod LANES, N mod 8).
"""

from typing import NamedTuple

import numpy as np
import pytest
from numba import njit

import emdcli
from emdcli.kernels.chain import chain_batch
from emdcli.kernels.chain_lanes import LANES, LaneRows, chain_lanes, lanes_width, use_lanes
from emdcli.kernels.tiles import from_lanes, to_lanes


def run(x, t, c, sp, sq, d, rho, want_grad, lanes):
    b, n = x.shape
    out = np.full(b, np.nan)
    G = np.full((b, n if want_grad else 0), np.nan, dtype=x.dtype)
    C = np.empty(0, dtype=np.int64) if c is None else c
    first = (x, x if t is None else t, C, sp, sq)
    if lanes:
        chain_lanes(LaneRows(*first), d, rho, out, G, np.empty((3, lanes_width(n))))
    else:
        chain_batch(first, d, rho, out, G, np.empty((3, n)))
    return out, G


def case(seed, b, n, dtype, near):
    rng = np.random.default_rng(seed)
    x = (rng.random((b, n)) ** 3 + 1e-3).astype(dtype)
    t = (rng.random((b, n)) + 1e-3).astype(dtype)
    if near:  # every other row nearly cancels its target: the residual pass
        t[::2] = (x[::2].astype(np.float64) * (1 + 1e-9 * rng.standard_normal((b, n))[::2])
                  ).astype(dtype) * 3.0
    c = rng.integers(0, n, b)
    sp = 1.0 / x.sum(axis=1, dtype=np.float64)
    sq = 1.0 / t.sum(axis=1, dtype=np.float64)
    d = np.diff(np.cumsum(rng.random(n) + 0.1))
    return x, t, c, sp, sq, d


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rho", [1.0, 2.0])
@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("b,n", [(32, 2), (70, 13), (64, 40), (97, 8), (33, 101), (5, 9)])
def test_lanes_give_the_row_kernels_bits(dtype, rho, classes, b, n):
    x, t, c, sp, sq, d = case(b * 1000 + n, b, n, dtype, near=True)
    empty = np.empty(0)
    for scaled in (True, False):
        for grad in (True, False):
            args = (x, None if classes else t, c if classes else None,
                    sp if scaled else empty, sq if scaled else empty, d, rho, grad)
            v1, g1 = run(*args, lanes=False)
            v2, g2 = run(*args, lanes=True)
            np.testing.assert_array_equal(v1, v2)
            np.testing.assert_array_equal(g1, g2)


def test_the_residual_pass_is_exercised_in_lanes():
    x, t, _, sp, sq, d = case(5, 64, 37, np.float64, near=True)
    from emdcli.kernels.chain_lanes import _block

    out = np.zeros(64)
    scratch = np.empty(lanes_width(37))
    _block(x, t, np.empty(0, np.int64), sp, sq, d, 2.0, out, np.empty((64, 0)), 0,
           scratch, np.empty(64), False)
    assert (out[:LANES] < 0).any() and (out[:LANES] > 0).any()


def test_public_emd_uses_lanes_and_matches_the_numpy_twin():
    """emd() on a batch large enough for Numba (and for lanes) against the twin."""
    from emdcli.kernels.small import chain_small

    from emdcli.rows import row_sums_min

    x, t, c, _, _, d = case(11, 300, 300, np.float64, near=False)
    sp, sq = 1.0 / row_sums_min(x)[0], 1.0 / row_sums_min(t)[0]  # as emd() takes them
    assert use_lanes(300, 300, 2.0, 8)
    chain = emdcli.Chain.from_positions(np.concatenate([[0.0], np.cumsum(d)]))
    for target, (tt, cc, s2) in ((t, (t, None, sq)), (c, (None, c, np.empty(0)))):
        v, g = emdcli.emd2(x, target, space=chain, gradient=True)
        v2, g2 = chain_small(x, tt, cc, sp, s2, chain.gaps, 2.0, True)
        np.testing.assert_array_equal(v, v2)
        np.testing.assert_array_equal(g, g2)


@njit
def _roundtrip(A, lo, X, B):
    to_lanes(A, lo, X)
    from_lanes(X, B, lo)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 8, 13, 40])
def test_tiles_transpose_exactly(dtype, n):
    A = np.random.default_rng(n).random((LANES + 9, n)).astype(dtype)
    X = np.empty((n, LANES))
    B = np.zeros_like(A)
    _roundtrip(A, 5, X, B)
    np.testing.assert_array_equal(X, A[5:5 + LANES].T.astype(np.float64))
    np.testing.assert_array_equal(B[5:5 + LANES], A[5:5 + LANES])
    assert not B[:5].any() and not B[5 + LANES:].any()


# ---------------------------------------------------------------------------- trees


def random_tree(seed, n_nodes, bins="all"):
    """Parents before children not required (Tree sorts); bins in a shuffled order on all
    nodes (internal nodes carry bins too) or, ``bins="some"``, on about two thirds of them
    (the others start at 0 in the node tile)."""
    from emdcli.spaces import Tree

    rng = np.random.default_rng(seed)
    names = [f"n{i}" for i in range(n_nodes)]
    parents = [""] + [names[int(rng.integers(0, i))] for i in range(1, n_nodes)]
    weights = [0.0] + [float(rng.uniform(0.05, 3.0)) for _ in range(1, n_nodes)]
    order = rng.permutation(n_nodes)
    if bins == "some":
        order = order[:max(2, 2 * n_nodes // 3)]
    return Tree.from_edges(names, parents, weights, bins=[names[i] for i in order])


class SharedBins(NamedTuple):
    """A tree's kernel arrays with some nodes holding two or three bins (no ``Tree`` makes
    one: the kernels' contract allows it, and the lanes kernel scatters those through a
    tile of its own)."""

    parent: np.ndarray
    weight: np.ndarray
    bin_node: np.ndarray
    count: np.ndarray
    n_nodes: int
    n: int


def shared_bins(tree, seed):
    rng = np.random.default_rng(seed)
    bin_node = np.concatenate([tree.bin_node, rng.choice(tree.bin_node, tree.n // 2 + 1)])
    rng.shuffle(bin_node)
    count = np.bincount(bin_node, minlength=tree.n_nodes).astype(np.int64)
    for v in range(tree.n_nodes - 1, 0, -1):
        count[tree.parent[v]] += count[v]
    return SharedBins(tree.parent, tree.weight, bin_node, count, tree.n_nodes, len(bin_node))


def tree_run(tree, x, t, c, sp, sq, rho, want_grad, lanes):
    from emdcli.kernels import tree as K
    from emdcli.kernels.tree_lanes import lanes_width as width
    from emdcli.kernels.tree_lanes import tree_lanes

    b, n = x.shape
    out = np.full(b, np.nan)
    G = np.full((b, n if want_grad else 0), np.nan, dtype=x.dtype)
    cc = c if c is not None else np.full(b, -1, dtype=np.int64)
    tt = x if t is None else t
    if lanes:
        tree_lanes(LaneRows(x, tt, cc, sp, sq), (tree.parent, tree.weight, tree.bin_node, tree.count),
                   rho, out, G, np.empty((3, width(n, tree.n_nodes))))
    elif want_grad:
        K.tree_value_grad((x, tt, cc, sp, sq), (tree.parent, tree.weight, tree.bin_node,
                          tree.count), rho, out, G, np.empty((3, tree.n_nodes)))
    else:
        K.tree_value((x, tt, cc, sp, sq), (tree.parent, tree.weight, tree.bin_node, tree.count),
                     rho, out, np.empty((3, tree.n_nodes)))
    return out, G


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rho", [1.0, 2.0])
@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("b,nodes", [(32, 2), (70, 13), (64, 40), (5, 9)])
@pytest.mark.parametrize("bins", ["all", "some", "shared"])
def test_tree_lanes_give_the_row_kernels_bits(dtype, rho, classes, b, nodes, bins):
    tree = random_tree(b * 100 + nodes, nodes, "all" if bins == "shared" else bins)
    if bins == "shared":
        tree = shared_bins(tree, nodes)
    x, t, c, sp, sq, _ = case(b * 1000 + nodes, b, tree.n, dtype, near=True)
    empty = np.empty(0)
    for scaled in (True, False):
        for grad in (True, False):
            args = (tree, x, None if classes else t, c if classes else None,
                    sp if scaled else empty, sq if scaled else empty, rho, grad)
            v1, g1 = tree_run(*args, lanes=False)
            v2, g2 = tree_run(*args, lanes=True)
            np.testing.assert_array_equal(v1, v2)
            np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rho", [1.0, 2.0])
@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("bins", ["some", "shared"])
def test_tree_lanes_redo_marked_rows_in_their_block_with_the_row_kernels_bits(
        dtype, rho, classes, bins, monkeypatch):
    """Most rows nearly on their targets (soft: within 1e-9; classes: 1e-12 of mass off the
    class), so that most blocks hold rows the residual pass takes, and some blocks only
    unmarked ones: the lanes kernel redoes a block at once, the row kernel each marked row
    (counted: the case must mark rows)."""
    from emdcli.kernels import tree as K

    tree = random_tree(7, 60, bins)
    if bins == "shared":
        tree = shared_bins(tree, 3)
    b, n = 77, tree.n
    rng = np.random.default_rng(5)
    c = rng.integers(0, n, b)
    if classes:
        x = 1e-12 * rng.random((b, n))
        x[np.arange(b), c] = 1.0
        x[40:48] = rng.random((8, n))  # a block of rows far from their class
        t = None
    else:
        x = rng.random((b, n)) + 0.1
        t = x * (1 + 1e-9 * rng.standard_normal((b, n))) * 3.0
        t[40:48] = rng.random((8, n))
    x = x.astype(dtype)
    t = None if t is None else t.astype(dtype)
    sp = 1.0 / x.sum(axis=1, dtype=np.float64)
    sq = np.empty(0) if classes else 1.0 / t.sum(axis=1, dtype=np.float64)
    marked = []
    fix = K._fix_rows

    def counting(P, Q, cc, SP, SQ, parent, weight, bin_node, count, rho, out, *rest):
        marked.append(int((out < 0).sum()))
        return fix(P, Q, cc, SP, SQ, parent, weight, bin_node, count, rho, out, *rest)

    monkeypatch.setattr(K, "_fix_rows", counting)
    for grad in (True, False):
        v1, g1 = tree_run(tree, x, t, c if classes else None, sp, sq, rho, grad, lanes=False)
        v2, g2 = tree_run(tree, x, t, c if classes else None, sp, sq, rho, grad, lanes=True)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(g1, g2)
    assert len(marked) == 2 and min(marked) > b // 2, marked


def test_public_emd_on_wordnet_uses_tree_lanes():
    import os

    from emdcli.treefiles import load_tree, read_bins

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample_data")
    tree = load_tree(os.path.join(here, "imagenet_wordnet_tree.csv"),
                     bins=read_bins(os.path.join(here, "imagenet_bins.txt")))
    x, t, c, _, _, _ = case(3, 70, tree.n, np.float64, near=False)
    from emdcli.rows import row_sums_min

    sp, sq = 1.0 / row_sums_min(x)[0], 1.0 / row_sums_min(t)[0]
    for target, tt, cc, s2 in ((t, t, None, sq), (c, None, c, np.empty(0))):
        v, g = emdcli.emd(x, target, space=tree, rho=2.0, gradient=True)
        v2, g2 = tree_run(tree, x, tt, cc, sp, s2, 2.0, True, lanes=False)
        np.testing.assert_array_equal(v, v2)
        np.testing.assert_array_equal(g, g2)


def test_warmup_knows_the_lane_dispatch():
    from emdcli import warmup
    from emdcli.kernels import chain_lanes, tree_lanes

    assert warmup.LANES_MIN_ROWS == chain_lanes.MIN_LANE_ROWS == tree_lanes.MIN_LANE_ROWS
    assert warmup.CHAIN_LANES_MIN_BINS_FLOAT64 == chain_lanes.MIN_LANE_BINS_FLOAT64
    assert warmup.CHAIN_LANES_MAX_BINS == chain_lanes.MAX_LANE_BINS
    assert warmup.CHAIN_SUMS_MIN_BINS == chain_lanes.MIN_SUMS_BINS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b, n, space", [(2100, 64, "chain"), (2131, 300, "chain"),
                                         (300, 1000, "chain"), (2100, 40, "tree"),
                                         (1111, 60, "tree")])
def test_the_l1_check_read_in_the_lanes_kernel_gives_the_same_bits(b, n, space, dtype):
    """emd() with checks takes the row sums from the lanes kernel's tile (one pass over
    the rows): the bits of the unchecked path, which sums the rows first; tails, residual
    rows, both target kinds, values and gradients with respect to either."""
    from emdcli import api

    x, t, c, _, _, d = case(17, b, n, dtype, near=True)
    if space == "tree":
        sp = random_tree(n, n)
    else:
        sp = emdcli.Chain.from_positions(np.concatenate([[0.0], np.cumsum(d)]))
    if n >= 256 or dtype == np.float32 or space == "tree":
        assert api._sums_in_kernel(x, sp, 2.0, "l1", np.dtype(np.float64))
    if space == "chain":  # narrower chains sum their rows in a pass of their own
        assert not api._sums_in_kernel(x[:, :63], None, 2.0, "l1", np.dtype(np.float64))
    for target in (t, c):
        for rho, grad_wrt in ((1.0, "distribution"), (2.0, "input")):
            kw = dict(space=sp, rho=rho, gradient=True, grad_wrt=grad_wrt)
            v, g = emdcli.emd(x, target, **kw)
            v0, g0 = emdcli.emd(x, target, check=False, **kw)
            np.testing.assert_array_equal(v, v0)
            np.testing.assert_array_equal(g, g0)
    # the full blocks and the padded tail pass stats of one type: one compile, not two
    # (and the chain's kernel without stats, for check=False, one of its own)
    from numba import types

    from emdcli.kernels import chain_lanes, tree_lanes

    kernel, at = (chain_lanes._lanes_runs, 10) if space == "chain" else (tree_lanes._lanes_runs, 11)
    given = [sig[at] for sig in kernel.signatures if sig[at] != types.none]
    assert given and all(a.layout == "C" for a in given), kernel.signatures
    if space == "chain":
        assert types.none in [sig[at] for sig in kernel.signatures]


@pytest.mark.parametrize("space", ["chain", "tree"])
@pytest.mark.parametrize("row", [5, 2048, 2099])  # in a full block, the last, the tail
def test_the_l1_check_read_in_the_lanes_kernel_names_the_bad_element(row, space):
    from emdcli import api
    from emdcli.errors import EMDInputError

    x, _, c, _, _, _ = case(3, 2100, 64, np.float32, near=False)
    sp = random_tree(64, 64) if space == "tree" else None
    assert api._sums_in_kernel(x, sp, 1.0, "l1", np.dtype(np.float64))
    for value, words in ((-0.5, "negative mass -0.5"), (np.nan, "value is nan"),
                         (np.inf, "value is inf"), (0.0, "row sums to zero")):
        y = x.copy()
        if value == 0.0:
            y[row] = 0.0
        else:
            y[row, 7] = value
        with pytest.raises(EMDInputError) as e:
            emdcli.emd(y, c, space=sp)
        assert e.value.row == row and words in str(e.value), e.value
        if value != 0.0:
            assert e.value.column == 7


def offset_scratch(shape, skip):
    """A float64 scratch starting ``skip`` doubles past a cache line."""
    from emdcli.rows import aligned_empty

    flat = aligned_empty(int(np.prod(shape)) + 8)
    return flat[skip:skip + int(np.prod(shape))].reshape(shape)


@pytest.mark.parametrize("shape", [(8, 108064), (3,), (2, 3, 4), (0, 5)])
def test_aligned_empty_starts_on_a_cache_line_and_the_api_scratch_is_one(shape):
    from emdcli.api import _chunk_scratch
    from emdcli.rows import aligned_empty

    a = aligned_empty(shape)
    assert a.shape == shape and a.dtype == np.float64 and a.flags.c_contiguous
    assert a.flags.writeable and (a.size == 0 or a.ctypes.data % 64 == 0)
    assert aligned_empty((5, 7), np.float32).ctypes.data % 64 == 0
    s = _chunk_scratch(108064)
    assert s.ctypes.data % 64 == 0 and all(row.ctypes.data % 64 == 0 for row in s)


@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("skip", [1, 2, 4])
def test_lanes_kernels_give_the_same_bits_on_a_scratch_off_its_cache_line(classes, skip):
    from emdcli.kernels.tree_lanes import lanes_width as tree_width
    from emdcli.kernels.tree_lanes import tree_lanes

    rng = np.random.default_rng(skip)
    b, n = 70, 45
    x = rng.random((b, n)) ** 3
    x /= x.sum(axis=1, keepdims=True)
    t = rng.random((b, n))
    t /= t.sum(axis=1, keepdims=True)
    c = rng.integers(0, n, b) if classes else np.full(b, -1, dtype=np.int64)
    rows = LaneRows(x, x if classes else t, c, np.empty(0), np.empty(0))
    tree = random_tree(skip, n)
    arrays = (tree.parent, tree.weight, tree.bin_node, tree.count)
    got = []
    for off in (0, skip):
        out, G = np.full(b, np.nan), np.full((b, n), np.nan)
        tree_lanes(rows, arrays, 2.0, out, G, offset_scratch((3, tree_width(n, tree.n_nodes)), off))
        cout, cG = np.full(b, np.nan), np.full((b, n), np.nan)
        chain_lanes(rows, np.ones(n - 1), 2.0, cout, cG, offset_scratch((3, lanes_width(n)), off))
        got.append((out, G, cout, cG))
    for a, z in zip(*got):
        np.testing.assert_array_equal(a, z)
        assert np.isfinite(a).all()

"""The numpy twin of the tree kernel (``kernels.small_tree``) gives the kernel's bits.

Jobs that would spend longer loading or compiling the kernels than computing run on it
(``jobs.startup``); these tests call it and the Numba kernel on the same inputs — random
trees with bins on internal nodes, the WordNet tree, rows and classes, float32 and
float64 storage, with and without row scales, rows whose residual triggers the kernel's
second pass — and require equal values and gradients, exactly.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emdcli.kernels import small_tree
from emdcli.kernels.small import exact_products
from emdcli.kernels.small_tree import tree_small
from emdcli.kernels.tree import tree_value_grad
from emdcli.treefiles import load_tree, read_bins

from common import IMAGENET_BINS, WORDNET
from test_lanes import random_tree  # bins on every node, internal ones too
from test_small import cases as chain_cases


def cases(seed, b, n, dtype, near):
    """``test_small``'s rows (predictions, targets, classes, scales), without the gaps."""
    return chain_cases(seed, b, n, dtype, near)[:5]


def kernel(tree, x, t, c, sp, sq, rho, want_grad):
    b, n = x.shape
    out = np.empty(b)
    G = np.empty((b, n if want_grad else 0))
    arrays = (tree.parent, tree.weight, tree.bin_node, tree.count)
    tree_value_grad((x, t, c, sp, sq), arrays, rho, out, G, np.empty((2, tree.n_nodes)))
    return out, (G if want_grad else None)


def both(tree, x, t, c, sp, sq, rho, grad, classes, scale):
    empty = np.empty(0)
    cc = c if classes else np.full(x.shape[0], -1, dtype=np.int64)
    args = (x, x if classes else t, cc, sp if scale else empty,
            empty if classes or not scale else sq)
    arrays = (tree.parent, tree.weight, tree.bin_node, tree.count)
    return kernel(tree, *args, rho, grad), tree_small(*args, arrays, rho, grad)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(1, 25),
       st.sampled_from([np.float32, np.float64]), st.booleans(), st.sampled_from([1.0, 2.0]),
       st.booleans(), st.booleans(), st.booleans())
def test_numpy_twin_gives_the_kernels_bits(seed, b, nodes, dtype, near, rho, classes, grad,
                                           scale):
    tree = random_tree(seed, nodes)
    x, t, c, sp, sq = cases(seed, b, tree.n, dtype, near)
    assert exact_products(x, sp, sq, t)
    (v1, g1), (v2, g2) = both(tree, x, t, c, sp, sq, rho, grad, classes, scale)
    np.testing.assert_array_equal(v1, v2)
    assert v1.tobytes() == v2.tobytes()  # -0.0 and 0.0 told apart
    if grad:
        assert g1.tobytes() == g2.tobytes()


@pytest.mark.parametrize("classes", [True, False])
@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_on_the_wordnet_tree_in_blocks(monkeypatch, classes, rho):
    """1000 bins and the WordNet synsets above them, the block loop taking 7 rows at a time; the residual
    pass on rows that nearly cancel."""
    monkeypatch.setattr(small_tree, "BLOCK_VALUES", 7 * 2000)
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    assert tree.n == 1000 and tree.n_nodes > tree.n
    for near in (False, True):
        x, t, c, sp, sq = cases(int(near), 40, tree.n, np.float32, near)
        (v1, g1), (v2, g2) = both(tree, x, t, c, sp, sq, rho, True, classes, True)
        assert v1.tobytes() == v2.tobytes()
        assert g1.tobytes() == g2.tobytes()

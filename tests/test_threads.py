"""``kernels.threads``: runs of rows on threads give every row once, the same bits with
any thread count, and a kernel's error reaches the caller."""

import os
import sys
import threading

import numba
import numpy as np
import pytest

import emdcli
from emdcli.kernels import threads
from emdcli.treefiles import load_tree, read_bins

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import IMAGENET_BINS, WORDNET, dists  # noqa: E402


@pytest.fixture
def two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with one thread (NUMBA_NUM_THREADS=1)")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(before)


@pytest.mark.parametrize("n,slots,min_items", [(0, None, 1), (1, None, 1), (7, None, 1),
                                               (100, 1, 1), (100, 8, 60), (1000, 8, 1)])
def test_runs_cover_every_item_once(two_threads, n, slots, min_items):
    seen = []
    where = set()
    lock = threading.Lock()

    def kernel(tag, lo, hi, slot):
        assert tag == "x" and 0 <= slot < (slots or max(n, 1))
        with lock:
            seen.extend(range(lo, hi))
            where.add(threading.get_ident())

    threads.run(kernel, n, ("x",), slots=slots, min_items=min_items)
    assert sorted(seen) == list(range(n))
    if n >= 2 * min_items and (slots or 2) >= 2:
        assert len(where) == 2  # the caller's thread and one from the pool
    else:
        assert where == {threading.get_ident()}


def test_an_error_in_a_run_reaches_the_caller(two_threads):
    def kernel(lo, hi, slot):
        if slot == 1:
            raise ValueError("run 1")

    with pytest.raises(ValueError, match="run 1"):
        threads.run(kernel, 10, ())


def test_same_bits_with_one_or_two_threads(two_threads):
    rng = np.random.default_rng(5)
    tree = load_tree(WORDNET, bins=read_bins(IMAGENET_BINS))
    jobs = [
        (dists(rng, 300, 40), rng.integers(0, 40, 300), {}),  # chain lanes (float64 < 256: rows)
        (dists(rng, 300, 300).astype(np.float32), dists(rng, 300, 300), {"rho": 2.0}),
        (dists(rng, 301, 40), dists(rng, 301, 40), {"rho": 1.5}),
        (dists(rng, 200, tree.n), rng.integers(0, tree.n, 200), {"space": tree}),
        (dists(rng, 40, tree.n), dists(rng, 40, tree.n), {"space": tree, "rho": 3.0}),
    ]
    for p, q, kw in jobs:
        results = []
        for t in (1, 2):
            numba.set_num_threads(t)
            results.append(emdcli.emd(p, q, gradient=True, **kw))
        np.testing.assert_array_equal(results[0][0], results[1][0])
        np.testing.assert_array_equal(results[0][1], results[1][1])

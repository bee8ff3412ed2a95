"""Tree HEMD² value + projected gradient on the paper's Table 1 workload.

Batch 512 over the WordNet tree of the 1000 ImageNet classes (sample_data/, 1371 nodes),
float64, measured in one run, with integer labels and with soft targets:

  ours        emdcli.kernels.tree_lanes.tree_lanes on prepared arrays (LANES rows side by
              side: the kernel emdcli.emd dispatches to for rho 1 and 2)
  row at a time  emdcli.kernels.tree.tree_value_grad (the same bits)
  emd2        the public emdcli.emd(..., space=tree, rho=2, gradient=True)
  numpy path  a dense node × bin subtree-indicator matrix A (nodes, N): φ̃ = (P − Q) Aᵀ,
              value Σ w φ̃², gradient 2 (w φ̃) A minus the row mean — what a numpy user
              writes (its BLAS may use both cores)
  POT loop    ot.emd2(p, q, D) row by row with D the tree's path-length matrix: the exact
              EMD (rho = 1, so compared with our rho = 1 values), timed on a subset of
              rows and scaled to the batch
  copy        numpy writing G = P − Q: the bytes the kernel must move
  ours, after import torch  ours again once POT is imported (it imports torch when
              installed): what a process holding torch's OpenMP runtime gets

Ours is timed first, before numpy's products (BLAS threads spin on the cores for a while
after each) and before POT is imported.

The paper (Table 1) reports 126 ms on its CPU for this gradient. Values of every method
are checked against ours before timing. Run:

    python benchmarks/bench_tree.py [--batch 512] [--pot-rows 16] [--quick]
"""

import argparse
import os
import platform
import sys
import time

import numpy as np

import emdcli
from emdcli.kernels import tree as kernels
from emdcli.kernels import tree_lanes
from emdcli.rows import aligned_empty
from emdcli.timing import format_seconds, format_table, measure
from emdcli.treefiles import load_tree, read_bins

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "sample_data")
PAPER_CPU_S = 0.126


def subtree_matrix(tree):
    """A (nodes, N): ``A_vk = 1`` when bin k lies in the subtree of v (root row included)."""
    a = np.zeros((tree.n_nodes, tree.n))
    for k, v in enumerate(tree.bin_node):
        while v >= 0:
            a[v, k] = 1.0
            v = tree.parent[v]
    return a


def numpy_value_grad(P, Q, A, w):
    phi = (P - Q) @ A.T  # (B, nodes)
    value = (w * phi * phi).sum(axis=1)
    r = (2.0 * w * phi) @ A  # (B, N): path sums
    return value, r - r.mean(axis=1, keepdims=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--pot-rows", type=int, default=16, help="rows timed for the POT loop")
    ap.add_argument("--quick", action="store_true", help="tiny repeat counts (CI smoke run)")
    args = ap.parse_args(argv)
    import numba

    tree = load_tree(
        os.path.join(SAMPLES, "imagenet_wordnet_tree.csv"),
        bins=read_bins(os.path.join(SAMPLES, "imagenet_bins.txt")),
    )
    rng = np.random.default_rng(0)
    B, N = args.batch, tree.n
    P = rng.random((B, N)) ** 4
    P /= P.sum(axis=1, keepdims=True)
    Q = rng.random((B, N)) ** 4
    Q /= Q.sum(axis=1, keepdims=True)
    labels = rng.integers(0, N, B)
    onehot = np.zeros((B, N))
    onehot[np.arange(B), labels] = 1.0
    A, w = subtree_matrix(tree), tree.weight
    D = tree.ground_matrix()
    out, G = np.empty(B), np.empty((B, N))
    scratch = np.empty((4 * numba.get_num_threads(), tree.n_nodes))
    lane_scratch = aligned_empty((4 * numba.get_num_threads(), tree_lanes.lanes_width(N, tree.n_nodes)))
    G_rows = np.empty((B, N))
    no_class = np.full(B, -1, dtype=np.int64)
    unit = np.empty(0)  # row scales 1: the rows are distributions
    budget = 0.5 if args.quick else 5.0

    rows, timed, kernel = [], {}, {}
    cases = (("labels", onehot, labels), ("soft", Q, no_class))
    refs = {name: numpy_value_grad(P, T, A, w) for name, T, _ in cases}
    time.sleep(0.5)  # numpy's BLAS threads spin for a while after a product, on our cores
    for target_name, T, c in cases:
        def ours():
            tree_lanes.tree_lanes(tree_lanes.LaneRows(P, P if c is labels else T, c, unit, unit),
                                  (tree.parent, tree.weight, tree.bin_node, tree.count), 2.0,
                                  out, G, lane_scratch)

        def by_row():
            kernels.tree_value_grad((P, P if c is labels else T, c, unit, unit),
                                    (tree.parent, tree.weight, tree.bin_node, tree.count), 2.0,
                                    out, G_rows, scratch)

        def public():
            emdcli.emd(P, labels if c is labels else T, space=tree, rho=2.0, gradient=True)

        ref_v, ref_g = refs[target_name]
        by_row()
        ours()
        np.testing.assert_array_equal(G, G_rows)  # the same bits
        np.testing.assert_allclose(out, ref_v, rtol=1e-10)
        np.testing.assert_allclose(G, ref_g, rtol=1e-9, atol=1e-12)
        timed[target_name] = {
            "ours (kernel)": measure(ours, budget=budget).median_s,
            "ours, row at a time": measure(by_row, budget=budget).median_s,
            "emd2 (public)": measure(public, budget=budget).median_s,
            "copy P-Q": measure(lambda: np.subtract(P, T, out=G), budget=budget).median_s,
        }
        kernel[target_name] = ours

    # numpy's products and POT last: BLAS threads left spinning, and torch (which importing
    # POT imports when installed) may slow Numba's threads in the same process; the last
    # row shows ours with torch loaded
    for target_name, T, _ in cases:
        timed[target_name]["numpy path matrix"] = measure(
            lambda T=T: numpy_value_grad(P, T, A, w), budget=budget).median_s
    import ot

    time.sleep(0.5)
    for target_name, T, c in cases:
        exact = emdcli.emd(P, labels if c is labels else T, space=tree)
        k = min(args.pot_rows, B)
        pot = [ot.emd2(P[i], T[i], D) for i in range(k)]
        np.testing.assert_allclose(exact[:k], pot, rtol=1e-7, atol=1e-9)
        t_pot = measure(lambda: [ot.emd2(P[i], T[i], D) for i in range(k)], repeat=3,
                        budget=budget)
        t = timed[target_name]
        t[f"POT loop (x{B}/{k})"] = t_pot.median_s * B / k
        t[f"ours, after import {'torch' if 'torch' in sys.modules else 'ot'}"] = measure(
            kernel[target_name], budget=budget).median_s
        for name, seconds in t.items():
            rows.append({"targets": target_name, "method": name,
                         "time": format_seconds(seconds),
                         "vs ours": seconds / t["ours (kernel)"], "vs paper": PAPER_CPU_S / seconds})
    print(f"HEMD² value+gradient, batch {B}, WordNet tree ({tree.n_nodes} nodes, {N} bins), "
          f"float64, {numba.get_num_threads()} Numba threads, {platform.processor() or platform.machine()}")
    print(format_table(rows))
    print(f"paper (Table 1, CPU): {format_seconds(PAPER_CPU_S)}")


if __name__ == "__main__":
    main()

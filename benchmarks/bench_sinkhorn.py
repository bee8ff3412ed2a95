"""Sinkhorn (Algorithm 1, plain form) on the paper's Table 1 workload.

Batch 512 over the WordNet tree of the 1000 ImageNet classes (sample_data/, 1371 nodes),
λ = 3, soft targets, tol = 0 (exactly 10 / 100 / 1000 iterations), measured in one run:

  structured  emdcli.sinkhorn(..., kernel="structured"): O(nodes) up/down tree passes
  dense       emdcli.sinkhorn(..., kernel="dense"): batched matrix products with K (BLAS)
  numpy       a plain numpy transcription of Algorithm 1 with batched matrix products
  POT loop    ot.sinkhorn2(p, q, M, reg=1/λ) row by row (its own stopping rule switched
              off: stopThr=0, numItermax=iters), on a subset of rows, scaled to the batch
              (it starts from u = 1/N, so its values after a fixed iteration count differ
              slightly from Algorithm 1's; they are not compared)

float64 and float32 (POT: float64 only). The paper (Table 1) reports 7.51 s on its CPU
for 100 iterations. Values are checked against the numpy transcription before timing.
Run:

    python benchmarks/bench_sinkhorn.py [--batch 512] [--iters 10,100,1000] [--pot-rows 8]
"""

import argparse
import os

import numpy as np

import emdcli.sinkhorn as sk
from emdcli.timing import format_seconds, format_table, measure
from emdcli.treefiles import load_tree, read_bins

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "sample_data")
PAPER_CPU_100_S = 7.51
LAM = 3.0


def numpy_alg1(P, Q, M, lam, iters):
    """Algorithm 1 for a batch, as a numpy user writes it (batched matrix products)."""
    K = np.exp(-lam * M - 1).astype(P.dtype)
    U = np.ones_like(P)
    for _ in range(iters):
        U = P / ((Q / (U @ K)) @ K.T)
    V = Q / (U @ K)
    return (U * (V @ (K * M.astype(P.dtype)).T)).sum(axis=1), np.log(U) / lam


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--iters", default="10,100,1000")
    ap.add_argument("--pot-rows", type=int, default=8)
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of sampling per timing")
    args = ap.parse_args(argv)
    import numba
    import ot

    tree = load_tree(
        os.path.join(SAMPLES, "imagenet_wordnet_tree.csv"),
        bins=read_bins(os.path.join(SAMPLES, "imagenet_bins.txt")),
    )
    M = tree.ground_matrix()
    rng = np.random.default_rng(0)
    B, N = args.batch, tree.n
    P64 = rng.random((B, N)) + 0.05
    P64 /= P64.sum(axis=1, keepdims=True)
    Q64 = rng.random((B, N)) ** 3
    Q64 /= Q64.sum(axis=1, keepdims=True)
    rows = []
    for iters in [int(i) for i in args.iters.split(",")]:
        repeat = 3 if iters >= 1000 else 5
        for dtype in ("float64", "float32"):
            P, Q = P64.astype(dtype), Q64.astype(dtype)
            runs = {
                kernel: (lambda kernel=kernel: sk.sinkhorn(
                    P, Q, lam=LAM, iters=iters, tol=0.0, space=tree, kernel=kernel,
                    dtype=dtype, gradient=True, check=False))
                for kernel in ("structured", "dense")
            }
            ref_v, ref_g = numpy_alg1(P, Q, M, LAM, iters)
            rtol = 1e-9 if dtype == "float64" else 2e-3
            for fn in runs.values():
                r = fn()
                np.testing.assert_allclose(r.values, ref_v, rtol=rtol)
            t = {k: measure(fn, repeat=repeat, warmup=0, budget=args.budget, min_time=0)
                 for k, fn in runs.items()}
            t["numpy"] = measure(lambda: numpy_alg1(P, Q, M, LAM, iters), repeat=repeat,
                                 warmup=0, budget=args.budget, min_time=0)
            pot_s = None
            if dtype == "float64":
                k = min(args.pot_rows, B)  # POT starts from u = 1/N, not 1: its values
                # after a fixed number of iterations differ slightly; converged they agree
                tp = measure(lambda: [ot.sinkhorn2(P[i], Q[i], M, reg=1 / LAM,
                                                   numItermax=iters, stopThr=0)
                                      for i in range(k)], repeat=3, warmup=0,
                             budget=args.budget, min_time=0)
                pot_s = tp.median_s * B / k
            s = t["structured"].median_s
            rows.append({
                "iters": iters, "dtype": dtype,
                "structured": format_seconds(s),
                "dense": format_seconds(t["dense"].median_s),
                "numpy": format_seconds(t["numpy"].median_s),
                "POT loop": format_seconds(pot_s),
                "numpy/structured": t["numpy"].median_s / s,
                "numpy/dense": t["numpy"].median_s / t["dense"].median_s,
                "POT/dense": (pot_s / t["dense"].median_s) if pot_s else None,
                "paper/structured": (PAPER_CPU_100_S * iters / 100) / s,
            })
    print(f"Sinkhorn value+gradient, λ={LAM}, batch {B}, WordNet tree ({tree.n_nodes} nodes, "
          f"{N} bins), {numba.get_num_threads()} Numba threads")
    print(format_table(rows))
    print(f"paper (Table 1, CPU, 100 iterations): {format_seconds(PAPER_CPU_100_S)}")


if __name__ == "__main__":
    main()

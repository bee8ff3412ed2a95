"""W_p^p on the line (value + gradient) against our EMD² kernel and POT, in one run.

One timed call each, interleaved, on the same (B, N) float64 rows (soft targets) with
random increasing positions:

  W_p        emdcli.wasserstein(p, q, positions=x, p=P, gradient=True): validation, l1
             normalisation, the quantile merge (kernels.quantile), the projected potentials
  W_p value  the same without the gradient
  EMD²       emdcli.emd2(p, q, positions=x, gradient=True), the same checks: the yardstick
             of issue 16 ("W_p value + gradient within 3× the EMD kernel")
  POT        ot.wasserstein_1d(x, x, pᵀ, qᵀ, p=P, require_sort=False) on the batch (value only; numpy
             backend), after checking that it agrees with ours

The table shows medians and the ratios W_p / EMD² and POT / W_p. Run:

    python benchmarks/bench_wasserstein.py [--repeats 11] [--threads 1,2] [--no-pot]
"""

import argparse
import os
import platform
import statistics
import time

import numba
import numpy as np

import emdcli
from emdcli.wasserstein import wasserstein

CASES = [(100_000, 32, 2.0), (100_000, 32, 1.0), (100_000, 32, 1.5), (12_500, 256, 2.0),
         (3_200, 1000, 3.0)]


def rows(b, n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.random(n) + 0.05)
    p, q = rng.random((b, n)), rng.random((b, n))
    return x, p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)


def median_times(fns, repeats):
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", default="1,2", help="Numba thread counts, comma-separated")
    ap.add_argument("--no-pot", action="store_true", help="skip POT")
    args = ap.parse_args(argv)
    ot = None
    if not args.no_pot:
        try:
            import ot
        except ImportError:
            print("# POT not installed: its column is skipped")
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, numba "
          f"{numba.__version__}; float64 target rows; {args.repeats} interleaved repeats, medians")
    print("| B × N | P | threads | W_p | W_p value | EMD² | W_p / EMD² | POT (value) | POT / W_p |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in (int(s) for s in args.threads.split(",")):
        numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
        for b, n, power in CASES:
            x, p, q = rows(b, n)
            fns = {"w": lambda: wasserstein(p, q, positions=x, p=power, gradient=True),
                   "v": lambda: wasserstein(p, q, positions=x, p=power),
                   "e": lambda: emdcli.emd2(p, q, positions=x, gradient=True)}
            if ot is not None:
                pt, qt = np.ascontiguousarray(p.T), np.ascontiguousarray(q.T)
                xs = np.broadcast_to(x[:, None], (n, b))  # POT batches on axis 1
                want = ot.wasserstein_1d(xs[:, :64], xs[:, :64], pt[:, :64], qt[:, :64],
                                         p=power, require_sort=False)
                np.testing.assert_allclose(wasserstein(p[:64], q[:64], positions=x, p=power),
                                           want, rtol=1e-10)
                fns["pot"] = lambda: ot.wasserstein_1d(xs, xs, pt, qt, p=power, require_sort=False)
            m = median_times(fns, args.repeats)
            pot = (f"{m['pot'] * 1e3:.1f} ms | {m['pot'] / m['w']:.1f}×" if "pot" in m
                   else "— | —")
            print(f"| {b} × {n} | {power:g} | {t} | {m['w'] * 1e3:.1f} ms | {m['v'] * 1e3:.1f} ms "
                  f"| {m['e'] * 1e3:.1f} ms | {m['w'] / m['e']:.2f}× | {pot} |", flush=True)


if __name__ == "__main__":
    main()

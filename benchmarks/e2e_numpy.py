"""What a numpy user would write instead of `emd compute` for chain EMD against class labels.

    python benchmarks/e2e_numpy.py pred.npy labels.npy [--metric emd2|emd] [-o out.parquet]

Chunked np.load(mmap_mode='r'); each chunk l1-normalised in float64 (emd's default
precision), φ = cumsum(p) − [i >= label] and EMD² = Σ_i φ_i² (unit gaps; EMD = Σ_i |φ_i|).
Writes a Parquet file with the columns `row` (int64) and the metric (float64), like
`emd compute -o out.parquet`, or without -o the CSV `row,<metric>` on standard output.
The comparison program of benchmarks/bench_e2e.py (which checks its values against emd's).
"""

import argparse
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("pred")
ap.add_argument("labels")
ap.add_argument("--metric", choices=("emd2", "emd"), default="emd")
ap.add_argument("-o", "--output")
ap.add_argument("--chunk", type=int, default=1 << 18, help="rows per chunk")
args = ap.parse_args()

# ---- the user's code ----
P, C = np.load(args.pred, mmap_mode="r"), np.load(args.labels, mmap_mode="r")
n, out = P.shape[1], np.empty(len(P))
steps = np.arange(n - 1)
for i in range(0, len(P), args.chunk):
    p = np.asarray(P[i : i + args.chunk], dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    phi = np.cumsum(p[:, :-1], axis=1) - (steps >= C[i : i + args.chunk, None])
    out[i : i + len(p)] = (phi * phi).sum(axis=1) if args.metric == "emd2" else np.abs(phi).sum(axis=1)
# ---- end ----

if args.output:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"row": np.arange(len(out)), args.metric: out}), args.output)
else:
    w = sys.stdout.write
    w(f"row,{args.metric}\n")
    w("".join(f"{i},{v!r}\n" for i, v in enumerate(out.tolist())))

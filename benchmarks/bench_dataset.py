"""Datasets: the local engine beside ``--engine dask --workers 2``, whole processes.

Two datasets, built once under --workdir and reused while the sizes match:

  big    40 Parquet files, 10M × 32 float32 rows in all (a fixed-size-list column
         ``pred`` and an int64 ``target``): throughput (rows/s)
  small  200 Parquet files of 1000 rows: the per-task overhead

and, for each, in one run, interleaved (each command once per round, the order rotated):

  local        emd compute DATASET -m emd2 -o OUT/ -q
  dask         emd compute DATASET -m emd2 -o OUT/ -q --engine dask --workers 2
  floor        one process reading every input file's columns once and writing a
               part per file with pyarrow (the same bytes in and out, no work)

Reported: median wall time, rows/s, the ratio dask / local, and the per-task overhead
(small dataset: (dask − local) / files, and the dask run's wall time per task). Targets
(issue 13, on 2 cores): dask ≥ 0.8 × the local engine's throughput; ≤ 50 ms per task.

    python benchmarks/bench_dataset.py [--repeats 3] [--workdir DIR] [--scale 0.1]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FLOOR = """
import os, sys, numpy as np, pyarrow.parquet as pq, pyarrow as pa, pyarrow.compute as pc
src, out = sys.argv[1], sys.argv[2]
for name in sorted(f for f in os.listdir(src) if f.endswith(".parquet")):
    t = pq.read_table(os.path.join(src, name))
    flat = t.column("pred").combine_chunks().values
    s = pc.sum(flat)  # every byte touched once
    n = t.num_rows
    pq.write_table(pa.table({"row": np.arange(n), "emd2": np.zeros(n)}), os.path.join(out, name))
"""


def build(folder, files, rows, n=32):
    """``files`` Parquet files of ``rows`` × ``n`` float32 rows (reused if present)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = folder / f".built-{files}-{rows}-{n}"
    if stamp.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        p = rng.random((rows, n), dtype=np.float32) + np.float32(0.01)
        c = rng.integers(0, n, rows)
        t = pa.table({"pred": pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), n),
                      "target": pa.array(c)})
        pq.write_table(t, folder / f"part-{i:03d}.parquet", row_group_size=1 << 20)
    stamp.touch()


def timed(cmd, out):
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/emd-bench-dataset"))
    ap.add_argument("--scale", type=float, default=1.0, help="shrink the big dataset's rows")
    args = ap.parse_args()
    emd = [sys.executable, "-m", "emdcli.cli"]
    sets = {"big": (40, max(1000, int(250_000 * args.scale))), "small": (200, 1000)}
    for name, (files, rows) in sets.items():
        build(args.workdir / name, files, rows)
    out = args.workdir / "out"
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores", flush=True)
    for name, (files, rows) in sets.items():
        src = args.workdir / name
        cmds = {
            "local": emd + ["compute", str(src), "-m", "emd2", "-o", f"{out}/", "-q"],
            "dask": emd + ["compute", str(src), "-m", "emd2", "-o", f"{out}/", "-q",
                           "--engine", "dask", "--workers", "2"],
            "floor": [sys.executable, "-c", FLOOR, str(src), str(out)],
        }
        for c in cmds.values():  # warm-up: page cache, Numba cache
            timed(c, out)
        times = {k: [] for k in cmds}
        order = list(cmds)
        for r in range(args.repeats):
            for k in order[r % len(order):] + order[:r % len(order)]:
                times[k].append(timed(cmds[k], out))
        med = {k: statistics.median(v) for k, v in times.items()}
        total = files * rows
        print(f"\n{name}: {files} files × {rows} rows = {total:,} rows of 32 float32")
        for k, s in med.items():
            each = ", ".join(f"{t:.2f}" for t in times[k])
            print(f"  {k:6s} {s:7.2f} s  {total / s:12,.0f} rows/s  ({each})")
        print(f"  dask throughput / local: {med['local'] / med['dask']:.2f}×; "
              f"local / floor: {med['local'] / med['floor']:.2f}×")
        print(f"  per task: dask {1000 * med['dask'] / files:.1f} ms, "
              f"(dask − local) / files {1000 * (med['dask'] - med['local']) / files:.1f} ms")


if __name__ == "__main__":
    main()

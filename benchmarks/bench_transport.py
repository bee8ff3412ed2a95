"""What ``--flows`` and ``--plan`` cost beside a plain ``emd compute``: whole processes.

On bench_e2e's job (b) input — 200k × 1000 float32 Parquet, int64 labels, the WordNet
tree (1371 nodes: 1370 edges a row) — interleaved rounds of:

  plain        emd compute wide.parquet --tree … --target-column label -o out.parquet -q
  flows npy    … --flows flows.npy       (200k × 1370 in the working dtype, float64: 2.2 GB)
  flows pq     … --flows flows.parquet   (one column an edge)
  write floor  python -c: a 200k × 1370 float64 NPY written in 16 MiB chunks (the bytes
               --flows adds, written with no work)
  plain f32, flows npy f32   the same two with --dtype float32 (1.1 GB of flows)

and, on the first 10k rows with soft targets (the plan of a class target is p itself):
  plain soft   emd compute soft.parquet --tree … -o out.parquet -q
  plan         … --plan plan.parquet     (≤ 2N entries a row, ~2000 × 24 B)

Target (issue 15): ``--flows`` ≤ 1.3 × plain. Medians and peak RSS are printed.

    python benchmarks/bench_transport.py [--repeats 3] [--workdir /tmp/emd-bench-e2e/scale-1]
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_e2e import BINS, TREE, WIDE, Launcher, build_inputs  # noqa: E402

FLOOR = """
import sys, numpy as np
rows, width = int(sys.argv[1]), int(sys.argv[2])
chunk = max(1, (1 << 24) // (8 * width))
with open(sys.argv[3], "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                              "shape": (rows, width)})
    block = np.ones((chunk, width), np.float64)
    for i in range(0, rows, chunk):
        f.write(block[:min(chunk, rows - i)].data)
"""


def soft_input(path, src, rows):
    """The first ``rows`` of ``src`` with soft targets (a second list column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    t = pq.ParquetFile(src).read_row_group(0).slice(0, rows)
    width = t.schema.field("pred").type.list_size
    rng = np.random.default_rng(1)
    q = rng.random((len(t), width), dtype=np.float32)
    target = pa.FixedSizeListArray.from_arrays(pa.array(q.ravel()), width)
    pq.write_table(pa.table({"pred": t.column("pred"), "target": target}), path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "emd-bench-e2e/scale-1")
    ap.add_argument("--soft-rows", type=int, default=10_000)
    args = ap.parse_args(argv)
    sizes = {"big": [10_000_000, 32], "wide": list(WIDE), "small": [1000, 32]}
    files = build_inputs(args.workdir, sizes, 0)
    out = args.workdir / "out-transport"
    out.mkdir(exist_ok=True)
    soft = soft_input(args.workdir / "soft.parquet", files["wide"], args.soft_rows)
    emd = [sys.executable, "-m", "emdcli"]
    space = ["--tree", str(TREE), "--bins", str(BINS), "-q"]
    wide = [*emd, "compute", str(files["wide"]), "--target-column", "label", *space,
            "-o", str(out / "out.parquet")]
    soft_cmd = [*emd, "compute", str(soft), *space, "-o", str(out / "soft.parquet")]
    edges = sum(1 for _ in open(TREE)) - 2  # nodes (header off) − the root
    cmds = {
        "plain": wide,
        "flows npy": [*wide, "--flows", str(out / "flows.npy")],
        "flows parquet": [*wide, "--flows", str(out / "flows.parquet")],
        "write floor": [sys.executable, "-c", FLOOR, str(WIDE[0]), str(edges), str(out / "floor.npy")],
        "plain f32": [*wide, "--dtype", "float32"],
        "flows npy f32": [*wide, "--dtype", "float32", "--flows", str(out / "flows32.npy")],
        "plain soft": soft_cmd,
        "plan": [*soft_cmd, "--plan", str(out / "plan.parquet")],
    }
    launcher = Launcher()
    times = {k: [] for k in cmds}
    rss = {k: 0.0 for k in cmds}
    names = list(cmds)
    try:
        for r in range(args.repeats + 1):  # round 0: the warm-up (page cache, Numba cache)
            for k in names[r % len(names):] + names[:r % len(names)]:
                wall, peak = launcher.run(cmds[k], None, out / f"{k}.err", out)
                if r:
                    times[k].append(wall)
                    rss[k] = max(rss[k], peak)
    finally:
        launcher.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'command':<14} {'median s':>9} {'peak RSS MiB':>13}  ratio")
    for k in cmds:
        base = {"plan": "plain soft", "flows npy f32": "plain f32"}.get(k, "plain")
        print(f"{k:<14} {med[k]:9.3f} {rss[k]:13.0f}  {med[k] / med[base]:5.2f}× {base}")
    print(f"--flows npy: {med['flows npy'] / med['plain']:.2f}× plain (target ≤ 1.3×); "
          f"{med['flows npy'] / (med['plain'] + med['write floor']):.2f}× plain + the write "
          f"floor ({(med['plain'] + med['write floor']) / med['plain']:.2f}× plain)")
    for f in out.glob("*.npy"):
        os.remove(f)


if __name__ == "__main__":
    main()

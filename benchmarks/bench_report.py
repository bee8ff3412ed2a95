"""`emd report` against `emd compute` on the same input, whole processes, interleaved.

The input is bench_e2e's job (b): 200k × 1000 float32 Parquet (fixed-size-list column
`pred`, int64 `label`) on the WordNet tree of the ImageNet-1k classes; it is reused from
/tmp/emd-bench-e2e/scale-1/wide.parquet when bench_e2e.py built it, else built here.

  compute  emd compute wide.parquet --tree … --bins … --target-column label -o c.parquet -q
  json     emd report  wide.parquet --tree … --bins … --target-column label -o r.json -q
  html     emd report  … -o r.html -q   (the same, plus matplotlib and the page)

Each command runs once as a warm-up (page cache, Numba cache), then --repeats rounds,
every command once per round in an order rotated each round; wall time and peak RSS are
taken by bench_e2e's launcher. Target, on the medians: html ≤ 2 × compute.

    python benchmarks/bench_report.py [--repeats 3] [--input FILE] [--rows 200000] [--json FILE]
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_e2e  # noqa: E402

E2E_INPUT = Path("/tmp/emd-bench-e2e/scale-1/wide.parquet")
TARGET = 2.0


def input_file(args):
    """The input: --input, bench_e2e's when it has the size asked for, else built."""
    if args.input:
        return args.input
    if args.rows == bench_e2e.WIDE[0] and E2E_INPUT.exists():
        return E2E_INPUT
    path = args.workdir / f"wide-{args.rows}.parquet"
    if not path.exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(f"# building {path} ...", file=sys.stderr, flush=True)
        bench_e2e.write_wide_parquet(path, args.rows, bench_e2e.WIDE[1],
                                     np.random.default_rng(args.seed))
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=bench_e2e.WIDE[0])
    ap.add_argument("--input", type=Path, help="a Parquet file as bench_e2e's job (b) input")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/emd-bench-report"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also save the results here")
    args = ap.parse_args(argv)
    src = input_file(args)
    out = args.workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    emd = str(Path(sys.executable).parent / "emd")
    space = [str(src), "--tree", str(bench_e2e.TREE), "--bins", str(bench_e2e.BINS),
             "--target-column", "label", "--quiet"]
    cmds = {"compute": [emd, "compute", *space, "-o", str(out / "c.parquet")],
            "json": [emd, "report", *space, "-o", str(out / "r.json")],
            "html": [emd, "report", *space, "-o", str(out / "r.html")]}
    launcher, times, rss = bench_e2e.Launcher(), {k: [] for k in cmds}, {k: [] for k in cmds}
    load = os.getloadavg()[0]
    try:
        for name, argv_ in cmds.items():  # warm-up
            launcher.run(argv_, None, out / f"{name}.err", args.workdir)
        names = list(cmds)
        for r in range(args.repeats):
            for name in names[r % 3:] + names[:r % 3]:
                wall, peak = launcher.run(cmds[name], None, out / f"{name}.err", args.workdir)
                times[name].append(wall)
                rss[name].append(peak)
    finally:
        launcher.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# {src} · {args.repeats} rounds · load average {load:.2f} → {os.getloadavg()[0]:.2f}")
    for k in cmds:
        print(f"{k:8s} median {med[k]:6.2f} s  (runs {', '.join(f'{t:.2f}' for t in times[k])})"
              f"  peak RSS {max(rss[k]):.0f} MiB  ratio {med[k] / med['compute']:.2f}×")
    ratio = med["html"] / med["compute"]
    verdict = "ok" if ratio <= TARGET else "MISS"
    print(f"emd report (html) / emd compute = {ratio:.2f}× (target ≤ {TARGET:g}×): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"times": times, "rss_mib": rss, "median": med,
                                         "ratio": ratio, "input": str(src)}, indent=1))
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())

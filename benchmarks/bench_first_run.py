"""A first `emd compute` and a warm one, whole processes: the whole job on the kernels'
numpy twins against the Numba kernels (``emdcli/jobs/startup.py`` picks by size and by
whether Numba's cache has the kernels; here each side is forced).

Jobs (float32 rows, EMD², random positive rows, seeded):

  classes   100 000 × 32 against int64 labels → CSV
  gradient  100 000 × 32 against rows, -g gradient.npy → CSV
  million   1 000 000 × 32 against labels → Parquet
  wide      30 000 × 1000 against labels → Parquet
  wordnet   4000 × 1000 on the WordNet tree (sample_data) against labels, -g → CSV

Each round runs, per job and side: a cold process (an empty NUMBA_CACHE_DIR of its own)
then a warm one (the same cache), sides and jobs interleaved; medians over the rounds.
"twins" sets ``rows.JOB_ELEMENTS`` and ``COLD_JOB_ELEMENTS`` above the job's size,
"kernels" to 0 (no twins). Wall time and peak RSS are taken by bench_e2e's launcher; the
outputs of the two sides are compared byte for byte.

    python benchmarks/bench_first_run.py [--repeats 3] [--workdir DIR] [--jobs classes,wide]
"""

import argparse
import filecmp
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import SAMPLES, Launcher  # noqa: E402

JOBS = {  # name → (rows, bins, target: "classes" or "rows", extra arguments, output)
    "classes": (100_000, 32, "classes", [], "out.csv"),
    "gradient": (100_000, 32, "rows", ["-g", "grad.npy"], "out.csv"),
    "million": (1_000_000, 32, "classes", [], "out.parquet"),
    "wide": (30_000, 1000, "classes", [], "out.parquet"),
    "wordnet": (4000, 1000, "classes", ["--tree", str(SAMPLES / "imagenet_wordnet_tree.csv"),
                                        "--bins", str(SAMPLES / "imagenet_bins.txt"),
                                        "-g", "grad.npy"], "out.csv"),
}
CLI = ("import sys, emdcli.rows as r\n"
       "r.JOB_ELEMENTS = r.COLD_JOB_ELEMENTS = int(sys.argv.pop(1))\n"
       "sys.argv[0] = 'emd'\n"
       "from emdcli.cli.root import main\n"
       "main()\n")
LIMITS = {"twins": 1 << 60, "kernels": 0}


def build(workdir, name):
    b, n, kind, _, _ = JOBS[name]
    rng = np.random.default_rng(len(name))
    pred = workdir / f"{name}_p.npy"
    if not pred.exists():
        np.save(pred, rng.random((b, n), dtype=np.float32) + np.float32(0.01))
        target = (rng.integers(0, n, b) if kind == "classes"
                  else rng.random((b, n), dtype=np.float32) + np.float32(0.01))
        np.save(workdir / f"{name}_t.npy", target)
    return pred, workdir / f"{name}_t.npy"


def argv(side, cache, name, pred, target, out):
    extra, output = JOBS[name][3], JOBS[name][4]
    return ["env", f"NUMBA_CACHE_DIR={cache}", sys.executable, "-c", CLI, str(LIMITS[side]),
            "compute", str(pred), str(target), "--metric", "emd2", "-q",
            "-o", str(out / output), *[str(out / a) if a.endswith(".npy") else a for a in extra]]


def main(args=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--jobs", default=",".join(JOBS))
    a = ap.parse_args(args)
    workdir = a.workdir or Path(tempfile.gettempdir()) / "emd_bench_first_run"
    workdir.mkdir(parents=True, exist_ok=True)
    names = [j for j in a.jobs.split(",") if j]
    inputs = {name: build(workdir, name) for name in names}
    times = {}  # (name, side, cold|warm) → [(seconds, MiB)]
    launcher = Launcher()
    try:
        for rnd in range(a.repeats):
            for name in names:
                sides = list(LIMITS) if rnd % 2 == 0 else list(LIMITS)[::-1]
                for side in sides:
                    cache, out = workdir / f"cache_{side}", workdir / f"out_{side}"
                    shutil.rmtree(cache, ignore_errors=True)
                    out.mkdir(exist_ok=True)
                    for state in ("cold", "warm"):
                        cmd = argv(side, cache, name, *inputs[name], out)
                        got = launcher.run(cmd, None, workdir / "stderr.txt", workdir)
                        times.setdefault((name, side, state), []).append(got)
                for f in [JOBS[name][4], *[x for x in JOBS[name][3] if x.endswith(".npy")]]:
                    if not filecmp.cmp(workdir / "out_twins" / f, workdir / "out_kernels" / f,
                                       shallow=False):
                        raise SystemExit(f"{name}: {f} differs between the twins and the kernels")
    finally:
        launcher.close()
    print(f"| job | values | first run: twins | kernels | warm: twins | kernels |  "
          f"(medians of {a.repeats}; peak RSS)")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        b, n = JOBS[name][:2]
        cells = []
        for state in ("cold", "warm"):
            for side in LIMITS:
                runs = times[(name, side, state)]
                cells.append(f"{statistics.median(t for t, _ in runs):.2f} s "
                             f"({statistics.median(m for _, m in runs):.0f} MiB)")
        print(f"| {name} {b} × {n} | {b * n / 1e6:.1f} M | " + " | ".join(cells) + " |")
    print("outputs: the same bytes from both sides")


if __name__ == "__main__":
    main()

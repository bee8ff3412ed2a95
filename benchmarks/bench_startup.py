"""Start-up of whole ``emd`` processes: ``emd --help``, ``emd compute --help`` and a small
warm ``emd compute`` (1000 × 32 float32 NPY against int64 labels → CSV), per interpreter.

Give each installation's Python (a venv where emdcli is installed, as a user installs it:
``pip install .``, not editable: an editable install's path finder, and numba-cuda's
``.pth`` redirector, add about 60 ms to every start of that interpreter). Runs are
interleaved (each command with each interpreter, then again), from a folder of its own so
that no checkout shadows the installed package; the table shows medians, the middle
half's mean and the CPU time (user + system) of the child. Help runs twice: as a user
gets it after the first time, from the help cache (``emdcli/cli/helpcache.py``; its
folder in the temporary one, filled by the warm-up round), and "(rendered)" by Typer with
the cache off (``EMD_NO_HELP_CACHE=1``). Run:

    python benchmarks/bench_startup.py [--runs 40] PYTHON [PYTHON ...]

e.g. ``python -m venv /tmp/a && /tmp/a/bin/pip install .`` for this tree and the same
for another commit, then ``python benchmarks/bench_startup.py /tmp/a/bin/python
/tmp/b/bin/python``.
"""

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time

import numpy as np


RENDER = {"EMD_NO_HELP_CACHE": "1"}  # help rendered by Typer each time, not the kept copy


def commands(python, folder):
    """name → (command, extra environment)."""
    pred, labels, out = (os.path.join(folder, f) for f in ("pred.npy", "labels.npy", "out.csv"))
    emd = [python, "-m", "emdcli"]
    return {"emd --help": ([*emd, "--help"], {}),
            "emd --help (rendered)": ([*emd, "--help"], RENDER),
            "emd compute --help": ([*emd, "compute", "--help"], {}),
            "emd compute --help (rendered)": ([*emd, "compute", "--help"], RENDER),
            "emd compute 1000 x 32 -> csv": ([*emd, "compute", pred, labels, "-o", out], {})}


def timed(cmd, folder):
    """(wall seconds, child CPU seconds) of one run of ``cmd`` = (argv, extra environment),
    its help cache in ``folder``."""
    argv, extra = cmd
    env = {k: v for k, v in os.environ.items() if k != "EMD_NO_HELP_CACHE"}
    env.update(XDG_CACHE_HOME=os.path.join(folder, "cache"), **extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pythons", nargs="+", metavar="PYTHON", help="interpreters with emdcli installed")
    ap.add_argument("--runs", type=int, default=40, help="interleaved runs of each command")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        np.save(os.path.join(folder, "pred.npy"), rng.random((1000, 32), dtype=np.float32))
        np.save(os.path.join(folder, "labels.npy"), rng.integers(0, 32, 1000))
        plan = {(py, name): cmd for py in args.pythons for name, cmd in commands(py, folder).items()}
        for cmd in plan.values():  # once each first: page cache, the Numba cache
            timed(cmd, folder)
        walls = {key: [] for key in plan}
        cpus = {key: [] for key in plan}
        for _ in range(args.runs):
            for key, cmd in plan.items():
                wall, cpu = timed(cmd, folder)
                walls[key].append(wall)
                cpus[key].append(cpu)
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.runs} interleaved runs")
    print("| command | python | wall median | middle half's mean | CPU median |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (py, name), w in walls.items():
        w = sorted(w)
        q = len(w) // 4
        print(f"| {name} | {py} | {statistics.median(w):.3f} s | "
              f"{statistics.mean(w[q:len(w) - q]):.3f} s | "
              f"{statistics.median(cpus[(py, name)]):.3f} s |")


if __name__ == "__main__":
    main()

"""Spaces from data: `emd ground learn` against its read floor, `build_tree(method="nj")`
for 1000 classes, and the distortion of trees built from WordNet's and a confusion matrix.

  (a) learn  emd ground learn feats.npy labels.npy -o D.npy, whole process, beside a floor
             process that reads the same bytes (numpy imported, 16 MiB readinto chunks into
             one buffer, no work). 1.28M × 512 float32 features (2.6 GB, generated once
             under --workdir: class means plus noise), int64 labels in 1000 classes,
             shuffled. Wall time from fork to reaping, peak RSS from os.wait4 (ru_maxrss
             of the child). Target: floor / emd ≥ 0.8; RSS bounded (not growing with rows).
  (b) nj     build_tree(D, method="nj") in this process for WordNet's 1000-class ground
             matrix, and `emd tree build --ground D.npy -o tree.csv` as a whole process.
             Target: < 3 s.
  (c) distortion of the NJ tree built from WordNet's own ground matrix (≈ 0: recovered),
             and of one built from the confusion matrix of a simulated classifier that
             takes class i for j with probability ∝ exp(−D_ij / τ) (D: WordNet distances),
             against the confusion distances and against WordNet.

    python benchmarks/bench_spaces.py --quick          # 100k rows, a plumbing check
    python benchmarks/bench_spaces.py [--rows 1281167] [--repeats 3] [--workdir DIR]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "emdcli", "data")
FLOOR = """
import sys, numpy as np
for path in sys.argv[1:]:
    with open(path, "rb", buffering=0) as f:
        buf = memoryview(bytearray(16 << 20))
        while f.readinto(buf):
            pass
"""


def make_inputs(workdir, rows, width, classes, seed=0):
    """feats.npy (rows × width float32) and labels.npy (rows int64), reused if present."""
    feats, labels = os.path.join(workdir, "feats.npy"), os.path.join(workdir, "labels.npy")
    if os.path.exists(feats) and os.path.exists(labels):
        shape = np.load(feats, mmap_mode="r").shape
        if shape == (rows, width):
            return feats, labels
    os.makedirs(workdir, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, width)).astype(np.float32)
    y = rng.integers(0, classes, rows)
    np.save(labels, y)
    with open(feats, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, width)})
        step = 1 << 15
        for s in range(0, rows, step):
            block = means[y[s:s + step]] + rng.standard_normal((len(y[s:s + step]), width),
                                                               dtype=np.float32)
            f.write(block.astype("<f4").tobytes())
    return feats, labels


_LAUNCHER = []


def run(cmd):
    """(wall seconds, peak RSS MiB) of one child process, forked by bench_e2e's small
    launcher process (so that this process's memory is not in the child's ru_maxrss)."""
    if not _LAUNCHER:
        sys.path.insert(0, HERE)
        from bench_e2e import Launcher

        _LAUNCHER.append(Launcher())
    err = os.path.join(tempfile.gettempdir(), "bench_spaces.stderr")
    return _LAUNCHER[0].run(cmd, None, err, ROOT)


def bench_learn(args):
    feats, labels = make_inputs(args.workdir, args.rows, args.width, args.classes)
    size = os.path.getsize(feats) + os.path.getsize(labels)
    emd = [sys.executable, "-m", "emdcli.cli", "ground", "learn", feats, labels,
           "-o", os.path.join(args.workdir, "D.npy")]
    floor = [sys.executable, "-c", FLOOR, feats, labels]
    run(floor), run(emd)  # warm-up: page cache, Numba's cache
    times = {"floor": [], "emd": []}
    rss = {}
    for k in range(args.repeats):
        for name, cmd in sorted({"floor": floor, "emd": emd}.items(), reverse=k % 2 == 1):
            wall, peak = run(cmd)
            times[name].append(wall)
            rss[name] = max(rss.get(name, 0.0), peak)
    f, e = statistics.median(times["floor"]), statistics.median(times["emd"])
    print(f"(a) ground learn: {args.rows} × {args.width} float32, {args.classes} classes, "
          f"{size / 1e9:.2f} GB")
    print(f"    floor {f:.3f} s ({size / f / 1e9:.2f} GB/s), peak RSS {rss['floor']:.0f} MiB")
    print(f"    emd   {e:.3f} s ({size / e / 1e9:.2f} GB/s), peak RSS {rss['emd']:.0f} MiB")
    print(f"    floor / emd = {f / e:.2f} (target >= 0.8)")


def wordnet():
    from emdcli.treefiles import load_tree, read_bins

    return load_tree(os.path.join(DATA, "imagenet_wordnet_tree.csv"),
                     bins=read_bins(os.path.join(DATA, "imagenet_bins.txt")))


def bench_nj(args):
    from emdcli.treebuild import build_tree

    d = wordnet().ground_matrix()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        build_tree(d, method="nj")
        times.append(time.perf_counter() - t)
    path = os.path.join(args.workdir, "wordnet_D.npy")
    os.makedirs(args.workdir, exist_ok=True)
    np.save(path, d)
    cmd = [sys.executable, "-m", "emdcli.cli", "tree", "build", "--ground", path,
           "-o", os.path.join(args.workdir, "tree.csv")]
    run(cmd)
    wall = statistics.median(run(cmd)[0] for _ in range(args.repeats))
    print(f"(b) build_tree(nj), {d.shape[0]} classes: median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}); emd tree build process {wall:.3f} s (target < 3 s)")


def bench_distortion(args):
    from emdcli.learn import from_confusion
    from emdcli.treebuild import build_tree, distortion, spearman

    d = wordnet().ground_matrix()
    s = distortion(build_tree(d), d)
    print(f"(c) NJ from WordNet's ground matrix: mean rel error {s['mean_rel_error']:.3g}, "
          f"max {s['max_rel_error']:.3g}, Spearman {s['spearman']:.6f}")
    rng = np.random.default_rng(1)
    logits = -d / args.tau
    np.fill_diagonal(logits, np.log(args.accuracy_odds) + logits.max(axis=1))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    confusion = np.stack([rng.multinomial(args.per_class, row) for row in p])
    dc = from_confusion(confusion)
    tree = build_tree(dc)
    s = distortion(tree, dc)
    iu = np.triu_indices(d.shape[0], 1)
    vs_wordnet = spearman(tree.ground_matrix()[iu], d[iu])
    print(f"    NJ from a simulated confusion matrix ({args.per_class} samples per class, "
          f"τ = {args.tau}, accuracy {np.trace(confusion) / confusion.sum():.2f}): vs its D mean "
          f"rel error {s['mean_rel_error']:.3g}, max {s['max_rel_error']:.3g}, Spearman "
          f"{s['spearman']:.4f}; Spearman vs WordNet {vs_wordnet:.4f}, confusion D vs WordNet "
          f"{spearman(dc[iu], d[iu]):.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k feature rows")
    ap.add_argument("--rows", type=int, default=1_281_167)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/emd-bench-spaces")
    ap.add_argument("--jobs", default="learn,nj,distortion")
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--accuracy-odds", type=float, default=20.0)
    ap.add_argument("--per-class", type=int, default=1000)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = 100_000, 2
        args.workdir = os.path.join(args.workdir, "quick")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    jobs = args.jobs.split(",")
    if "learn" in jobs:
        bench_learn(args)
    if "nj" in jobs:
        bench_nj(args)
    if "distortion" in jobs:
        bench_distortion(args)


if __name__ == "__main__":
    main()

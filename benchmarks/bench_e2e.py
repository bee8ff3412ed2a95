"""`emd compute` end to end, as a user runs it: whole processes, wall time and peak RSS.

Three jobs, each beside the programs it is judged against, all measured in one run:

  (a) chain  emd compute big.npy big_labels.npy --metric emd2 -o out.parquet --quiet
             10M × 32 float32 NPY (random positive rows, not normalised), int64 labels 0..31
  (b) tree   emd compute wide.parquet --tree imagenet_wordnet_tree.csv --bins imagenet_bins.txt
             --target-column label --metric emd2 -o out.parquet --quiet
             200k × 1000 float32 Parquet (fixed-size-list column `pred`, int64 `label`)
  (c) small  emd compute small.npy small_labels.npy --quiet > out.csv
             1000 × 32 float32: the cost of one call in a shell loop

  floor  benchmarks/e2e_floor.py: reads every input byte once (NPY by plain chunked file
         reads, Parquet by iter_batches), one reduction per row, writes the same result
         file (columns `row`, `emd2`/`emd`) in one pyarrow write_table (job c: the CSV)
  numpy  benchmarks/e2e_numpy.py (chain jobs): the dozen lines of chunked numpy a user
         would write instead. After the warm-up its values are checked against emd's
         (~1e-6 relative; job a: both Parquet files, job c: both CSVs), and the floor's
         columns and row count against emd's, so that the comparison is honest.

Each command runs once as a warm-up (page cache, Numba cache), then --repeats rounds, every
command once per round, in an order rotated each round. Wall time is time.perf_counter from
the fork of the child to its reaping; peak RSS is the child's ru_maxrss from os.wait4. Both
are taken in a small launcher process, so that this harness's memory does not leak into
the children's ru_maxrss (see LAUNCHER). RSS includes the pages of a memory-mapped input
that a process touched (page cache, shared): the numpy script maps the NPY files, emd and
the floor read them into buffers. Targets, on the medians:

  each large job (a, b)   ≤ 1.3 × its floor
  chain job (a)           ≥ 2.5 × faster than the numpy script
  small job (c)           ≤ 0.35 s

Run (the inputs, about 2.1 GB, are built once and reused while the sizes match):

    python benchmarks/bench_e2e.py [--repeats 5] [--workdir DIR] [--jobs a,b,c] [--json FILE]
    python benchmarks/bench_e2e.py --scale 0.01 --repeats 2     # quick plumbing check

--scale shrinks the row counts of jobs a and b (job c stays 1000 rows); `--emd CMD` times
another emd (default: the one beside this Python). A command that fails is reported, left
out of the later rounds, and makes the exit status 1. Run it on a quiet machine with the
inputs well inside the page cache: the header shows the load average.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_data"
TREE, BINS = SAMPLES / "imagenet_wordnet_tree.csv", SAMPLES / "imagenet_bins.txt"
BIG, WIDE, SMALL = (10_000_000, 32), (200_000, 1000), (1000, 32)
FORMAT = 1  # bump when the generated inputs change
TARGETS = {"a": "≤ 1.3× floor, ≥ 2.5× numpy", "b": "≤ 1.3× floor", "c": "≤ 0.35 s"}

# ---------------------------------------------------------------- inputs


def positive(rng, k, n):
    return rng.random((k, n), dtype=np.float32) + np.float32(1e-3)


def write_npy(path, shape, dtype, chunks):
    """An NPY file written from an iterator of C-order row chunks (bounded memory)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        for c in chunks:
            f.write(np.ascontiguousarray(c, dtype=dtype).data)
    tmp.replace(path)


def chunked(rows, chunk, make):
    return (make(min(chunk, rows - i)) for i in range(0, rows, chunk))


def write_wide_parquet(path, rows, width, rng, chunk=8192):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    schema = pa.schema([("pred", pa.list_(pa.float32(), width)), ("label", pa.int64())])
    with pq.ParquetWriter(tmp, schema) as w:
        for i in range(0, rows, chunk):
            k = min(chunk, rows - i)
            pred = pa.FixedSizeListArray.from_arrays(pa.array(positive(rng, k, width).ravel()), width)
            w.write_table(pa.table([pred, rng.integers(0, width, k)], schema=schema))
    tmp.replace(path)


def build_inputs(workdir, sizes, seed):
    """The input files in `workdir`, reused when its manifest records the same sizes and seed."""
    names = ["big.npy", "big_labels.npy", "wide.parquet", "small.npy", "small_labels.npy"]
    files = {n.split(".")[0]: workdir / n for n in names}
    manifest, want = workdir / "inputs.json", {"format": FORMAT, "seed": seed, "sizes": sizes}
    try:
        if json.loads(manifest.read_text()) == want and all(p.exists() for p in files.values()):
            print(f"# reusing the inputs in {workdir}", file=sys.stderr)
            return files
    except (OSError, ValueError):
        pass
    workdir.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    print(f"# building the inputs in {workdir} ...", file=sys.stderr, flush=True)
    t0, rng = time.perf_counter(), np.random.default_rng(seed)
    (rb, nb), (rw, nw), (rs, ns) = sizes["big"], sizes["wide"], sizes["small"]
    write_npy(files["big"], (rb, nb), np.float32, chunked(rb, 1 << 18, lambda k: positive(rng, k, nb)))
    write_npy(files["big_labels"], (rb,), np.int64, chunked(rb, 1 << 20, lambda k: rng.integers(0, nb, k)))
    write_wide_parquet(files["wide"], rw, nw, rng)
    write_npy(files["small"], (rs, ns), np.float32, [positive(rng, rs, ns)])
    write_npy(files["small_labels"], (rs,), np.int64, [rng.integers(0, ns, rs)])
    manifest.write_text(json.dumps(want))
    print(f"# built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return files


# ---------------------------------------------------------------- commands


def commands(files, out, emd, jobs):
    """(job, program, argv, stdout file or None) for every command of the selected jobs."""
    py, f, o = sys.executable, {k: str(v) for k, v in files.items()}, lambda name: str(out / name)
    floor, numpy = [py, str(HERE / "e2e_floor.py")], [py, str(HERE / "e2e_numpy.py")]
    big, small = [f["big"], f["big_labels"]], [f["small"], f["small_labels"]]
    tree = ["--tree", str(TREE), "--bins", str(BINS), "--target-column", "label"]
    cmds = [
        ("a", "emd", emd + ["compute", *big, "--metric", "emd2", "-o", o("a-emd.parquet"), "--quiet"], None),
        ("a", "floor", floor + [*big, "--column", "emd2", "-o", o("a-floor.parquet")], None),
        ("a", "numpy", numpy + [*big, "--metric", "emd2", "-o", o("a-numpy.parquet")], None),
        ("b", "emd", emd + ["compute", f["wide"], *tree, "--metric", "emd2", "-o", o("b-emd.parquet"),
                            "--quiet"], None),
        ("b", "floor", floor + [f["wide"], "--column", "emd2", "-o", o("b-floor.parquet")], None),
        ("c", "emd", emd + ["compute", *small, "--quiet"], o("c-emd.csv")),
        ("c", "floor", floor + small, o("c-floor.csv")),
        ("c", "numpy", numpy + small, o("c-numpy.csv")),
    ]
    return [c for c in cmds if c[0] in jobs]


def show(argv, stdout, emd):
    """The command as a user would type it: short names for the files and programs."""
    words = []
    for i, w in enumerate(argv):
        p = Path(w)
        if w == sys.executable:
            w = "python"
        elif i == 0 and argv[: len(emd)] == emd and p.name == "emd":
            w = "emd"
        elif p.is_absolute():
            w = f"benchmarks/{p.name}" if p.parent == HERE else p.name
        words.append(w)
    return shlex.join(words) + (f" > {Path(stdout).name}" if stdout else "")


# A child's ru_maxrss counts its parent's memory: exec records the high-water mark of the address
# space it replaces, which after vfork (subprocess, posix_spawn) is the parent's and after fork a copy
# of it. So a small launcher (python -S, ~6 MiB) forks, execs, reaps the child with os.wait4, and
# reports the wall time (perf_counter, fork to reap), the child's ru_maxrss and its exit status.
LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(job["cwd"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.execvp(job["argv"][0], job["argv"])
        except BaseException as e:
            os.write(2, f"cannot run {job['argv'][0]}: {e!r}\n".encode())
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    print(json.dumps([wall, ru.ru_maxrss, os.waitstatus_to_exitcode(status)]), flush=True)
"""


class Launcher:
    def __init__(self):
        argv = [sys.executable, "-S", "-c", LAUNCHER]
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv, stdout, errfile, cwd):
        """Wall seconds and peak RSS (MiB) of one child process run in `cwd`; raises if it fails."""
        job = {"argv": argv, "stdout": str(stdout or os.devnull), "stderr": str(errfile), "cwd": str(cwd)}
        self.p.stdin.write(json.dumps(job) + "\n")
        self.p.stdin.flush()
        reply = self.p.stdout.readline()
        if not reply:
            raise RuntimeError("the launcher process died")
        wall, maxrss_kib, rc = json.loads(reply)
        if rc != 0:
            tail = Path(errfile).read_text(errors="replace").strip().splitlines()[-1:] or ["(no stderr)"]
            raise RuntimeError(f"exit {rc}: {tail[0].strip()}")
        return wall, maxrss_kib / 1024  # ru_maxrss is in KiB on Linux

    def close(self):
        self.p.stdin.close()
        self.p.wait()


# ---------------------------------------------------------------- checks


def check_outputs(out, ran):
    """numpy script == emd (values), the floor writes emd's columns and row count (where both ran)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    read, notes = {"parquet": pq.read_table, "csv": pcsv.read_csv}, []
    for job, ext in (("a", "parquet"), ("b", "parquet"), ("c", "csv")):
        if (job, "emd") not in ran:
            continue
        emd = read[ext](out / f"{job}-emd.{ext}")
        if (job, "floor") in ran:
            floor = read[ext](out / f"{job}-floor.{ext}")
            if floor.schema != emd.schema or floor.num_rows != emd.num_rows:
                cols = lambda t: f"({', '.join(f'{c.name}: {c.type}' for c in t.schema)}) × {t.num_rows:,}"
                raise AssertionError(f"job {job}: the floor wrote {cols(floor)} rows, emd {cols(emd)}")
        if (job, "numpy") not in ran:
            continue
        ref, name = read[ext](out / f"{job}-numpy.{ext}"), emd.column_names[-1]
        if ref.column_names != emd.column_names or not ref["row"].equals(emd["row"]):
            raise AssertionError(f"job {job}: the numpy script wrote {ref.column_names}, "
                                 f"emd {emd.column_names}")
        got, want = emd[name].to_numpy(), ref[name].to_numpy()
        rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300), initial=0))
        if not rel <= 1e-6:
            raise AssertionError(f"job {job}: emd and the numpy script differ by {rel:.3g} relative")
        notes.append(f"job {job}: emd == numpy script, max relative difference {rel:.2g}, {len(got):,} rows")
    return notes


# ---------------------------------------------------------------- main


def table(rows):
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = [[c.ljust(width[c]) for c in cols], ["-" * width[c] for c in cols]]
    lines += [[r[c].ljust(width[c]) for c in cols] for r in rows]
    return "\n".join("  ".join(line).rstrip() for line in lines)


def verdict(job, med, floor, numpy):
    ok = {"a": [floor and med <= 1.3 * floor, numpy and numpy >= 2.5 * med],
          "b": [floor and med <= 1.3 * floor], "c": [med <= 0.35]}[job]
    return "ok" if all(ok) else "MISS"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--scale", type=float, default=1.0, help="row-count factor for jobs a and b")
    ap.add_argument("--workdir", type=Path, help="inputs and outputs (default /tmp/emd-bench-e2e/scale-F)")
    ap.add_argument("--jobs", default="a,b,c", help="which jobs (default a,b,c)")
    ap.add_argument("--emd", help="the emd command (default: emd beside this Python)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also save the results here")
    args = ap.parse_args(argv)
    jobs = set(args.jobs.split(","))
    if not jobs <= set("abc") or args.repeats < 1 or args.scale <= 0:
        ap.error("--jobs takes a subset of a,b,c; --repeats ≥ 1; --scale > 0")
    workdir = (args.workdir or Path("/tmp/emd-bench-e2e") / f"scale-{args.scale:g}").resolve()
    emd_exe = Path(sys.executable).parent / "emd"
    emd = shlex.split(args.emd) if args.emd else [str(emd_exe) if emd_exe.exists() else "emd"]

    rows = lambda n: max(1, round(n * args.scale))
    sizes = {"big": [rows(BIG[0]), BIG[1]], "wide": [rows(WIDE[0]), WIDE[1]], "small": list(SMALL)}
    files = build_inputs(workdir, sizes, args.seed)
    out, logs = workdir / "out", workdir / "logs"
    for d in (out, logs):
        d.mkdir(exist_ok=True)
    for p in out.iterdir():  # no stale result from an earlier run can pass a check
        p.unlink()
    cmds = commands(files, out, emd, jobs)

    load0, launcher, failed = os.getloadavg()[0], Launcher(), {}
    times, rss = {c[:2]: [] for c in cmds}, {c[:2]: [] for c in cmds}

    def attempt(job, prog, argv_, stdout):
        try:
            wall, peak = launcher.run(argv_, stdout, logs / f"{job}-{prog}.err", workdir)
        except RuntimeError as e:
            failed[job, prog] = f"{e} (stderr: {logs / f'{job}-{prog}.err'})"
            print(f"# FAILED job {job} {prog}: {failed[job, prog]}", file=sys.stderr, flush=True)
            return False
        times[job, prog].append(wall)
        rss[job, prog].append(peak)
        return True

    print("# warm-up: each command once", file=sys.stderr, flush=True)
    for c in cmds:
        attempt(*c)
    try:
        notes = check_outputs(out, {c[:2] for c in cmds} - set(failed))
    except AssertionError as e:
        launcher.close()
        sys.exit(f"CHECK FAILED, nothing timed: {e}")
    for n in notes:
        print(f"# {n}", file=sys.stderr)
    for key in times:  # the warm-up is not timed
        times[key], rss[key] = [], []
    for r in range(args.repeats):
        k = r % len(cmds)
        for c in cmds[k:] + cmds[:k]:
            if c[:2] not in failed:
                attempt(*c)
        print(f"# round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    launcher.close()

    results = [summarize(c, times, rss, failed, emd) for c in cmds]
    try:
        version = metadata.version("emdcli")
    except metadata.PackageNotFoundError:
        version = "?"
    env = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
           "python": platform.python_version(), "numpy": np.__version__, "emdcli": version,
           "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "unset"),
           "load_avg_start_end": [load0, os.getloadavg()[0]]}
    print(f"# bench_e2e: `emd compute` as whole processes, {args.repeats} interleaved rounds after a warm-up")
    print(f"# {env['machine']}; Python {env['python']}, numpy {env['numpy']}, emdcli {version}, "
          f"NUMBA_NUM_THREADS={env['NUMBA_NUM_THREADS']}; load average (1 min) start/end "
          f"{load0:.2f}/{env['load_avg_start_end'][1]:.2f}")
    print(f"# inputs in {workdir}: big {sizes['big'][0]:,}×{BIG[1]} float32 NPY, "
          f"wide {sizes['wide'][0]:,}×{WIDE[1]} float32 Parquet, small {SMALL[0]}×{SMALL[1]}")
    print("".join(f"# checked: {n}\n" for n in notes), end="")
    print("# ÷ floor = median / the floor's median; numpy ÷ = the numpy script's median / emd's "
          "(speed-up); peak RSS = max over the timed runs\n")
    print(table([r.pop("row") for r in results]))
    print("".join(f"# FAILED: job {j} {p}: {why}\n" for (j, p), why in failed.items()), end="")
    if args.json:
        doc = {"env": env, "sizes": sizes, "repeats": args.repeats, "checks": notes, "results": results}
        args.json.write_text(json.dumps(doc, indent=1))
    return 1 if failed else 0


def summarize(cmd, times, rss, failed, emd):
    """One result (for --json) with its table row under "row"."""
    job, prog, argv, stdout = cmd
    target = TARGETS[job] if prog == "emd" else None
    res = {"job": job, "program": prog, "command": show(argv, stdout, emd), "argv": argv, "target": target}
    row = {"job": job, "command": res["command"], **dict.fromkeys(
        ["median s", "min s", "peak RSS MiB", "÷ floor", "numpy ÷", "target"], "")}
    if (job, prog) in failed:
        row.update({"median s": "failed", "target": f"{target}: FAILED" if target else ""})
        return {**res, "failed": failed[job, prog], "row": row}
    med = lambda p: statistics.median(times[job, p]) if (job, p) in times and (job, p) not in failed else None
    m, floor, numpy = med(prog), med("floor"), med("numpy")
    res.update(times_s=times[job, prog], median_s=m, min_s=min(times[job, prog]),
               peak_rss_mib=max(rss[job, prog]), x_floor=m / floor if floor else None,
               numpy_speedup=numpy / m if numpy and target else None,
               verdict=verdict(job, m, floor, numpy) if target else None)
    row.update({"median s": f"{m:.3f}", "min s": f"{res['min_s']:.3f}",
                "peak RSS MiB": f"{res['peak_rss_mib']:.0f}",
                "÷ floor": f"{res['x_floor']:.2f}" if floor else "",
                "numpy ÷": f"{res['numpy_speedup']:.2f}" if res["numpy_speedup"] else "",
                "target": f"{target}: {res['verdict']}" if target else ""})
    return {**res, "row": row}


if __name__ == "__main__":
    sys.exit(main())

"""``emd bench`` and ``emd warmup``: parse, call the library, write."""

import sys
from typing import Optional

import typer

from .common import Command, DType, Format, choices, fail
from .root import app

BENCH_EPILOG = """
Examples:

  emd bench  # the paper's Table 1: batch 512, WordNet tree
  emd bench --iters 10,100 --dtype float32 --repeat 3 --format csv > table1.csv
  emd bench --bins 1000 --batch 65536 --iters 100  # a chain of 1000 bins
  emd bench --tree my_tree.nwk --against pot
"""


@app.command("bench", cls=Command, epilog=BENCH_EPILOG)
def bench_command(
    tree: Optional[str] = typer.Option(None, "--tree", "-t", metavar="FILE", help="Time on this tree (default: the WordNet tree of ImageNet-1k, 1371 nodes)."),
    bins: Optional[str] = typer.Option(None, "--bins", metavar="N|FILE", help="A number N: a chain of N bins; with --tree: a file naming the bin nodes."),
    positions: Optional[str] = typer.Option(None, "--positions", metavar="FILE|LIST", help="Time on a chain with these bin positions."),
    ground: Optional[str] = typer.Option(None, "--ground", metavar="FILE", help="Time on this N × N ground matrix (exact EMD and dense Sinkhorn)."),
    batch: int = typer.Option(512, "--batch", "-b", min=1, metavar="ROWS", help="Rows per batch."),
    iters: str = typer.Option("10,100,1000", "--iters", metavar="N,…", help="Sinkhorn iteration limits, a comma list."),
    dtype: Optional[list[DType]] = typer.Option(None, "--dtype", metavar="DTYPE", show_default="float32 and float64", help="float32 or float64; repeatable."),
    lam: float = typer.Option(3.0, "--lam", metavar="λ", help="Sinkhorn λ (the paper's Table 1 uses 3)."),
    repeat: int = typer.Option(5, "--repeat", "-r", min=1, metavar="N", help="Timed repetitions per case (after one warm-up)."),
    targets: str = typer.Option("labels", "--targets", metavar="KIND", autocompletion=choices("labels", "soft"), help="labels (class indices, as in training) or soft (random distributions)."),
    against: Optional[str] = typer.Option(None, "--against", metavar="TOOL", autocompletion=choices("pot"), help="pot: also time POT's ot.emd2 / ot.sinkhorn2 on a few rows, scaled, and check they agree."),
    pot_rows: int = typer.Option(8, "--pot-rows", min=1, metavar="N", help="Rows POT is timed on (its time is scaled to the batch)."),
    device: Optional[list[str]] = typer.Option(None, "--device", metavar="DEVICE", show_default="cpu, and cuda when an NVIDIA GPU is usable", autocompletion=choices("cpu", "cuda"), help="cpu and/or cuda, repeatable."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", metavar="FORMAT", show_default="table on a terminal, else csv", help="table, csv, tsv, jsonl, arrow or parquet."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages on stderr."),
):
    """Time EMD / EMD² value+gradient and Sinkhorn at several iteration limits, beside the paper's Table 1."""
    from .. import bench, options
    from ..errors import EMDInputError
    from ..io import sinks

    try:
        space = _bench_space(tree, bins, positions, ground)
        iter_list = options.parse_iters([iters], bench.DEFAULT_ITERS)
        if targets not in ("labels", "soft"):
            raise EMDInputError("--targets is labels or soft")
        if against not in (None, "pot"):
            raise EMDInputError(f"--against {against!r}: only pot is supported")
        if against:
            try:
                import ot  # noqa: F401
            except ImportError:
                raise EMDInputError("--against pot needs POT", hint="pip install 'emdcli[lp]'") from None
        cfg = bench.BenchConfig(
            space=space, batch=batch, iters=iter_list, lam=lam, repeat=repeat, targets=targets,
            dtypes=[d.value for d in dtype] if dtype else ["float32", "float64"],
            against_pot=against == "pot", pot_rows=pot_rows, devices=options.parse_devices(device, _bench_default_devices()),
        )
        from ..sinkhorn import check_params

        check_params(lam, 1, 0.0, "plain")
    except EMDInputError as e:
        fail(e.describe(e.source))
    say = (lambda m: None) if quiet else (lambda m: typer.echo(f"emd: timing {m}", err=True))
    rows, space = bench.run_bench(
        cfg, progress=say,
        notice=None if quiet else (lambda m: typer.echo(f"emd: {m}", err=True)),
    )
    title = f"batch {batch}, {bench.describe_space(space)}, λ={lam}, {targets} targets"
    out_fmt = fmt.value if fmt else ("table" if sys.stdout.isatty() else "csv")
    if out_fmt == "table":
        _bench_table(rows, title)
    else:
        w = sinks.TextWriter(sys.stdout, out_fmt, bench.COLUMNS)
        w.write({c: [r[c] for r in rows] for c in bench.COLUMNS})
        w.close()
    if not quiet:
        typer.echo(f"emd: {title}; {bench.PAPER_HARDWARE}", err=True)


def _bench_default_devices():
    """cpu, plus cuda when a real GPU is usable (the simulator only when asked for)."""
    import os

    from .. import gpu

    real_gpu = not os.environ.get("NUMBA_ENABLE_CUDASIM") and gpu.cuda_available()
    return ["cpu", "cuda"] if real_gpu else ["cpu"]


def _bench_space(tree, bins, positions, ground):
    """The space ``emd bench`` times, or None for the default WordNet tree."""
    from .. import io, treefiles
    from ..errors import EMDInputError
    from ..spaces import Chain, Ground

    given = [f for f, v in (("--tree", tree), ("--positions", positions), ("--ground", ground)) if v]
    if len(given) > 1:
        raise EMDInputError(f"{' and '.join(given)} both describe the space; give one")
    if tree:
        names = treefiles.read_bins(bins) if bins else None
        return treefiles.load_tree(tree, bins=names)
    if positions:
        return Chain.from_positions(io.read_positions(positions))
    if ground:
        return Ground.from_matrix(io.load_ground(ground), source=ground)
    if bins:
        if not bins.isdigit() or int(bins) < 2:
            raise EMDInputError(f"--bins {bins!r}: without --tree, give a number of bins >= 2")
        return Chain.uniform(int(bins))
    return None


def _bench_table(rows, title):
    from rich.console import Console
    from rich.table import Table

    from ..bench import PAPER_HARDWARE
    from ..timing import format_seconds

    table = Table(title=title, caption=PAPER_HARDWARE)
    table.add_column("case", no_wrap=True)
    gpu = any(r["kernel_s"] is not None for r in rows)
    heads = ("median", "IQR", "first call") + (("GPU kernels", "GPU copies") if gpu else ())
    for h in heads + ("paper", "paper/ours", "POT", "POT/ours"):
        table.add_column(h, justify="right")
    for r in rows:
        ratio = lambda v: "" if v is None else f"{v:.3g}×"  # noqa: E731
        seconds = lambda v: "" if v is None else format_seconds(v)  # noqa: E731
        case = " ".join(str(v) for v in (r["metric"], r["iters"] or "", r["dtype"], r["device"]) if v)
        pot = ratio(r["pot_over_ours"])
        if r["pot_agrees"] is not None:
            pot += " ✓" if r["pot_agrees"] else " ✗ values differ"
        split = (seconds(r["kernel_s"]), seconds(r["copies_s"])) if gpu else ()
        table.add_row(case, seconds(r["median_s"]), seconds(r["iqr_s"]),
                      seconds(r["first_call_s"]), *split, seconds(r["paper_s"]),
                      ratio(r["paper_over_ours"]), seconds(r["pot_s"]), pot)
    Console().print(table)


WARMUP_EPILOG = """
Examples:

  emd warmup  # chains and trees, float32 and float64
  emd warmup --all  # and Sinkhorn: plain/log, structured/dense
  RUN pip install . && emd warmup --all  # Dockerfile: compile at build
  NUMBA_CACHE_DIR=/shared/numba emd warmup  # cluster bootstrap, one cache
"""


@app.command("warmup", cls=Command, epilog=WARMUP_EPILOG)
def warmup_command(
    all_groups: bool = typer.Option(False, "--all", help="Also compile Sinkhorn (plain and log forms, structured and dense kernels) and the --flows, --plan and emd report kernels, float32 and float64."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr."),
):
    """Compile the kernels now, into Numba's cache, so that the first `emd compute` does not pay for it.

    Numba compiles each kernel on its first use and caches it on disk (in the package's __pycache__, or under NUMBA_CACHE_DIR): the first run after an install or an upgrade takes seconds to tens of seconds longer. This runs the common cases once on tiny inputs — chains and trees, float32 and float64, class and row targets, value and gradient, rho 1, 2 and any other; with --all also Sinkhorn, flows, plans and the report — and prints one line per group with its time. Run it where the cache will be used: the cache is specific to the CPU and the Python, Numba and emdcli versions.
    """
    import time

    from .. import numba_cache, warmup

    say = (lambda m: None) if quiet else (lambda m: typer.echo(f"emd warmup: {m}", err=True))
    t0 = time.perf_counter()

    def progress(name, seconds, compiled):
        say(f"{name}: {seconds:.3g} s" + ("" if compiled else " (already cached)"))

    done = warmup.warm(all=all_groups, progress=progress)
    folder = numba_cache.cache_dir()
    where = f"cache: {folder}" if folder else "no writable Numba cache: set NUMBA_CACHE_DIR"
    say(f"{len(done)} groups in {time.perf_counter() - t0:.3g} s; {where}")

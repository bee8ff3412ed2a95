"""The ``emd compare``, ``emd bench`` and ``emd warmup`` commands: parse, call the study,
write.

They register on the app of :mod:`emdcli.cli` (which imports this module); heavy modules
are imported inside the commands.
"""

import sys
from typing import Optional

import typer

from .cli import DType, Format, GibbsKernel, Normalize, _silence_stdout, all_or_nothing, app, fail

COMPARE_EPILOG = """
Examples:

  emd compare pred.npy target.npy                                # the default grid, CSV when piped

  emd compare sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --target-column label --label-smoothing 0.1 --plot fig3.png

  emd compare pred.npy target.npy --lam 1,10,100 --iters 100 --dtype float32 --form plain --form log

  emd compare hist_pred.npy hist_target.npy --positions hist_positions.txt --profile 7 --plot fig5.png
"""


@app.command("compare", epilog=COMPARE_EPILOG)
@all_or_nothing()  # a signal while the table or the figure is written leaves no file
def compare_command(
    pred: str = typer.Argument(..., help="Predictions: .npy (rows × bins) or .parquet; - for stdin."),
    target: Optional[str] = typer.Argument(
        None, help="Targets: .npy rows or 1-D integer class indices, or .parquet. "
        "Omit when the prediction Parquet file has a target column.",
    ),
    lam: Optional[list[str]] = typer.Option(None, "--lam", help="λ values, repeatable or a comma list [default: 0.5,1,2,5,10,20,50,100; with --profile 1,10,100].", rich_help_panel="Grid"),
    iters: Optional[list[str]] = typer.Option(None, "--iters", help="Iteration limits, repeatable or a comma list [default: 10,100,1000].", rich_help_panel="Grid"),
    dtype: Optional[list[str]] = typer.Option(None, "--dtype", help="float32 and/or float64, repeatable or a comma list [default: both].", rich_help_panel="Grid"),
    form: Optional[list[str]] = typer.Option(None, "--form", help="Sinkhorn form: plain (the paper's Algorithm 1) and/or log (log-domain) [default: plain].", rich_help_panel="Grid"),
    device: Optional[list[str]] = typer.Option(None, "--device", help="cpu and/or cuda (the numba.cuda kernels; needs an NVIDIA GPU) [default: cpu].", rich_help_panel="Grid"),
    tol: Optional[float] = typer.Option(None, "--tol", help="Sinkhorn stops a row when ‖T·1 − p‖₁ < tol [default: 1e-9, float32: 1e-5].", rich_help_panel="Grid"),
    sinkhorn_kernel: Optional[GibbsKernel] = typer.Option(None, "--sinkhorn-kernel", help="structured O(N) chain/tree passes, or the dense N × N matrix [default: auto].", rich_help_panel="Grid"),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Targets become (1 − ε)·q + ε/N (one-hot targets make Sinkhorn exact after one iteration; this makes them soft, as in training with label smoothing)."),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, help="Study a random sample of N rows (seed --seed) instead of all; inputs over 100000 rows need it."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --rows sample."),
    profile: Optional[int] = typer.Option(None, "--profile", min=0, help="Instead of the grid: per-bin gradients of MSE, EMD, EMD² and SD (log form, float64, converged) at each --lam for this row (0-based) — the paper's Fig. 5."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Draw the figure (Fig. 3, or Fig. 5 with --profile) to a .png, .svg or .pdf file (needs matplotlib: pip install 'emdcli[plot]')."),
    positions: Optional[str] = typer.Option(None, "--positions", help="Chain: bin positions, a .npy 1-D array, a text file (one per line) or x1,x2,…; default 0,1,…"),
    tree: Optional[str] = typer.Option(None, "--tree", "-t", help="Tree space: an edge-list CSV node,parent[,weight], Newick, or JSON file."),
    bins: Optional[str] = typer.Option(None, "--bins", help="With --tree: a file naming the bin nodes, one per line, in column order (default: the leaves in file order)."),
    tree_weights: Optional[str] = typer.Option(None, "--tree-weights", help="With a CSV --tree: the column holding edge weights (default 'weight', or 1)."),
    ground: Optional[str] = typer.Option(None, "--ground", help="Ground-distance matrix N × N (.npy or .csv); dense Sinkhorn, exact EMD by closed form (class targets) or POT (soft targets)."),
    normalize: Normalize = typer.Option(Normalize.l1, "--normalize", help="How predictions become distributions: l1, softmax (logits), none (already equal mass)."),
    pred_column: Optional[str] = typer.Option(None, "--pred-column", help="Parquet: the list column of predictions, or a comma list of bin columns."),
    target_column: Optional[str] = typer.Option(None, "--target-column", help="Parquet: the target column (list of masses or integer class); default 'target' if present."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Parquet: a column naming the rows (shown for --profile)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the table to .csv, .tsv, .jsonl or .parquet instead of stdout."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", help="Stdout format; default: a table on a terminal, CSV when piped."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
):
    """How far is Sinkhorn from the exact EMD? SD/EMD and the gradient angle over a grid of λ, iteration limits, dtypes and forms (the paper's Fig. 3).

    The exact EMD (rho = 1) and its gradient are computed once in float64; each grid cell runs Sinkhorn (value and gradient) on all rows and reports the ratio SD/EMD and the angle between the two projected gradients (mean, 5th and 95th percentiles over rows with finite results; the angle over the bins with predicted mass), the fraction of rows not converged or non-finite, and the cell's wall time. Rows stop early once converged (--tol), so small λ are cheap.
    """
    import math

    from . import compare, options, report
    from .errors import EMDInputError
    from .io.atomic import check_writable
    from .jobs import plan as plans

    say = (lambda m: None) if quiet else (lambda m: typer.echo(f"emd: {m}", err=True))
    warn = lambda m: typer.echo(f"emd: warning: {m}", err=True)  # noqa: E731
    try:
        devices = options.parse_devices(device, compare.DEFAULT_DEVICES)
        lams = options.parse_lams(lam, compare.PROFILE_LAMS if profile is not None else compare.DEFAULT_LAMS)
        grid = compare.Grid(
            lams=lams, iters=options.parse_iters(iters, compare.DEFAULT_ITERS),
            dtypes=options.parse_choices(dtype, "--dtype", compare.DTYPES, compare.DEFAULT_DTYPES),
            forms=options.parse_choices(form, "--form", compare.FORMS, compare.DEFAULT_FORMS),
            devices=devices,
        )
        eps = options.check_smoothing(label_smoothing)
        if tol is not None and not (tol >= 0 and math.isfinite(tol)):
            raise EMDInputError(f"--tol {tol!r}: must be a finite number >= 0")
        if profile is not None:
            for flag, value in (("--iters", iters), ("--dtype", dtype), ("--form", form),
                                ("--rows", rows), ("--sinkhorn-kernel", sinkhorn_kernel)):
                if value:
                    raise EMDInputError(f"{flag} does not apply to --profile",
                                        hint="the profile runs SD to convergence, log form, float64")
        fmt_out = report.output_format(output, fmt.value if fmt else None, sys.stdout.isatty())
        if fmt_out == "npy":
            raise EMDInputError("the comparison is written to .csv, .tsv, .jsonl or .parquet",
                                source="--output")
        if output and output != "-":
            check_writable(output, "--output")
        if plot:
            from . import plot as plotting

            plotting.check_path(plot)
            plotting.require()
        inputs = plans.Inputs(pred, target, pred_column, target_column, id_column)
        space = plans.space_spec(positions, tree, bins, tree_weights, ground)
        batch = compare.load(inputs, space, normalize.value, rows=rows, seed=seed,
                             only_row=profile, smoothing=eps, warn=warn)
        if batch.one_hot and eps == 0 and profile is None:
            typer.echo(
                "emd: note: the targets are one-hot: Sinkhorn's only feasible plan is then "
                "exact after one iteration, so SD/EMD is 1 for every λ (only float32 underflow "
                "and the gradient angle show); add --label-smoothing 0.1 for soft targets",
                err=True,
            )
        if profile is not None:
            _compare_profile(batch, grid.lams, tol, fmt_out, output, plot, quiet, warn)
            return
        kernel = sinkhorn_kernel.value if sinkhorn_kernel else "auto"
        from .sinkhorn import check_params

        for lam_value in grid.lams:
            check_params(lam_value, 1, 0.0 if tol is None else tol, "plain", kernel)
        if kernel == "structured" and ground:
            raise EMDInputError("--sinkhorn-kernel structured needs a chain or a tree",
                                hint="use --sinkhorn-kernel dense (or auto) with --ground")
        say(f"comparing {len(batch.p)} rows × {batch.n} bins over {len(grid)} cells")
        line = compare.compile_notice(batch, grid, kernel=kernel)
        if line:
            say(line)
        study = compare.run(
            batch, grid, tol=tol, kernel=kernel,
            progress=None if quiet else (lambda k, n, row: say(f"cell {k}/{n} {compare.describe_cell(row)}")),
        )
        _write_rows(study.rows, compare.COLUMNS, fmt_out, output, _compare_title(batch))
        if plot:
            from . import plot as plotting

            forms = grid.forms
            title = _compare_title(batch) + (f", {forms[0]} form" if len(forms) == 1 else "")
            plotting.grid_figure(study.rows, plot, title=title)
    except EMDInputError as e:
        fail(e.describe(e.source))
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(0) from None
    if not quiet:
        mean = float(study.emd_values.mean()) if len(study.emd_values) else float("nan")
        sample = f" (a random sample of {batch.n_rows_file})" if len(batch.p) < batch.n_rows_file else ""
        typer.echo(
            f"emd compare: {len(batch.p)} rows{sample}, exact EMD mean={report.format_float(mean)}, "
            f"{len(study.rows)} cells in {study.cells_s:.3g} s (exact EMD {study.exact_s:.3g} s, "
            f"kernel warm-up {study.warmup_s:.3g} s)" + (f"; plot: {plot}" if plot else ""),
            err=True,
        )


def _compare_title(batch):
    from .spaces import Chain, Tree

    sp = batch.space
    if isinstance(sp, Tree):
        space = f"tree of {sp.n_nodes} nodes, {sp.n} bins"
    elif isinstance(sp, Chain):
        space = f"chain of {sp.n} bins"
    else:
        space = f"ground matrix, {sp.n} bins"
    targets = (f"label smoothing {batch.smoothing:g}" if batch.smoothing
               else ("one-hot targets" if batch.one_hot else "soft targets"))
    return f"Sinkhorn vs exact EMD — {len(batch.p)} rows, {space}, {targets}"


def _write_rows(rows, columns, fmt_out, output, title, profile=False):
    """The comparison (or profile) rows to stdout or a file, atomically."""
    from rich.console import Console

    from .io import sinks

    data = {c: [r[c] for r in rows] for c in columns}
    if output and output != "-":
        out = sinks.FileSink(output, fmt_out, columns, {}, len(rows))
        try:
            out.write({c: _arrow_ready(v) for c, v in data.items()} if fmt_out == "parquet" else data)
            out.finish()
            out.publish()
        except BaseException:
            out.abort()
            raise
        return
    if fmt_out == "table":
        if profile:
            w = sinks.TableWriter(Console(), columns, title)
            w.write(data)
            w.close()
        else:
            _compare_table(rows, columns, title)
        return
    w = sinks.TextWriter(sys.stdout, fmt_out, columns)
    w.write(data)
    w.close()


def _arrow_ready(values):
    import numpy as np

    if values and isinstance(values[0], str):
        return np.array(values, dtype=object)
    return np.asarray(values)


def _compare_table(rows, columns, title):
    """A compact Rich table of the cells (3–4 significant digits); values that make SD
    unusable are shown in red."""
    import math

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .compare import UNUSABLE_RATIO, unusable
    from .timing import format_seconds

    def num(v, digits=4):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"

    def red(text, flag):
        return f"[bold red]{text}[/]" if flag else text

    headers = ["λ", "iters", "dtype", "form", "device", "SD/EMD (p05–p95)", "angle° (p05–p95)",
               "not conv.", "non-finite", "iters run", "time"]
    body = []
    for r in rows:
        bad = unusable(r)
        ratio = (red(num(r["ratio_mean"]), "ratio_mean" in bad) + " ("
                 + red(num(r["ratio_p05"], 3), "ratio_p05" in bad) + "–"
                 + red(num(r["ratio_p95"], 3), "ratio_p95" in bad) + ")")
        angle = (red(num(r["angle_mean"], 3), "angle_mean" in bad) + " ("
                 + num(r["angle_p05"], 3) + "–" + num(r["angle_p95"], 3) + ")")
        body.append([
            f"{r['lam']:g}", str(r["iters"]), r["dtype"], r["form"], r["device"], ratio, angle,
            red(f"{r['nonconverged']:.0%}", "nonconverged" in bad),
            red(f"{r['nonfinite']:.0%}", "nonfinite" in bad),
            num(r["iterations_mean"], 3), format_seconds(r["seconds"]),
        ])
    # a form or device shared by every cell goes into the title, not a column
    for c in ("device", "form"):
        values = {r[c] for r in rows}
        if len(values) == 1:
            j = headers.index(c)
            title += f", {values.pop()}" + (" form" if c == "form" else "")
            headers.pop(j)
            for b in body:
                b.pop(j)
    table = Table(
        title=title, box=box.SIMPLE_HEAD,
        caption=f"red: rows not converged or non-finite, SD/EMD more than {UNUSABLE_RATIO:.0%} "
        "from 1, or no finite result. Rounded: --format csv gives full precision.",
    )
    for j, c in enumerate(headers):
        width = max([len(Text.from_markup(b[j]).plain) for b in body] + [1])
        table.add_column(c, justify="left" if c in ("dtype", "form", "device") else "right",
                         min_width=width)
    for b in body:
        table.add_row(*b)
    Console().print(table)


def _compare_profile(batch, lams, tol, fmt_out, output, plot, quiet, warn):
    from . import compare, report
    from .warmup import notice_jobs

    if not quiet:
        kind = compare.space_kind(batch.space)
        line = notice_jobs([dict(space_kind=kind, dtype="float64", gradient=True,
                                 input_dtype="float64"),
                            dict(space_kind=kind, dtype="float64", metric="sinkhorn",
                                 form="log", rows=1)])
        if line:
            typer.echo(f"emd: {line}", err=True)
    prof = compare.profile(batch, lams, tol=tol)
    for lam_value, facts in prof.sd.items():
        if not facts["converged"]:
            warn(f"SD at λ={lam_value:g} did not converge in {facts['iterations']} iterations "
                 f"(marginal error {report.format_float(facts['error'])})")
    who = f"row {prof.row}" + (f" ({prof.id})" if prof.id is not None else "")
    title = f"Gradients of {who}: " + _compare_title(batch).split(" — ", 1)[1].split(", ", 1)[1]
    rows = [{c: prof.columns[c][i] for c in prof.order} for i in range(batch.n)]
    _write_rows(rows, prof.order, fmt_out, output, title, profile=True)
    if plot:
        from . import plot as plotting

        plotting.profile_figure(prof, plot, title=title)
    if not quiet:
        sd = ", ".join(f"SD(λ={k:g})={report.format_float(v['value'])} in {v['iterations']} iterations"
                       for k, v in prof.sd.items())
        e2 = "" if prof.emd2 is None else f", EMD²={report.format_float(prof.emd2)}"
        typer.echo(f"emd compare --profile: {who}: EMD={report.format_float(prof.emd)}{e2}, {sd}"
                   + (f"; plot: {plot}" if plot else ""), err=True)


BENCH_EPILOG = """
Examples:

  emd bench                                   # the paper's Table 1: batch 512, WordNet tree

  emd bench --iters 10,100 --dtype float32 --repeat 3 --format csv > table1.csv

  emd bench --bins 1000 --batch 65536 --iters 100   # a chain of 1000 bins

  emd bench --tree my_tree.nwk --against pot
"""


@app.command("bench", epilog=BENCH_EPILOG)
def bench_command(
    tree: Optional[str] = typer.Option(None, "--tree", "-t", help="Time on this tree (default: the WordNet tree of ImageNet-1k, 1371 nodes)."),
    bins: Optional[str] = typer.Option(None, "--bins", help="A number N: a chain of N bins; with --tree: a file naming the bin nodes."),
    positions: Optional[str] = typer.Option(None, "--positions", help="Time on a chain with these bin positions."),
    ground: Optional[str] = typer.Option(None, "--ground", help="Time on this N × N ground matrix (exact EMD and dense Sinkhorn)."),
    batch: int = typer.Option(512, "--batch", "-b", min=1, help="Rows per batch."),
    iters: str = typer.Option("10,100,1000", "--iters", help="Sinkhorn iteration limits, a comma list."),
    dtype: Optional[list[DType]] = typer.Option(None, "--dtype", help="Repeatable; default float32 and float64."),
    lam: float = typer.Option(3.0, "--lam", help="Sinkhorn λ (the paper's Table 1 uses 3)."),
    repeat: int = typer.Option(5, "--repeat", "-r", min=1, help="Timed repetitions per case (after one warm-up)."),
    targets: str = typer.Option("labels", "--targets", help="labels (class indices, as in training) or soft (random distributions)."),
    against: Optional[str] = typer.Option(None, "--against", help="pot: also time POT's ot.emd2 / ot.sinkhorn2 on a few rows, scaled, and check they agree."),
    pot_rows: int = typer.Option(8, "--pot-rows", min=1, help="Rows POT is timed on (its time is scaled to the batch)."),
    device: Optional[list[str]] = typer.Option(None, "--device", help="cpu and/or cuda, repeatable [default: cpu, and cuda when an NVIDIA GPU is usable]."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", help="Default: a table on a terminal, CSV when piped."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages on stderr."),
):
    """Time EMD / EMD² value+gradient and Sinkhorn at several iteration limits, beside the paper's Table 1."""
    from . import bench, options
    from .io import sinks
    from .errors import EMDInputError

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
        from .sinkhorn import check_params

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

    from . import gpu

    real_gpu = not os.environ.get("NUMBA_ENABLE_CUDASIM") and gpu.cuda_available()
    return ["cpu", "cuda"] if real_gpu else ["cpu"]


def _bench_space(tree, bins, positions, ground):
    """The space ``emd bench`` times, or None for the default WordNet tree."""
    from . import io, treefiles
    from .errors import EMDInputError
    from .spaces import Chain, Ground

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

    from .bench import PAPER_HARDWARE
    from .timing import format_seconds

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

  emd warmup                 # chains and trees, float32 and float64

  emd warmup --all           # and Sinkhorn: plain/log, structured/dense

  RUN pip install . && emd warmup --all      # Dockerfile: compile at build

  NUMBA_CACHE_DIR=/shared/numba emd warmup   # cluster bootstrap, one cache
"""


@app.command("warmup", epilog=WARMUP_EPILOG)
def warmup_command(
    all_groups: bool = typer.Option(False, "--all", help="Also compile Sinkhorn: plain and log forms, structured and dense kernels, float32 and float64."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr."),
):
    """Compile the kernels now, into Numba's cache, so that the first `emd compute` does not pay for it.

    Numba compiles each kernel on its first use and caches it on disk (in the package's __pycache__, or under NUMBA_CACHE_DIR): the first run after an install or an upgrade takes seconds to tens of seconds longer. This runs the common cases once on tiny inputs — chains and trees, float32 and float64, class and row targets, value and gradient, rho 1, 2 and any other; with --all also Sinkhorn — and prints one line per group with its time. Run it where the cache will be used: the cache is specific to the CPU and the Python, Numba and emdcli versions.
    """
    import time

    from . import numba_cache, warmup

    say = (lambda m: None) if quiet else (lambda m: typer.echo(f"emd warmup: {m}", err=True))
    t0 = time.perf_counter()

    def progress(name, seconds, compiled):
        say(f"{name}: {seconds:.3g} s" + ("" if compiled else " (already cached)"))

    done = warmup.warm(all=all_groups, progress=progress)
    folder = numba_cache.cache_dir()
    where = f"cache: {folder}" if folder else "no writable Numba cache: set NUMBA_CACHE_DIR"
    say(f"{len(done)} groups in {time.perf_counter() - t0:.3g} s; {where}")

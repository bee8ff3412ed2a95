"""``emd compare``: how far Sinkhorn is from the exact EMD (the grid, Fig. 3; a profile, Fig. 5)."""

import sys
from typing import Optional

import typer

from .common import (Command, Format, GibbsKernel, Normalize, all_or_nothing, choices, fail,
                     say_summary, silence_stdout)
from .root import app

COMPARE_EPILOG = """
Examples:

  emd compare pred.npy target.npy  # the default grid; a table on a terminal, CSV when piped
  emd compare sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --target-column label --label-smoothing 0.1 --plot fig3.png
  emd compare pred.npy target.npy --lam 1,10,100 --iters 100 --dtype float32 --form plain --form log
  emd compare hist_pred.npy hist_target.npy --positions hist_positions.txt --profile 7 --plot fig5.pdf  # Fig. 5, vector
"""


@app.command("compare", cls=Command, epilog=COMPARE_EPILOG)
@all_or_nothing()  # a signal while the table or the figure is written leaves no file
def compare_command(
    pred: str = typer.Argument(..., metavar="PRED", help="Predictions: .npy (rows × bins), .parquet, .csv or .arrow; - for stdin."),
    target: Optional[str] = typer.Argument(
        None, metavar="TARGET", help="Targets: .npy rows or 1-D integer class indices, or .parquet. "
        "Omit when the prediction Parquet file has a target column.",
    ),
    lam: Optional[list[str]] = typer.Option(None, "--lam", metavar="λ,…", show_default="0.5,1,2,5,10,20,50,100; with --profile 1,10,100", help="λ values, repeatable or a comma list.", rich_help_panel="Grid"),
    iters: Optional[list[str]] = typer.Option(None, "--iters", metavar="N,…", show_default="10,100,1000", help="Iteration limits, repeatable or a comma list.", rich_help_panel="Grid"),
    dtype: Optional[list[str]] = typer.Option(None, "--dtype", metavar="DTYPE,…", show_default="float32,float64", autocompletion=choices("float32", "float64"), help="float32 and/or float64, repeatable or a comma list.", rich_help_panel="Grid"),
    form: Optional[list[str]] = typer.Option(None, "--form", metavar="FORM,…", show_default="plain", autocompletion=choices("plain", "log"), help="Sinkhorn form: plain (the paper's Algorithm 1) and/or log (log-domain).", rich_help_panel="Grid"),
    device: Optional[list[str]] = typer.Option(None, "--device", metavar="DEVICE,…", show_default="cpu", autocompletion=choices("cpu", "cuda"), help="cpu and/or cuda (the numba.cuda kernels; needs an NVIDIA GPU).", rich_help_panel="Grid"),
    tol: Optional[float] = typer.Option(None, "--tol", metavar="TOL", show_default="1e-9; float32: 1e-5", help="Sinkhorn stops a row when ‖T·1 − p‖₁ < TOL.", rich_help_panel="Grid"),
    sinkhorn_kernel: Optional[GibbsKernel] = typer.Option(None, "--sinkhorn-kernel", metavar="KERNEL", show_default="auto", help="structured (O(N) chain or tree passes), dense (the N × N matrix), or auto (structured unless --ground).", rich_help_panel="Grid"),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", metavar="ε", show_default="0", help="Targets become (1 − ε)·q + ε/N (one-hot targets make Sinkhorn exact after one iteration; this makes them soft, as in training with label smoothing)."),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, metavar="N", show_default="all", help="Study a random sample of N rows (seed --seed) instead of all; inputs over 100000 rows need it."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seed of the --rows sample."),
    profile: Optional[int] = typer.Option(None, "--profile", min=0, metavar="ROW", help="Instead of the grid: per-bin gradients of MSE, EMD, EMD² and SD (log form, float64, converged) at each --lam for this row (0-based) — the paper's Fig. 5."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="FILE", help="Draw the figure (Fig. 3, or Fig. 5 with --profile) to a .png, .svg or .pdf file (needs matplotlib: pip install 'emdcli\\[plot]')."),
    dpi: int = typer.Option(150, "--dpi", min=30, max=1200, metavar="DPI", help="--plot: the resolution of a PNG (SVG and PDF are vector graphics)."),
    positions: Optional[str] = typer.Option(None, "--positions", metavar="FILE|LIST", show_default="0,1,…", help="Chain: bin positions, a .npy 1-D array, a text file (one per line) or x1,x2,…."),
    tree: Optional[str] = typer.Option(None, "--tree", "-t", metavar="FILE", help="Tree space: an edge-list CSV node,parent\\[,weight], Newick, or JSON file."),
    bins: Optional[str] = typer.Option(None, "--bins", metavar="FILE", show_default="the leaves in file order", help="With --tree: a file naming the bin nodes, one per line, in column order."),
    tree_weights: Optional[str] = typer.Option(None, "--tree-weights", metavar="COLUMN", show_default="weight, else 1", help="With a CSV --tree: the column holding edge weights."),
    ground: Optional[str] = typer.Option(None, "--ground", metavar="FILE", help="Ground-distance matrix N × N (.npy or .csv); dense Sinkhorn, exact EMD by closed form (class targets) or POT (soft targets)."),
    normalize: Normalize = typer.Option(Normalize.l1, "--normalize", metavar="HOW", help="How predictions become distributions: l1 (divide by the sum), softmax (logits), or none (already equal mass)."),
    pred_column: Optional[str] = typer.Option(None, "--pred-column", metavar="COLUMN(S)", help="Parquet: the list column of predictions, or a comma list of bin columns."),
    target_column: Optional[str] = typer.Option(None, "--target-column", metavar="COLUMN", show_default="target, if present", help="Parquet: the target column (list of masses or integer class)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", metavar="COLUMN", help="Parquet: a column naming the rows (shown for --profile)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the table to .csv, .tsv, .jsonl or .parquet instead of stdout."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", metavar="FORMAT", show_default="table on a terminal, else csv", help="Stdout format: table, csv, tsv, jsonl, arrow or parquet."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
):
    """How far is Sinkhorn from the exact EMD? SD/EMD and the gradient angle over a grid of λ, iteration limits, dtypes and forms (the paper's Fig. 3).

    The exact EMD (rho = 1) and its gradient are computed once in float64; each grid cell runs Sinkhorn (value and gradient) on all rows and reports the ratio SD/EMD and the angle between the two projected gradients (mean, 5th and 95th percentiles over rows with finite results; the angle over the bins with predicted mass), the fraction of rows not converged or non-finite, and the cell's wall time. Rows stop early once converged (--tol), so small λ are cheap.
    """
    import math

    from .. import compare, options, report
    from ..errors import EMDInputError
    from ..io.atomic import check_writable
    from ..jobs import plan as plans

    say = (lambda m: None) if quiet else (lambda m: say_summary(f"emd: {m}", f"emd: {m}"))
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
            from .. import plot as plotting

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
            _compare_profile(batch, grid.lams, tol, fmt_out, output, (plot, dpi), quiet, warn)
            return
        kernel = sinkhorn_kernel.value if sinkhorn_kernel else "auto"
        from ..sinkhorn import check_params

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
            from .. import plot as plotting

            forms = grid.forms
            title = _compare_title(batch) + (f", {forms[0]} form" if len(forms) == 1 else "")
            plotting.grid_figure(study.rows, plot, title=title, dpi=dpi)
    except EMDInputError as e:
        fail(e.describe(e.source))
    except BrokenPipeError:
        silence_stdout()
        raise typer.Exit(0) from None
    if not quiet:
        mean = float(study.emd_values.mean()) if len(study.emd_values) else float("nan")
        sample = f" (a random sample of {batch.n_rows_file})" if len(batch.p) < batch.n_rows_file else ""

        def line(fmt):
            return (f"emd compare: {len(batch.p)} rows{sample}, exact EMD mean={fmt(mean)}, "
                    f"{len(study.rows)} cells in {study.cells_s:.3g} s (exact EMD {study.exact_s:.3g} s, "
                    f"kernel warm-up {study.warmup_s:.3g} s)" + (f"; plot: {plot}" if plot else ""))

        say_summary(line(report.format_float), line(report.format_short))


def _compare_title(batch):
    from ..spaces import Chain, Tree

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

    from ..io import sinks
    from .tables import compare_table

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
            Console().print(compare_table(rows, title, Console().width))
        return
    w = sinks.TextWriter(sys.stdout, fmt_out, columns)
    w.write(data)
    w.close()


def _arrow_ready(values):
    import numpy as np

    if values and isinstance(values[0], str):
        return np.array(values, dtype=object)
    return np.asarray(values)


def _compare_profile(batch, lams, tol, fmt_out, output, figure, quiet, warn):
    from .. import compare, report
    from ..warmup import notice_jobs

    plot, dpi = figure
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
        from .. import plot as plotting

        plotting.profile_figure(prof, plot, title=title, space=batch.space, dpi=dpi)
    if not quiet:
        def line(fmt):
            sd = ", ".join(f"SD(λ={k:g})={fmt(v['value'])} in {v['iterations']} iterations"
                           for k, v in prof.sd.items())
            e2 = "" if prof.emd2 is None else f", EMD²={fmt(prof.emd2)}"
            return (f"emd compare --profile: {who}: EMD={fmt(prof.emd)}{e2}, {sd}"
                    + (f"; plot: {plot}" if plot else ""))

        say_summary(line(report.format_float), line(report.format_short))

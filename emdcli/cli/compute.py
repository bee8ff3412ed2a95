"""``emd compute`` and ``emd tree``: parse, call the library, write."""

import sys
from typing import Optional

import typer

from .common import (Command, Device, DType, Engine, Form, Format, GibbsKernel, GradWrt, Metric,
                     Normalize, Progress, all_or_nothing, batch_size_option, bins_option, fail,
                     normalize_option, positions_option, pred_argument, pred_column_option,
                     say_summary, silence_stdout, target_argument, target_column_option,
                     tree_option, tree_weights_option)
from .root import app
from .spaces import TreeCommand

COMPUTE_EPILOG = """
Examples:

  emd compute pred.npy labels.npy  # per-row EMD; a table on a terminal, CSV when piped
  emd compute sample_data/signal.parquet --target-column level --metric emd2 --quiet | head
  emd compute hist_pred.npy hist_target.npy --positions hist_positions.txt -o out.parquet
  emd compute logits.npy labels.npy --normalize softmax --metric emd2 --gradient g.npy --grad-wrt input
  cat pred.npy | emd compute - labels.npy | sort -t, -k2 -g | tail -n 5
  emd compute pred.npy labels.npy --metric sinkhorn --lam 10 --iters 1000 --sinkhorn-form log
  emd compute big.npy labels.npy -o out.parquet --device auto --verbose  # rows/s, where the time went
  emd compute sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --target-column label -m emd2
  emd compute 'runs/*.parquet' -o out/ --group-by split --summary summary.csv  # a dataset, one part per file
  emd compute runs/ -o out/ --engine dask --workers 8  # the same, one Dask task per file (emdcli[dask])
  emd compute sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --target-column label --flows flows.parquet --plan plan.parquet -o emd.csv
"""


@app.command(cls=Command, epilog=COMPUTE_EPILOG)
def compute(
    pred: str = pred_argument(),
    target: Optional[str] = target_argument(),
    metric: Metric = typer.Option(Metric.emd, "--metric", "-m", metavar="METRIC", help="emd (exact, rho = 1), emd2 (rho = 2), emd-rho (--rho), sinkhorn (the entropic approximation), or wasserstein (W_p^p on the line, --p)."),
    rho: Optional[float] = typer.Option(None, "--rho", metavar="ρ", help="The exponent ρ ≥ 1 for --metric emd-rho."),
    power: Optional[float] = typer.Option(None, "--p", metavar="P", help="The power P ≥ 1 for --metric wasserstein: W_P^P on the line, by the quantile form (as POT's wasserstein_1d; P = 1 is the EMD)."),
    lam: Optional[float] = typer.Option(None, "--lam", metavar="λ", help="Sinkhorn: the paper's λ > 0 (POT's reg is 1/λ); required with --metric sinkhorn.", rich_help_panel="Sinkhorn"),
    iters: Optional[int] = typer.Option(None, "--iters", metavar="N", show_default="100", help="Sinkhorn: the iteration limit.", rich_help_panel="Sinkhorn"),
    tol: Optional[float] = typer.Option(None, "--tol", metavar="TOL", show_default="1e-9; float32: 1e-5", help="Sinkhorn: stop a row when its marginal error ‖T·1 − p‖₁ < TOL; 0 = always run --iters (then converged means < 1e-6).", rich_help_panel="Sinkhorn"),
    sinkhorn_form: Optional[Form] = typer.Option(None, "--sinkhorn-form", metavar="FORM", show_default="plain", help="Sinkhorn: plain (the paper's Algorithm 1, instabilities included) or log (log-domain, stable).", rich_help_panel="Sinkhorn"),
    sinkhorn_kernel: Optional[GibbsKernel] = typer.Option(None, "--sinkhorn-kernel", metavar="KERNEL", show_default="auto", help="Sinkhorn: structured (O(N) chain or tree passes), dense (the N × N matrix), or auto (structured unless --ground).", rich_help_panel="Sinkhorn"),
    positions: Optional[str] = positions_option(),
    tree: Optional[str] = tree_option(),
    bins: Optional[str] = bins_option(),
    tree_weights: Optional[str] = tree_weights_option(),
    ground: Optional[str] = typer.Option(
        None, "--ground", metavar="FILE", help="Ground-distance matrix N × N (.npy or .csv); exact EMD only (class targets, or soft targets with POT)."
    ),
    normalize: Normalize = normalize_option(),
    dtype: DType = typer.Option(DType.float64, "--dtype", metavar="DTYPE", help="Precision of the computation and results: float64 or float32."),
    pred_column: Optional[str] = pred_column_option(),
    target_column: Optional[str] = target_column_option(),
    id_column: Optional[str] = typer.Option(None, "--id-column", metavar="COLUMN", help="Parquet: a column carried into the report instead of 'row'."),
    gradient: Optional[str] = typer.Option(None, "--gradient", "-g", metavar="FILE", help="Write per-row gradients (rows × bins) to this .npy or .parquet file."),
    grad_wrt: GradWrt = typer.Option(
        GradWrt.distribution, "--grad-wrt", metavar="WRT", help="The gradient with respect to the normalised distribution (projected, sums to 0), or the raw input (chain rule through --normalize)."
    ),
    flows: Optional[str] = typer.Option(None, "--flows", metavar="FILE", help="Also write each row's flows to this .npy or .parquet file: the signed mass crossing each gap of a chain (rows × (N−1); > 0: rightwards) or each edge of a tree (rows × edges, columns named by the child node; > 0: out of its subtree). EMD = Σ w·|flow|."),
    transport: Optional[str] = typer.Option(None, "--plan", metavar="FILE", help="Also write an optimal transport plan per row to this .parquet file: one line per entry (row, source, target, mass), bins by name on a tree; at most 2N entries a row."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE|DIR/", help="Write rows to .csv, .tsv, .jsonl, .parquet, .arrow or .npy instead of stdout; DIR/: one Parquet part per input file."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", metavar="FORMAT", show_default="table on a terminal, else csv", help="Stdout format: table, csv, tsv, jsonl, arrow (an Arrow IPC stream, for DuckDB, Polars or another emd) or parquet."),
    batch_size: Optional[int] = batch_size_option(),
    device: Device = typer.Option(Device.cpu, "--device", metavar="DEVICE", help="cpu, cuda (an NVIDIA GPU through numba.cuda), or auto (cuda when a GPU is usable)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", metavar="COLUMN", help="A column (Parquet) or partition key: one summary line per group."),
    summary_file: Optional[str] = typer.Option(None, "--summary", metavar="FILE", help="Also write the summary (per group with --group-by) to this .csv or .json file."),
    engine: Engine = typer.Option(Engine.local, "--engine", metavar="ENGINE", help="local, or dask: one task per input file on a Dask cluster (needs -o DIR/; pip install 'emdcli\\[dask]').", rich_help_panel="Datasets"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS", help="--engine dask: the address of a running Dask scheduler (tcp://host:8786).", rich_help_panel="Datasets"),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", show_default="the cores", help="--engine dask: start a local cluster of N worker processes.", rich_help_panel="Datasets"),
    task_size: str = typer.Option("256M", "--task-size", metavar="SIZE", help="With -o DIR/: a Parquet or NPY file larger than this is split into parts (tasks) of about this size (row groups kept whole).", rich_help_panel="Datasets"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary or progress on stderr."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also say where the time went: rows/s, reading, computing, writing; on a GPU the copies in and out, compilation and kernels (which synchronises the GPU)."),
):
    """Per-row EMD / EMD² / EMD^rho between predictions and targets on a chain, a tree or a ground matrix.

    Chain: EMD^rho(p, q) = Σ_i d_i |φ_i|^rho, with φ_i = Σ_{j≤i}(p_j − q_j) and d_i the gaps between bin positions. Tree: HEMD^rho = Σ_v w_v |φ_v|^rho over the edges, φ_v the mass difference below v.

    Rows go to stdout (or --output), the summary and messages to stderr. Bad input exits with code 2.
    """
    from .. import report
    from ..errors import EMDInputError
    from ..io.sinks import StdoutClosed
    from ..jobs import engine as engines
    from ..jobs import plan as plans
    from ..jobs import run as jobs

    if quiet and verbose:
        fail("--quiet and --verbose contradict each other; give one")
    stdout = sys.stdout
    progress = None if quiet else Progress()
    with all_or_nothing():
        try:
            if stdout is None and (not output or output == "-"):
                raise EMDInputError("standard output is closed", hint="give --output FILE")
            plan = plans.make_plan(
                plans.Inputs(pred, target, pred_column, target_column, id_column, batch_size,
                             group_by),
                plans.space_spec(positions, tree, bins, tree_weights, ground),
                plans.metric_spec(
                    metric.value, rho, normalize=normalize.value, dtype=dtype.value,
                    gradient=bool(gradient), grad_wrt=grad_wrt.value, device=device.value,
                    sinkhorn=dict(lam=lam, iters=iters, tol=tol,
                                  form=sinkhorn_form.value if sinkhorn_form else None,
                                  kernel=sinkhorn_kernel.value if sinkhorn_kernel else None),
                    power=power),
                plans.outputs(output, fmt.value if fmt else None, gradient,
                              stdout_is_tty=stdout is not None and stdout.isatty(),
                              summary=summary_file, flows=flows, transport=transport,
                              statistics=not quiet),
            )
            how = engines.Engine(engine.value, scheduler, workers, engines.parse_size(task_size))
            warn = lambda m: typer.echo(f"emd: warning: {m}", err=True)  # noqa: E731
            if plan.outputs.folder:
                progress = progress and Progress("files", 2)
                summary = engines.run_dataset(plan, how, progress=progress, warn=warn)
            elif how.kind != "local":
                raise EMDInputError("--engine dask writes a dataset: give --output DIR/",
                                    source="--engine")
            else:
                console = None
                if plan.outputs.fmt == "table" and stdout is not None:  # Rich: 30 ms
                    from rich.console import Console

                    console = Console()
                summary = jobs.run(
                    plan, stdout=stdout, console=console,
                    progress=progress, warn=warn, clock_gpu=verbose,
                )
                if plan.outputs.summary:
                    report.write_summary(plan.outputs.summary, summary)
        except EMDInputError as e:
            if e.source == "standard output":
                silence_stdout()
            fail(e.describe(e.source))
        except StdoutClosed:  # the reader went away (| head) and no file was asked for
            silence_stdout()
            raise typer.Exit(0) from None
        finally:
            if progress:
                progress.stop()
    if not quiet:
        say_summary(summary.line(), summary.line(short=True))
    if verbose:
        say_summary(summary.timing.line(), summary.timing.line())


TREE_EPILOG = """
Examples:

  emd tree sample_data/imagenet_wordnet_tree.csv  # nodes, leaves, depth, bin order
  emd tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --ground-out D.npy
  emd tree tree.nwk --list-bins > bins.txt
  emd tree build --ground D.npy -o tree.csv  # build one from a ground matrix (emd tree build --help)
"""


@app.command("tree", cls=TreeCommand, epilog=TREE_EPILOG)
def tree_command(
    tree: str = typer.Argument(..., metavar="TREE", help="Tree file: an edge-list CSV node,parent\\[,weight], Newick, or JSON."),
    bins: Optional[str] = typer.Option(None, "--bins", metavar="FILE", show_default="the leaves in file order", help="A file naming the bin nodes, one per line."),
    tree_weights: Optional[str] = typer.Option(None, "--tree-weights", metavar="COLUMN", show_default="weight, else 1", help="CSV: the column holding edge weights."),
    ground_out: Optional[str] = typer.Option(None, "--ground-out", metavar="FILE", help="Write the bins' N × N path-length matrix to this .npy file."),
    list_bins: bool = typer.Option(False, "--list-bins", help="Print the bin order, one node per line, instead of the statistics."),
):
    """Check a tree file and describe it: nodes, leaves, depth, the largest bin-to-bin distance and the bin order.

    emd tree build makes a tree from a ground matrix or from features (emd tree build --help).
    """
    from .. import report, treefiles
    from ..errors import EMDInputError
    from ..io import atomic

    with all_or_nothing():
        try:
            if ground_out:
                if not ground_out.endswith(".npy"):
                    raise EMDInputError("the ground matrix is written as .npy", source="--ground-out")
                atomic.check_writable(ground_out, "--ground-out")
            names = treefiles.read_bins(bins) if bins else None
            t = treefiles.load_tree(tree, bins=names, weight_column=tree_weights)
            if ground_out:
                _write_npy(ground_out, t.ground_matrix())
        except EMDInputError as e:
            fail(e.describe(e.source))
    if ground_out:
        typer.echo(f"emd: wrote the {t.n} × {t.n} ground matrix to {ground_out}", err=True)
    if list_bins:
        typer.echo("\n".join(t.bin_names))
        return
    for key, value in t.stats().items():
        shown = report.format_float(value) if isinstance(value, float) else value
        typer.echo(f"{key}: {shown}")
    first = ", ".join(t.bin_names[:5])
    typer.echo(f"bin_order: {first}{', …' if t.n > 5 else ''} (--list-bins for all {t.n})")


def _write_npy(path, array):
    """``array`` to ``path`` atomically (no file, not even a temporary one, on failure)."""
    import numpy as np

    from ..io import atomic

    out = atomic.AtomicPath(path)
    try:
        with open(out.tmp, "wb") as f:
            np.save(f, array)
        out.commit()
    except OSError as e:
        out.abort()
        raise atomic.output_error(path, e) from None
    except BaseException:
        out.abort()
        raise

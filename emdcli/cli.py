"""The ``emd`` command line: parse, call the library, write. Nothing else.

Heavy modules (numpy, Numba, pyarrow) are imported inside the commands so that
``emd --help`` stays fast.
"""

import sys
from contextlib import contextmanager
from enum import Enum
from typing import Optional

import typer
from typer.core import TyperGroup


class _OneLineErrors(TyperGroup):
    """Usage errors as one ``emd: error: …`` line on stderr (exit 2), like bad input."""

    def main(self, *args, standalone_mode=True, **kwargs):
        try:  # Typer ≥ 0.26 vendors Click as typer._click; earlier Typers use click
            from typer.core import _click
        except ImportError:
            import click as _click

        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _click.exceptions.ClickException as e:
            if not standalone_mode:
                raise
            if type(e).__name__ == "NoArgsIsHelpError":
                e.show()
            else:
                typer.echo(f"emd: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("emd: aborted", err=True)
            sys.exit(1)
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            if not standalone_mode:
                raise
            _silence_stdout()
            sys.exit(0)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    name="emd",
    cls=_OneLineErrors,
    help="Exact Earth Mover's Distances (and gradients) between batches of predicted "
    "distributions and targets whose classes are ordered (a chain) or form a hierarchy (a tree).",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_BAD_INPUT = 2


@app.callback()
def _root():
    """Exact Earth Mover's Distances (and gradients) on ordered class spaces."""


class Metric(str, Enum):
    emd = "emd"
    emd2 = "emd2"
    emd_rho = "emd-rho"
    sinkhorn = "sinkhorn"


class Form(str, Enum):
    plain = "plain"
    log = "log"


class GibbsKernel(str, Enum):
    auto = "auto"
    structured = "structured"
    dense = "dense"


class Normalize(str, Enum):
    l1 = "l1"
    softmax = "softmax"
    none = "none"


class DType(str, Enum):
    float64 = "float64"
    float32 = "float32"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    arrow = "arrow"
    parquet = "parquet"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class Engine(str, Enum):
    local = "local"
    dask = "dask"


class GradWrt(str, Enum):
    distribution = "distribution"
    input = "input"


@contextmanager
def all_or_nothing():
    """Around a command that writes files: SIGINT, SIGTERM and SIGHUP stop it once (later
    ones are ignored while it cleans up) with one line and exit 128 + the signal; every
    temporary file goes, however the command ends."""
    from . import interrupts
    from .io import atomic

    with interrupts.handled():
        try:
            yield
        except interrupts.Interrupted as e:
            atomic.remove_all()
            typer.echo(f"emd: interrupted by {e.name}; no output written", err=True)
            raise typer.Exit(e.exit_code) from None
        finally:
            atomic.remove_all()


def fail(message):
    """One line on stderr, exit code 2, no traceback."""
    typer.echo(f"emd: error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


class _Progress:
    """A Rich progress bar on stderr, shown only for long jobs on a terminal."""

    MIN_ROWS = 500_000

    def __init__(self, console, unit="rows", min_total=MIN_ROWS):
        self.console, self.bar, self.task = console, None, None
        self.unit, self.min_total = unit, min_total

    def start(self, total):
        if total >= self.min_total and self.console.is_terminal:
            from rich.progress import Progress

            self.bar = Progress(console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.unit, total=total)

    def advance(self, n):
        if self.bar:
            self.bar.advance(self.task, n)

    def note(self, line):
        """A one-off message (e.g. that the kernels are compiling), above any bar."""
        (self.bar.console if self.bar else self.console).print(f"emd: {line}", markup=False,
                                                               highlight=False, soft_wrap=True)

    def stop(self):
        if self.bar:
            self.bar.stop()


COMPUTE_EPILOG = """
Examples:

  emd compute pred.npy labels.npy                      # per-row EMD, CSV when piped

  emd compute sample_data/signal.parquet --target-column level --metric emd2 --quiet | head

  emd compute hist_pred.npy hist_target.npy --positions hist_positions.txt -o out.parquet

  emd compute logits.npy labels.npy --normalize softmax --metric emd2 --gradient g.npy --grad-wrt input

  cat pred.npy | emd compute - labels.npy | sort -t, -k2 -g | tail -n 5

  emd compute pred.npy labels.npy --metric sinkhorn --lam 10 --iters 1000 --sinkhorn-form log

  emd compute big.npy labels.npy -o out.parquet --device auto --verbose   # rows/s, where the time went

  emd compute sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --target-column label -m emd2
"""


@app.command(epilog=COMPUTE_EPILOG)
def compute(
    pred: str = typer.Argument(..., help="Predictions: .npy (rows × bins) or .parquet; - for stdin."),
    target: Optional[str] = typer.Argument(
        None,
        help="Targets: .npy rows or 1-D integer class indices, or .parquet. "
        "Omit when the prediction Parquet file has a target column.",
    ),
    metric: Metric = typer.Option(Metric.emd, "--metric", "-m", help="emd (exact, rho=1), emd2 (rho=2), emd-rho, or sinkhorn (the entropic approximation)."),
    rho: Optional[float] = typer.Option(None, "--rho", help="The exponent rho >= 1 for --metric emd-rho."),
    lam: Optional[float] = typer.Option(None, "--lam", help="Sinkhorn: the paper's λ > 0 (POT's reg is 1/λ).", rich_help_panel="Sinkhorn"),
    iters: Optional[int] = typer.Option(None, "--iters", help="Sinkhorn: iteration limit [default: 100].", rich_help_panel="Sinkhorn"),
    tol: Optional[float] = typer.Option(None, "--tol", help="Sinkhorn: stop a row when its marginal error ‖T·1 − p‖₁ < tol; 0 = always run --iters (then converged means < 1e-6) [default: 1e-9, float32: 1e-5].", rich_help_panel="Sinkhorn"),
    sinkhorn_form: Optional[Form] = typer.Option(None, "--sinkhorn-form", help="Sinkhorn: plain (the paper's Algorithm 1, instabilities included) or log (log-domain, stable) [default: plain].", rich_help_panel="Sinkhorn"),
    sinkhorn_kernel: Optional[GibbsKernel] = typer.Option(None, "--sinkhorn-kernel", help="Sinkhorn: structured O(N) chain/tree passes, or the dense N × N matrix; auto = structured unless --ground [default: auto].", rich_help_panel="Sinkhorn"),
    positions: Optional[str] = typer.Option(
        None, "--positions", help="Chain: bin positions, a .npy 1-D array, a text file (one per line) or x1,x2,…; default 0,1,…"
    ),
    tree: Optional[str] = typer.Option(
        None, "--tree", "-t", help="Tree space: an edge-list CSV node,parent[,weight], Newick, or JSON file."
    ),
    bins: Optional[str] = typer.Option(
        None, "--bins", help="With --tree: a file naming the bin nodes, one per line, in column order (default: the leaves in file order)."
    ),
    tree_weights: Optional[str] = typer.Option(
        None, "--tree-weights", help="With a CSV --tree: the column holding edge weights (default 'weight', or 1)."
    ),
    ground: Optional[str] = typer.Option(
        None, "--ground", help="Ground-distance matrix N × N (.npy or .csv); exact EMD only (class targets, or soft targets with POT)."
    ),
    normalize: Normalize = typer.Option(
        Normalize.l1, "--normalize", help="How predictions become distributions: l1 (divide by sum), softmax (logits), none (already equal mass)."
    ),
    dtype: DType = typer.Option(DType.float64, "--dtype", help="Precision of the computation and results."),
    pred_column: Optional[str] = typer.Option(None, "--pred-column", help="Parquet: the list column of predictions, or a comma list of bin columns."),
    target_column: Optional[str] = typer.Option(None, "--target-column", help="Parquet: the target column (list of masses or integer class); default 'target' if present."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Parquet: a column carried into the report instead of 'row'."),
    gradient: Optional[str] = typer.Option(None, "--gradient", "-g", help="Write per-row gradients (rows × bins) to this .npy or .parquet file."),
    grad_wrt: GradWrt = typer.Option(
        GradWrt.distribution, "--grad-wrt", help="Gradient w.r.t. the normalised distribution (projected, sums to 0) or the raw input (chain rule through --normalize)."
    ),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write rows to .csv, .tsv, .jsonl, .parquet or .npy instead of stdout."),
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", help="Stdout format (arrow: an Arrow IPC stream, for DuckDB, Polars or another emd); default: a table on a terminal, CSV when piped."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Rows per batch (default: about 16 MiB per array whatever the width, down to one row)."),
    device: Device = typer.Option(Device.cpu, "--device", help="cpu, cuda (an NVIDIA GPU through numba.cuda) or auto (cuda when a GPU is usable)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="A column (Parquet) or partition key: one summary line per group."),
    summary_file: Optional[str] = typer.Option(None, "--summary", help="Also write the summary (per group with --group-by) to this .csv or .json file."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local, or dask: one task per input file on a Dask cluster (needs -o DIR/; pip install 'emdcli\\[dask]').", rich_help_panel="Datasets"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="--engine dask: the address of a running Dask scheduler (tcp://host:8786).", rich_help_panel="Datasets"),
    workers: Optional[int] = typer.Option(None, "--workers", help="--engine dask: start a local cluster of N worker processes [default: the cores].", rich_help_panel="Datasets"),
    task_size: str = typer.Option("256M", "--task-size", help="With -o DIR/: a Parquet or NPY file larger than this is split into parts (tasks) of about this size (row groups kept whole).", rich_help_panel="Datasets"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary or progress on stderr."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also say where the time went: rows/s, reading, computing, writing; on a GPU the copies in and out, compilation and kernels (which synchronises the GPU)."),
):
    """Per-row EMD / EMD² / EMD^rho between predictions and targets on a chain, a tree or a ground matrix.

    Chain: EMD^rho(p, q) = Σ_i d_i |φ_i|^rho, with φ_i = Σ_{j≤i}(p_j − q_j) and d_i the gaps between bin positions. Tree: HEMD^rho = Σ_v w_v |φ_v|^rho over the edges, φ_v the mass difference below v.

    Rows go to stdout (or --output), the summary and messages to stderr. Bad input exits with code 2.
    """
    from rich.console import Console

    from .errors import EMDInputError
    from .io.sinks import StdoutClosed
    from . import report
    from .jobs import engine as engines
    from .jobs import plan as plans
    from .jobs import run as jobs

    if quiet and verbose:
        fail("--quiet and --verbose contradict each other; give one")
    stdout = sys.stdout
    err = Console(stderr=True)
    progress = None if quiet else _Progress(err)
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
                                  kernel=sinkhorn_kernel.value if sinkhorn_kernel else None)),
                plans.outputs(output, fmt.value if fmt else None, gradient,
                              stdout_is_tty=stdout is not None and stdout.isatty(),
                              summary=summary_file),
            )
            how = engines.Engine(engine.value, scheduler, workers, engines.parse_size(task_size))
            warn = lambda m: typer.echo(f"emd: warning: {m}", err=True)  # noqa: E731
            if plan.outputs.folder:
                progress = progress and _Progress(err, "files", 2)
                summary = engines.run_dataset(plan, how, progress=progress, warn=warn)
            elif how.kind != "local":
                raise EMDInputError("--engine dask writes a dataset: give --output DIR/",
                                    source="--engine")
            else:
                summary = jobs.run(
                    plan, stdout=stdout, console=Console() if stdout is not None else None,
                    progress=progress, warn=warn, clock_gpu=verbose,
                )
                if plan.outputs.summary:
                    report.write_summary(plan.outputs.summary, summary)
        except EMDInputError as e:
            if e.source == "standard output":
                _silence_stdout()
            fail(e.describe(e.source))
        except StdoutClosed:  # the reader went away (| head) and no file was asked for
            _silence_stdout()
            raise typer.Exit(0) from None
        finally:
            if progress:
                progress.stop()
    if not quiet:
        typer.echo(summary.line(), err=True)
    if verbose:
        typer.echo(summary.timing.line(), err=True)


TREE_EPILOG = """
Examples:

  emd tree sample_data/imagenet_wordnet_tree.csv

  emd tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --ground-out D.npy

  emd tree tree.nwk --list-bins > bins.txt
"""


@app.command("tree", epilog=TREE_EPILOG)
def tree_command(
    tree: str = typer.Argument(..., help="Tree file: edge-list CSV node,parent[,weight], Newick, or JSON."),
    bins: Optional[str] = typer.Option(None, "--bins", help="A file naming the bin nodes, one per line (default: the leaves in file order)."),
    tree_weights: Optional[str] = typer.Option(None, "--tree-weights", help="CSV: the column holding edge weights (default 'weight')."),
    ground_out: Optional[str] = typer.Option(None, "--ground-out", help="Write the bins' N × N path-length matrix to this .npy file."),
    list_bins: bool = typer.Option(False, "--list-bins", help="Print the bin order, one node per line, instead of the statistics."),
):
    """Check a tree file and describe it: nodes, leaves, depth, the largest bin-to-bin distance and the bin order."""
    from . import report, treefiles
    from .errors import EMDInputError

    from .io import atomic

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


def _leave_a_core_for_reading():
    """For an ``emd compute`` process: kernel threads = cores − 1 (unless NUMBA_NUM_THREADS
    says otherwise; set before Numba is imported, in this process only): the job reads
    the next batch in a thread of its own while the kernels run, and a kernel's threads
    wait for the slowest of them, so sharing every core with the reader costs more than
    the one core it leaves (2 cores: 10M × 32 NPY 2.5 s → 2.2 s, 200k × 1000 Parquet
    3.4 s → 2.7 s)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, cores - 1)))


def _write_npy(path, array):
    """``array`` to ``path`` atomically (no file, not even a temporary one, on failure)."""
    import numpy as np

    from .io import atomic

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


def _silence_stdout():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass


class _NoBlasProbe:
    """An import hook that answers Numba's start-up BLAS probe with "no".

    When Numba first loads a kernel it imports ``numba.np.arraymath``, whose module-level
    ``_check_blas`` imports ``scipy.linalg.cython_blas`` (all of ``scipy.linalg``: 0.16–0.4 s
    where SciPy is installed) only to choose how ``np.correlate`` is compiled. No emdcli
    kernel uses it, so in an ``emd compute`` process that one probe fails fast; any other
    import of SciPy, and ``np.dot`` in compiled code (which asks again when compiled), are
    untouched."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] != "scipy":
            return None
        frame = sys._getframe(1)
        for _ in range(40):
            if frame is None:
                break
            code = frame.f_code
            if code.co_name == "_check_blas" and code.co_filename.endswith("arraymath.py") \
                    and "numba" in code.co_filename:
                raise ModuleNotFoundError(f"{name}: skipped for Numba's start-up BLAS probe")
            frame = frame.f_back
        return None


def main():
    """Console-script entry point."""
    if sys.argv[1:2] == ["compute"]:
        _leave_a_core_for_reading()
        sys.meta_path.insert(0, _NoBlasProbe)
    app()


from . import cli_studies  # noqa: E402,F401  (registers `compare` and `bench` on `app`)

if __name__ == "__main__":  # python -m emdcli.cli: run the app the commands registered on
    from emdcli.cli import main as _registered_main

    _registered_main()

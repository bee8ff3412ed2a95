"""The ``emd`` application: the group, ``--version``, usage errors and the entry point."""

import copy
import importlib
import sys
from typing import Optional

import typer
from typer.core import TyperGroup

from . import deferred
from .common import _render_help

ROOT_EPILOG = """
Examples:

  emd compute pred.npy labels.npy  # per-row EMD of each prediction row to its class
  emd compute pred.npy labels.npy -m emd2 -o out.parquet --gradient g.npy  # EMD², its gradient, to files
  emd compute pred.parquet --tree wordnet.csv --target-column label  # a hierarchy of classes
  emd compare pred.npy target.npy --plot fig3.png  # how far Sinkhorn is from the exact EMD
  emd bench  # timings beside the paper's Table 1
  emd warmup  # compile the kernels once, before the first real run
"""


class _OneLineErrors(TyperGroup):
    """Usage errors as one ``emd: error: …`` line on stderr (exit 2), like bad input; a
    missing argument also gets the usage line."""

    def format_help(self, ctx, formatter):
        _render_help(self, ctx, formatter, TyperGroup)

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
            elif isinstance(e, _click.exceptions.MissingParameter) and e.ctx is not None:
                typer.echo(e.ctx.get_usage(), err=True)
                what = e.format_message().rstrip(".")
                typer.echo(f"emd: error: {what[:1].lower()}{what[1:]}; "
                           f"'{e.ctx.command_path} --help' shows the options and examples",
                           err=True)
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
            from .common import silence_stdout

            silence_stdout()
            sys.exit(0)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    name="emd",
    cls=_OneLineErrors,
    help="Exact Earth Mover's Distances (and gradients) between batches of predicted "
    "distributions and targets whose classes are ordered (a chain) or form a hierarchy (a tree).",
    epilog=ROOT_EPILOG,
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_line():
    """``emd X (numba …, numpy …, pyarrow …; CUDA: available / not available: why)``.

    Versions come from the installed metadata; only the CUDA check imports numba.cuda."""
    from importlib import metadata

    from .. import __version__

    def ver(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        from .. import gpu

        reason = gpu.unavailable_reason()
    except Exception as e:  # numpy or numba missing or broken: say so, still answer
        reason = f"{type(e).__name__}: {e}"
    cuda = "available" if reason is None else f"not available: {reason.rstrip('.')}"
    libs = ", ".join(f"{n} {ver(n)}" for n in ("numba", "numpy", "pyarrow"))
    return f"emd {__version__} ({libs}; CUDA: {cuda})"


def _show_version(value: bool):
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", "-V", is_eager=True, callback=_show_version,
        help="Print the emd, Numba, NumPy and PyArrow versions and whether CUDA can run, then exit."),
):
    """Exact Earth Mover's Distances (and gradients) on ordered class spaces."""


@app.command("version", hidden=True)
def version_command():
    """The same as ``emd --version``."""
    typer.echo(version_line())


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


# the module registering each command (in help order); "tree" and "ground" take words
COMMAND_MODULES = {"compute": "compute", "tree": "compute", "ground": "spaces",
                   "compare": "studies", "bench": "bench", "warmup": "bench", "report": "report"}


def register_all():
    """Import every command's module: the app gets all its commands, in help order."""
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(f"{__package__}.{module}")


def _only(name):
    """The app with the command ``name`` alone (the same options, help and errors): Typer
    builds the Click command of every registered command before it runs one, a tenth of a
    small ``emd compute``'s whole run. Any other first word (a group, an option, a typo)
    gets the whole app."""
    for info in app.registered_commands:
        if (info.name or info.callback.__name__.replace("_", "-")) == name:
            one = copy.copy(app)
            one.registered_commands, one.registered_groups = [info], []
            return one
    return app


def main():
    """Console-script entry point."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "compute":
        _leave_a_core_for_reading()
    deferred.defer_all()
    if command in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{COMMAND_MODULES[command]}")
        _only(command)(prog_name="emd")
    else:
        register_all()
        app(prog_name="emd")

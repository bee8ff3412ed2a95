"""What the ``emd`` commands share: choices, help rendering, errors, signals, stderr lines.

Nothing here imports numpy, Numba or pyarrow (``emd --help`` stays fast).
"""

import copy
import sys
from contextlib import contextmanager
from enum import Enum

import typer
from typer.core import TyperCommand

from .stdout import silence_stdout  # noqa: F401 (the commands' import of it)

EXIT_BAD_INPUT = 2


class Metric(str, Enum):
    emd = "emd"
    emd2 = "emd2"
    emd_rho = "emd-rho"
    sinkhorn = "sinkhorn"
    wasserstein = "wasserstein"


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


# Options the commands that read predictions share (``compute``, ``report``): one
# declaration each, called once per command (Typer reads a fresh OptionInfo per use).


def pred_argument():
    return typer.Argument(..., metavar="PRED", help="Predictions: .npy (rows × bins), .parquet, .csv, .arrow, a directory or glob of them; - for stdin.")  # noqa: E501


def target_argument():
    return typer.Argument(
        None, metavar="TARGET",
        help="Targets: .npy rows or 1-D integer class indices, or .parquet. "
        "Omit when the prediction Parquet file has a target column.",
    )


def positions_option():
    return typer.Option(None, "--positions", metavar="FILE|LIST", show_default="0,1,…", help="Chain: bin positions, a .npy 1-D array, a text file (one per line) or x1,x2,….")  # noqa: E501


def tree_option():
    return typer.Option(None, "--tree", "-t", metavar="FILE", help="Tree space: an edge-list CSV node,parent\\[,weight], Newick, or JSON file.")  # noqa: E501


def bins_option():
    return typer.Option(None, "--bins", metavar="FILE", show_default="the leaves in file order", help="With --tree: a file naming the bin nodes, one per line, in column order.")  # noqa: E501


def tree_weights_option():
    return typer.Option(None, "--tree-weights", metavar="COLUMN", show_default="weight, else 1", help="With a CSV --tree: the column holding edge weights.")  # noqa: E501


def normalize_option():
    return typer.Option(Normalize.l1, "--normalize", metavar="HOW", help="How predictions become distributions: l1 (divide by the sum), softmax (logits), or none (already equal mass).")  # noqa: E501


def pred_column_option():
    return typer.Option(None, "--pred-column", metavar="COLUMN(S)", help="Parquet: the list column of predictions, or a comma list of bin columns.")  # noqa: E501


def target_column_option():
    return typer.Option(None, "--target-column", metavar="COLUMN", show_default="target, if present", help="Parquet: the target column (list of masses or integer class).")  # noqa: E501


def batch_size_option():
    return typer.Option(None, "--batch-size", min=1, metavar="N", show_default="about 16 MiB per array", help="Rows per batch (down to one row, whatever the width).")  # noqa: E501


def choices(*values):
    """A completion callback offering ``values`` (for comma-list options typed as text)."""
    def complete(incomplete: str):
        head, _, last = incomplete.rpartition(",")
        prefix, given = (head + ",", head.split(",")) if head else ("", [])
        return [prefix + v for v in values if v.startswith(last) and v not in given]
    return complete


# ----------------------------------------------------------------------------- help


def _examples(epilog):
    """``(command, comment)`` pairs from an epilog of ``command  # comment`` lines."""
    out = []
    for line in epilog.strip().splitlines():
        line = line.strip()
        if not line or line.rstrip(":") == "Examples":
            continue
        cmd, _, comment = line.partition("  # ")
        out.append((cmd.strip(), comment.strip()))
    return out


def _units(cmd):
    """The words of a shell command, an option kept with its value (``--tree FILE``)."""
    words, out = cmd.split(" "), []
    for w in words:
        if out and out[-1].startswith("-") and " " not in out[-1] and not w.startswith("-") \
                and w not in ("|", ">", "&&") and len(out[-1]) > 1:
            out[-1] += " " + w
        else:
            out.append(w)
    return out


def wrap_command(cmd, width, indent=2, hang=6):
    """A shell command as lines of at most ``width`` columns, broken between words with
    `` \\`` continuations, continued lines indented by ``hang`` (copy-pastable)."""
    lines, line = [], " " * indent
    for word in _units(cmd):
        fresh = line.strip() == ""
        if not fresh and len(line) + 1 + len(word) + 2 > width:
            lines.append(line + " \\")
            line = " " * hang + word
        else:
            line += ("" if fresh else " ") + word
    lines.append(line)
    return lines


def format_examples(epilog, width):
    """The examples of a help page, each fitted to ``width`` columns: ``cmd  # comment``
    on one line when it fits, else the comment above and the command wrapped."""
    from rich.text import Text

    out = Text("Examples:\n", style="bold")
    for cmd, comment in _examples(epilog):
        one = f"  {cmd}" + (f"  # {comment}" if comment else "")
        if len(one) <= width:
            out.append(f"  {cmd}")
            if comment:
                out.append(f"  # {comment}", style="dim")
            out.append("\n")
            continue
        if comment:
            out.append(f"  # {comment}\n", style="dim")
        out.append("\n".join(wrap_command(cmd, width)) + "\n")
    out.rstrip()
    return out


def _default_text(text):
    return lambda *_, **__: text


def _render_help(cmd, ctx, formatter, base):
    """Typer's Rich help for ``cmd`` (nothing for a flag's type, a described default as
    ``[default: text]``), then its examples, fitted to the console width, instead of the
    re-flowed epilog."""
    for p in cmd.get_params(ctx):
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
        if getattr(p, "param_type_name", "") == "argument":  # its metavar says it all
            p.display_type_rich = _default_text(None)  # Typer ≥ 0.29
            p.type = copy.copy(p.type)  # earlier Typers print the type's metavar, <str>
            p.type.get_metavar = _default_text("")
        if isinstance(getattr(p, "show_default", None), str):
            p._get_default_string = _default_text(p.show_default)
    epilog, cmd.epilog = cmd.epilog, None
    try:
        base.format_help(cmd, ctx, formatter)
    finally:
        cmd.epilog = epilog
    if epilog:
        from rich.padding import Padding
        from typer import rich_utils

        console = rich_utils._get_rich_console()
        console.print(Padding(format_examples(epilog, console.width - 2), (1, 1, 1, 1)),
                      soft_wrap=True)


class Command(TyperCommand):
    """An ``emd`` subcommand: help with metavars for flags and wrapped examples; the
    usage line as ``PRED [TARGET]``."""

    def format_help(self, ctx, formatter):
        _render_help(self, ctx, formatter, TyperCommand)

    def collect_usage_pieces(self, ctx):
        return [p[1:-1] if p[:1] == "{" and p[-1:] == "}" else p
                for p in super().collect_usage_pieces(ctx)]


# ----------------------------------------------------------------------------- errors


@contextmanager
def all_or_nothing():
    """Around a command that writes files: SIGINT, SIGTERM and SIGHUP stop it once (later
    ones are ignored while it cleans up) with one line and exit 128 + the signal; every
    temporary file goes, however the command ends."""
    from .. import interrupts
    from ..io import atomic

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


def say_summary(text_full, text_short):
    """A summary on stderr: on a terminal the short form, wrapped between ``key=value``
    words (never inside a number); to a file or pipe the full-precision line."""
    if not sys.stderr.isatty():
        typer.echo(text_full, err=True)
        return
    from rich.console import Console

    Console(stderr=True).print(text_short, markup=False, highlight=False)


class Progress:
    """A Rich progress bar on stderr, shown only for long jobs on a terminal. Its stderr
    console is made when first needed (Rich's console takes 30 ms to import: a tenth of a
    small job's whole run)."""

    MIN_ROWS = 500_000

    def __init__(self, unit="rows", min_total=MIN_ROWS):
        self._console, self.bar, self.task = None, None, None
        self.unit, self.min_total = unit, min_total

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def start(self, total):
        if total >= self.min_total and self.console.is_terminal:
            from rich.progress import Progress as Bar

            self.bar = Bar(console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.unit, total=total)

    def advance(self, n):
        if self.bar:
            self.bar.advance(self.task, n)

    def note(self, line):
        """A one-off message (e.g. that the kernels are compiling), above any bar."""
        console = self.bar.console if self.bar else self.console
        # on a terminal wrapped between words; to a file or pipe one line
        console.print(f"emd: {line}", markup=False, highlight=False,
                      soft_wrap=not console.is_terminal)

    def stop(self):
        if self.bar:
            self.bar.stop()

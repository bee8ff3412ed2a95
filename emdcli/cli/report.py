"""``emd report``: where the error mass goes, as one HTML page, Markdown or JSON."""

import sys
from enum import Enum
from typing import Optional

import typer

from .common import (Command, DType, Normalize, Progress, all_or_nothing, batch_size_option,
                     bins_option, fail, normalize_option, positions_option, pred_argument,
                     pred_column_option, target_argument, target_column_option, tree_option,
                     tree_weights_option)
from .root import app


class ReportFormat(str, Enum):
    html = "html"
    md = "md"
    json = "json"


REPORT_EPILOG = """
Examples:

  emd report sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv --bins sample_data/imagenet_bins.txt --target-column label --id-column image --node-names synset -o report.html
  emd report sample_data/signal.parquet --target-column level --id-column t -o signal.md  # Markdown
  emd report pred.npy labels.npy --positions positions.txt -f json | jq .all.chain.bias
  emd report 'runs/*.parquet' --group-by split -o report.html  # one column per split
"""


@app.command("report", cls=Command, epilog=REPORT_EPILOG)
def report_command(
    pred: str = pred_argument(),
    target: Optional[str] = target_argument(),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE", show_default="standard output", help="Write the report to this .html, .md or .json file."),
    fmt: Optional[ReportFormat] = typer.Option(None, "--format", "-f", metavar="FORMAT", show_default="from --output, else md on a terminal and html when piped", help="html (one self-contained page with plots; needs matplotlib: pip install 'emdcli\\[plot]'), md (Markdown) or json."),
    group_by: Optional[str] = typer.Option(None, "--group-by", metavar="COLUMN", help="A column (Parquet) or partition key: the report per group, side by side."),
    top_k: int = typer.Option(5, "--top", min=1, metavar="K", help="The k of the top-k accuracy."),
    worst: int = typer.Option(15, "--worst", min=1, metavar="N", help="Rows, classes, edges and nodes listed per table."),
    positions: Optional[str] = positions_option(),
    tree: Optional[str] = tree_option(),
    bins: Optional[str] = bins_option(),
    tree_weights: Optional[str] = tree_weights_option(),
    node_names: Optional[str] = typer.Option(
        None, "--node-names", metavar="COLUMN", show_default="the node column", help="With a CSV --tree: a column of readable node names to show (e.g. synset)."
    ),
    normalize: Normalize = normalize_option(),
    dtype: DType = typer.Option(DType.float64, "--dtype", metavar="DTYPE", help="Precision of the computation: float64 or float32."),
    pred_column: Optional[str] = pred_column_option(),
    target_column: Optional[str] = target_column_option(),
    id_column: Optional[str] = typer.Option(None, "--id-column", metavar="COLUMN", help="Parquet: a column naming the rows in the worst-rows table instead of 'row'."),
    batch_size: Optional[int] = batch_size_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or closing line on stderr."),
):
    """What is the model getting wrong? One streaming pass over the rows: EMD, EMD², cross entropy and top-k accuracy side by side; per target class; on a tree the edges and subtrees carrying the error mass; on a chain whether the predictions sit too high or too low; the worst rows.

    The report goes to standard output (or --output): HTML with inline plots, Markdown or JSON with the same content. Bad input exits with code 2.
    """
    from ..diagnose import content, job, render
    from ..errors import EMDInputError
    from ..io import atomic
    from ..jobs import plan as plans

    stdout = sys.stdout
    progress = None if quiet else Progress()
    loading = None
    with all_or_nothing():
        try:
            kind = _format(output, fmt, stdout)
            if output and output != "-":
                atomic.check_writable(output, "--output")
            if kind == "html":
                from ..diagnose import figures

                if not figures.available():
                    raise EMDInputError("--format html draws its plots with matplotlib, which "
                                        "is not installed", source="--format",
                                        hint="pip install 'emdcli[plot]', or --format md|json")
                loading = figures.preload()
            spec = job.ReportSpec(
                plans.Inputs(pred, target, pred_column, target_column, id_column, batch_size,
                             group_by),
                _space(plans, positions, tree, bins, tree_weights, node_names),
                normalize=normalize.value, dtype=dtype.value, top_k=top_k, worst=worst,
                node_names=node_names)
            if spec.inputs.pred == "-" and spec.inputs.target == "-":
                raise EMDInputError("only one input can come from standard input", source="-")
            warn = lambda m: typer.echo(f"emd: warning: {m}", err=True)  # noqa: E731
            result = job.run(spec, progress=progress, warn=warn)
            doc = content.document(result, {"pred": pred, "target": target})
            if loading is not None:
                loading.join()
            text = _render(kind, doc, render)
            if output and output != "-":
                atomic.write_text(output, text)
        except EMDInputError as e:
            fail(e.describe(e.source))
        finally:
            if progress:
                progress.stop()
    if not output or output == "-":
        try:
            stdout.write(text)
            stdout.flush()
        except BrokenPipeError:
            from .common import silence_stdout

            silence_stdout()
            return
    if not quiet:
        where = "" if not output or output == "-" else f" to {output}"
        typer.echo(f"emd: wrote the {kind} report of {result.all.n:,} rows{where} "
                   f"({result.seconds:.2f} s)", err=True)


def _format(output, fmt, stdout):
    """html, md or json: --format, else --output's extension, else by the terminal."""
    import os

    from ..diagnose.render import EXTENSIONS
    from ..errors import EMDInputError

    if output and output != "-":
        ext = os.path.splitext(output)[1].lower()
        by_ext = EXTENSIONS.get(ext)
        if fmt is None and by_ext is None:
            raise EMDInputError(f"cannot tell the format of {output!r} from its extension",
                                source="--output", hint="use .html, .md or .json, or give --format")
        if fmt is not None and by_ext is not None and by_ext != fmt.value:
            raise EMDInputError(f"--format {fmt.value} contradicts the extension of {output!r}",
                                source="--output")
        return fmt.value if fmt is not None else by_ext
    if fmt is not None:
        return fmt.value
    if stdout is None:
        raise EMDInputError("standard output is closed", hint="give --output FILE")
    return "md" if stdout.isatty() else "html"


def _space(plans, positions, tree, bins, tree_weights, node_names):
    from ..errors import EMDInputError

    if node_names and not tree:
        raise EMDInputError("--node-names needs --tree")
    return plans.space_spec(positions, tree, bins, tree_weights)


def _render(kind, doc, render):
    if kind == "json":
        return render.json_text(doc)
    if kind == "md":
        return render.markdown(doc)
    from ..diagnose import figures

    return render.html(doc, figures.build(doc))

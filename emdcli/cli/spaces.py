"""``emd ground learn`` and ``emd tree build``: spaces from data.

``emd tree`` stays the command that describes a tree file; :class:`TreeCommand` hands
``emd tree build …`` to the build command (a tree file named ``build`` is ``./build``).
"""

import functools
from enum import Enum
from typing import Optional

import typer
from typer.core import TyperGroup

from .common import Command, _render_help, all_or_nothing, fail
from .root import app


class GroundMetric(str, Enum):
    euclidean = "euclidean"
    sqeuclidean = "sqeuclidean"
    cosine = "cosine"


class TreeMethod(str, Enum):
    nj = "nj"
    average = "average"
    complete = "complete"
    ward = "ward"


class _Group(TyperGroup):
    def format_help(self, ctx, formatter):
        _render_help(self, ctx, formatter, TyperGroup)


class TreeCommand(Command):
    """``emd tree TREE``; with ``build`` as its first word, ``emd tree build``."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args[:1] == ["build"]:
            return _build_command().make_context(f"{info_name} build", args[1:], parent=parent,
                                                 **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@functools.lru_cache(maxsize=1)
def _build_command():
    return typer.main.get_command(build_app)


LEARN_EPILOG = """
Examples:

  emd ground learn features.npy labels.npy -o D.npy  # Euclidean distances between class centroids
  emd ground learn feats.parquet --feature-column embedding --label-column label -o D.npy --metric cosine
  emd ground learn --from-confusion confusion.npy -o D.npy  # D = 1 − (P + Pᵀ)/2, P row-normalised
  emd compute pred.npy labels.npy --ground D.npy  # the exact EMD under the learned ground
"""

BUILD_EPILOG = """
Examples:

  emd tree build --ground D.npy -o tree.csv  # neighbour joining, rooted at the midpoint
  emd tree build features.npy labels.npy -o tree.csv --classes classes.txt  # learn D, then build
  emd tree build --ground D.npy -o tree.nwk --method average  # writes tree.bins.txt too if needed
  emd compute pred.npy labels.npy --tree tree.csv -m emd2  # the O(N) tree EMD² on the built tree
"""

ground_app = typer.Typer(
    name="ground", cls=_Group, no_args_is_help=True,
    help="Ground-distance matrices learned from data (emd ground learn --help).",
    epilog=LEARN_EPILOG,
)
app.add_typer(ground_app, name="ground")
build_app = typer.Typer(add_completion=False)

FEATURES_HELP = "Feature rows: .npy (rows × features) or .parquet/.csv/.arrow (a list column or numeric columns); - for stdin."
LABELS_HELP = "The integer class of each row: 1-D .npy or a table column. Omit when FEATURES holds a label column."


@ground_app.command("learn", cls=Command, epilog=LEARN_EPILOG)
def learn_command(
    features: Optional[str] = typer.Argument(None, metavar="FEATURES", help=FEATURES_HELP),
    labels: Optional[str] = typer.Argument(None, metavar="LABELS", help=LABELS_HELP),
    output: str = typer.Option(..., "--output", "-o", metavar="FILE", help="Write the N × N ground matrix to this .npy file."),
    metric: GroundMetric = typer.Option(GroundMetric.euclidean, "--metric", metavar="METRIC", help="Between class centroids: euclidean, sqeuclidean or cosine."),
    from_confusion: Optional[str] = typer.Option(None, "--from-confusion", metavar="FILE", help="Instead of features: an N × N confusion matrix (.npy or CSV, rows the true classes); D = 1 − (P + Pᵀ)/2 with P its row-normalised rates."),
    n_classes: Optional[int] = typer.Option(None, "--n-classes", min=1, metavar="N", show_default="the largest label + 1", help="The number of classes."),
    feature_column: Optional[str] = typer.Option(None, "--feature-column", metavar="COLUMN(S)", help="Tables: the list column of features, or a comma list of feature columns."),
    label_column: Optional[str] = typer.Option(None, "--label-column", metavar="COLUMN", show_default="target, if present", help="Tables: the integer label column."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, metavar="N", show_default="about 16 MiB", help="Rows read at a time."),
):
    """Learn a ground-distance matrix between classes from feature vectors (Hou et al.) or a confusion matrix.

    D_ij is the distance between the centroids of classes i and j (the mean feature vector of each class's rows), read in bounded memory. The matrix goes to --ground, or to emd tree build.
    """
    import numpy as np

    from ..errors import EMDInputError
    from ..spaces import Ground

    with all_or_nothing():
        try:
            _npy_output(output)
            if from_confusion:
                d, what = _confusion(from_confusion, features, labels), "from the confusion matrix"
            else:
                d, what = _learn(features, labels, metric.value, (feature_column, label_column),
                                 n_classes, batch_size)
            if from_confusion or metric is not GroundMetric.euclidean:
                notes = Ground.from_matrix(d, source=output).notes  # e.g. the triangle inequality
            elif not np.isfinite(d).all():  # Euclidean centroid distances: a metric as built
                raise EMDInputError("the centroids are too large: distances overflow", source=output)
            else:
                notes = ()
            from .compute import _write_npy

            _write_npy(output, d)
        except EMDInputError as e:
            fail(e.describe(e.source))
    for note in notes:
        typer.echo(f"emd: warning: {note}", err=True)
    n = d.shape[0]
    typer.echo(f"emd: wrote the {n} × {n} ground matrix ({what}) to {output}", err=True)


@build_app.command("build", cls=Command, epilog=BUILD_EPILOG)
def build_command(
    features: Optional[str] = typer.Argument(None, metavar="FEATURES", help=FEATURES_HELP + " Instead of --ground: D is learned first, as emd ground learn does."),
    labels: Optional[str] = typer.Argument(None, metavar="LABELS", help=LABELS_HELP),
    ground: Optional[str] = typer.Option(None, "--ground", metavar="FILE", help="The N × N ground matrix (.npy or CSV), e.g. from emd ground learn."),
    output: str = typer.Option(..., "--output", "-o", metavar="FILE", help="Write the tree to this .csv (node,parent,weight), .nwk (Newick) or .json file."),
    method: TreeMethod = typer.Option(TreeMethod.nj, "--method", metavar="METHOD", help="nj (neighbour joining: exact for a tree metric), or average, complete, ward (SciPy linkage: exact for an ultrametric; pip install 'emdcli\\[tree]')."),
    root: Optional[str] = typer.Option(None, "--root", metavar="CLASS", show_default="the midpoint of the longest path", help="nj: root the tree at this class's leaf (a class name)."),
    classes: Optional[str] = typer.Option(None, "--classes", metavar="FILE", show_default="0, 1, …", help="Class names, one per line in class-index order: the leaves' names."),
    bins_out: Optional[str] = typer.Option(None, "--bins-out", metavar="FILE", show_default="OUTPUT.bins.txt, if needed", help="Where the class order goes when the file's leaves are not in class order (Newick); pass it to --bins."),
    metric: GroundMetric = typer.Option(GroundMetric.euclidean, "--metric", metavar="METRIC", help="With FEATURES: euclidean, sqeuclidean or cosine."),
    feature_column: Optional[str] = typer.Option(None, "--feature-column", metavar="COLUMN(S)", help="With FEATURES tables: the list column, or a comma list of columns."),
    label_column: Optional[str] = typer.Option(None, "--label-column", metavar="COLUMN", show_default="target, if present", help="With FEATURES tables: the integer label column."),
):
    """Build a rooted tree whose path lengths approximate a ground matrix, for the O(N) tree EMD (--tree).

    Prints the distortion on stderr: the mean and max relative error of the tree's distances against D over all pairs, and their Spearman rank correlation.
    """
    from ..errors import EMDInputError
    from .. import treebuild
    from ..io import atomic, sources

    with all_or_nothing():
        try:
            kind = treebuild.tree_format(output)
            atomic.check_writable(output, "--output")
            if kind == "newick" or bins_out:
                atomic.check_writable(bins_out or treebuild.default_bins_path(output), "--bins-out")
            if bool(ground) == bool(features):
                raise EMDInputError("give either --ground FILE or FEATURES [LABELS]",
                                    source="emd tree build")
            names = treebuild.read_classes(classes) if classes else None
            if ground:
                if labels:
                    raise EMDInputError("LABELS go with FEATURES, not with --ground",
                                        source="emd tree build")
                d = sources.load_ground(ground)  # build_tree validates it
            else:
                d, _ = _learn(features, labels, metric.value, (feature_column, label_column),
                              None, None)
            try:
                tree = treebuild.build_tree(d, method=method.value, root=root, classes=names)
            except EMDInputError as e:
                raise _located(e, {"classes": classes, "root": "--root", None: ground}) from None
            stats = treebuild.distortion(tree, d)
            wrote = treebuild.write_tree(tree, output, bins_path=bins_out)
        except EMDInputError as e:
            fail(e.describe(e.source))
    typer.echo(f"emd: wrote a tree of {tree.n} leaves ({tree.n_nodes} nodes, {method.value}) to {output}",
               err=True)
    if wrote:
        typer.echo(f"emd: its leaves are not in class order: the class order is in {wrote} "
                   f"(use --tree {output} --bins {wrote})", err=True)
    typer.echo(_distortion_line(stats), err=True)


def _distortion_line(stats):
    from ..report import format_float

    keys = ["pairs", "mean_rel_error", "max_rel_error", "spearman"]
    if stats["zero_pairs"]:
        keys += ["zero_pairs", "zero_pairs_max_tree"]
    return "distortion: " + " ".join(
        f"{k}={format_float(stats[k]) if isinstance(stats[k], float) else stats[k]}" for k in keys)


def _located(error, names):
    """``error`` with its ``source`` mapped through ``names`` (a role → the file)."""
    from ..errors import EMDInputError

    source = names.get(error.source, error.source)
    return EMDInputError(error.message, source=source, row=error.row, column=error.column,
                         hint=error.hint)


def _npy_output(output):
    from ..errors import EMDInputError
    from ..io import atomic

    if not output.endswith(".npy"):
        raise EMDInputError("the ground matrix is written as .npy", source=output)
    atomic.check_writable(output, "--output")


def _confusion(path, features, labels):
    from ..errors import EMDInputError
    from ..io import sources
    from ..learn import from_confusion

    if features or labels:
        raise EMDInputError("--from-confusion takes no FEATURES or LABELS", source="--from-confusion")
    try:
        return from_confusion(sources.load_ground(path))
    except EMDInputError as e:
        raise _located(e, {"confusion": path}) from None


def _learn(features, labels, metric, columns, n_classes, batch_size):
    """(D, a description) from FEATURES [LABELS] files, read in batches."""
    from ..errors import EMDInputError
    from ..io import sources
    from ..learn import BATCH_BYTES, CentroidSums, centroid_ground

    if not features:
        raise EMDInputError("give FEATURES [LABELS] (or --from-confusion FILE)",
                            source="emd ground learn")
    feature_column, label_column = columns
    fsrc = sources.open_input(features, "pred", column=feature_column,
                              target_column=None if labels else label_column)
    lsrc = None
    try:
        if labels:
            lsrc = sources.open_input(labels, "target", column=label_column)
            _check_labels(lsrc)
            if lsrc.n_rows != fsrc.n_rows:
                raise EMDInputError(f"{fsrc.n_rows} feature rows in {fsrc.name} but "
                                    f"{lsrc.n_rows} labels", source=lsrc.name)
        elif not fsrc.has("target"):
            raise EMDInputError("no LABELS file and no label column", source=fsrc.name,
                                hint="give LABELS, or --label-column COLUMN")
        else:
            _check_labels(fsrc)
        size = batch_size or max(1, BATCH_BYTES // max(fsrc.row_bytes, 1))
        if lsrc is None:
            pairs = ((b["pred"], b["target"]) for b in fsrc.batches(size, ["pred", "target"], reuse=True))
        else:
            pairs = ((a["pred"], b["target"]) for a, b in zip(
                fsrc.batches(size, ["pred"], reuse=True), lsrc.batches(size, ["target"], reuse=True)))
        sums = CentroidSums(n_classes)
        try:
            for x, y in pairs:
                sums.add(x, y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y)
            centroids, _ = sums.result()
            d = centroid_ground(centroids, metric)
        except EMDInputError as e:
            lname = lsrc.name if lsrc is not None else fsrc.name
            raise _located(e, {"features": fsrc.name, "labels": lname}) from None
    finally:
        fsrc.close()
        if lsrc is not None:
            lsrc.close()
    return d, f"{metric} distances between the centroids of {d.shape[0]} classes over {sums.rows} rows"


def _check_labels(src):
    from ..errors import EMDInputError

    layout, cols = src.roles["target"]
    if layout == "classes" or (layout == "columns" and len(cols) == 1):
        return
    raise EMDInputError("labels must be one integer class per row (a 1-D .npy or one column)",
                        source=src.name)

"""The report's run, one straight line: sources → batches → :func:`measure` → tallies.

The inputs and the space are ``emd compute``'s (:class:`~emdcli.jobs.plan.Inputs`,
:class:`~emdcli.jobs.plan.SpaceSpec`), read by the same helpers of
:mod:`emdcli.jobs.run`: a file or a dataset of files, in batches, errors naming the file
and the row. Every batch is measured once and added to the tally of all rows and to
that of each of its groups (``--group-by``).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import EMDInputError
from ..jobs import run as jobs
from ..report import format_position
from ..spaces import Chain, Ground, Tree
from .accumulate import measure, new_tally

MAX_GROUPS = 64


@dataclass(frozen=True)
class ReportSpec:
    """What to report on: ``inputs`` and ``space`` (as for compute), the normalisation
    and working dtype, ``top_k`` (top-k accuracy), ``worst`` (rows, classes, edges listed)
    and ``node_names`` (a CSV tree's column of readable node names)."""

    inputs: object
    space: object
    normalize: str = "l1"
    dtype: str = "float64"
    top_k: int = 5
    worst: int = 15
    node_names: str | None = None


@dataclass
class Result:
    """What :func:`run` returns: the space, the tally of all rows and one per group (in
    the order they first came), readable names of the bins and nodes, and the timing."""

    spec: ReportSpec
    space: object = None
    all: object = None
    groups: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)  # node name → readable name (a tree)
    seconds: float = 0.0
    first: tuple | None = None  # the first file's name and width

    def class_names(self):
        """The name of each bin: its position on a chain, its node (label) on a tree."""
        if isinstance(self.space, Chain):
            return [format_position(v) for v in self.space.positions.tolist()]
        return [self.labels.get(v, v) for v in self.space.bin_names]

    def node_name(self, v):
        """Node index v of a tree, readably."""
        name = self.space.names[v]
        return self.labels.get(name, name)


def run(spec, progress=None, warn=print):
    """Measure every row of ``spec``'s inputs; returns a :class:`Result`. ``progress``:
    ``start(n_rows)`` and ``advance(n)``; ``warn(message)`` for warnings."""
    started = time.perf_counter()
    work = jobs.part_inputs(spec.inputs)
    sources = jobs.open_sources(work[0][1])
    result = Result(spec)
    try:
        result.space = jobs.build_space(spec.space, *sources, warn)
        if isinstance(result.space, Ground):  # not offered by the CLI; for library callers
            raise EMDInputError("a report needs a chain or a tree, not a ground matrix")
        if spec.node_names:
            result.labels = read_node_names(spec.space, spec.node_names)
        n_rows = sources[0].n_rows if len(work) == 1 else jobs.count_rows(work, sources)
    except BaseException:
        jobs.close_pair(*sources)
        raise
    if progress:
        line = _compile_notice(spec, result.space, sources[0], n_rows)
        if line:
            progress.note(line)
        progress.start(n_rows)
    offset = 0
    for k, (_, inputs) in enumerate(work):
        offset = _part(result, inputs, sources if k == 0 else None, offset, progress)
    if result.all is None:  # no rows at all
        if result.space is None:
            result.space = Chain.uniform(result.first[1] or 1) if result.first else Chain.uniform(1)
        result.all = new_tally(result.space, spec.top_k, spec.worst)
    result.seconds = time.perf_counter() - started
    return result


def _compile_notice(spec, space, pred, n_rows):
    """The line saying that the report's kernels are about to compile, or None."""
    from ..jobs.run import batch_rows
    from ..warmup import notice

    if not n_rows:
        return None
    kind = "tree" if isinstance(space, Tree) else "chain"
    return notice(kind, spec.dtype, rows=min(n_rows, batch_rows(pred, pred)), extras=("flows",),
                  input_dtype=getattr(pred, "dtype", None))


def _part(result, inputs, sources, offset, progress):
    """Every batch of one file (or file pair) into the tallies; rows numbered from
    ``offset``. Errors name this part's file and its row."""
    spec = result.spec
    pred, target = sources or jobs.open_later(inputs, result.first[0] if result.first else None)
    names = {"pred": pred.name, "target": target.name,
             "positions": jobs.positions_name(spec.space.positions)}
    base = offset + (inputs.rows[0] if inputs.rows else 0)
    try:
        if result.first is None:
            result.first = (pred.name, pred.width)
        elif pred.width is not None and result.first[1] is not None and pred.width != result.first[1]:
            raise EMDInputError(f"has {pred.width} bins but {result.first[0]} has {result.first[1]}",
                                source=pred.name, hint="every file of a dataset needs the same bins")
        elif isinstance(result.space, Tree):
            jobs.align_bins(result.space, pred, target)
        positions = jobs.read_positions(spec.space.positions) if spec.space.positions else None
        size = jobs.batch_rows(pred, target, inputs.batch_rows)
        for start, p, q, ids, groups in jobs.aligned_batches(pred, target, size, reuse=True):
            n = p.shape[0]
            if result.space is None:
                result.space = Chain.for_width(positions, p.shape[1] if p.ndim == 2 else 0)
            if ids is None:
                ids = jobs.partition_column(inputs, inputs.id_column or "row", n)
            if ids is None:
                ids = np.arange(base + start, base + start + n)
            if groups is None and inputs.group_by:
                groups = jobs.partition_column(inputs, inputs.group_by, n)
            try:
                _batch(result, p, q, ids, groups)
            except EMDInputError as e:  # the row within the file
                first = start + (inputs.rows[0] if inputs.rows else 0)
                raise (e.shifted(first) if e.row is not None else e) from None
            if progress:
                progress.advance(n)
        return offset + pred.n_rows
    except EMDInputError as e:
        e.source = names.get(e.source, e.source)
        raise
    finally:
        jobs.close_pair(pred, target)


def _batch(result, p, q, ids, groups):
    """One batch: validated (as compute validates it), measured, tallied."""
    from ..api import prepare
    from ..rows import resolve_dtype

    spec = result.spec
    dt = resolve_dtype(spec.dtype)
    batch = prepare(p, q, spec.normalize, dt, True)
    if batch.x.shape[1] != result.space.n:
        raise EMDInputError(f"rows have {batch.x.shape[1]} bins but the space has "
                            f"{result.space.n}", source="pred")
    keys, label = _labels(groups)
    if len(result.groups) + len(set(keys) - set(result.groups)) > MAX_GROUPS:
        raise EMDInputError(f"more than {MAX_GROUPS} groups",
                            source=f"--group-by {spec.inputs.group_by}",
                            hint="a report compares a few groups side by side")
    m = measure(batch, result.space, dt, label, max(1, len(keys)))
    if result.all is None:
        result.all = new_tally(result.space, spec.top_k, spec.worst)
    result.all.add(m, m.col_abs.sum(axis=0), m.col_signed.sum(axis=0), ids,
                   groups if keys else None)
    for g, key in enumerate(keys):
        tally = result.groups.get(key)
        if tally is None:
            tally = result.groups[key] = new_tally(result.space, spec.top_k, spec.worst, True)
        pick = slice(None) if len(keys) == 1 else label == g
        tally.add(m.take(pick), m.col_abs[g], m.col_signed[g], np.asarray(ids)[pick])


def _labels(groups):
    """(group keys of this batch, label (B,) int64 into them); no groups: ([], None)."""
    if groups is None:
        return [], None
    groups = np.asarray(groups)
    if groups.dtype.kind == "O":
        groups = groups.astype(str)
    if groups.size and (groups == groups[0]).all():  # a partition, or one group a batch
        keys, label = groups[:1], np.zeros(groups.size, dtype=np.int64)
    else:
        keys, label = np.unique(groups, return_inverse=True)  # (sorted, as compute's summary)
    return keys.tolist(), label.astype(np.int64).reshape(-1)




def read_node_names(space, column):
    """node → readable name, from ``column`` of a CSV tree file (``--node-names``)."""
    import csv
    import io
    import os

    from ..treefiles import _read_text

    path = space.tree
    if os.path.splitext(path)[1].lower() not in (".csv", ".tsv", ""):
        raise EMDInputError("--node-names reads a column of a CSV tree", source=path)
    text = _read_text(path, "tree")
    sep = "\t" if path.lower().endswith(".tsv") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sep)
    if column not in (reader.fieldnames or []):
        raise EMDInputError(f"no column {column!r} in the header", source=path,
                            hint=f"--node-names names one of: {', '.join(reader.fieldnames or [])}")
    return {(r["node"] or "").strip(): (r[column] or "").strip() or (r["node"] or "").strip()
            for r in reader}

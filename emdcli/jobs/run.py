"""Running a :class:`~.plan.ComputePlan`: sources → batches → the metric → the sinks.

:func:`run` is the whole job, one straight line; every helper here is a plain function
of the plan's parts, so a worker process can run the same job on its own part.
"""

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from .. import report
from ..errors import EMDInputError
from ..io import open_input, read_positions, sinks
from ..io.atomic import OutputError
from ..rows import numpy_twins_job
from ..spaces import Chain, Ground
from .startup import numpy_job

BATCH_BYTES = 1 << 24  # a batch holds about 16 MiB per (B, N) float64 array


@dataclass
class MetricRun:
    """What one metric writes: ``columns`` (name → dtype, the value column first) and
    ``run(p, q, space) → (columns dict, gradients or None)``."""

    columns: dict
    run: object

    @property
    def value(self):
        return next(iter(self.columns))


def make_metric(spec):
    """The :class:`MetricRun` of a :class:`~.plan.MetricSpec`."""
    dtype = np.dtype(spec.dtype)
    common = dict(normalize=spec.normalize, dtype=dtype, gradient=spec.gradient,
                  grad_wrt=spec.grad_wrt, device=spec.device)
    if spec.metric == "sinkhorn":
        from ..sinkhorn import sinkhorn

        s = spec.sinkhorn

        def run(p, q, space):
            r = sinkhorn(p, q, space=space, lam=s["lam"], iters=s["iters"], tol=s["tol"],
                         form=s["form"], kernel=s["kernel"], **common)
            cols = {"sinkhorn": r.values, "sinkhorn_iterations": r.iterations,
                    "sinkhorn_converged": r.converged}
            return cols, r.gradient

        return MetricRun({"sinkhorn": dtype, "sinkhorn_iterations": np.dtype(np.int64),
                          "sinkhorn_converged": np.dtype(bool)}, run)

    if spec.metric == "wasserstein":
        from ..wasserstein import wasserstein

        def run(p, q, space):
            out = wasserstein(p, q, space=space, p=spec.power, normalize=spec.normalize,
                              dtype=dtype, gradient=spec.gradient, grad_wrt=spec.grad_wrt)
            values, grads = out if spec.gradient else (out, None)
            return {"wasserstein_p": values}, grads

        return MetricRun({"wasserstein_p": dtype}, run)

    if spec.flows or spec.transport:
        return _transport_metric(spec, dtype)

    from ..api import emd

    def run(p, q, space):
        out = emd(p, q, space=space, rho=spec.rho, **common)
        values, grads = out if spec.gradient else (out, None)
        return {spec.column: values}, grads

    return MetricRun({spec.column: dtype}, run)


def _transport_metric(spec, dtype):
    """EMD^rho with each row's flows (``"flows"``) and/or optimal plan (``"transport"``,
    a ``transport.Plan``, rows numbered within the batch): one validation, one pass. The
    flows array is reused from batch to batch (the sinks have written it by then)."""
    from ..api import prepare
    from ..rows import input_gradient
    from ..transport import batch_plan, value_flows

    held = [None]

    def run(p, q, space):
        batch = prepare(p, q, spec.normalize, dtype.type, True)
        values, f, g = value_flows(batch, space, spec.rho, dtype.type, spec.gradient, held[0])
        held[0] = f
        cols = {spec.column: values}
        if spec.flows:
            cols["flows"] = f
        if spec.transport:
            cols["transport"] = batch_plan(batch, space, dtype.type)
        if g is not None and spec.grad_wrt == "input":
            g = input_gradient(g, batch.x, batch.sx, spec.normalize)
        return cols, g

    return MetricRun({spec.column: dtype}, run)


def part_inputs(inputs):
    """[(dataset Part or None, the Inputs of that one file)]: one entry for a file, one
    per file of a dataset (PRED a directory or glob; a TARGET dataset paired file by file)."""
    from dataclasses import replace

    from ..io import dataset

    if not dataset.is_dataset(inputs.pred):
        if dataset.is_dataset(inputs.target):
            raise EMDInputError("is a dataset but PRED is one file", source=inputs.target,
                                hint="give PRED as a dataset too, or one TARGET file")
        return [(None, inputs)]
    pred_parts = dataset.parts(inputs.pred)
    if inputs.target is None:
        pairs = [(p, None) for p in pred_parts]
    elif not dataset.is_dataset(inputs.target):
        raise EMDInputError("is one file but PRED is a dataset", source=inputs.target,
                            hint="give TARGET as a dataset with one file per prediction file")
    else:
        pairs = dataset.paired(pred_parts, dataset.parts(inputs.target), inputs.pred, inputs.target)
    return [(p, replace(inputs, pred=p.path, target=t.path if t else None, partition=p.partition))
            for p, t in pairs]


def open_sources(inputs):
    """(prediction source, target source) — the same object when one file holds both —
    reading only ``inputs.rows`` when set. Partition keys named by ``--id-column`` or
    ``--group-by`` are not read from the file."""
    pred, target = _open_pair(inputs)
    if inputs.rows:
        for src in {id(pred): pred, id(target): target}.values():
            src.window(*inputs.rows)
    return pred, target


def _open_pair(inputs):
    keys = dict(inputs.partition)
    pred = open_input(
        inputs.pred, "pred", column=inputs.pred_column,
        target_column=None if inputs.target else inputs.target_column,
        id_column=None if inputs.id_column in keys else inputs.id_column,
        group_column=None if inputs.group_by in keys else inputs.group_by,
    )
    try:
        if inputs.target is None:
            if not pred.has("target"):
                raise EMDInputError(
                    "no targets", source=pred.name,
                    hint="give a TARGET file, or --target-column naming a column of this file",
                )
            return pred, pred
        if inputs.target == "-" and inputs.pred == "-":
            raise EMDInputError("only one input can come from standard input", source="-")
        target = open_input(inputs.target, "target", target_column=inputs.target_column)
    except BaseException:
        pred.close()
        raise
    if target.n_rows != pred.n_rows:
        pred.close()
        target.close()
        raise EMDInputError(
            f"has {target.n_rows} rows but {pred.name} has {pred.n_rows}", source=target.name,
            hint="give one target per prediction row",
        )
    return pred, target


def build_space(spec, pred, target, warn):
    """The Tree or Ground of ``spec``, or None for a chain (built once the width is known).

    With a tree, Parquet bin columns named after tree nodes are matched by name and read
    in the tree's bin order (``--bins``, else the nodes' order in the tree file).
    """
    from .. import treefiles
    from ..io import load_ground

    if spec.ground:
        ground = Ground.from_matrix(load_ground(spec.ground), source=spec.ground)
        for note in ground.notes:
            warn(f"{spec.ground}: {note}")
        return ground
    if not spec.tree:
        return None
    bins = treefiles.read_bins(spec.bins) if spec.bins else None
    tree = treefiles.load_tree(spec.tree, bins=bins, weight_column=spec.tree_weights)
    named = []  # (source, role, column names) of inputs whose bin columns name nodes
    for src, role in ((pred, "pred"), (target, "target")):
        layout = src.roles.get(role, (None,))[0]
        if layout == "columns" and set(src.bin_names) & set(tree.names):
            named.append((src, role, src.bin_names))
    if named and bins is None:
        src, _, names = named[0]
        try:
            tree = tree.with_bins(tree.in_file_order(names))
        except EMDInputError as e:
            raise EMDInputError(
                e.message.replace("bin ", "column ", 1), source=src.name,
                hint="bin columns must be named after tree nodes",
            ) from None
    for src, role, _ in named:
        src.order_bins(role, tree.bin_names)
    return tree


def batch_rows(pred, target, fixed=None):
    """Rows per batch: ``fixed``, else about :data:`BATCH_BYTES` per (B, N) float64 array
    whatever the width, down to one row."""
    if fixed:
        return fixed
    row_bytes = max(8 * max(pred.width or 0, target.width or 0, 1), pred.row_bytes,
                    target.row_bytes)
    return max(1, BATCH_BYTES // row_bytes)


def aligned_batches(pred, target, size, reuse=False):
    """Yield (offset, pred rows, target rows, ids or None, groups or None) in chunks of
    ``size`` rows; with ``reuse`` a batch is overwritten once the next one is asked for."""
    carried = [r for r in ("id", "group") if pred.has(r)]
    roles = ["pred", "target"] + carried
    if target is pred:
        chunks = pred.batches(size, roles, reuse, exact=False)  # nothing to line up with
    else:
        chunks = ({**a, **b} for a, b in zip(pred.batches(size, roles[:1] + roles[2:], reuse),
                                             target.batches(size, ["target"], reuse)))
    offset = 0
    for chunk in chunks:
        yield offset, chunk["pred"], chunk["target"], chunk.get("id"), chunk.get("group")
        offset += len(chunk["pred"])


def partition_column(inputs, column, n):
    """The partition value of ``column`` for ``n`` rows, or None if it is no partition key."""
    keys = dict(inputs.partition)
    return np.full(n, keys[column], dtype=object) if column in keys else None


def positions_name(spec):
    """How to name ``--positions`` in messages: the file, or the option and its list."""
    if spec is None or os.path.exists(spec):
        return spec
    return f"--positions {spec}"


def open_sinks(plan, metric, n_rows, stdout, console, space=None):
    """The :class:`~emdcli.io.sinks.Sinks` of the plan's outputs (files created now);
    ``space()`` gives the job's space once it is known (flows and plans name by it)."""
    out, id_name = plan.outputs, plan.inputs.id_column or "row"
    dtypes = {**metric.columns, "gradient": np.dtype(plan.metric.dtype)}
    columns = [id_name, *metric.columns]
    made = []
    try:
        if out.output:
            made.append(sinks.FileSink(out.output, out.fmt, columns, dtypes, n_rows))
        else:
            title = f"{metric.value} of {os.path.basename(plan.inputs.pred)}"
            made.append(sinks.StreamSink(stdout, out.fmt, columns, console, title, dtypes))
        if out.gradient:
            gfmt = os.path.splitext(out.gradient)[1].lower()[1:]
            made.append(sinks.FileSink(out.gradient, gfmt, [id_name, "gradient"], dtypes, n_rows))
        if out.flows or out.transport:
            from ..io.transport_sinks import FlowsSink, PlanSink
            from ..transport import flow_names

            dtype = dtypes["gradient"]
            if out.flows:
                made.append(FlowsSink(out.flows, id_name, dtype, n_rows,
                                      lambda: flow_names(space())))
            if out.transport:
                made.append(PlanSink(out.transport, id_name, dtype,
                                     lambda: getattr(space(), "bin_names", None)))
    except BaseException:
        sinks.Sinks(made).abort()
        raise
    return sinks.Sinks(made)


@dataclass
class _Job:
    """What stays the same over a job's parts: the plan, its metric, the space (built
    from the first part), the sinks, the summary and the timing."""

    plan: object
    metric: MetricRun
    space: object
    sinks: object
    summary: object
    timing: object
    progress: object = None
    first: object = None  # the first part's prediction source name and width


def run(plan, *, stdout=None, console=None, progress=None, warn=print, clock_gpu=False):
    """Run ``plan`` (its inputs a file or a dataset: every part into the same outputs);
    returns the :class:`report.Summary` (or ``Grouped``) of the distances, its ``timing``
    a :class:`report.Timing` (with the GPU launchers' phases when ``clock_gpu`` and the
    job runs on CUDA: that synchronises the GPU around each phase).

    ``progress`` (optional): ``start(n_rows)``, ``advance(n)`` and ``note(line)`` (said
    once, e.g. that kernels are about to compile); ``warn(message)`` for warnings."""
    started = time.perf_counter()
    metric = make_metric(plan.metric)
    clock = _gpu_clock(plan.metric.device, clock_gpu)
    work = part_inputs(plan.inputs)
    sources = open_sources(work[0][1])
    summary = report.new_summary(metric.value, plan.inputs.group_by, plan.outputs.statistics)
    job = _Job(plan, metric, None, None, summary, report.Timing(), progress)
    try:
        try:
            job.space = build_space(plan.space, *sources, warn)
            if job.space is None and (plan.outputs.flows or plan.outputs.transport):
                job.space = _early_chain(plan.space, sources[0])  # they name its gaps
            n_rows = sources[0].n_rows if len(work) == 1 else count_rows(work, sources)
            job.sinks = open_sinks(plan, metric, n_rows, stdout, console, lambda: job.space)
            size = batch_rows(*sources, plan.inputs.batch_rows)
            width = sources[0].width or (job.space.n if job.space is not None else 0)
            twins, line = numpy_job(plan, sources[0], min(size, n_rows), width, n_rows,
                                    notice=progress is not None)
        except BaseException:
            close_pair(*sources)
            raise
        if line and progress:  # (-q: no progress, nothing said)
            progress.note(line)
        if progress:
            progress.start(n_rows)
        with clock as gpu_seconds, numpy_twins_job(twins):
            offset = 0
            for k, (_, inputs) in enumerate(work):
                offset = _run_part(job, inputs, sources if k == 0 else None, offset)
        job.timing.gpu = None if gpu_seconds is None else dict(gpu_seconds)
        t = time.perf_counter()
        job.sinks.commit(width=_width(job))
        job.timing.write += time.perf_counter() - t
    except sinks.StdoutClosed:
        job.sinks.abort()
        files = job.sinks.files
        if files:
            raise OutputError(
                "closed before every row was written (by the reader); "
                f"so {', '.join(files)} {'was' if len(files) == 1 else 'were'} not written",
                source="standard output") from None
        raise
    except BaseException:
        if job.sinks is not None:
            job.sinks.abort()
        raise
    job.timing.wall = time.perf_counter() - started
    job.summary.timing = job.timing
    return job.summary


def _early_chain(spec, pred):
    """The chain of a job whose width the file says (else None: built at the first
    batch), so that outputs named by its gaps exist even when no row comes."""
    if not pred.width:
        return None
    try:
        positions = read_positions(spec.positions) if spec.positions else None
        return Chain.for_width(positions, pred.width)
    except EMDInputError as e:
        e.source = positions_name(spec.positions) if e.source == "positions" else e.source
        raise


def _width(job):
    """The bins per row: the space's, else (no row read yet) the first file's."""
    if job.space is not None:
        return job.space.n
    return (job.first[1] or 0) if job.first else 0


def close_pair(pred, target):
    pred.close()
    if target is not pred:
        target.close()


def count_rows(work, first):
    """Rows in all parts of a dataset (each file's header or footer read)."""
    total = first[0].n_rows
    for _, inputs in work[1:]:
        pred, target = open_later(inputs, first[0].name)
        total += pred.n_rows
        close_pair(pred, target)
    return total


_COLUMN_ERRORS = ("no targets", "no column", "several list columns", "no numeric")


def open_later(inputs, first):
    """:func:`open_sources` of a dataset's later file; an error about its columns says
    that ``first``, the dataset's first file, had them."""
    try:
        return open_sources(inputs)
    except EMDInputError as e:
        if first is not None and e.message.startswith(_COLUMN_ERRORS):
            e.hint = f"unlike {first}: every file of a dataset needs the same columns"
        raise


def _run_part(job, inputs, sources, offset):
    """Every batch of one file (or file pair) through the metric into the sinks; rows are
    numbered from ``offset``. Errors name this part's file and its row."""
    pred, target = sources or open_later(inputs, job.first[0] if job.first else None)
    spec = job.plan.space
    names = {"pred": pred.name, "target": target.name, "positions": positions_name(spec.positions)}
    base = offset + (inputs.rows[0] if inputs.rows else 0)  # a window's rows keep the file's numbers
    try:
        if job.first is None:
            job.first = (pred.name, pred.width)
        elif pred.width is not None and job.first[1] is not None and pred.width != job.first[1]:
            raise EMDInputError(f"has {pred.width} bins but {job.first[0]} has {job.first[1]}",
                                source=pred.name, hint="every file of a dataset needs the same bins")
        elif job.space is not None and not isinstance(job.space, (Chain, Ground)):
            align_bins(job.space, pred, target)
        positions = read_positions(spec.positions) if spec.positions else None
        size = batch_rows(pred, target, inputs.batch_rows)
        t_read = time.perf_counter()
        for start, p, q, ids, groups in aligned_batches(pred, target, size, reuse=True):
            t_compute = time.perf_counter()
            if job.space is None:
                job.space = Chain.for_width(positions, p.shape[1] if p.ndim == 2 else 0)
            try:
                cols, grads = job.metric.run(p, q, job.space)
            except EMDInputError as e:  # the row within the file
                first = start + (inputs.rows[0] if inputs.rows else 0)
                raise (e.shifted(first) if e.row is not None else e) from None
            t_write = time.perf_counter()
            n = len(cols[job.metric.value])
            id_name = inputs.id_column or "row"
            if ids is None:
                ids = partition_column(inputs, id_name, n)
            if ids is None:
                ids = np.arange(base + start, base + start + n)
            if groups is None and inputs.group_by:
                groups = partition_column(inputs, inputs.group_by, n)
            job.sinks.write({id_name: ids, **cols, "gradient": grads}, _width(job))
            job.summary.add(cols[job.metric.value], cols.get("sinkhorn_converged"),
                            *([groups] if inputs.group_by else []))
            job.timing.rows += n
            if job.progress:
                job.progress.advance(n)
            t_next = time.perf_counter()
            job.timing.read += t_compute - t_read
            job.timing.compute += t_write - t_compute
            job.timing.write += t_next - t_write
            t_read = t_next
        return offset + pred.n_rows
    except EMDInputError as e:
        e.source = names.get(e.source, e.source)
        raise
    finally:
        close_pair(pred, target)


def align_bins(tree, pred, target):
    """A later part's bin columns read in the tree's bin order (as the first part's)."""
    for src, role in ((pred, "pred"), (target, "target")):
        layout = src.roles.get(role, (None,))[0]
        if layout == "columns" and set(src.bin_names) & set(tree.names):
            src.order_bins(role, tree.bin_names)


def _gpu_clock(device, clock_gpu):
    """The GPU phase clock when asked for on a CUDA job, else a null context."""
    if device != "cpu" and clock_gpu:
        from .. import gpu

        if gpu.resolve_device(device) == "cuda":
            return gpu.clock_phases()
    return nullcontext(None)

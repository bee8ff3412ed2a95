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
from ..spaces import Chain, Ground

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

    from ..api import emd

    def run(p, q, space):
        out = emd(p, q, space=space, rho=spec.rho, **common)
        values, grads = out if spec.gradient else (out, None)
        return {spec.column: values}, grads

    return MetricRun({spec.column: dtype}, run)


def open_sources(inputs):
    """(prediction source, target source) — the same object when one file holds both."""
    pred = open_input(
        inputs.pred, "pred", column=inputs.pred_column,
        target_column=None if inputs.target else inputs.target_column,
        id_column=inputs.id_column,
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
    """Yield (offset, pred rows, target rows, ids or None) in chunks of ``size`` rows;
    with ``reuse`` a batch is overwritten once the next one is asked for."""
    roles = ["pred", "target"] + (["id"] if pred.has("id") else [])
    if target is pred:
        chunks = pred.batches(size, roles, reuse, exact=False)  # nothing to line up with
    else:
        chunks = ({**a, **b} for a, b in zip(pred.batches(size, roles[:1] + roles[2:], reuse),
                                             target.batches(size, ["target"], reuse)))
    offset = 0
    for chunk in chunks:
        yield offset, chunk["pred"], chunk["target"], chunk.get("id")
        offset += len(chunk["pred"])


def positions_name(spec):
    """How to name ``--positions`` in messages: the file, or the option and its list."""
    if spec is None or os.path.exists(spec):
        return spec
    return f"--positions {spec}"


def open_sinks(plan, metric, n_rows, stdout, console):
    """The :class:`~emdcli.io.sinks.Sinks` of the plan's outputs (files created now)."""
    out, id_name = plan.outputs, plan.inputs.id_column or "row"
    dtypes = {**metric.columns, "gradient": np.dtype(plan.metric.dtype)}
    columns = [id_name, *metric.columns]
    made = []
    try:
        if out.output:
            made.append(sinks.FileSink(out.output, out.fmt, columns, dtypes, n_rows))
        else:
            title = f"{metric.value} of {os.path.basename(plan.inputs.pred)}"
            made.append(sinks.StreamSink(stdout, out.fmt, columns, console, title))
        if out.gradient:
            gfmt = os.path.splitext(out.gradient)[1].lower()[1:]
            made.append(sinks.FileSink(out.gradient, gfmt, [id_name, "gradient"], dtypes, n_rows))
    except BaseException:
        sinks.Sinks(made).abort()
        raise
    return sinks.Sinks(made)


def run(plan, *, stdout=None, console=None, progress=None, warn=print, clock_gpu=False):
    """Run ``plan``; returns the :class:`report.Summary` of the distances, its ``timing``
    a :class:`report.Timing` (with the GPU launchers' phases when ``clock_gpu`` and the
    job runs on CUDA: that synchronises the GPU around each phase).

    ``progress`` (optional): ``start(n_rows)``, ``advance(n)`` and ``note(line)`` (said
    once, e.g. that kernels are about to compile); ``warn(message)`` for warnings."""
    started = time.perf_counter()
    timing = report.Timing()
    metric = make_metric(plan.metric)
    clock = _gpu_clock(plan.metric.device, clock_gpu)
    spec = plan.space
    positions = read_positions(spec.positions) if spec.positions else None
    pred, target = open_sources(plan.inputs)
    names = {"pred": pred.name, "target": target.name, "positions": positions_name(spec.positions)}
    summary = report.Summary(metric.value)
    out = None
    try:
        space = build_space(spec, pred, target, warn)
        out = open_sinks(plan, metric, pred.n_rows, stdout, console)
        size = batch_rows(pred, target, plan.inputs.batch_rows)
        width = pred.width or (space.n if space is not None else 0)
        line = compile_notice(plan, pred, min(size, pred.n_rows), width) if progress else None
        if line:
            progress.note(line)
        if progress:
            progress.start(pred.n_rows)
        with clock as gpu_seconds:
            t_read = time.perf_counter()
            for offset, p, q, ids in aligned_batches(pred, target, size, reuse=True):
                t_compute = time.perf_counter()
                width = p.shape[1] if p.ndim == 2 else 0
                if space is None:
                    space = (Chain.uniform(width) if positions is None
                             else Chain.from_positions(positions, width))
                try:
                    cols, grads = metric.run(p, q, space)
                except EMDInputError as e:
                    raise (e.shifted(offset) if e.row is not None else e) from None
                t_write = time.perf_counter()
                n = len(cols[metric.value])
                if ids is None:
                    ids = np.arange(offset, offset + n)
                out.write({plan.inputs.id_column or "row": ids, **cols, "gradient": grads}, width)
                summary.add(cols[metric.value], cols.get("sinkhorn_converged"))
                timing.rows += n
                if progress:
                    progress.advance(n)
                t_next = time.perf_counter()
                timing.read += t_compute - t_read
                timing.compute += t_write - t_compute
                timing.write += t_next - t_write
                t_read = t_next
        timing.gpu = None if gpu_seconds is None else dict(gpu_seconds)
        t = time.perf_counter()
        out.commit(width)
        timing.write += time.perf_counter() - t
    except sinks.StdoutClosed:
        out.abort()
        if out.files:
            raise OutputError(
                "closed before every row was written (by the reader); "
                f"so {', '.join(out.files)} {'was' if len(out.files) == 1 else 'were'} not written",
                source="standard output") from None
        raise
    except EMDInputError as e:
        if out is not None:
            out.abort()
        e.source = names.get(e.source, e.source)
        raise
    except BaseException:
        if out is not None:
            out.abort()
        raise
    finally:
        pred.close()
        if target is not pred:
            target.close()
    timing.wall = time.perf_counter() - started
    summary.timing = timing
    return summary


def compile_notice(plan, pred, rows, width):
    """The line saying that this job's kernels are about to compile (once per install),
    or None when Numba's cache has them (:func:`emdcli.warmup.notice`)."""
    from ..warmup import notice

    m = plan.metric
    if m.device != "cpu" or not pred.n_rows:
        return None
    s = m.sinkhorn
    return notice(plan.space.kind, m.dtype, metric=m.metric, form=s.get("form", "plain"),
                  gradient=m.gradient, kernel=s.get("kernel", "auto"), rows=rows,
                  input_dtype=getattr(pred, "dtype", None), bins=width or None, rho=m.rho)


def _gpu_clock(device, clock_gpu):
    """The GPU phase clock when asked for on a CUDA job, else a null context."""
    if device != "cpu" and clock_gpu:
        from .. import gpu

        if gpu.resolve_device(device) == "cuda":
            return gpu.clock_phases()
    return nullcontext(None)

"""The streaming job behind ``emd compute``: files → batches → library → writers.

It reads aligned batches of predictions and targets, calls :func:`emdcli.api.emd` on
each, and writes rows (and gradients) as they come. Errors come back as
:class:`EMDInputError` naming the file and the absolute row.
"""

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from . import io, report, treefiles
from .api import emd
from .errors import EMDInputError
from .spaces import Chain, Ground

METRICS = {
    "emd": ("emd", 1.0), "emd2": ("emd2", 2.0), "emd-rho": ("emd_rho", None),
    "sinkhorn": ("sinkhorn", None),
}
GRADIENT_FORMATS = (".npy", ".parquet")
TARGET_ELEMENTS = 1 << 21  # default batch: about 2M values (16 MB at float64) per array


@dataclass
class ComputeJob:
    """Everything ``emd compute`` was asked to do."""

    pred: str
    target: str | None = None
    metric: str = "emd"
    rho: float | None = None
    positions: str | None = None
    tree: str | None = None
    bins: str | None = None
    tree_weights: str | None = None
    ground: str | None = None
    normalize: str = "l1"
    dtype: str = "float64"
    pred_column: str | None = None
    target_column: str | None = None
    id_column: str | None = None
    gradient: str | None = None
    grad_wrt: str = "distribution"
    output: str | None = None
    fmt: str | None = None
    batch_size: int | None = None
    lam: float | None = None
    iters: int | None = None
    tol: float | None = None
    sinkhorn_form: str | None = None
    sinkhorn_kernel: str | None = None
    device: str = "cpu"


@dataclass
class MetricRun:
    """What one metric writes: ``columns`` (name → dtype, the value column first) and
    ``run(p, q, space) → (columns dict, gradients or None)``."""

    columns: dict
    run: object

    @property
    def value(self):
        return next(iter(self.columns))


def make_metric(job):
    """The :class:`MetricRun` of ``--metric`` and its options."""
    column, rho = metric_rho(job.metric, job.rho)
    dtype = np.dtype(job.dtype)
    common = dict(normalize=job.normalize, dtype=dtype, gradient=bool(job.gradient),
                  grad_wrt=job.grad_wrt, device=job.device)
    sinkhorn_options = {"--lam": job.lam, "--iters": job.iters, "--tol": job.tol,
                        "--sinkhorn-form": job.sinkhorn_form,
                        "--sinkhorn-kernel": job.sinkhorn_kernel}
    if job.metric != "sinkhorn":
        given = [k for k, v in sinkhorn_options.items() if v is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise EMDInputError(f"{', '.join(given)} {verb} only to --metric sinkhorn")
    else:
        from .sinkhorn import DEFAULT_TOL, check_params, sinkhorn

        if job.lam is None:
            raise EMDInputError("--metric sinkhorn needs --lam (λ > 0; POT's reg is 1/λ)")
        iters = 100 if job.iters is None else job.iters
        tol = DEFAULT_TOL[dtype.type] if job.tol is None else job.tol
        form, kernel = job.sinkhorn_form or "plain", job.sinkhorn_kernel or "auto"
        check_params(job.lam, iters, tol, form, kernel)
        if kernel == "structured" and job.ground:
            raise EMDInputError("--sinkhorn-kernel structured needs a chain or a tree",
                                hint="use --sinkhorn-kernel dense (or auto) with --ground")

        def run(p, q, space):
            r = sinkhorn(p, q, space=space, lam=job.lam, iters=iters, tol=tol,
                         form=form, kernel=kernel, **common)
            cols = {"sinkhorn": r.values, "sinkhorn_iterations": r.iterations,
                    "sinkhorn_converged": r.converged}
            return cols, r.gradient

        cols = {"sinkhorn": dtype, "sinkhorn_iterations": np.dtype(np.int64),
                "sinkhorn_converged": np.dtype(bool)}
        return MetricRun(cols, run)

    def run(p, q, space):
        out = emd(p, q, space=space, rho=rho, **common)
        values, grads = out if job.gradient else (out, None)
        return {column: values}, grads

    return MetricRun({column: dtype}, run)


def metric_rho(metric, rho):
    """(column name, rho) for ``--metric``/``--rho``."""
    if metric not in METRICS:
        raise EMDInputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    column, fixed = METRICS[metric]
    if metric == "sinkhorn":
        if rho is not None:
            raise EMDInputError("--rho does not apply to --metric sinkhorn")
        return column, 1.0
    if fixed is None:
        if rho is None:
            raise EMDInputError("--metric emd-rho needs --rho R (R >= 1)")
        return column, float(rho)
    if rho is not None and float(rho) != fixed:
        raise EMDInputError(f"--rho {rho} conflicts with --metric {metric}; use --metric emd-rho")
    return column, fixed


def open_sources(job):
    """(prediction Source, target Source) — the same object when one file holds both."""
    pred = io.open_input(
        job.pred, "pred", column=job.pred_column,
        target_column=None if job.target else job.target_column, id_column=job.id_column,
    )
    if job.target is None:
        if not pred.has("target"):
            raise EMDInputError(
                "no targets", source=pred.name,
                hint="give a TARGET file, or --target-column naming a column of this file",
            )
        return pred, pred
    if job.target == "-" and job.pred == "-":
        raise EMDInputError("only one input can come from standard input", source="-")
    target = io.open_input(job.target, "target", target_column=job.target_column)
    if target.n_rows != pred.n_rows:
        raise EMDInputError(
            f"has {target.n_rows} rows but {pred.name} has {pred.n_rows}", source=target.name,
            hint="give one target per prediction row",
        )
    return pred, target


def build_space(job, pred, target, warn):
    """The Tree or Ground of ``job``, or None for a chain (built once the width is known).

    With a tree, Parquet bin columns named after tree nodes are matched by name and read
    in the tree's bin order (``--bins``, else the nodes' order in the tree file).
    """
    given = [f for f, v in (("--positions", job.positions), ("--tree", job.tree),
                            ("--ground", job.ground)) if v]
    if len(given) > 1:
        raise EMDInputError(f"{' and '.join(given)} both describe the space; give one")
    for flag, value in (("--bins", job.bins), ("--tree-weights", job.tree_weights)):
        if value and not job.tree:
            raise EMDInputError(f"{flag} needs --tree")
    if job.ground:
        ground = Ground.from_matrix(io.load_ground(job.ground), source=job.ground)
        for note in ground.notes:
            warn(f"{job.ground}: {note}")
        return ground
    if not job.tree:
        return None
    bins = treefiles.read_bins(job.bins) if job.bins else None
    tree = treefiles.load_tree(job.tree, bins=bins, weight_column=job.tree_weights)
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


def aligned_batches(pred, target, size):
    """Yield (offset, pred rows, target rows, ids or None) in chunks of ``size`` rows."""
    roles = ["pred", "target"] + (["id"] if pred.has("id") else [])
    if target is pred:
        chunks = pred.batches(size, roles)
    else:
        chunks = (
            {**a, **b}
            for a, b in zip(pred.batches(size, roles[:1] + roles[2:]), target.batches(size, ["target"]))
        )
    offset = 0
    for chunk in chunks:
        yield offset, chunk["pred"], chunk["target"], chunk.get("id")
        offset += len(chunk["pred"])


def _open_writer(path, fmt, columns, n_rows, dtypes, stdout, console, title, width=None):
    """A writer and, for files, the AtomicPath it writes to."""
    if path and path != "-":
        atomic = report.AtomicPath(path)
        if fmt == "parquet":
            return report.ParquetWriter(atomic.tmp, columns, dtypes, width), atomic
        if fmt == "npy":
            cols = columns[1:] if width is None else columns[-1:]
            return report.NpyWriter(atomic.tmp, cols, n_rows, dtypes, width), atomic
        stream = open(atomic.tmp, "w", newline="")
        writer = report.TextWriter(stream, fmt, columns)
        writer.close = lambda: stream.close()
        return writer, atomic
    if fmt == "table":
        return report.TableWriter(console, columns, title), None
    return report.TextWriter(stdout, fmt, columns), None


def check_paths(job):
    """Refuse unwritable or clashing output paths before any work is done."""
    for flag, path in (("--output", job.output), ("--gradient", job.gradient)):
        if path and path != "-":
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise EMDInputError(f"folder {folder!r} does not exist", source=flag)
    if job.gradient:
        if os.path.splitext(job.gradient)[1].lower() not in GRADIENT_FORMATS:
            raise EMDInputError(
                f"gradients are written to {' or '.join(GRADIENT_FORMATS)} files",
                source="--gradient",
            )
        if job.output and os.path.abspath(job.output) == os.path.abspath(job.gradient):
            raise EMDInputError("--output and --gradient name the same file", source="--gradient")


def run_compute(job, *, stdout, console, stdout_is_tty=False, progress=None, warn=print,
                clock_gpu=False):
    """Run ``job``; returns the :class:`report.Summary` of the distances, its ``timing``
    a :class:`report.Timing` (with the GPU launchers' phases when ``clock_gpu`` and the
    job runs on CUDA: that synchronises the GPU around each phase)."""
    started = time.perf_counter()
    timing = report.Timing()
    metric = make_metric(job)
    clock = nullcontext(None)
    if job.device != "cpu":
        from . import gpu

        if clock_gpu and gpu.resolve_device(job.device) == "cuda":
            clock = gpu.clock_phases()
    fmt = report.output_format(job.output, job.fmt, stdout_is_tty)
    check_paths(job)
    positions = io.read_positions(job.positions) if job.positions else None
    pred, target = open_sources(job)
    names = {"pred": pred.name, "target": target.name, "positions": _positions_name(job.positions)}
    space = build_space(job, pred, target, warn)
    size = job.batch_size or max(1024, min(65536, TARGET_ELEMENTS // max(pred.width or 32, 1)))
    id_name = job.id_column or "row"
    summary = report.Summary(metric.value)
    writers, atomics = [], []
    if progress:
        progress.start(pred.n_rows)
    try:
        with clock as gpu_seconds:
            for offset, p, q, ids, read_s in _timed(aligned_batches(pred, target, size)):
                timing.read += read_s
                t = time.perf_counter()
                n = p.shape[1] if p.ndim == 2 else 0
                try:
                    if space is None:
                        space = (Chain.uniform(n) if positions is None
                                 else Chain.from_positions(positions, n))
                    cols, grads = metric.run(p, q, space)
                except EMDInputError as e:
                    raise (e.shifted(offset) if e.row is not None else e) from None
                timing.compute += time.perf_counter() - t
                t = time.perf_counter()
                _write_batch(job, fmt, metric, id_name, pred.n_rows, n, offset, ids, cols, grads,
                             writers, atomics, stdout, console)
                summary.add(cols[metric.value], cols.get("sinkhorn_converged"))
                timing.rows += len(cols[metric.value])
                timing.write += time.perf_counter() - t
                if progress:
                    progress.advance(len(cols[metric.value]))
        timing.gpu = None if gpu_seconds is None else dict(gpu_seconds)
        t = time.perf_counter()
        if not writers:  # no rows at all
            width = pred.width or (space.n if space is not None else 0)
            writers[:], atomics[:] = _start(job, fmt, metric, id_name, 0, width, stdout, console)
        for w in writers:
            w.close()
        for a in atomics:
            a.commit()
        timing.write += time.perf_counter() - t
    except EMDInputError as e:
        _abort(writers, atomics)
        e.source = names.get(e.source, e.source)
        raise
    except BaseException:
        _abort(writers, atomics)
        raise
    timing.wall = time.perf_counter() - started
    summary.timing = timing
    return summary


def _timed(batches):
    """The batches with the seconds spent reading each appended."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield (*batch, time.perf_counter() - t)


def _write_batch(job, fmt, metric, id_name, n_rows, width, offset, ids, cols, grads, writers,
                 atomics, stdout, console):
    """Write one batch's rows (and gradients), opening the writers on the first batch
    (they fill ``writers`` and ``atomics`` in place)."""
    if ids is None:
        ids = np.arange(offset, offset + len(cols[metric.value]))
    if not writers:
        writers[:], atomics[:] = _start(job, fmt, metric, id_name, n_rows, width, stdout, console)
    batch = {id_name: ids, **cols, "gradient": grads}
    for w in writers:
        w.write(batch)


def _positions_name(spec):
    if spec is None or os.path.exists(spec):
        return spec
    return f"--positions {spec}"


def _start(job, fmt, metric, id_name, n_rows, width, stdout, console):
    dtypes = {**metric.columns, "gradient": np.dtype(job.dtype)}
    title = f"{metric.value} of {os.path.basename(job.pred)}"
    columns = [id_name, *metric.columns]
    w, a = _open_writer(job.output, fmt, columns, n_rows, dtypes, stdout, console, title)
    writers, atomics = [w], [a]
    if job.gradient:
        gfmt = os.path.splitext(job.gradient)[1].lower()[1:]
        g, ga = _open_writer(job.gradient, gfmt, [id_name, "gradient"], n_rows, dtypes, stdout,
                             console, title, width=width)
        writers.append(g)
        atomics.append(ga)
    return writers, [a for a in atomics if a is not None]


def _abort(writers, atomics):
    for w in writers:
        try:
            getattr(w, "discard", w.close)()
        except Exception:  # noqa: BLE001 - best effort before deleting the file
            pass
    for a in atomics:
        a.abort()

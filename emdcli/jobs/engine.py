"""Dataset jobs: one Parquet part per input file, on the local engine or on Dask.

Every part runs :func:`run_part` — :func:`~.run.run` of a plan whose inputs are one file
(pair) and whose output is that file's part — in this process (``local``) or as one Dask
task per file (``dask``): the same function, not a second implementation. Parts are
written to a temporary name and renamed on success, so a retried task (a worker that
died) leaves every row exactly once. The summaries of the parts merge in file order
(exactly while the values fit, else moments and sketches). A failed job removes every
part it wrote, and the folders it made.
"""

import json
import os
import time
from dataclasses import dataclass, field, replace

from .. import report
from ..errors import EMDInputError
from ..io import dataset
from ..io.atomic import output_error, write_text
from .plan import Outputs
from .run import part_inputs, run

SUMMARY_FILE = "_summary.json"
CONNECT_TIMEOUT = 10  # seconds to reach a --scheduler before giving up
TASK_BYTES = 256 << 20  # a file larger than this is split into tasks of about this size
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """``256M``, ``1.5G``, ``4096`` → bytes (``--task-size``)."""
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)]) * _UNITS[unit]
    except ValueError:
        value = 0
    if not value >= 1:
        raise EMDInputError(f"--task-size {text!r} is not a size (e.g. 256M, 1G)")
    return int(value)


@dataclass(frozen=True)
class Engine:
    """Where parts run: ``local`` (one after another, here) or ``dask`` (``scheduler``
    an address to join, else a local cluster of ``workers`` processes)."""

    kind: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    task_bytes: int = TASK_BYTES

    def __post_init__(self):
        if self.kind not in ("local", "dask"):
            raise EMDInputError(f"--engine {self.kind!r} is unknown; choose local or dask")
        if self.kind == "local" and (self.scheduler or self.workers):
            flag = "--scheduler" if self.scheduler else "--workers"
            raise EMDInputError(f"{flag} needs --engine dask")
        if self.workers is not None and self.workers < 1:
            raise EMDInputError(f"--workers must be >= 1, got {self.workers}")
        if self.scheduler and self.workers:
            raise EMDInputError("--scheduler joins a cluster; --workers starts one: give one")
        if self.task_bytes < 1:
            raise EMDInputError(f"--task-size must be at least 1 byte, got {self.task_bytes}")


@dataclass
class PartResult:
    """What one part's task sends back: its output file(s), rows, summary, warnings."""

    files: list
    rows: int
    summary: object
    seconds: float
    warnings: list = field(default_factory=list)


def run_part(plan):
    """Run the one-file ``plan`` into its part (a plain function: a Dask task)."""
    warnings = []
    summary = run(plan, warn=warnings.append)
    files = [f for f in (plan.outputs.output, plan.outputs.gradient) if f]
    return PartResult(files, summary.timing.rows, summary, summary.timing.wall, warnings)


def part_plans(plan, task_bytes=TASK_BYTES):
    """[(output part path, the plan of that part)] of a folder-output plan, in file order:
    one per input file, or per window of about ``task_bytes`` of a larger Parquet or NPY
    file (``stem.00000.parquet``, …; rows keep their numbers within the file)."""
    outs = plan.outputs
    plans, seen = [], {}
    for part, inputs in part_inputs(plan.inputs):
        part = part or dataset.Part(inputs.pred, os.path.basename(inputs.pred))
        spans = None
        if inputs.pred != "-" and os.path.isfile(inputs.pred) and inputs.target != "-":
            spans = dataset.windows(inputs.pred, task_bytes)
        for k, rows in enumerate(spans or [None]):
            piece = None if spans is None else k
            out = dataset.output_part(outs.output, part, piece)
            if out in seen:
                raise EMDInputError(f"and {seen[out]} would both write {out}", source=inputs.pred,
                                    hint="give the files of a dataset different names")
            seen[out] = inputs.pred
            grad = dataset.output_part(outs.gradient, part, piece) if outs.gradient else None
            part_out = Outputs(fmt="parquet", output=out, gradient=grad)
            plans.append((out, replace(plan, inputs=replace(inputs, rows=rows), outputs=part_out)))
    return plans


def compute_dataset(pred, target=None, *, output, engine="local", scheduler=None, workers=None,
                    metric="emd", rho=None, space=None, columns=None, summary=None,
                    normalize="l1", dtype="float64", warn=print):
    """Compute a dataset (a directory, glob or hive tree of .parquet/.npy files, or one
    file) into the Parquet dataset folder ``output`` — one part per input file, plus
    ``_summary.json`` — on the ``local`` engine or on ``dask`` (``scheduler`` an address,
    else a local cluster of ``workers`` processes). Returns the merged summary.

    metric, rho: as ``emd compute --metric/--rho`` (``"emd"``, ``"emd2"``, ``"emd-rho"``).
    space: a dict of ``emd compute``'s space options (``positions``, ``tree``, ``bins``,
    ``tree_weights``, ``ground``: file paths). columns: a dict of ``pred_column``,
    ``target_column``, ``id_column``, ``group_by``. summary: also write the summary to
    this .csv or .json file.
    """
    from .plan import Inputs, make_plan, metric_spec, outputs, space_spec

    folder = output if dataset.is_folder_output(output) else output + os.sep
    plan = make_plan(Inputs(pred, target, **(columns or {})), space_spec(**(space or {})),
                     metric_spec(metric, rho, normalize=normalize, dtype=dtype),
                     outputs(folder, summary=summary))
    return run_dataset(plan, Engine(engine, scheduler, workers), warn=warn)


def run_dataset(plan, engine=Engine(), *, progress=None, warn=print):
    """Run the folder-output ``plan`` on ``engine``; returns the merged summary (a
    :class:`report.Summary`, or ``Grouped`` with ``--group-by``) after writing every part,
    ``_summary.json`` and (``plan.outputs.summary``) the summary file."""
    started = time.perf_counter()
    plans = part_plans(plan, engine.task_bytes)
    made = _make_folders(plan.outputs, plans)
    summary = report.new_summary(plan.metric.column, plan.inputs.group_by, plan.outputs.statistics)
    timing = report.Timing()
    results = {}
    try:
        if progress:
            progress.start(len(plans))
        merged = 0
        for i, result in _map(engine, [p for _, p in plans], plan):
            results[i] = result
            for w in dict.fromkeys(result.warnings):
                warn(w)
            while merged in results:  # in file order: the same summary whatever the order
                summary.merge(results[merged].summary)
                timing.rows += results[merged].rows
                timing.compute += results[merged].seconds
                results[merged] = None
                merged += 1
            if progress:
                progress.advance(1)
        timing.wall = time.perf_counter() - started
        summary.timing = timing
        _sweep(plans)
        doc = {"engine": engine.kind, "rows": timing.rows,
               "parts": [os.path.relpath(out, plan.outputs.output) for out, _ in plans]}
        text = json.dumps(report.summary_doc(summary, doc), indent=2) + "\n"
        write_text(os.path.join(plan.outputs.output, SUMMARY_FILE), text)
        if plan.outputs.summary:
            report.write_summary(plan.outputs.summary, summary)
    except BaseException:
        _remove(plan.outputs.output, plans, made)
        raise
    return summary


def _map(engine, plans, plan):
    """Yield (index, PartResult) as parts finish."""
    if engine.kind == "local":
        for i, p in enumerate(plans):
            yield i, run_part(p)
        return
    from .dask import map_parts

    yield from map_parts(engine, plans, plan)


def _make_folders(outs, plans):
    """Make the output folders (the dataset's partition folders too); returns those made."""
    made = []
    folders = {os.path.dirname(p.outputs.output) for _, p in plans}
    folders |= {os.path.dirname(p.outputs.gradient) for _, p in plans if p.outputs.gradient}
    for folder in sorted(folders | {outs.output} | ({outs.gradient} if outs.gradient else set())):
        missing = []
        f = os.path.abspath(folder)
        while not os.path.isdir(f):
            missing.append(f)
            f = os.path.dirname(f)
        for m in reversed(missing):
            try:
                os.mkdir(m)
            except FileExistsError:
                continue
            except OSError as e:
                _rmdirs(made)
                raise output_error(m, e) from None
            made.append(m)
    return made


def _rmdirs(made):
    for m in reversed(made):
        try:
            os.rmdir(m)
        except OSError:
            pass


def _sweep(plans):
    """Remove temporary files left beside the parts by tasks that died mid-write (a
    retried task wrote its part again under the final name)."""
    for _, p in plans:
        for path in filter(None, (p.outputs.output, p.outputs.gradient)):
            folder, name = os.path.split(path)
            try:
                stray = [e for e in os.listdir(folder) if e.startswith(f".{name}.")]
            except OSError:
                continue
            for e in stray:
                try:
                    os.unlink(os.path.join(folder, e))
                except OSError:
                    pass


def _remove(root, plans, made):
    """After a failure: no part (nor a dead task's temporary file), no folder we made."""
    _sweep(plans)
    for _, p in plans:
        for path in filter(None, (p.outputs.output, p.outputs.gradient)):
            try:
                os.unlink(path)
            except OSError:
                pass
    try:
        os.unlink(os.path.join(root, SUMMARY_FILE))
    except OSError:
        pass
    _rmdirs(made)

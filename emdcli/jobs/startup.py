"""What a job pays before its first batch: Numba's kernels loaded from their cache, or
compiled (once per install), or neither, when numpy's twins of the kernels do the job for
less (:func:`numpy_job`). Reads the cache's index files only; loads no Numba."""

from .. import rows

# the twins' jobs: a chain's or a tree's EMD^rho, rho 1 or 2 (``kernels.small``,
# ``small_tree``), of rows taken as masses (an l1 normalisation or none: the twins give
# the kernels' bits; a softmax's exp need not round as the kernels' does)
_TWIN_METRICS = ("emd", "emd2", "emd-rho")


def _job(plan, pred, rows_, width):
    """:func:`emdcli.warmup.notice`'s arguments for ``plan`` (batches of ``rows_`` rows of
    ``width`` bins read from ``pred``)."""
    m = plan.metric
    s = m.sinkhorn
    return dict(space_kind=plan.space.kind, dtype=m.dtype, metric=m.metric,
                form=s.get("form", "plain"), gradient=m.gradient,
                kernel=s.get("kernel", "auto"), rows=rows_,
                input_dtype=getattr(pred, "dtype", None), bins=width or None, rho=m.rho,
                extras=tuple(e for e, on in (("flows", m.flows), ("plan", m.transport)) if on),
                normalize=m.normalize)


def compile_notice(plan, pred, rows_, width):
    """The line saying that this job's kernels are about to compile (once per install),
    or None when Numba's cache has them (:func:`emdcli.warmup.notice`)."""
    from ..warmup import notice_jobs

    if plan.metric.device != "cpu" or not pred.n_rows:
        return None
    return notice_jobs([_job(plan, pred, rows_, width)])


def numpy_job(plan, pred, rows_, width, n_rows, notice=False):
    """Whether the whole job goes through the kernels' numpy twins
    (:func:`emdcli.rows.numpy_twins_job`), and the line to say before it starts, or None
    (with ``notice``: the compile notice of a job for the kernels). A twins' job (above)
    on the CPU of at most ``rows.JOB_ELEMENTS`` values goes to them, and one of at most
    ``rows.COLD_JOB_ELEMENTS`` when its kernels are not compiled yet (then it says so), a
    tree's values counted ``rows.TWIN_COST`` times. The job's size: ``n_rows`` (every
    file's) × ``width``; its batches: ``rows_`` rows."""
    m = plan.metric
    kind = plan.space.kind
    values = (n_rows or 0) * (width or 0) * rows.TWIN_COST.get(kind, 0)
    if not (m.device == "cpu" and m.metric in _TWIN_METRICS
            and m.rho in (1.0, 2.0) and m.normalize != "softmax" and not m.flows
            and not m.transport and 0 < values <= rows.COLD_JOB_ELEMENTS):
        return False, compile_notice(plan, pred, rows_, width) if notice else None
    if values <= rows.JOB_ELEMENTS:
        return True, None
    from ..warmup import missing

    job = _job(plan, pred, rows_, width)
    if not missing(job.pop("space_kind"), job.pop("dtype"), **job):
        return False, None  # cached: the kernels load, nothing to say
    return True, ("numpy computes this job, with the same results as the kernels, which are "
                  "not compiled yet (`emd warmup` compiles them once, in seconds)")

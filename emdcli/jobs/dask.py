"""``--engine dask``: each part of a dataset job is one Dask task running
:func:`~.engine.run_part` (``pip install 'emdcli[dask]'``).

The client joins ``--scheduler ADDRESS`` or starts a local cluster of ``--workers N``
processes (one thread each: the kernels use the cores). A worker plugin loads the job's
kernels once per worker before its first task. A worker that dies mid-task is retried
by Dask; its part is written again under the same name. A task that fails (bad input)
stops the job: the tasks not yet run are cancelled, the running ones are waited for, and
the error is raised here as it was raised there.
"""

import logging
import os
import time
import uuid

from ..errors import EMDInputError
from .engine import CONNECT_TIMEOUT, run_part

SETTLE_TIMEOUT = 120  # seconds to wait for running tasks to end after a failure


def _distributed():
    try:
        import distributed
    except ImportError:
        raise EMDInputError("--engine dask needs Dask's distributed scheduler",
                            hint="pip install 'emdcli[dask]'") from None
    return distributed


def warm_plan(plan):
    """Load (or compile) the kernels ``plan`` runs, on tiny inputs past the small-batch
    numpy path: float32 and float64 rows (a file's dtype is not known yet), class and
    row targets, the plan's rho, dtype, normalisation and gradient. Sinkhorn: its
    :mod:`emdcli.warmup` group. Nothing for a ground matrix or a GPU."""
    m, kind = plan.metric, plan.space.kind
    if m.device != "cpu" or kind == "ground":
        return
    if m.metric == "sinkhorn":
        from ..warmup import warm

        warm(groups=[f"sinkhorn-{m.sinkhorn.get('form', 'plain')}-{m.dtype}"])
        return
    import numpy as np

    if m.metric == "wasserstein":
        from ..wasserstein import wasserstein

        p = np.random.default_rng(0).random((2, 4)) + 0.1
        wasserstein(p, p[::-1].copy(), p=m.power, gradient=m.gradient)
        return

    from ..api import emd
    from ..rows import SMALL_ELEMENTS
    from ..spaces import Chain, Tree

    space = (Chain.uniform(4) if kind == "chain" else
             Tree.from_edges(list("rabcd"), ["", "r", "r", "a", "a"]))
    n = SMALL_ELEMENTS // space.n + 1
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        p = (rng.random((n, space.n)) + 0.1).astype(dtype)
        for target in (rng.integers(0, space.n, n), p[::-1].copy()):
            emd(p, target, space=space, rho=m.rho, normalize=m.normalize, dtype=m.dtype,
                gradient=m.gradient, grad_wrt=m.grad_wrt)


def _plugin_class(distributed):
    class WarmKernels(distributed.WorkerPlugin):
        """Load (or compile) a job's kernels once per worker, before its first task."""

        name = "emdcli-warm-kernels"

        def __init__(self, plan):
            self.plan = plan

        def setup(self, worker):
            warm_plan(self.plan)

    return WarmKernels


def connect(engine):
    """(client, cluster or None) of ``engine``; a scheduler that does not answer within
    :data:`CONNECT_TIMEOUT` seconds is an error, not a hang."""
    distributed = _distributed()
    if engine.scheduler:
        try:
            client = distributed.Client(engine.scheduler, timeout=f"{CONNECT_TIMEOUT}s")
        except (OSError, TimeoutError, ValueError) as e:
            raise EMDInputError(
                f"cannot reach the Dask scheduler within {CONNECT_TIMEOUT} s ({type(e).__name__})",
                source=engine.scheduler, hint="is `dask scheduler` running there?") from None
        return client, None
    n = engine.workers or max(1, os.cpu_count() or 1)  # its logs stay quiet: errors come back here
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
    return distributed.Client(cluster), cluster


def map_parts(engine, plans, plan):
    """Yield (index, PartResult) of ``plans`` as their tasks finish on ``engine``."""
    distributed = _distributed()
    client, cluster = connect(engine)
    try:
        client.register_plugin(_plugin_class(distributed)(plan))
        token = uuid.uuid4().hex[:8]
        keys = [f"emd-part-{i}-{token}" for i in range(len(plans))]
        futures = client.map(run_part, plans, key=keys, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in distributed.as_completed(futures):
                yield index[future.key], future.result()
        except BaseException:
            _settle(client, futures, set(keys))
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _settle(client, futures, keys):
    """Cancel the tasks not yet run and wait until none of ``keys`` runs any more (a
    running task would still write its part after the job has removed the others)."""
    try:
        client.cancel(futures)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            busy = {k for ks in client.processing().values() for k in ks}
            if not busy & keys:
                return
            time.sleep(0.05)
    except Exception:  # noqa: BLE001 - the job is failing already; its error is the one to show
        pass

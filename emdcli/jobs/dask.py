"""``--engine dask``: each part of a dataset job is one Dask task running
:func:`~.engine.run_part` (``pip install 'emdcli[dask]'``).

The client joins ``--scheduler ADDRESS`` or starts a local cluster of ``--workers N``
processes (one thread each: the kernels use the cores). A worker plugin loads the job's
kernels once per worker before its first task. A worker that dies mid-task is retried
by Dask; its part is written again under the same name. A task that fails (bad input)
stops the job: the tasks not yet run are cancelled, the running ones are waited for, and
the error is raised here as it was raised there.
"""

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


def warm_groups(plan):
    """The :mod:`emdcli.warmup` groups of ``plan``'s kernels (none for a ground matrix)."""
    m, kind = plan.metric, plan.space.kind
    if m.device != "cpu":
        return []
    if m.metric == "sinkhorn":
        return [f"sinkhorn-{m.sinkhorn.get('form', 'plain')}-{m.dtype}"]
    return [f"{kind}-{m.dtype}"] if kind in ("chain", "tree") else []


def _plugin_class(distributed):
    class WarmKernels(distributed.WorkerPlugin):
        """Compile (or load from Numba's cache) a job's kernels once per worker."""

        name = "emdcli-warm-kernels"

        def __init__(self, groups):
            self.groups = list(groups)

        def setup(self, worker):
            if self.groups:
                from ..warmup import warm

                warm(groups=self.groups)

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
    n = engine.workers or max(1, os.cpu_count() or 1)
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    return distributed.Client(cluster), cluster


def map_parts(engine, plans, plan):
    """Yield (index, PartResult) of ``plans`` as their tasks finish on ``engine``."""
    distributed = _distributed()
    client, cluster = connect(engine)
    try:
        client.register_plugin(_plugin_class(distributed)(warm_groups(plan)))
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

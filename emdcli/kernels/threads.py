"""Contiguous runs of a batch's rows, side by side: a serial ``nogil`` kernel per run.

Every batch kernel is a serial ``kernel(*args, lo, hi, slot)`` over rows (or blocks)
``[lo, hi)`` with scratch row ``slot``. :func:`run` calls it once, inline, when one run
will do: one thread (``numba.get_num_threads()``: ``NUMBA_NUM_THREADS``,
``numba.set_num_threads``; ``emd compute`` on two cores leaves one to the reader) or
fewer than ``2·min_items`` items. Otherwise it hands ``parts`` runs to the kernel's
``parallel`` twin, ``parallel(*args, n, parts)``: a ``prange`` over the runs, each calling
the serial kernel (Numba's OpenMP or workqueue threads start in ~2 µs). Numba's parallel
lowering costs seconds of compilation (the chain's lanes kernel: 4.1 s with it, 2.6 s
without), so a job that never runs two threads never compiles the twin; kernels without
a twin run their runs on a small Python thread pool instead (~50–100 µs a batch: for
large batches only). Row results do not depend on how rows are split: the same bits with
any thread count.
"""

import threading

POOL_ITEMS = 1 << 20  # values a run should hold to be worth a pool thread (~1 ms of work)

_POOL = {"executor": None, "size": 0}
_LOCK = threading.Lock()


def threads():
    """The threads the kernels may use (Numba's setting)."""
    import numba

    return numba.get_num_threads()


def _executor(size):
    from concurrent.futures import ThreadPoolExecutor

    with _LOCK:
        if _POOL["size"] < size:
            old = _POOL["executor"]
            _POOL["executor"] = ThreadPoolExecutor(size, thread_name_prefix="emd-kernel")
            _POOL["size"] = size
            if old is not None:
                old.shutdown(wait=False)
        return _POOL["executor"]


def run(kernel, n, args, *, slots=None, min_items=1, parallel=None):
    """``kernel(*args, lo, hi, slot)`` over runs of ``range(n)``: at most ``slots`` runs
    (the scratch rows there are), one a thread, each of at least ``min_items`` items;
    ``parallel(*args, n, parts)`` runs them when there are several (else a thread pool)."""
    parts = max(1, min(threads(), n // max(1, min_items), slots or n or 1))
    if parts == 1:
        kernel(*args, 0, n, 0)
        return
    if parallel is not None:
        parallel(*args, n, parts)
        return
    bounds = [(k * n // parts, (k + 1) * n // parts) for k in range(parts)]
    pool = _executor(parts - 1)
    futures = [pool.submit(kernel, *args, lo, hi, k) for k, (lo, hi) in enumerate(bounds) if k]
    try:
        kernel(*args, *bounds[0], 0)
    finally:
        for f in futures:
            f.result()

"""Contiguous runs of a batch's rows on threads: serial ``nogil`` kernels side by side.

Numba's ``parallel=True`` lowers a ``prange`` loop into a gufunc, which costs seconds of
compilation on the first run of every kernel (``_lanes_batch`` on a chain: 4.1 s with it,
2.6 s without), for a loop that only hands contiguous runs of rows to threads. Here that
loop is plain Python: ``run(kernel, n, args)`` calls ``kernel(*args, lo, hi, slot)`` for
``parts`` runs ``[lo, hi)`` of ``range(n)`` — the first in the calling thread, the others
on a small pool — and waits for all of them. The kernels release the GIL, so the runs go
side by side on ``numba.get_num_threads()`` threads (``NUMBA_NUM_THREADS``,
``numba.set_num_threads``); with one thread, or fewer than ``min_items`` items a run,
the kernel is called once, inline, at no cost. ``slot`` (0 … parts−1) picks a scratch
row. Row results do not depend on how rows are split: the same bits with any thread count.
"""

import threading

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


def run(kernel, n, args, *, slots=None, min_items=1):
    """``kernel(*args, lo, hi, slot)`` over runs of ``range(n)``: at most ``slots`` runs
    (the scratch rows there are), one a thread, each of at least ``min_items`` items."""
    parts = max(1, min(threads(), n // max(1, min_items), slots or n or 1))
    if parts == 1:
        kernel(*args, 0, n, 0)
        return
    bounds = [(k * n // parts, (k + 1) * n // parts) for k in range(parts)]
    pool = _executor(parts - 1)
    futures = [pool.submit(kernel, *args, lo, hi, k) for k, (lo, hi) in enumerate(bounds) if k]
    try:
        kernel(*args, *bounds[0], 0)
    finally:
        for f in futures:
            f.result()

"""Reading the next batch while the caller computes this one.

Plain reads and pyarrow's decoding release the GIL, so a reader thread overlaps them with
the kernels. One thread per source, for its whole life (not one a batch: ~0.1 ms each to
start), a daemon: a read blocked on a quiet standard input never holds up the exit that a
signal or an error asks for.
"""

import queue
import threading


def read_ahead(items):
    """Yield the items of the iterable ``items``, each next one produced in a daemon
    thread while the caller works on the current one (so at most two are alive: the
    caller must be done with an item when it asks for the next). Closing the generator
    early lets the thread end."""
    it = iter(items)
    want = threading.Semaphore(0)  # one release: produce one more item
    ready = queue.SimpleQueue()
    stop = []

    def work():
        while True:
            want.acquire()
            if stop:
                return
            try:
                ready.put((True, next(it)))
            except StopIteration:
                ready.put((None, None))
                return
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                ready.put((False, e))
                return

    threading.Thread(target=work, name="emd-read-ahead", daemon=True).start()
    want.release()
    try:
        while True:
            ok, value = ready.get()
            if ok is None:
                return
            if not ok:
                raise value
            want.release()  # the next item, while the caller works on this one
            yield value
    finally:
        stop.append(True)
        want.release()

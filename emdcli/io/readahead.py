"""Reading the next batch while the caller computes this one.

Plain reads and pyarrow's decoding release the GIL, so a reader thread overlaps them with
the kernels. The thread is a daemon: a read blocked on a quiet standard input never holds
up the exit that a signal or an error asks for.
"""

import threading


def read_ahead(items):
    """Yield the items of the iterable ``items``, each next one produced in a daemon
    thread while the caller works on the current one (so at most two are alive: the
    caller must be done with an item when it asks for the next)."""
    it = iter(items)

    def fetch():
        box, done = [], threading.Event()

        def work():
            try:
                box.append((True, next(it)))
            except StopIteration:
                box.append((None, None))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append((False, e))
            finally:
                done.set()

        threading.Thread(target=work, name="emd-read-ahead", daemon=True).start()
        return box, done

    pending = fetch()
    while True:
        box, done = pending
        done.wait()
        ok, value = box[0]
        if ok is None:
            return
        if not ok:
            raise value
        pending = fetch()
        yield value

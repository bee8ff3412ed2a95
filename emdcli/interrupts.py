"""SIGINT, SIGTERM and SIGHUP as an exception, so that every temporary file goes.

:func:`handled` installs handlers that raise :class:`Interrupted` in the main thread on
the first signal (the job's sinks then abort, removing their files) and ignore any later
one while that cleanup runs — a second Ctrl-C must not interrupt the cleanup itself.
The exit status is the shell's: 128 + the signal number (130, 143, 129).
"""

import signal
from contextlib import contextmanager

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(BaseException):
    """A signal stopped the job (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self):
        return signal.Signals(self.signum).name

    @property
    def exit_code(self):
        return 128 + self.signum


@contextmanager
def handled():
    """Within the block, the signals raise :class:`Interrupted` once, then are ignored."""
    state = {"hit": False}

    def on_signal(signum, frame):
        if state["hit"]:
            return
        state["hit"] = True
        raise Interrupted(signum)

    try:
        previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:  # after a signal the process is on its way out: later ones stay ignored
        for s, h in previous.items():
            signal.signal(s, signal.SIG_IGN if state["hit"] else h)

"""stdout once its reader has gone (``| head``): light, so that the help cache
(:mod:`.helpcache`) can use it without importing Typer."""

import os
import sys


def silence_stdout():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass

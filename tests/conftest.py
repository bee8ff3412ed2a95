"""The suite keeps small batches on the kernels' numpy twins, as a fresh process does.

In a process where Numba is loaded, ``emdcli.rows.numpy_twins`` sends small batches to
the kernels (1.7-20x faster there). This process loads Numba early, and would then compile
a kernel for every small input's dtypes and layouts. The twins give the kernels' bits
(``tests/test_small.py``, which also tests the switch itself, in a subprocess).
"""

import os

import pytest

from emdcli import rows

# `emd … --help` in the suite's subprocesses renders afresh and keeps nothing in the user's
# cache (tests/test_help_cache.py turns the help cache on, in folders of its own)
os.environ.setdefault("EMD_NO_HELP_CACHE", "1")


@pytest.fixture(autouse=True)
def _small_batches_on_the_numpy_twins():
    # (not through ``monkeypatch``: requested here first, it would be undone after the
    # tests' own environment fixtures, not before them)
    real = rows.numpy_twins
    rows.numpy_twins = lambda size: size <= rows.SMALL_ELEMENTS
    yield
    rows.numpy_twins = real

"""Shared test data: sample-file paths and random distributions."""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, os.pardir, "sample_data")
WORDNET = os.path.join(SAMPLE, "imagenet_wordnet_tree.csv")
IMAGENET_BINS = os.path.join(SAMPLE, "imagenet_bins.txt")
IMAGENET_PRED = os.path.join(SAMPLE, "imagenet_pred.parquet")

# ``python -c LIMITED_EMD JOB COLD ARGS``: ``emd ARGS`` with the numpy twins' job size
# limits (``rows.JOB_ELEMENTS``, ``COLD_JOB_ELEMENTS``) set to JOB and COLD
LIMITED_EMD = ("import sys, emdcli.rows as r\n"
               "r.JOB_ELEMENTS, r.COLD_JOB_ELEMENTS = int(sys.argv.pop(1)), int(sys.argv.pop(1))\n"
               "sys.argv[0] = 'emd'\n"
               "from emdcli.cli.root import main\n"
               "main()\n")


def dists(rng, b, n):
    """(b, n) strictly positive rows summing to one (continuous, so no exact kinks)."""
    a = rng.uniform(0.05, 1.0, (b, n)) ** 2
    return a / a.sum(axis=1, keepdims=True)


def onehot(c, n):
    """(len(c), n) one-hot rows of the classes ``c``."""
    q = np.zeros((len(c), n))
    q[np.arange(len(c)), c] = 1.0
    return q


def cli_runner():
    """A Typer CliRunner with stdout and stderr apart (Click < 8.2 mixes them unless
    told not to; later Clicks always keep them apart and take no such argument)."""
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def run_cli(*args):
    """``emd ARGS…`` in-process (CliRunner), arguments as strings."""
    from emdcli.cli import app

    return cli_runner().invoke(app, [str(a) for a in args])


def cli_ok(*args):
    """:func:`run_cli` that must succeed without a traceback."""
    r = run_cli(*args)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "Traceback" not in r.stderr
    return r


def cli_bad(folder, *args, needles=()):
    """:func:`run_cli` that must fail as bad input: exit 2, one ``emd: error:`` line holding
    every needle, and nothing new left in ``folder``. Returns the line."""
    before = sorted(os.listdir(folder))
    r = run_cli(*args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stderr.startswith("emd: error: ") and r.stderr.count("\n") == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    assert sorted(os.listdir(folder)) == before  # no output, no temporary file
    return r.stderr

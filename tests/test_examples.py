"""The training examples run (tiny budget, ``--quick``) and print their tables."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), "--quick"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


NUMBER = r"\d+\.\d+"


@pytest.mark.parametrize("name, losses", [
    ("train_ordinal.py", ["CE", "EMD²", "EMD² + 0.1·CE"]),
    ("train_wordnet.py", ["CE", "HEMD²", "HEMD² + 0.1·CE"]),
])
def test_example_prints_its_table(name, losses):
    rows = table_rows(run_example(name))
    header, body = rows[0], rows[1:]
    assert header.startswith("| loss | ")
    assert [r.split(" | ")[0][2:] for r in body] == losses
    for row in body:
        cells = row.strip("| ").split(" | ")[1:]
        assert len(cells) == header.count(" | ")
        assert all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells), row
        assert 0.0 <= float(cells[0]) <= 1.0  # an accuracy

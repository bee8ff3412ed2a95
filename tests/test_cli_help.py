"""The command line as people meet it: ``--version``, shell completion, help pages at 80
and 120 columns, the compare table at 60/80/120 columns, and the terminal summary."""

import io
import os
import re
import subprocess
import sys
from enum import Enum

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import emdcli
from emdcli import report
from emdcli.cli import app, version_line
from emdcli.cli.common import wrap_command
from emdcli.cli.tables import compare_table

COMMANDS = [[], ["compute"], ["tree"], ["compare"], ["bench"], ["warmup"]]
EMD = [sys.executable, "-m", "emdcli.cli"]


def _help(words, width):
    r = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": str(width)},
                           terminal_width=width)
    assert r.exit_code == 0, r.output
    return r.stdout


def _params(words):
    group = typer.main.get_command(app)
    cmd = group.commands[words[0]] if words else group
    return [p for p in cmd.params if not getattr(p, "hidden", False)]


def _default_texts(p):
    """What ``[default: …]`` must say for ``p``, or None when it has no default."""
    if isinstance(p.show_default, str):
        return p.show_default
    if p.default is None or getattr(p, "is_flag", False) or p.show_default is False:
        return None
    d = p.default
    return str(d.value if isinstance(d, Enum) else d)


def _choices(p):
    desc = getattr(p, "type_descriptor", None)  # Typer >= 0.26; earlier: click.Choice
    values = (desc.choices if desc.is_choice else None) if desc is not None \
        else getattr(getattr(p, "type", None), "choices", None)
    return [str(c.value if isinstance(c, Enum) else c) for c in values or ()]


def _whole(word, text):
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "emd")
def test_help_fits_and_nothing_is_split(words, width):
    text = _help(words, width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert "<str>" not in text and "<bool>" not in text and "{" not in text.split("\n\n")[1]
    assert not re.search(r"\w \.(\s|$)", text.replace("pip install . ", "")), "a space before a period"
    # the panels' text as one line: wrapped between words, a default reads whole here; cut
    # inside a word, it would not
    flat = " ".join(" ".join(line.replace("│", " ").split()) for line in lines)
    for p in _params(words):
        for opt in p.opts:  # each option name intact on one line
            assert _whole(opt, text), (opt, text)
        for choice in _choices(p):  # every choice named, whole, in the help
            assert _whole(choice, text), (p.name, choice)
        want = _default_texts(p)
        if want is not None:
            assert f"[default: {want}]" in flat, (p.name, want)
    # the examples: every continued line is indented under its command
    examples = text.split("Examples:")[1].splitlines()
    assert len(examples) > 2
    for before, line in zip(examples, examples[1:]):
        if before.rstrip().endswith("\\"):
            assert line.startswith(" " * 7) and line.strip(), (before, line)


def test_help_metavars_defaults_and_literal_brackets():
    compute = _help(["compute"], 120)
    assert "Usage: emd compute [OPTIONS] PRED [TARGET]" in compute
    for metavar in ("METRIC", "λ", "FILE", "N", "TOL"):
        assert _whole(metavar, compute), metavar
    assert "[default: 100]" in compute and "[default: 1e-9; float32: 1e-5]" in compute
    assert "node,parent[,weight]" in compute and "'emdcli[dask]'" in compute
    compare = _help(["compare"], 120)
    assert "pip install 'emdcli[plot]'" in compare
    assert "[default: 0.5,1,2,5,10,20,50,100; with --profile 1,10,100]" in compare
    assert "[default: 150]" in compare  # --dpi
    root = _help([], 80)
    assert "Examples:" in root and "emd compute pred.npy labels.npy" in root
    assert "--version" in root and "--install-completion" in root


def test_examples_wrap_between_words_with_continuations():
    cmd = ("emd compute sample_data/imagenet_pred.parquet --tree sample_data/imagenet_wordnet_tree.csv "
           "--bins sample_data/imagenet_bins.txt --target-column label -m emd2")
    lines = wrap_command(cmd, 60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert all(line.startswith("      ") for line in lines[1:])
    # an option stays with its value; the words come back in order
    assert any(line.strip().startswith("--tree sample_data/") for line in lines)
    assert " ".join(line.strip().rstrip("\\").strip() for line in lines) == cmd


def test_compute_without_arguments_prints_the_usage_and_one_hint():
    r = subprocess.run([*EMD, "compute"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == "Usage: emd compute [OPTIONS] PRED [TARGET]"
    assert len(lines) == 2 and lines[1].startswith("emd: error: missing argument 'PRED'")
    assert "emd compute --help" in lines[1]


# ----------------------------------------------------------------------------- version


VERSION = re.compile(r"^emd (\S+) \(numba (\S+), numpy (\S+), pyarrow (\S+); "
                     r"CUDA: (available|not available: .+)\)$")


@pytest.mark.parametrize("flag", ["--version", "-V", "version"])
def test_version(flag):
    r = CliRunner().invoke(app, [flag])
    assert r.exit_code == 0, r.output
    m = VERSION.match(r.stdout.strip())
    assert m, r.stdout
    import numpy

    assert m.group(1) == emdcli.__version__ and m.group(3) == numpy.__version__
    assert not m.group(5).endswith(".")


def test_version_says_why_cuda_is_not_available(monkeypatch):
    from emdcli import gpu

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no usable NVIDIA GPU: no driver.")
    assert version_line().endswith("CUDA: not available: no usable NVIDIA GPU: no driver)")
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: None)
    assert version_line().endswith("; CUDA: available)")


def test_help_and_completion_import_no_numba():
    code = ("import sys\nfrom emdcli.cli import app\n"
            "try:\n    app(['--help'], prog_name='emd')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numba', 'numpy', 'pyarrow') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stderr


@pytest.mark.parametrize("words, not_imported", [
    ([], ["markdown_it", "pygments"]),
    (["compute"], ["markdown_it", "pygments", "emdcli.cli.studies", "emdcli.cli.bench"]),
])
def test_the_entry_point_imports_only_what_it_shows(words, not_imported):
    """``main`` imports the module of the command it runs alone, and Typer's Markdown and
    traceback modules only when they are used."""
    code = ("import sys\nfrom emdcli.cli.root import main\n"
            f"sys.argv = ['emd', *{words!r}, '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {not_imported!r} + ['numba', 'numpy', 'pyarrow'] "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stderr


@pytest.mark.parametrize("words", [[], ["compute"], ["tree"], ["tree", "build"],
                                   ["ground", "learn"], ["compare"], ["warmup"], ["report"]])
def test_the_entry_point_helps_as_the_whole_app(words):
    r = subprocess.run([*EMD, *words, "--help"], capture_output=True, text=True,
                       env=_env(COLUMNS="100"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == _help(words, 100)


def test_stand_ins_become_the_real_modules():
    code = """
import sys
from emdcli.cli import deferred
deferred.defer_all()
import typer.rich_utils
assert 'markdown_it' not in sys.modules and 'pygments' not in sys.modules
from rich.markdown import Markdown
from rich.traceback import Traceback
import rich.markdown
assert type(Markdown('# a')).__module__ == 'rich.markdown' and 'markdown_it' in sys.modules
try:
    1 / 0
except ZeroDivisionError as e:
    tb = Traceback.from_exception(type(e), e, e.__traceback__)
assert type(tb).__module__ == 'rich.traceback'
assert sys.modules['rich.markdown'].Markdown is type(Markdown('b'))
import rich
assert rich.markdown is sys.modules['rich.markdown'] and callable(rich.traceback.install)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


# ----------------------------------------------------------------------------- completion


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_EMD", "_TYPER", "COMP_"))}
    return {**env, **extra}


@pytest.mark.parametrize("shell, marks", [
    ("bash", ["complete -o default -F _emd_completion emd", "_EMD_COMPLETE=complete_bash"]),
    ("zsh", ["#compdef emd", "_EMD_COMPLETE=complete_zsh"]),
    ("fish", ["complete --command emd", "_EMD_COMPLETE=complete_fish"]),
])
def test_show_completion_writes_the_script(shell, marks):
    r = subprocess.run([*EMD, "--show-completion", shell], capture_output=True, text=True,
                       env=_env(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"))
    assert r.returncode == 0, r.stderr
    for mark in marks:
        assert mark in r.stdout, r.stdout


def _bash_complete(words):
    r = subprocess.run(EMD, capture_output=True, text=True, env=_env(
        COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1),
        _EMD_COMPLETE="complete_bash"))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_completion_offers_commands_choices_and_leaves_paths_to_the_shell():
    assert _bash_complete("emd com") == ["compute", "compare"]
    assert _bash_complete("emd compute --metric ") == ["emd", "emd2", "emd-rho", "sinkhorn", "wasserstein"]
    assert "parquet" in _bash_complete("emd compute --format ")
    assert _bash_complete("emd compare p.npy --dtype float32,") == ["float32,float64"]
    # no candidates for a path: bash's "-o default" (zsh: _files) completes file names
    assert _bash_complete("emd compute --tree ") == []
    assert _bash_complete("emd compute ") == []
    r = subprocess.run(EMD, capture_output=True, text=True, env=_env(
        _TYPER_COMPLETE_ARGS="emd compute x.npy ", _EMD_COMPLETE="complete_zsh"))
    assert r.stdout.strip() == "_files"


# ----------------------------------------------------------------------------- tables


def _cell(lam, iters, dtype, ratio=0.98, nonfinite=0.0, seconds=0.0123):
    nan = float("nan")
    finite = nonfinite < 1
    return dict(lam=lam, iters=iters, dtype=dtype, form="plain", device="cpu",
                ratio_mean=ratio if finite else nan, ratio_p05=ratio * 0.9 if finite else nan,
                ratio_p95=ratio * 1.1 if finite else nan, angle_mean=12.5 if finite else nan,
                angle_p05=3.25, angle_p95=48.5, nonconverged=0.25, seconds=seconds,
                nonfinite=nonfinite, iterations_mean=987.0, sd_mean=1.0, rows=100)


GRID = [_cell(lam, it, dt, seconds=1.5 if lam == 100 else 0.000123, nonfinite=1.0 if lam == 100 else 0)
        for dt in ("float32", "float64") for it in (10, 100, 1000)
        for lam in (0.5, 1, 2, 5, 10, 20, 50, 100)]
GRID.append(_cell(1000, 10, "float64", ratio=2.35e-187))


def _render(width, rows=GRID):
    out = io.StringIO()
    console = Console(width=width, file=out, color_system=None)
    console.print(compare_table(rows, "Sinkhorn vs exact EMD — 100 rows, chain of 10 bins, "
                                "soft targets", width))
    return out.getvalue()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_compare_table_shows_every_column_at_any_width(width):
    text = _render(width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    for head in ("λ", "iters", "dtype", "SD/EMD", "angle°", "conv.", "non-", "run", "time"):
        assert head in text, head
    for v in ("0.5", "1000", "987", "100%", "25%", "0.98", "12.5"):
        assert _whole(v, text), v
    assert "2.4e-187" in text  # extreme numbers shortened, never cut
    assert "full precision." in text.replace("\n", " ")
    assert ("Folded to fit" in text) == (width < 120)
    # the title is whole, wrapped between words
    assert "soft targets, cpu, plain form" in " ".join(line.strip() for line in lines[:3])


def test_compare_table_moves_shared_values_into_the_title():
    text = _render(120, [r for r in GRID if r["dtype"] == "float32"])
    assert "float32" in text.splitlines()[0] and "f32" not in text


# ----------------------------------------------------------------------------- summary


def test_the_terminal_summary_is_short_and_files_get_full_precision():
    s = report.Summary("emd")
    s.add(__import__("numpy").array([0.1, 0.2, 1 / 3]))
    full, short = s.line(), s.line(short=True)
    assert "mean=0.2111111111111111" in full and "mean=0.2111111" in short
    assert "0.3333333333333333" in full and "max=0.3333333 " not in short
    assert "max=0.3333333" in short
    assert report.format_short(float("inf")) == "inf"
    assert report.format_short(123456789.0) == "1.234568e+08"


def test_compute_table_footer_is_a_line_of_its_own():
    """The 'first 20 of N rows' note is not the table's caption (which wrapped to the
    table's width): one line under the table at 80 columns."""
    import io

    import numpy as np
    from rich.console import Console

    from emdcli.io.sinks import TableWriter

    console = Console(file=io.StringIO(), width=80)
    w = TableWriter(console, ["row", "emd"], "emd of p.npy")
    w.write({"row": np.arange(1234), "emd": np.linspace(0, 1, 1234)})
    w.close()
    lines = console.file.getvalue().splitlines()
    assert lines[-1] == "first 20 of 1,234 rows; use --format csv or --output for all"
    assert lines[-2].startswith("└")

"""The kept help (``emdcli/cli/helpcache.py``): ``emd … --help`` served from the cache is
byte for byte what Typer renders (pipes, widths, colours, a real pseudo-terminal), is
served without importing Typer or Rich, and is rendered afresh when a file it came from
changes, when the entry is damaged, for requests that fail, and never for other commands.
Each test has a cache folder of its own (``XDG_CACHE_HOME``)."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from emdcli.cli import helpcache

EMD = [sys.executable, "-m", "emdcli"]
MODULES = ("import os, sys; sys.argv = ['emd', *sys.argv[1:]]; sys.path[0] = os.getcwd(); "
           "from emdcli.cli import main; main(); "  # (sys.path as under python -m emdcli)
           "print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich', 'click'}),"
           " file=sys.stderr)")


def env_for(cache, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("EMD_NO_HELP_CACHE", "COLUMNS", "FORCE_COLOR", "NO_COLOR", "TERM")}
    env.update(XDG_CACHE_HOME=str(cache), **extra)
    return env


def emd(words, env):
    return subprocess.run([*EMD, *words], env=env, capture_output=True, timeout=120)


def entries(cache):
    folder = cache / "emdcli" / "help"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) \
        if folder.is_dir() else []


@pytest.mark.parametrize("words", [["--help"], ["-h"], ["compute", "--help"],
                                   ["ground", "learn", "--help"]])
@pytest.mark.parametrize("extra", [{}, {"COLUMNS": "60"}, {"COLUMNS": "200", "FORCE_COLOR": "1"},
                                   {"TERM": "dumb", "NO_COLOR": "1"}])
def test_kept_help_is_what_typer_renders(tmp_path, words, extra):
    env = env_for(tmp_path, **extra)
    rendered = emd(words, {**env, "EMD_NO_HELP_CACHE": "1"})
    assert rendered.returncode == 0 and rendered.stderr == b"" and rendered.stdout
    assert entries(tmp_path) == []
    first = emd(words, env)  # renders, keeps
    assert (first.returncode, first.stdout, first.stderr) == (0, rendered.stdout, b"")
    assert len(entries(tmp_path)) == 1
    served = subprocess.run([sys.executable, "-c", MODULES, *words], env=env,
                            capture_output=True, timeout=120)
    assert served.returncode == 0 and served.stdout == rendered.stdout
    assert served.stderr.decode().strip() == "[]"  # no Typer, Rich or Click imported


def test_each_terminal_and_width_keeps_its_own_entry(tmp_path):
    env = env_for(tmp_path)
    outs = {cols: emd(["--help"], {**env, "COLUMNS": cols}).stdout for cols in ("70", "110")}
    assert outs["70"] != outs["110"] and len(entries(tmp_path)) == 2
    for cols, out in outs.items():
        assert emd(["--help"], {**env, "COLUMNS": cols}).stdout == out


def _in_a_terminal(words, env, columns=100):
    """stdout of ``emd WORDS`` on a pseudo-terminal ``columns`` wide (stderr a pipe)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([*EMD, *words], env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b""
    return b"".join(chunks)


def test_kept_help_on_a_terminal_keeps_its_colours(tmp_path):
    env = env_for(tmp_path, TERM="xterm-256color")
    rendered = _in_a_terminal(["compute", "--help"], {**env, "EMD_NO_HELP_CACHE": "1"})
    assert b"\x1b[" in rendered  # colours and styles, as a terminal gets them
    assert _in_a_terminal(["compute", "--help"], env) == rendered
    assert len(entries(tmp_path)) == 1
    assert _in_a_terminal(["compute", "--help"], env) == rendered  # served
    narrow = _in_a_terminal(["compute", "--help"], env, columns=72)
    assert narrow != rendered and len(entries(tmp_path)) == 2


def test_a_changed_source_file_renders_afresh(tmp_path, monkeypatch):
    """An entry records the files the rendering loaded (mtime, size): one changes, the
    entry is not served."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("EMD_NO_HELP_CACHE", raising=False)
    source = tmp_path / "part_of_the_help.py"
    source.write_text("x = 1\n")
    recorded = helpcache._loaded_files()
    monkeypatch.setattr(helpcache, "_loaded_files",
                        lambda: (*recorded, helpcache._stat(str(source))))
    words = ["tree", "--help"]
    helpcache._store(helpcache.key(words), "the help\n")
    assert helpcache.serve(words)
    source.write_text("x = 22\n")  # another size (and mtime)
    assert not helpcache.serve(words)
    helpcache._store(helpcache.key(words), "the help\n")
    assert helpcache.serve(words)
    source.unlink()
    assert not helpcache.serve(words)


@pytest.mark.parametrize("damage", [b"", b"\x00garbage", None, "wrong shape"])
def test_a_damaged_entry_renders_afresh_and_is_replaced(tmp_path, damage):
    env = env_for(tmp_path)
    good = emd(["--help"], env).stdout
    (entry,) = entries(tmp_path)
    path = tmp_path / "emdcli" / "help" / entry
    data = path.read_bytes()
    if damage == "wrong shape":  # marshal data, but not an entry's
        import marshal

        damage = marshal.dumps((helpcache.FORMAT, 5, "x"))
    path.write_bytes(data[:len(data) // 2] if damage is None else damage)
    again = emd(["--help"], env)
    assert (again.returncode, again.stdout, again.stderr) == (0, good, b"")
    assert path.read_bytes() != (damage or b"")
    assert emd(["--help"], env).stdout == good


def test_failed_requests_and_other_commands_keep_nothing(tmp_path):
    env = env_for(tmp_path)
    bad = emd(["nosuch", "--help"], env)
    assert bad.returncode == 2 and b"emd: error" in bad.stderr
    assert emd(["--version"], env).returncode == 0
    assert emd(["tree", str(tmp_path / "missing.csv")], env).returncode == 2
    assert entries(tmp_path) == []
    for words in (["compute"], ["compute", "x.npy", "--help"], ["--help", "compute"], [],
                  ["compute", "--gradient", "--help"]):
        assert helpcache.key(words) is None, words


def test_the_cache_is_off_for_completion_and_on_request(tmp_path, monkeypatch):
    monkeypatch.delenv("EMD_NO_HELP_CACHE", raising=False)
    assert helpcache.key(["--help"]) is not None
    for name, value in (("EMD_NO_HELP_CACHE", "1"), ("_EMD_COMPLETE", "bash_complete"),
                        ("COMP_WORDS", "emd --h")):
        monkeypatch.setenv(name, value)
        assert helpcache.key(["--help"]) is None, name
        monkeypatch.delenv(name)
    monkeypatch.setenv("EMD_NO_HELP_CACHE", "0")
    assert helpcache.key(["--help"]) is not None


def test_an_unwritable_cache_folder_still_prints_help(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    env = env_for(blocker)  # $XDG_CACHE_HOME/emdcli cannot be made under a file
    rendered = emd(["--help"], {**env, "EMD_NO_HELP_CACHE": "1"}).stdout
    for _ in range(2):
        run = emd(["--help"], env)
        assert (run.returncode, run.stdout, run.stderr) == (0, rendered, b"")
    assert not list(tmp_path.glob("**/.tmp-*"))


def _into_a_closed_pipe(words, env):
    """``emd WORDS`` with its stdout a pipe whose reader has gone (``| head`` that has
    exited): (exit status, stderr)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([*EMD, *words], env=env, stdout=write, stderr=subprocess.PIPE,
                              timeout=120)
    finally:
        os.close(write)
    return proc.returncode, proc.stderr


def test_a_reader_that_went_away_keeps_nothing_and_gets_no_traceback(tmp_path):
    """Served or rendered, status 1 and nothing on stderr (Click's way with EPIPE)."""
    env = env_for(tmp_path)
    assert _into_a_closed_pipe(["compute", "--help"], env) == (1, b"")
    assert entries(tmp_path) == []  # the rendering was cut short: not kept
    good = emd(["compute", "--help"], env).stdout
    assert len(entries(tmp_path)) == 1
    assert _into_a_closed_pipe(["compute", "--help"], env) == (1, b"")  # served, cut short
    assert emd(["compute", "--help"], env).stdout == good


def test_only_the_latest_entries_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(helpcache, "KEEP", 3)
    for k in range(5):
        helpcache._store(f"{k:040x}", f"help {k}\n")
        os.utime(tmp_path / "emdcli" / "help" / f"{k:040x}", ns=(k * 10**9, k * 10**9))
    assert entries(tmp_path) == [f"{k:040x}" for k in (2, 3, 4)]

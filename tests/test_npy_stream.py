"""The NPY reader (plain reads into two reusable buffers, read ahead in a thread): every
layout numpy writes reads back to the same rows, in batches of any size, and batches are
sized by bytes whatever the width."""

import io

import numpy as np
import pytest

from emdcli.io import open_input
from emdcli.io.npy import NpyStream, open_npy
from emdcli.jobs import run as jobs
from emdcli.jobs.plan import Inputs


def rows_of(source, size, reuse):
    return np.concatenate([b["pred"].copy() for b in source.batches(size, ["pred"], reuse)])


@pytest.mark.parametrize("layout", ["C", "F", "big-endian", "float32", "int"])
@pytest.mark.parametrize("size,reuse", [(1, False), (7, True), (1000, True)])
def test_every_layout_reads_back(tmp_path, layout, size, reuse):
    a = np.random.default_rng(0).random((53, 9))
    a = {"C": a, "F": np.asfortranarray(a), "big-endian": a.astype(">f8"),
         "float32": a.astype(np.float32), "int": (a * 100).astype(np.int32)}[layout]
    np.save(tmp_path / "a.npy", a)
    src = open_input(str(tmp_path / "a.npy"), "pred")
    try:
        got = rows_of(src, size, reuse)
    finally:
        src.close()
    np.testing.assert_array_equal(got, a)
    assert got.dtype == a.dtype.newbyteorder("=")


def test_a_stream_reads_in_pieces_like_a_pipe():
    """readinto may return fewer bytes than asked (a pipe): the reader loops."""
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), 5, len(self.data) - self.pos)
            b[:n] = self.data[self.pos:self.pos + n]
            self.pos += n
            return n

    a = np.arange(60.0).reshape(12, 5)
    buf = io.BytesIO()
    np.save(buf, a)
    stream = open_npy("<stdin>", io.BufferedReader(Trickle(buf.getvalue()), 7), owned=False)
    assert isinstance(stream, NpyStream)
    np.testing.assert_array_equal(np.concatenate([stream.read(5), stream.read(5), stream.read(5)]), a)


@pytest.mark.parametrize("width", [1, 32, 1000, 250_000, 2_000_000])
def test_batches_are_sized_by_bytes(tmp_path, width):
    np.save(tmp_path / "p.npy", np.ones((2, width), dtype=np.float32))
    np.save(tmp_path / "c.npy", np.zeros(2, dtype=np.int64))
    pred, target = jobs.open_sources(Inputs(str(tmp_path / "p.npy"), str(tmp_path / "c.npy")))
    rows = jobs.batch_rows(pred, target)
    pred.close()
    target.close()
    assert rows >= 1
    assert rows * width * 8 <= max(jobs.BATCH_BYTES, width * 8)
    assert rows * width * 8 > jobs.BATCH_BYTES // 2 or rows == 1

"""NPY files read by plain reads into reusable batch buffers (no memory map).

A memory map faults pages in one by one (slow), grows the resident set with the file, and
dies of SIGBUS when the file is truncated while it is read; plain ``readinto`` calls into a
preallocated buffer have none of these problems and read standard input the same way.
Fortran-ordered 2-D arrays, whose rows are not contiguous on disk, are the exception: they
are read through a memory map, a batch at a time.
"""

import os

import numpy as np

from ..errors import EMDInputError

NPY_MAGIC = b"\x93NUMPY"


def read_header(f, name):
    """(shape, dtype, fortran_order) of the NPY stream ``f``, positioned after the header.

    Any malformed header (bad magic, garbled dict, unknown dtype, negative shape) is one
    :class:`EMDInputError` naming the file.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError, TokenError, SyntaxError…
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise EMDInputError(f"garbled NPY header ({detail})", source=name,
                            hint="the file is not a valid .npy file") from None
    if dtype.hasobject or dtype.names is not None or dtype.kind not in "fiub":
        raise EMDInputError(f"holds {dtype} values, expected numbers", source=name)
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise EMDInputError(f"NPY header has an invalid shape {shape!r}", source=name)
    return tuple(shape), dtype, bool(fortran)


class NpyStream:
    """Rows of an NPY array read in order from a binary stream.

    ``read(n)`` returns the next ``n`` rows (a 1-D array's elements) as a native-endian
    array; with ``reuse`` it overwrites one of two buffers that it allocates once (the
    caller is done with a batch before asking for the one after next).
    """

    def __init__(self, name, f, shape, dtype, *, owned=True):
        self.name, self.f, self.shape, self.owned = name, f, shape, owned
        self.dtype = dtype
        self.native = dtype.newbyteorder("=")
        self.row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        self.row_bytes = self.row_items * dtype.itemsize
        self.n_rows = shape[0] if shape else 1
        self.row = 0
        self._buffers, self._turn = [None, None], 0

    def window(self, start, stop):
        """Read only rows ``start`` to ``stop`` (a file: seeks to ``start``)."""
        self.f.seek(start * self.row_bytes, 1)
        self.n_rows = stop - start

    def read(self, n, reuse=False):
        n = min(n, self.n_rows - self.row)
        shape = (n, *self.shape[1:])
        if reuse:
            buf = self._buffers[self._turn]
            if buf is None or buf.shape[0] < n:
                buf = self._buffers[self._turn] = np.empty((max(n, 1), *self.shape[1:]), self.dtype)
            self._turn ^= 1
            out = buf[:n]
        else:
            out = np.empty(shape, self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")
        got = 0
        while got < len(view):
            k = self.f.readinto(view[got:])
            if not k:
                rows = self.row + got // max(self.row_bytes, 1)
                raise EMDInputError(
                    f"truncated: the header promises {self.n_rows} rows but the data ends "
                    f"at row {rows}", source=self.name, row=rows,
                    hint="the file was cut short (or is still being written)")
            got += k
        self.row += n
        if self.dtype != self.native:
            out = out.astype(self.native)
        return out

    def close(self):
        if self.owned:
            self.f.close()


def open_npy(name, f, *, owned=True):
    """An :class:`NpyStream` over the binary stream ``f`` (a file or standard input), or,
    for a Fortran-ordered array, a memory-mapped array (``f`` must then be a file)."""
    shape, dtype, fortran = read_header(f, name)
    if os.path.isfile(name):  # a file cut short fails now, before any work
        need = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        have = os.fstat(f.fileno()).st_size
        if have < need:
            rows = (have - f.tell()) // max(dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)), 1)
            raise EMDInputError(
                f"truncated: the header promises {shape[0] if shape else 1} rows but the data "
                f"ends at row {max(rows, 0)}", source=name, row=max(rows, 0),
                hint="the file was cut short (or is still being written)")
    if not (fortran and len(shape) > 1):
        return NpyStream(name, f, shape, dtype, owned=owned)
    offset = f.tell()
    if owned:
        f.close()
    if not os.path.isfile(name):
        raise EMDInputError("a Fortran-ordered array cannot be streamed", source=name,
                            hint="save it C-ordered (np.ascontiguousarray first)")
    return np.memmap(name, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")

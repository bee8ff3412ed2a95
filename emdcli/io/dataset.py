"""Datasets: a directory, a glob, or a hive-partitioned tree of files read as one input.

A dataset's parts are its data files in a stable order (path relative to the dataset's
root, then row). The ``key=value`` folders above a part (``split=val/part-0.parquet``)
are its partition columns, constant over the part. Files whose name starts with ``.``
or ``_`` (temporary files, ``_summary.json``, ``_SUCCESS``) are not parts.
"""

import glob
import os
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np

from ..errors import EMDInputError

DATA_EXTENSIONS = (".parquet", ".pq", ".npy", ".arrow", ".feather", ".arrows", ".csv", ".tsv")
_MAGIC = ("*", "?", "[")


@dataclass(frozen=True)
class Part:
    """One file of a dataset: ``path`` to open, ``rel`` its path below the dataset's root
    (which names its output part), ``partition`` its ``((key, value), …)`` folders."""

    path: str
    rel: str
    partition: tuple = ()

    def get(self, key):
        return dict(self.partition).get(key)


def is_dataset(path):
    """Whether ``path`` names a dataset (a directory, or a glob that is not a file)."""
    if path is None or path == "-" or os.path.isfile(path):
        return False
    return os.path.isdir(path) or any(c in path for c in _MAGIC)


def _hidden(rel):
    return any(c.startswith((".", "_")) for c in rel.split(os.sep))


def _glob_root(pattern):
    """The folder above a glob's first wildcard (the dataset's root)."""
    head = []
    for piece in pattern.split(os.sep):
        if any(c in piece for c in _MAGIC):
            break
        head.append(piece)
    root = os.sep.join(head) if len(head) < len(pattern.split(os.sep)) else os.path.dirname(pattern)
    return root or "."


def partition_of(rel):
    """The ``((key, value), …)`` of the ``key=value`` folders in ``rel`` (hive style,
    values URL-unquoted)."""
    pairs = []
    for piece in rel.split(os.sep)[:-1]:
        key, eq, value = piece.partition("=")
        if eq and key:
            pairs.append((unquote(key), unquote(value)))
    return tuple(pairs)


def parts(path):
    """The :class:`Part` list of the dataset ``path`` in its stable order."""
    if os.path.isdir(path):
        root = path
        found = []
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            found += [os.path.join(folder, f) for f in files
                      if not f.startswith((".", "_")) and f.lower().endswith(DATA_EXTENSIONS)]
        if not found:
            raise EMDInputError(f"no data files ({', '.join(DATA_EXTENSIONS)}) in this directory",
                                source=path)
    else:
        root = _glob_root(path)
        found = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
        found = [f for f in found if not _hidden(os.path.relpath(f, root))]
        if not found:
            raise EMDInputError("matches no file", source=path,
                                hint="quote the pattern so that the shell leaves it to emd")
    rels = sorted(os.path.relpath(f, root) for f in found)
    out = [Part(os.path.join(root, r), r, partition_of(r)) for r in rels]
    keys = [tuple(k for k, _ in p.partition) for p in out]
    for p, k in zip(out, keys):
        if k != keys[0]:
            raise EMDInputError(
                f"has partition folders {list(k) or 'none'} but {out[0].path} has "
                f"{list(keys[0]) or 'none'}", source=p.path,
                hint="every part of a dataset needs the same key=value folders")
    return out


def paired(pred_parts, target_parts, pred_name, target_name):
    """Target parts lined up with the prediction parts, file by file."""
    if len(pred_parts) != len(target_parts):
        raise EMDInputError(
            f"has {len(target_parts)} files but {pred_name} has {len(pred_parts)}",
            source=target_name, hint="a target dataset needs one file per prediction file")
    return list(zip(pred_parts, target_parts))


def output_part(folder, part, piece=None, ext=".parquet"):
    """Where the output of ``part`` (its ``piece``-th window, if split) goes in the
    dataset folder ``folder``."""
    stem = os.path.splitext(part.rel)[0]
    return os.path.join(folder, stem + ("" if piece is None else f".{piece:05d}") + ext)


def windows(path, task_bytes):
    """Row windows ``[(start, stop), …]`` of about ``task_bytes`` of the file ``path``
    each — Parquet: whole row groups; NPY: rows — or None to read it whole (one window,
    or a format that is read only whole)."""
    ext = os.path.splitext(path)[1].lower()
    if os.path.getsize(path) <= task_bytes or ext not in (".parquet", ".pq", ".npy"):
        return None
    if ext == ".npy":
        from .npy import read_header

        with open(path, "rb") as f:
            shape, dtype, fortran = read_header(f, path)
        n = shape[0] if shape else 1
        row = max(dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)), 1)
        step = max(1, task_bytes // row)
        cuts = list(range(0, n, step)) + [n]
    else:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        cuts, row, size = [0], 0, 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if size and size + rg.total_byte_size > task_bytes:
                cuts.append(row)
                size = 0
            row += rg.num_rows
            size += rg.total_byte_size
        cuts.append(row)
    spans = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    return spans if len(spans) > 1 else None


def is_folder_output(path):
    """``-o DIR/`` (a trailing slash) or an existing directory: a dataset output."""
    return bool(path) and path != "-" and (path.endswith(("/", os.sep)) or os.path.isdir(path))

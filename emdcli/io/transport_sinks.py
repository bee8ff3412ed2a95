"""Where flows and transport plans go: ``--flows`` (.npy, .parquet) and ``--plan``
(.parquet). Both are :class:`~.sinks.FileSink` s (a temporary file, renamed into place
with the job's other outputs, or removed with them).

Flows: (B, E) in the working dtype; an NPY matrix, or a Parquet table with the row id
column and one column per gap or edge (named by ``transport.flow_names``). Plans: one
Parquet row per entry, ``(id, source, target, mass)``, source and target the bins'
indices on a chain and their node names (dictionary-encoded) on a tree.
"""

import numpy as np

from .sinks import FileSink, NpyWriter, ParquetWriter

GROUP_BYTES = 64 << 20  # a flows row group: about this many bytes (a wide table)


class FlowsSink(FileSink):
    """The batches' ``"flows"`` (B, E) into ``path``; ``names()`` gives the E column names
    once the space is known (at the first batch)."""

    def __init__(self, path, id_name, dtype, n_rows, names):
        fmt = "npy" if path.lower().endswith(".npy") else "parquet"
        super().__init__(path, fmt, [id_name, "flows"], {"flows": np.dtype(dtype)}, n_rows)
        self.names, self.wide = names, None

    def _open(self, width):
        names = list(self.names())
        if self.fmt == "npy":
            return NpyWriter(self.atomic.tmp, ["flows"], self.n_rows, self.dtypes, len(names))
        id_name = self.columns[0]
        self.wide = [id_name, *(n if n != id_name else f"{n}_" for n in names)]
        dtypes = {c: self.dtypes["flows"] for c in self.wide[1:]}
        writer = ParquetWriter(self.atomic.tmp, self.wide, dtypes)
        row_bytes = self.dtypes["flows"].itemsize * len(names) + 8
        writer.group_rows = max(1, min(writer.group_rows, GROUP_BYTES // row_bytes))
        return writer

    def write(self, batch, width=None):
        writer = self._ready(width)
        if self.wide is not None:  # one column a gap or edge: the batch transposed, once
            ft = np.ascontiguousarray(batch["flows"].T)
            batch = {self.wide[0]: batch[self.wide[0]],
                     **{c: ft[j] for j, c in enumerate(self.wide[1:])}}
        self._guard(writer.write, batch)


class PlanSink(FileSink):
    """The batches' ``"transport"`` plans (``transport.Plan``, rows numbered within the
    batch) into a Parquet file; ``bin_names()`` gives the names of a tree's bins (None
    on a chain)."""

    def __init__(self, path, id_name, dtype, bin_names):
        columns = [id_name, "source", "target", "mass"]
        super().__init__(path, "parquet", columns, {"mass": np.dtype(dtype)}, None)
        self.bin_names, self.names = bin_names, None

    def _open(self, width):
        writer = _PlanWriter(self.atomic.tmp, self.columns, self.dtypes)
        names = self.bin_names()
        writer.names = None if names is None else _dictionary(names)  # (typing an empty file)
        return writer

    def write(self, batch, width=None):
        writer = self._ready(width)
        if self.names is None:
            names = self.bin_names()
            self.names = () if names is None else _dictionary(names)
        plan, ids = batch["transport"], np.asarray(batch[self.columns[0]])
        out = {self.columns[0]: ids[plan.row], "mass": plan.mass}
        for c in ("source", "target"):
            index = getattr(plan, c)
            out[c] = index if not self.names else _named(index, self.names)
        self._guard(writer.write, out)


class _PlanWriter(ParquetWriter):
    """A :class:`ParquetWriter` whose bins may come as Arrow dictionary arrays (names)."""

    def write(self, batch):
        n = len(batch["mass"])
        if n:
            self.pending.append(batch)
            self.rows += n
        if self.rows >= 1 << 22:  # entries are ~24 B: row groups of ~100 MB
            self._flush()

    def _flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self.pending or [self._empty()]
        self.pending, self.rows = [], 0
        table = pa.Table.from_batches([
            pa.record_batch([v if isinstance(v, pa.Array) else pa.array(np.asarray(v))
                             for v in (b[c] for c in self.columns)], names=self.columns)
            for b in parts])
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self.writer.write_table(table, row_group_size=max(len(table), 1))

    def _empty(self):
        """No entries, the bins typed as names on a tree."""
        empty = {c: np.empty(0, dtype=self.dtypes.get(c, np.int64)) for c in self.columns}
        if getattr(self, "names", None) is not None:
            for c in ("source", "target"):
                empty[c] = _named(empty[c], self.names)
        return empty


def _dictionary(names):
    import pyarrow as pa

    return pa.array([str(v) for v in names], type=pa.string())


def _named(index, names):
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), names)

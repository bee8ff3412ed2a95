"""The floor of an `emd compute` run: read every input byte once, write the same result file.

    python benchmarks/e2e_floor.py pred.npy labels.npy [--column emd2] [-o out.parquet]
    python benchmarks/e2e_floor.py wide.parquet [--pred-column pred] [--label-column label] ...

NPY files are streamed by plain file reads in chunks (no memory map, no copy beyond the
read buffer), Parquet files by ParquetFile.iter_batches on the prediction and label
columns, one row group at a time (see parquet_values). Each row is reduced to one
float64, its sum plus its label (the cheapest numpy reduction, see row_sums). The result
has emd's columns, `row` (int64) and `--column` (float64), written with pyarrow in one
write_table, or without -o as the CSV `row,<column>` on standard output (pyarrow is then
not imported). No emdcli, no Numba: the least a process has to do to turn these inputs
into that output. Used by benchmarks/bench_e2e.py.
"""

import argparse
import sys

import numpy as np

CHUNK_BYTES = 16 << 20


def npy_header(f):
    version = np.lib.format.read_magic(f)
    fmt = np.lib.format
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran:
        sys.exit(f"{f.name}: Fortran-ordered arrays are not supported")
    return shape, dtype


def npy_chunks(path):
    """The array in `path` as a sequence of C-order chunks of whole rows (one buffer reused)."""
    with open(path, "rb", buffering=0) as f:
        shape, dtype = npy_header(f)
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        row_bytes = row_items * dtype.itemsize
        rows_per = max(1, min(CHUNK_BYTES // row_bytes, shape[0]))
        buf = bytearray(rows_per * row_bytes)
        view = memoryview(buf)
        left = shape[0]
        while left:
            k = min(rows_per, left)
            want, got = k * row_bytes, 0
            while got < want:
                r = f.readinto(view[got:want])
                if not r:
                    sys.exit(f"{path}: truncated")
                got += r
            yield np.frombuffer(buf, dtype, k * row_items).reshape((k,) + tuple(shape[1:]))
            left -= k


def row_sums(x, ones):
    """The cheapest numpy reduction per row: a BLAS mat-vec for many narrow rows (multi-threaded,
    ~2.5× np.sum there), else np.sum (no BLAS start-up: its threads and buffers cost ~30 MiB)."""
    return x @ ones if x.shape[1] < 256 and len(x) >= 65536 else x.sum(axis=1)


def npy_values(pred, labels):
    with open(pred, "rb") as f:
        shape, _ = npy_header(f)
    out, i = np.empty(shape[0]), 0
    ones = None
    for x in npy_chunks(pred):
        if ones is None:
            ones = np.ones(x.shape[1], x.dtype)
        out[i : i + len(x)] = row_sums(x, ones)
        i += len(x)
    if labels:
        i = 0
        for c in npy_chunks(labels):
            out[i : i + len(c)] += c
            i += len(c)
    return out


def parquet_values(path, pred_col, label_col):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    out, i = np.empty(pf.metadata.num_rows), 0
    ones = None
    # One iter_batches per row group: over the whole file at once (pyarrow 26) it keeps every row
    # group decoded so far until the end (RSS ~ the file) and runs ~3x slower.
    batches = (b for g in range(pf.num_row_groups)
               for b in pf.iter_batches(batch_size=65536, row_groups=[g], columns=[pred_col, label_col]))
    for batch in batches:
        col = batch.column(pred_col)
        x = col.flatten().to_numpy().reshape(len(col), -1)
        if ones is None:
            ones = np.ones(x.shape[1], x.dtype)
        out[i : i + len(x)] = row_sums(x, ones)
        out[i : i + len(x)] += batch.column(label_col).to_numpy()
        i += len(x)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pred")
    ap.add_argument("labels", nargs="?")
    ap.add_argument("--column", default="emd", help="name of the value column (emd, emd2)")
    ap.add_argument("--pred-column", default="pred")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()

    if args.pred.endswith(".parquet"):
        out = parquet_values(args.pred, args.pred_column, args.label_column)
    else:
        out = npy_values(args.pred, args.labels)

    if args.output:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"row": np.arange(len(out)), args.column: out}), args.output)
    else:
        w = sys.stdout.write
        w(f"row,{args.column}\n")
        w("".join(f"{i},{v!r}\n" for i, v in enumerate(out.tolist())))


if __name__ == "__main__":
    main()

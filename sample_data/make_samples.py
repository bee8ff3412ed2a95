"""Make the sample inputs in this folder, deterministically (seed 20261122).

1. ``signal.parquet`` — the seed Q&A's case: a single-channel audio-like signal of
   100 000 time points quantised into 32 levels. Columns: ``t`` (time index, int32),
   ``level`` (the true level, the integer target), ``pred`` (a fixed-size list of 32
   float32 probabilities from a noisy "model" that is usually one or two levels off).
2. ``hist_pred.npy``, ``hist_target.npy``, ``hist_positions.txt`` — 2 000 particle-size
   histograms over 24 log-spaced bins (0.1 … 100 µm): measured (target) and predicted
   counts, unnormalised float64, with the bin centres as non-uniform positions.

3. ``imagenet_bins.txt`` and ``imagenet_pred.parquet`` — over the WordNet tree of the 1000
   ImageNet-1k classes (``imagenet_wordnet_tree.csv``, ``imagenet_classes.csv``, copied
   from the project's shared data with their licence notice in ``README.md``): the class
   wnids in the standard class-index order 0…999 (use with ``--bins``), and 512 rows of
   predicted class probabilities (``probs``, 1000 float32 each, in class-index order) with
   integer labels (``label``) and ids (``image``). The "model" confuses a class mostly
   with its neighbours in the hierarchy, as a real classifier does.

Run from anywhere: ``python sample_data/make_samples.py``. Needs numpy, pyarrow, emdcli.
"""

import os

import numpy as np

SEED = 20261122
HERE = os.path.dirname(os.path.abspath(__file__))


def quantised_signal(rng, t=100_000, levels=32):
    """(time index, level (t,), predicted probabilities (t, levels) float32)."""
    time = np.arange(t)
    phase = rng.uniform(0, 2 * np.pi, 3)
    clean = (
        0.55 * np.sin(2 * np.pi * time / 997 + phase[0])
        + 0.25 * np.sin(2 * np.pi * time / 263 + phase[1])
        + 0.12 * np.sin(2 * np.pi * time / 71 + phase[2])
    )
    noise = np.convolve(rng.normal(0, 0.08, t + 15), np.ones(16) / 4, mode="valid")
    signal = np.clip(clean + noise, -0.999, 0.999)
    level = np.floor((signal + 1) / 2 * levels).astype(np.int16)
    # A model estimate of the signal, sometimes badly wrong, with per-point confidence.
    estimate = signal + rng.normal(0, 0.04, t)
    wild = rng.random(t) < 0.03
    estimate[wild] = rng.uniform(-1, 1, wild.sum())
    width = rng.uniform(0.5, 2.5, t)[:, None]  # in levels
    centre = (estimate + 1) / 2 * levels - 0.5
    logits = -0.5 * ((np.arange(levels)[None, :] - centre[:, None]) / width) ** 2
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    prob = np.round(prob, 5).astype(np.float32)  # 5 decimals keep the file small
    return time.astype(np.int32), level, prob


def histograms(rng, rows=2000, bins=24):
    """(bin centres (bins,), target counts (rows, bins), predicted counts (rows, bins))."""
    edges = np.logspace(-1, 2, bins + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    logc = np.log(centres)
    mode = rng.uniform(np.log(0.5), np.log(30), rows)[:, None]
    spread = rng.uniform(0.4, 1.2, rows)[:, None]
    shape = np.exp(-0.5 * ((logc[None, :] - mode) / spread) ** 2)
    counts = rng.poisson(shape * rng.uniform(200, 2000, rows)[:, None]).astype(np.float64)
    counts[counts.sum(axis=1) == 0, bins // 2] = 1.0
    bias = rng.normal(0, 0.25, rows)[:, None]
    pred_shape = np.exp(-0.5 * ((logc[None, :] - mode - bias) / (spread * 1.1)) ** 2)
    pred = pred_shape * counts.sum(axis=1, keepdims=True) / pred_shape.sum(axis=1, keepdims=True)
    return centres, counts, pred


def imagenet_batch(rng, rows=512):
    """(wnids in class-index order, labels (rows,), probabilities (rows, 1000) float32)."""
    import csv

    from emdcli.treefiles import load_tree

    with open(os.path.join(HERE, "imagenet_classes.csv"), newline="") as f:
        wnids = [r["wnid"] for r in sorted(csv.DictReader(f), key=lambda r: int(r["index"]))]
    tree = load_tree(os.path.join(HERE, "imagenet_wordnet_tree.csv"), bins=wnids)
    dist = tree.ground_matrix()  # path lengths between classes, class-index order
    label = rng.integers(0, len(wnids), rows)
    sharpness = rng.uniform(0.8, 2.5, rows)[:, None]
    guess = np.where(rng.random(rows) < 0.7, label, rng.integers(0, len(wnids), rows))
    logits = -sharpness * dist[guess] + rng.gumbel(0, 0.6, (rows, len(wnids)))
    logits[np.arange(rows), guess] += rng.uniform(1, 4, rows)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    return wnids, label, np.round(prob, 6).astype(np.float32)


def main():
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    time, level, prob = quantised_signal(rng)
    table = pa.table(
        {
            "t": time,
            "level": level,
            "pred": pa.FixedSizeListArray.from_arrays(pa.array(prob.ravel()), prob.shape[1]),
        }
    )
    pq.write_table(
        table, os.path.join(HERE, "signal.parquet"), compression="zstd", compression_level=19,
        use_dictionary=False,
    )
    centres, counts, pred = histograms(rng)
    np.save(os.path.join(HERE, "hist_target.npy"), counts)
    np.save(os.path.join(HERE, "hist_pred.npy"), pred)
    with open(os.path.join(HERE, "hist_positions.txt"), "w") as f:
        f.write("# bin centres in micrometres (log-spaced), one per bin\n")
        f.writelines(f"{float(x)!r}\n" for x in centres)
    wnids, label, prob = imagenet_batch(rng)
    with open(os.path.join(HERE, "imagenet_bins.txt"), "w") as f:
        f.write("# ImageNet-1k class wnids in class-index order 0..999\n")
        f.writelines(w + "\n" for w in wnids)
    table = pa.table(
        {
            "image": [f"val_{i:05d}" for i in range(len(label))],
            "label": label.astype(np.int16),
            "probs": pa.FixedSizeListArray.from_arrays(pa.array(prob.ravel()), prob.shape[1]),
        }
    )
    pq.write_table(
        table, os.path.join(HERE, "imagenet_pred.parquet"), compression="zstd",
        compression_level=19, use_dictionary=False,
    )


if __name__ == "__main__":
    main()

"""Ordinal classification with CE, EMD² and EMD² + CE: the seed Q&A's setting.

A noisy signal is quantised into 32 ordered levels; a small MLP sees the previous
``--window`` levels and predicts the next one as a 32-way classification. The same
network (same initial weights, same batches, same optimiser and epochs) is trained
with each loss on a small training set, then scored on a later, held-out stretch of
the signal: top-1 accuracy, accuracy within ±1 level, and the mean absolute level
error of the argmax (and of the predicted distribution's median).

    python examples/train_ordinal.py            # the README's table (about 10 s on 2 cores)
    python examples/train_ordinal.py --quick    # a smoke run (tests/test_examples.py)
"""

import argparse
import time

import numba
import numpy as np
import torch

from emdcli.torch import EMDLoss

LEVELS = 32


def make_signal(n, seed):
    """A deterministic noisy signal in (-1, 1) of ``n`` samples: three sinusoids with
    random phases and periods, a slow AR(1) drift and white noise (≈ 1 level)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    periods = rng.uniform([400, 90, 25], [900, 250, 60])
    phase = rng.uniform(0, 2 * np.pi, 3)
    amp = np.array([0.5, 0.22, 0.1])
    clean = (amp[:, None] * np.sin(2 * np.pi * t[None, :] / periods[:, None] + phase[:, None])).sum(0)
    drift = np.zeros(n)
    steps = rng.normal(0, 0.01, n)
    for i in range(1, n):
        drift[i] = 0.995 * drift[i - 1] + steps[i]
    noisy = clean + drift + rng.normal(0, 0.06, n)
    return np.clip(noisy, -0.999, 0.999)


def windows(levels, window, idx):
    """(inputs (len(idx), window) float32 in [-1, 1], next levels (len(idx),) int64): the
    ``window`` levels before each index, and the level at it."""
    past = levels[idx[:, None] - window + np.arange(window)[None, :]]
    x = (past.astype(np.float32) + 0.5) / LEVELS * 2 - 1
    return torch.from_numpy(x), torch.from_numpy(levels[idx].astype(np.int64))


def make_data(args):
    """``--train`` windows drawn (seeded) from the first ``--stretch`` samples of the
    signal; the ``--test`` windows that follow it, with no sample in common."""
    signal = make_signal(args.stretch + args.window + args.test, args.seed)
    levels = np.floor((signal + 1) / 2 * LEVELS).astype(np.int64)
    rng = np.random.default_rng(args.seed + 1)
    train_idx = np.sort(rng.choice(np.arange(args.window, args.stretch), args.train, replace=False))
    test_idx = np.arange(args.stretch + args.window, args.stretch + args.window + args.test)
    return windows(levels, args.window, train_idx), windows(levels, args.window, test_idx)


def make_model(window, hidden, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(window, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, LEVELS),
    )


def train(criterion, data, args):
    """A fresh model (seeded) trained with ``criterion``; same batches for every loss."""
    x, y = data
    model = make_model(x.shape[1], args.hidden, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), args.batch):
            b = perm[i:i + args.batch]
            opt.zero_grad()
            criterion(model(x[b]), y[b]).backward()
            opt.step()
    return model


@torch.no_grad()
def evaluate(model, data):
    """(accuracy, accuracy within ±1, mean |argmax − level|, mean |median − level|)."""
    x, y = data
    p = torch.softmax(model(x), dim=1)
    err = (p.argmax(1) - y).abs().float()
    median = (p.cumsum(1) < 0.5).sum(1).clamp(max=LEVELS - 1)
    return (err.eq(0).float().mean().item(), err.le(1).float().mean().item(), err.mean().item(),
            (median - y).abs().float().mean().item())


def losses(ce_weight):
    return [
        ("CE", torch.nn.CrossEntropyLoss()),
        ("EMD²", EMDLoss()),
        (f"EMD² + {ce_weight:g}·CE", EMDLoss(ce_weight=ce_weight)),
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", type=int, default=1000, help="training windows (a small set)")
    p.add_argument("--stretch", type=int, default=20000,
                   help="samples at the start of the signal the training windows are drawn from")
    p.add_argument("--test", type=int, default=10000, help="held-out windows, later in the signal")
    p.add_argument("--window", type=int, default=16, help="previous levels the model sees")
    p.add_argument("--epochs", type=int, default=40, help="passes over the training set (every loss)")
    p.add_argument("--batch", type=int, default=50, help="batch size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--hidden", type=int, default=64, help="hidden units per layer")
    p.add_argument("--ce-weight", type=float, default=0.1, help="CE weight of the combined loss")
    p.add_argument("--seed", type=int, default=0, help="first seed (of the signal, the weights, the batches)")
    p.add_argument("--seeds", type=int, default=3, help="runs per loss, seeds --seed, --seed + 1, …")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and numba threads (small batches: 1 is fastest, and steady on a busy machine)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: one seed, 2 epochs, 200 train / 500 test windows")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.train, args.test, args.stretch, args.seeds = 2, 200, 500, 2000, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    seeds = range(args.seed, args.seed + args.seeds)
    datasets = [make_data(argparse.Namespace(**{**vars(args), "seed": s})) for s in seeds]
    print(f"next of {LEVELS} levels from the previous {args.window}: {args.train} train / "
          f"{args.test} held-out windows, {args.epochs} epochs, batch {args.batch}, "
          f"Adam lr {args.lr:g}, {_seeds(args)}")
    print()
    print("| loss | accuracy | within ±1 | mean abs level error (argmax) | (median) | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, criterion in losses(args.ce_weight):
        scores, t0 = [], time.perf_counter()
        for s, (data_train, data_test) in zip(seeds, datasets):
            model = train(criterion, data_train, argparse.Namespace(**{**vars(args), "seed": s}))
            scores.append(evaluate(model, data_test))
        secs = (time.perf_counter() - t0) / len(scores)
        cells = " | ".join(_mean_std(col, 3) for col in zip(*scores))
        print(f"| {name} | {cells} | {secs:.1f} |")
    chance = np.mean([(y - y.float().median()).abs().float().mean().item() for _, (_, y) in datasets])
    print(f"\n(the held-out median level for every row: mean abs level error {chance:.3f})")


def _seeds(args):
    if args.seeds == 1:
        return f"seed {args.seed}"
    return f"seeds {args.seed}..{args.seed + args.seeds - 1} (mean ± std)"


def _mean_std(values, digits):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


if __name__ == "__main__":
    main()

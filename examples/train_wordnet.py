"""Hierarchical classification on the WordNet tree of ImageNet-1k: CE vs HEMD² (+ CE).

Synthetic features clustered by the hierarchy: every node of the tree gets a random
vector, and a class's centroid is the sum of the vectors on its path from the root, so
siblings are close and distant branches far apart. Samples are centroid + Gaussian
noise. The same MLP (same initial weights, batches, optimiser and epochs) is trained
with each loss on a few samples per class, then scored on held-out samples: top-1 and
top-5 accuracy, the mean tree distance between the predicted (argmax) and the true
class, that distance over the mistakes only, and the expected tree distance under the
predicted distribution (Σ_j p_j d(j, y), the HEMD¹ to the true class). Tree distances
count edges (weight 1) of the collapsed tree in ``sample_data/``; siblings are 2 apart.

    python examples/train_wordnet.py            # the README's table (about a minute on 2 cores)
    python examples/train_wordnet.py --quick    # a smoke run (tests/test_examples.py)
"""

import argparse
import os
import time

import numba
import numpy as np
import torch

import emdcli
from emdcli.torch import EMDLoss
from emdcli.treefiles import load_tree, read_bins

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sample_data")


def wordnet_tree():
    """The WordNet tree over the 1000 ImageNet classes, bins in class-index order."""
    return load_tree(os.path.join(DATA, "imagenet_wordnet_tree.csv"),
                     bins=read_bins(os.path.join(DATA, "imagenet_bins.txt")))


def centroids(tree, dim, seed):
    """(N, dim) class centroids: the sum of a random vector per node along each class's
    root path (the root's vector is 0). Parents precede children in ``tree.parent``."""
    rng = np.random.default_rng(seed)
    step = rng.normal(0, 1 / np.sqrt(dim), (len(tree.parent), dim))
    c = np.zeros_like(step)
    for v in range(1, len(tree.parent)):
        c[v] = c[tree.parent[v]] + step[v]
    return c[tree.bin_node]


def make_data(tree, args):
    """(train x, y), (test x, y): ``--per-class`` and ``--test-per-class`` noisy samples
    around each centroid (noise ``--noise`` in norm), float32 features."""
    mu = centroids(tree, args.dim, args.seed)
    rng = np.random.default_rng(args.seed + 1)

    def sample(per_class):
        y = np.repeat(np.arange(tree.n), per_class)
        x = mu[y] + rng.normal(0, args.noise / np.sqrt(args.dim), (len(y), args.dim))
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)

    return sample(args.per_class), sample(args.test_per_class)


def make_model(dim, hidden, n, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, n))


def train(criterion, data, n, args):
    """A fresh model (seeded) trained with ``criterion``; same batches for every loss."""
    x, y = data
    model = make_model(x.shape[1], args.hidden, n, args.seed)
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
def evaluate(model, data, tree):
    """(top-1, top-5, mean d(argmax, y), mean d over mistakes, mean Σ p_j d(j, y))."""
    x, y = data
    p = torch.softmax(model(x), dim=1).double().numpy()
    yn = y.numpy()
    pred = p.argmax(1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(pred)), pred] = 1.0
    dist = emdcli.emd(onehot, yn, space=tree)  # tree distance between two classes
    expected = emdcli.emd(p, yn, space=tree)   # HEMD¹ of p to the true class
    top5 = (np.argsort(-p, axis=1)[:, :5] == yn[:, None]).any(1)
    wrong = pred != yn
    return ((~wrong).mean(), top5.mean(), dist.mean(),
            dist[wrong].mean() if wrong.any() else 0.0, expected.mean())


def losses(tree, ce_weight):
    return [
        ("CE", torch.nn.CrossEntropyLoss()),
        ("HEMD²", EMDLoss(tree=tree)),
        (f"HEMD² + {ce_weight:g}·CE", EMDLoss(tree=tree, ce_weight=ce_weight)),
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--per-class", type=int, default=5, help="training samples per class (1000 classes)")
    p.add_argument("--test-per-class", type=int, default=10, help="held-out samples per class")
    p.add_argument("--dim", type=int, default=64, help="feature dimension")
    p.add_argument("--noise", type=float, default=3.0,
                   help="noise norm (a node's step has norm ≈ 1, siblings' centroids ≈ 1.4 apart)")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training set (every loss)")
    p.add_argument("--batch", type=int, default=100, help="batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--hidden", type=int, default=256, help="hidden units")
    p.add_argument("--ce-weight", type=float, default=0.1, help="CE weight of the combined loss")
    p.add_argument("--seed", type=int, default=0,
                   help="first seed (of the features, the weights, the batches)")
    p.add_argument("--seeds", type=int, default=3, help="runs per loss, seeds --seed, --seed + 1, …")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and numba threads (small batches: 1 is fastest, and steady on a busy machine)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: one seed, 1 epoch, 1 train / 1 held-out sample per class")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.per_class, args.test_per_class, args.seeds = 1, 1, 1, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    tree = wordnet_tree()
    runs = [argparse.Namespace(**{**vars(args), "seed": s}) for s in range(args.seed, args.seed + args.seeds)]
    datasets = [make_data(tree, run) for run in runs]
    print(f"WordNet tree, {tree.n} classes: {len(datasets[0][0][1])} train ({args.per_class}/class) / "
          f"{len(datasets[0][1][1])} held-out, dim {args.dim}, noise {args.noise:g}, {args.epochs} epochs, "
          f"batch {args.batch}, Adam lr {args.lr:g}, {_seeds(args)}")
    print()
    print("| loss | top-1 | top-5 | mean tree dist (argmax) | mean tree dist of mistakes "
          "| expected tree dist | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, criterion in losses(tree, args.ce_weight):
        scores, t0 = [], time.perf_counter()
        for run, (data_train, data_test) in zip(runs, datasets):
            model = train(criterion, data_train, tree.n, run)
            scores.append(evaluate(model, data_test, tree))
        secs = (time.perf_counter() - t0) / len(runs)
        cells = " | ".join(_mean_std(col, d) for col, d in zip(zip(*scores), (3, 3, 2, 2, 2)))
        print(f"| {name} | {cells} | {secs:.0f} |")


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

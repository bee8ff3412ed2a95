"""emdcli.torch's loss vs pure-torch references: forward + backward, CPU (and CUDA).

One timed call is ``loss = criterion(logits, target); loss.backward()`` on a leaf
``logits`` (B, N) float32 with class-index targets, reduction mean, rho = 2:

  ours            emdcli.torch.EMDLoss (space validated once, in the constructor)
  torch cumsum    chain EMD² as torch users write it: softmax, ``cumsum``, the target's
                  CDF ``arange(N) >= t``, Σ (ΔCDF)² over the N − 1 gaps, mean; autograd
  torch subtree   tree HEMD² with a dense subtree-membership matrix A (nodes, N), made
                  once: subtree masses φ = (p − onehot(t)) Aᵀ, Σ_v w_v φ_v², mean; autograd

Cases: WordNet tree (sample_data/, 1371 nodes), B = 512, N = 1000; chain B = 100 000,
N = 32; chain B = 512, N = 1000. Values and gradients of every reference are checked
against ours (float64) before timing. Runs are interleaved (ours, reference, ours, …);
the table shows medians and ratio = reference / ours. On a GPU (torch.cuda.is_available())
the same cases run on CUDA tensors, timed with CUDA events. Run:

    python benchmarks/bench_torch.py [--repeats 21] [--threads 2] [--quick]
"""

import argparse
import os
import platform
import statistics
import time

import numba
import torch

from emdcli.torch import EMDLoss
from emdcli.treefiles import load_tree, read_bins

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, os.pardir, "sample_data")


class CumsumEMD2(torch.nn.Module):
    """Chain EMD² with unit gaps: mean over rows of Σ_k (CDF_p − CDF_q)_k², k < N − 1."""

    def forward(self, logits, target):
        p = torch.softmax(logits, dim=1)
        n = logits.shape[1]
        cdf_q = (torch.arange(n, device=logits.device) >= target[:, None]).to(p.dtype)
        d = (torch.cumsum(p, dim=1) - cdf_q)[:, :-1]
        return (d * d).sum(dim=1).mean()


class SubtreeHEMD2(torch.nn.Module):
    """Tree HEMD²: mean over rows of Σ_v w_v (P(subtree v) − Q(subtree v))², with a dense
    (nodes, N) subtree-membership matrix (the root's row has weight 0)."""

    def __init__(self, tree):
        super().__init__()
        a = torch.zeros(len(tree.parent), tree.n, dtype=torch.float64)
        for k, v in enumerate(tree.bin_node):
            while v >= 0:
                a[v, k] = 1.0
                v = tree.parent[v]
        self.register_buffer("a", a)
        self.register_buffer("w", torch.as_tensor(tree.weight, dtype=torch.float64))

    def forward(self, logits, target):
        p = torch.softmax(logits, dim=1)
        a, w = self.a.to(p.dtype), self.w.to(p.dtype)
        phi = p @ a.T - a.T[target]  # (B, nodes): subtree masses of p minus those of onehot(t)
        return (w * phi * phi).sum(dim=1).mean()


def wordnet_tree():
    return load_tree(os.path.join(SAMPLES, "imagenet_wordnet_tree.csv"),
                     bins=read_bins(os.path.join(SAMPLES, "imagenet_bins.txt")))


def cases(quick):
    """(name, B, N, ours, reference, reference name)."""
    tree = wordnet_tree()
    big = 10_000 if quick else 100_000
    return [
        ("WordNet tree", 512, tree.n, EMDLoss(tree=tree), SubtreeHEMD2(tree), "torch subtree"),
        ("chain", big, 32, EMDLoss(), CumsumEMD2(), "torch cumsum"),
        ("chain", 512, 1000, EMDLoss(), CumsumEMD2(), "torch cumsum"),
    ]


def inputs(b, n, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(b, n, generator=g, dtype=torch.float64)).to(device, dtype)
    target = torch.randint(0, n, (b,), generator=g).to(device)
    return logits, target


def value_grad(criterion, logits, target):
    x = logits.detach().clone().requires_grad_()
    loss = criterion(x, target)
    loss.backward()
    return loss.detach(), x.grad


def check(ours, ref, b, n, device):
    """Reference and ours agree in float64 (value and gradient) on a slice of the batch."""
    logits, target = inputs(min(b, 4096), n, device, torch.float64, seed=1)
    v0, g0 = value_grad(ours.to(device), logits, target)
    v1, g1 = value_grad(ref.to(device), logits, target)
    scale = g0.abs().max().item()
    if not (torch.allclose(v0, v1, rtol=1e-10, atol=1e-12)
            and torch.allclose(g0, g1, rtol=1e-8, atol=1e-12 * max(scale, 1.0))):
        raise SystemExit(f"reference disagrees with ours: values {v0.item()} vs {v1.item()}, "
                         f"max |grad diff| {(g0 - g1).abs().max().item():.3g}")
    return abs(v0.item() - v1.item()), (g0 - g1).abs().max().item()


def timer(device):
    """A function returning the seconds one call of ``fn()`` takes on ``device``."""
    if device == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        return run

    def run(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def bench_case(ours, ref, b, n, device, repeats):
    """Median seconds of forward + backward for (ours, ref), interleaved."""
    logits, target = inputs(b, n, device)
    x = logits.requires_grad_()

    def step(criterion):
        def fn():
            x.grad = None
            criterion(x, target).backward()
        return fn

    fns = [step(ours.to(device)), step(ref.to(device))]
    run = timer(device)
    for fn in fns:  # warm-up: compile, caches, allocator
        for _ in range(3):
            run(fn)
    times = [[], []]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(run(fn))
    return [statistics.median(t) for t in times]


def ms(seconds):
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--repeats", type=int, default=21, help="interleaved timed calls per method and case")
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated thread counts (torch.set_num_threads and numba.set_num_threads)")
    ap.add_argument("--quick", action="store_true", help="B = 10 000 for the big chain, 3 repeats")
    ap.add_argument("--no-cuda", action="store_true", help="skip the GPU runs even when CUDA is available")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    threads = [int(t) for t in args.threads.split(",")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    load0 = os.getloadavg()[0]
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, numba {numba.__version__}; float32 logits, class targets, rho 2, "
          f"mean; {repeats} interleaved repeats, medians")
    all_cases = cases(args.quick)
    for name, b, n, ours, ref, _ in all_cases:
        for device in devices:
            dv, dg = check(ours, ref, b, n, device)
            print(f"# check {name} N={n} on {device}: float64 |Δvalue| {dv:.1e}, max |Δgrad| {dg:.1e}")
    print()
    print("| case | B | N | device | threads | ours | reference | ratio (ref / ours) |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for device in devices:
        for t in (threads if device == "cpu" else [threads[-1]]):
            torch.set_num_threads(t)
            numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
            for name, b, n, ours, ref, ref_name in all_cases:
                t_ours, t_ref = bench_case(ours, ref, b, n, device, repeats)
                print(f"| {name} | {b} | {n} | {device} | {t} | {ms(t_ours)} | {ref_name} {ms(t_ref)} "
                      f"| {t_ref / t_ours:.1f}× |", flush=True)
    if "cuda" not in devices:
        print("\n# no GPU (torch.cuda.is_available() is False): CUDA runs skipped")
    print(f"# load average (1 min) at start / end: {load0:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

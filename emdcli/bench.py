"""The study behind ``emd bench``: the paper's Table 1 and the alternatives, timed.

For one batch on one space (default: batch 512 over the WordNet tree of the 1000
ImageNet classes, shipped as package data), it times the value + gradient of EMD (ρ = 1)
and EMD² (ρ = 2), and Sinkhorn at each iteration limit (tol = 0, so every iteration
runs), for each dtype, on the CPU and, with ``devices`` including "cuda", on the GPU. The
first call (compilation or cache load) is reported apart from the median of the
repeats, which never include compilation: the first call and one more untimed call come
before the calibration call and the samples (:func:`emdcli.timing.measure`), and
:func:`compile_notice` says beforehand when the kernels are not in Numba's cache yet. A
GPU case is called once more with its phases clocked, to split the time
between the kernels and the copies to and from the GPU. With ``against_pot``, POT's
``ot.emd2`` / ``ot.sinkhorn2`` are timed on a subset of rows, scaled to the batch, and
their values checked against ours.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from .spaces import Chain, Ground, Tree
from .timing import measure

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PAPER_HARDWARE = "paper: i5-6600K CPU 3.5 GHz / GTX1080, Torch (Table 1)"
# (metric, iterations) → (CPU seconds, GPU seconds), batch 512, WordNet tree, gradients
PAPER = {
    ("emd2", 0): (0.126, 0.025),
    ("sinkhorn", 10): (0.942, 0.0151),
    ("sinkhorn", 100): (7.51, 0.0889),
    ("sinkhorn", 1000): (74.5, 0.865),
}
DEFAULT_ITERS = [10, 100, 1000]
COLUMNS = ["metric", "iters", "dtype", "device", "median_s", "iqr_s", "min_s",
           "first_call_s", "repeats", "paper_s", "paper_over_ours", "pot_s",
           "pot_over_ours", "pot_agrees", "kernel_s", "copies_s"]


def default_tree():
    """The packaged WordNet tree with its bins in ImageNet class-index order."""
    from .treefiles import load_tree, read_bins

    return load_tree(os.path.join(DATA, "imagenet_wordnet_tree.csv"),
                     bins=read_bins(os.path.join(DATA, "imagenet_bins.txt")))


@dataclass
class BenchConfig:
    """What to time. ``space``: a Chain, Tree or Ground (default: the WordNet tree)."""

    space: object = None
    batch: int = 512
    iters: list = field(default_factory=lambda: list(DEFAULT_ITERS))
    dtypes: list = field(default_factory=lambda: ["float32", "float64"])
    lam: float = 3.0
    repeat: int = 5
    targets: str = "labels"
    against_pot: bool = False
    pot_rows: int = 8
    seed: int = 0
    budget: float = 20.0
    devices: list = field(default_factory=lambda: ["cpu"])


def make_batch(n, batch, seed):
    """(P (B, N) softmax rows, labels (B,), Q (B, N) soft targets), float64, seeded."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (batch, n))
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    labels = rng.integers(0, n, batch)
    Q = rng.random((batch, n)) ** 3
    Q /= Q.sum(axis=1, keepdims=True)
    return P, labels, Q


def _jobs(cfg, space, P, T):
    """(metric, iters, dtype, device, fn) for every timed case (host arrays in and out,
    so a GPU time includes the transfers)."""
    from .api import emd
    from .sinkhorn import sinkhorn

    for device in cfg.devices:
        for dtype in cfg.dtypes:
            p = P.astype(dtype)
            t = T if T.ndim == 1 else T.astype(dtype)
            for metric, rho in (("emd", 1.0), ("emd2", 2.0)):
                if isinstance(space, Ground) and (rho != 1.0 or device == "cuda"):
                    continue
                yield metric, 0, dtype, device, (lambda p=p, t=t, rho=rho, dtype=dtype, d=device: emd(
                    p, t, space=space, rho=rho, dtype=dtype, gradient=True, device=d))
            for iters in cfg.iters:
                yield "sinkhorn", iters, dtype, device, (
                    lambda p=p, t=t, iters=iters, dtype=dtype, d=device: sinkhorn(
                        p, t, lam=cfg.lam, iters=iters, tol=0.0, space=space, dtype=dtype,
                        gradient=True, device=d))


def compile_notice(cfg, space=None):
    """The line to print before :func:`run_bench` when Numba's cache lacks CPU kernels it
    will time (each case's first, separately reported call compiles them), or None."""
    from .warmup import notice_jobs

    space = cfg.space if space is None else space
    if "cpu" not in cfg.devices:
        return None
    kind = ("chain" if isinstance(space, Chain) else "ground" if isinstance(space, Ground)
            else "tree")
    jobs = []
    for dtype in cfg.dtypes:
        jobs.append(dict(space_kind=kind, dtype=dtype, gradient=True, input_dtype=dtype))
        if cfg.iters:
            jobs.append(dict(space_kind=kind, dtype=dtype, metric="sinkhorn", rows=cfg.batch))
    return notice_jobs(jobs)


WARMUP_CALLS = 1  # untimed calls after a case's (separately reported) first call


def run_bench(cfg, progress=None, notice=None):
    """Time every case of ``cfg``; returns (rows: dicts with :data:`COLUMNS`, the space).

    ``progress(message)`` is called before each case; ``notice(line)`` once, before the
    first, when kernels will be compiled (:func:`compile_notice`). The paper's numbers
    are given only for its own workload: the default WordNet tree at batch 512.
    """
    table1 = cfg.space is None and cfg.batch == 512
    space = cfg.space if cfg.space is not None else default_tree()
    if notice:
        line = compile_notice(cfg, space)
        if line:
            notice(line)
    P, labels, Q = make_batch(space.n, cfg.batch, cfg.seed)
    T = labels if cfg.targets == "labels" else Q
    rows = []
    for metric, iters, dtype, device, fn in _jobs(cfg, space, P, T):
        if progress:
            progress(f"{metric} {iters or ''} {dtype} {device}".replace("  ", " "))
        budget = cfg.budget if iters < 1000 else 2 * cfg.budget
        # measure: the first call (compiles or loads the kernels) is timed on its own, then
        # WARMUP_CALLS untimed calls, then the samples
        t = measure(fn, repeat=cfg.repeat, warmup=WARMUP_CALLS, min_time=0.0, budget=budget,
                    min_repeat=min(3, cfg.repeat))
        kernel_s = copies_s = None
        if device == "cuda":  # one more call, clocked: kernels apart from the copies
            from .gpu import clock_phases

            with clock_phases() as phases:
                fn()
            kernel_s = phases["kernel"]
            copies_s = phases["to_device"] + phases["to_host"]
        paper = PAPER.get((metric, iters)) if table1 else None
        if paper:  # Table 1's CPU or GPU column
            paper = paper[1] if device == "cuda" else paper[0]
        rows.append({
            "metric": metric, "iters": iters or None, "dtype": dtype, "device": device,
            "median_s": t.median_s, "iqr_s": t.iqr_s, "min_s": t.min_s,
            "first_call_s": t.first_call_s, "repeats": t.repeats,
            "paper_s": paper,
            "paper_over_ours": paper / t.median_s if paper else None,
            "pot_s": None, "pot_over_ours": None, "pot_agrees": None,
            "kernel_s": kernel_s, "copies_s": copies_s,
        })
    if cfg.against_pot:
        _against_pot(cfg, space, P, T, rows, progress)
    return rows, space


def _against_pot(cfg, space, P, T, rows, progress):
    """Time POT on ``pot_rows`` rows (float64), scale to the batch, check agreement."""
    import ot

    from .api import emd
    from .sinkhorn import sinkhorn

    k = min(cfg.pot_rows, cfg.batch)
    M = space.matrix if isinstance(space, Ground) else space.ground_matrix()
    p = P[:k]
    q = np.zeros_like(p)
    if T.ndim == 1:
        q[np.arange(k), T[:k]] = 1.0
    else:
        q[:] = T[:k]
    t_sub = T[:k]
    for row in rows:
        if row["dtype"] != "float64" or row["metric"] == "emd2" or row["device"] != "cpu":
            continue
        if progress:
            progress(f"POT {row['metric']} {row['iters'] or ''}")
        if row["metric"] == "emd":
            call = lambda: [ot.emd2(p[i], q[i], M) for i in range(k)]  # noqa: E731
            ours = emd(p, t_sub, space=space)
        else:
            iters = row["iters"]
            call = lambda iters=iters: [ot.sinkhorn2(p[i], q[i], M, reg=1 / cfg.lam,  # noqa: E731
                                                     numItermax=iters, stopThr=0)
                                        for i in range(k)]
            # agreement is checked at convergence: POT starts from u = 1/N, Algorithm 1
            # from u = 1, so after a fixed number of iterations they differ slightly
            ours = sinkhorn(p, t_sub, lam=cfg.lam, iters=100_000, tol=1e-11, space=space).values
        tp = measure(call, repeat=min(3, cfg.repeat), warmup=0, min_time=0.0,
                     budget=cfg.budget, min_repeat=1)
        if row["metric"] == "emd":
            theirs = np.array(call())
        else:
            theirs = np.array([ot.sinkhorn2(p[i], q[i], M, reg=1 / cfg.lam, numItermax=100_000,
                                            stopThr=1e-11) for i in range(k)])
        row["pot_s"] = tp.median_s * cfg.batch / k
        row["pot_over_ours"] = row["pot_s"] / row["median_s"]
        row["pot_agrees"] = bool(np.allclose(ours, theirs, rtol=1e-6, atol=1e-9))


def describe_space(space):
    """One line naming the benchmarked space."""
    if isinstance(space, Tree):
        return f"tree, {space.n_nodes} nodes, {space.n} bins"
    if isinstance(space, Chain):
        return f"chain, {space.n} bins"
    return f"ground matrix, {space.n} bins"

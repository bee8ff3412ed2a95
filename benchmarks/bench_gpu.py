"""GPU kernels (numba.cuda) against what a PyTorch user writes, on one GPU, one run.

Workloads (issue 5), float32, TF32 off, every time from CUDA events around a loop of
calls (per call; Python launch overhead included, as a training loop pays it):

  chain   EMD² value + projected gradient, B × N = 65 536 × 1000, unit chain:
            ours        emdcli.kernels.gpu_chain.chain_batch_cuda on device arrays
            ours, host  the same from numpy arrays (copies in and out included)
            torch       cumsum → φ, value, gradient by a reversed cumsum, minus the mean
            copy        three device copies of a (B, N) array: the bytes the kernel must
                        move (read P and Q, write G) read and written once more
  tree    the same on the WordNet tree (1371 nodes, 1000 bins), B = 65 536:
            torch       a dense node × bin path matrix A: φ = (P − Q) Aᵀ, r = (2 w φ) A
  table1  the paper's Table 1: HEMD² value + gradient, batch 512, WordNet tree
  sinkhorn  Table 1, 100 iterations (tol = 0), λ = 3, plain form:
            ours tree   structured tree passes (gpu_sinkhorn, level-synchronous)
            ours dense  the dense Gibbs kernel: the CPU's batched products on CuPy arrays
                        (cuBLAS) where CuPy is installed, and the Numba kernel (one row
                        per block, K re-read per row) beside it
            torch       Algorithm 1 with batched matrix products (U @ K, V @ Kᵀ)

  shapes  the launch shapes of our kernels swept (threads per block × lanes per row ×
          shared or global scratch) on chain, tree, table1 and Sinkhorn tree, each shape's
          results checked against the default shape's; the defaults are these guesses
          until this table has been read on a GPU

Results are checked first (ours and torch against a float64 torch reference on the
first rows). Targets (issue 5, H100): chain and tree within 1.5× of the copy; table1
≤ 0.1 ms; Sinkhorn tree ≤ 2 ms, dense within 1.5× of torch. Paper (GTX 1080): HEMD²
25 ms, Sinkhorn 100 iterations 88.9 ms. Without a GPU (or torch) it says so and exits 0.

    python benchmarks/bench_gpu.py [--batch 65536] [--reps 20] [--quick] [--only chain,tree]
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_tree import subtree_matrix  # noqa: E402  (the numpy path matrix, shared)
SAMPLES = os.path.join(HERE, "..", "sample_data")
PAPER_GPU_S = {"table1": 0.025, "sinkhorn": 0.0889}
LAM = 3.0
ITERS = 100
WORKLOADS = ("chain", "tree", "table1", "sinkhorn", "shapes")


def gpu_or_exit():
    """(torch, numba.cuda), or a message and exit 0 when either cannot reach a GPU."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("bench_gpu: NUMBA_ENABLE_CUDASIM is set: the simulator has no timings to give",
              file=sys.stderr)
        sys.exit(0)
    try:
        import torch
    except ImportError:
        print("bench_gpu: PyTorch is not installed: nothing to compare with", file=sys.stderr)
        sys.exit(0)
    from emdcli import gpu

    reason = gpu.unavailable_reason()
    if not torch.cuda.is_available() or reason is not None:
        print(f"bench_gpu: no CUDA GPU ({reason or 'torch.cuda.is_available() is False'}): "
              "nothing to measure", file=sys.stderr)
        sys.exit(0)
    from numba import cuda

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch, cuda


def event_time(torch, fn, reps, warmup=3):
    """Seconds per call of ``fn()`` from CUDA events on the default stream (numba
    launches there too), after ``warmup`` calls (the first compiles)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def rel_err(got, ref):
    """max |got − ref| / max |ref| (arrays on any device, compared in float64)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300))


def check(name, got, ref, tol):
    err = rel_err(got, ref)
    if not err <= tol:
        raise SystemExit(f"bench_gpu: {name} disagrees with the float64 reference "
                         f"(relative error {err:.3g} > {tol:g})")
    return err


# ----------------------------------------------------------------------- the references


def torch_chain(torch, P, Q, d):
    """EMD² value and projected gradient with cumsums (d: (N−1,) gaps)."""
    phi = torch.cumsum(P - Q, dim=1)[:, :-1]
    value = (d * phi * phi).sum(dim=1)
    a = 2.0 * d * phi
    r = torch.flip(torch.cumsum(torch.flip(a, [1]), dim=1), [1])  # Σ_{i≥k} a_i
    r = torch.nn.functional.pad(r, (0, 1))
    return value, r - r.mean(dim=1, keepdim=True)


def torch_tree(torch, P, Q, A, w):
    """HEMD² value and projected gradient with a dense path matrix A (nodes, N)."""
    phi = (P - Q) @ A.T
    value = (w * phi * phi).sum(dim=1)
    r = (2.0 * w * phi) @ A
    return value, r - r.mean(dim=1, keepdim=True)


def torch_sinkhorn(torch, P, Q, K, KM, lam, iters):
    """Algorithm 1, plain form, batched: value and projected gradient log(u)/λ."""
    U = torch.ones_like(P)
    for _ in range(iters):
        V = Q / (U @ K)
        U = P / (V @ K.T)
    V = Q / (U @ K)
    value = (U * (V @ KM.T)).sum(dim=1)
    G = torch.log(U) / lam
    finite = torch.isfinite(G)
    mean = torch.where(finite, G, 0).sum(dim=1) / finite.sum(dim=1).clamp(min=1)
    return value, G - mean[:, None]


path_matrix = subtree_matrix  # A (nodes, N): 1 where bin k lies in the subtree of node v


def rows(rng, b, n):
    x = rng.random((b, n), dtype=np.float32) ** 4 + np.float32(1e-6)
    return x / x.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------- workloads


def bench_emd(torch, cuda, name, space, B, reps, out):
    """chain / tree / table1: ours (device, host), torch, copy."""
    from emdcli.kernels.gpu_chain import chain_batch_cuda
    from emdcli.kernels.gpu_tree import tree_value_grad_cuda

    rng = np.random.default_rng(0)
    N = space.n
    P, Q = rows(rng, B, N), rows(rng, B, N)
    tP, tQ = torch.from_numpy(P).cuda(), torch.from_numpy(Q).cuda()
    dP, dQ = cuda.as_cuda_array(tP), cuda.as_cuda_array(tQ)  # zero-copy views, made once
    dout, dG = cuda.device_array(B, np.float32), cuda.device_array((B, N), np.float32)
    hout, hG = np.empty(B, np.float32), np.empty((B, N), np.float32)
    if name == "chain":
        d = space.gaps
        td = torch.from_numpy(d.astype(np.float32)).cuda()

        def ours(p=dP, q=dQ, o=dout, g=dG):
            chain_batch_cuda(p, q, None, d, 2.0, o, g)

        def theirs(p=tP, q=tQ, dd=td):
            return torch_chain(torch, p, q, dd)

        ref = torch_chain(torch, tP[:256].double(), tQ[:256].double(), td.double())
    else:
        c = cuda.to_device(np.full(B, -1, dtype=np.int64))
        args = ((space.parent, space.weight, space.bin_node, space.count), 2.0)
        tA = torch.from_numpy(path_matrix(space).astype(np.float32)).cuda()
        tw = torch.from_numpy(space.weight.astype(np.float32)).cuda()

        def ours(p=dP, q=dQ, o=dout, g=dG, cc=c):
            tree_value_grad_cuda(p, q, cc, *args, o, g)

        def theirs(p=tP, q=tQ):
            return torch_tree(torch, p, q, tA, tw)

        ref = torch_tree(torch, tP[:256].double(), tQ[:256].double(), tA.double(), tw.double())
    ours()
    cuda.synchronize()
    tv, tg = theirs()
    errs = {
        "ours": (check(f"{name} ours value", dout.copy_to_host()[:256], ref[0].cpu(), 1e-4),
                 check(f"{name} ours gradient", dG.copy_to_host()[:256], ref[1].cpu(), 1e-4)),
        "torch": (rel_err(tv[:256].cpu(), ref[0].cpu()), rel_err(tg[:256].cpu(), ref[1].cpu())),
    }

    def ours_host():
        if name == "chain":
            chain_batch_cuda(P, Q, None, space.gaps, 2.0, hout, hG)
        else:
            tree_value_grad_cuda(P, Q, np.full(B, -1, dtype=np.int64), (space.parent,
                                 space.weight, space.bin_node, space.count), 2.0, hout, hG)

    bufs = [torch.empty_like(tP) for _ in range(3)]

    def copy():
        bufs[0].copy_(tP)
        bufs[1].copy_(tQ)
        bufs[2].copy_(tP)

    times = {"ours": event_time(torch, ours, reps),
             "ours, host arrays": event_time(torch, ours_host, max(2, reps // 4), warmup=1),
             "torch": event_time(torch, theirs, reps),
             "copy P, Q, G": event_time(torch, copy, reps)}
    moved = 3 * B * N * 4  # read P and Q, write G
    label = {"chain": "chain EMD²", "tree": "tree HEMD²", "table1": "Table 1 HEMD²"}[name]
    for method, t in times.items():
        row = {"workload": f"{label} {B}×{N}", "method": method, "time": fmt(t),
               "vs ours": t / times["ours"], "GB/s (P,Q,G)": moved / t / 1e9}
        if method in errs:
            row["rel err value / grad"] = "%.1e / %.1e" % errs[method]
        if name == "table1":
            row["vs paper GPU"] = PAPER_GPU_S["table1"] / t
        out.append(row)


def bench_sinkhorn(torch, cuda, tree, B, reps, out):
    from emdcli.kernels.gpu_sinkhorn import cublas, dense_arrays, sinkhorn_batch_cuda
    from emdcli.gibbs import Solve, gibbs_for

    rng = np.random.default_rng(1)
    N = tree.n
    P, Q = rows(rng, B, N), rows(rng, B, N)
    tP, tQ = torch.from_numpy(P).cuda(), torch.from_numpy(Q).cuda()
    dP, dQ = cuda.as_cuda_array(tP), cuda.as_cuda_array(tQ)
    g_tree = gibbs_for(tree, LAM, np.float32, False)
    g_dense = gibbs_for(tree, LAM, np.float32, False, dense=True)
    dense = dense_arrays(g_dense, np.float32)
    outs = [cuda.device_array(B), cuda.device_array(B, np.int64), cuda.device_array(B),
            cuda.device_array((B, N), np.float32)]
    plain, plain_dense = (Solve(LAM, ITERS, 0.0, False, d, True) for d in (False, True))

    def ours_tree():
        sinkhorn_batch_cuda(dP, dQ, g_tree, plain, outs)

    def ours_dense():  # cuBLAS products through CuPy where it is installed
        sinkhorn_batch_cuda(dP, dQ, g_dense, plain_dense, outs, dense=dense)

    def ours_dense_numba():
        sinkhorn_batch_cuda(dP, dQ, g_dense, plain_dense, outs, dense=dense, blas=False)

    M = tree.ground_matrix()
    K = torch.exp(torch.from_numpy(-LAM * M - 1.0)).float().cuda()
    KM = K * torch.from_numpy(M).float().cuda()

    def theirs():
        return torch_sinkhorn(torch, tP, tQ, K, KM, LAM, ITERS)

    K64, KM64 = K.double(), KM.double()
    ref = torch_sinkhorn(torch, tP[:64].double(), tQ[:64].double(), K64, KM64, LAM, ITERS)
    errs = {}
    dense_name = "ours dense (CuPy cuBLAS)" if cublas() is not None else "ours dense"
    kernels = [("ours tree", ours_tree), (dense_name, ours_dense)]
    if cublas() is not None:
        kernels.append(("ours dense (Numba kernel)", ours_dense_numba))
    for method, fn in kernels:
        fn()
        its = outs[1].copy_to_host()
        if not (its == ITERS).all():
            print(f"bench_gpu: {method}: {int((its != ITERS).sum())} rows stopped early "
                  "(non-finite error)", file=sys.stderr)
        errs[method] = (rel_err(outs[0].copy_to_host()[:64], ref[0].cpu()),
                        rel_err(outs[3].copy_to_host()[:64], ref[1].cpu()))
        if not max(errs[method]) < 1e-2:  # float32 through 100 iterations: reported, not fatal
            print(f"bench_gpu: {method}: relative error {max(errs[method]):.2g} against "
                  "float64", file=sys.stderr)
    tv, tg = theirs()
    errs["torch"] = (rel_err(tv[:64].cpu(), ref[0].cpu()), rel_err(tg[:64].cpu(), ref[1].cpu()))
    times = {"ours tree": event_time(torch, ours_tree, max(2, reps // 4)),
             dense_name: event_time(torch, ours_dense, max(2, reps // 4), warmup=1)}
    if cublas() is not None:
        times["ours dense (Numba kernel)"] = event_time(torch, ours_dense_numba, 2, warmup=1)
    times["torch"] = event_time(torch, theirs, max(2, reps // 4))
    for method, t in times.items():
        out.append({"workload": f"Sinkhorn {ITERS} it. {B}×{N}", "method": method,
                    "time": fmt(t), "vs ours": t / times["ours tree"],
                    "rel err value / grad": "%.1e / %.1e" % errs[method],
                    "vs paper GPU": PAPER_GPU_S["sinkhorn"] / t})


# ---------------------------------------------------------------------- launch shapes


def shape_cases(cuda, tree, B, B1):
    """{workload: (default-shape call, [(threads, width, stash), ...], call(threads, width,
    max_shared) → fn, outputs to compare)} for the sweep: every fn fills the same device
    outputs, so each shape's results can be checked against the default's."""
    from emdcli.kernels.gpu_chain import chain_batch_cuda
    from emdcli.kernels.gpu_common import SHARED_BYTES
    from emdcli.kernels.gpu_sinkhorn import sinkhorn_batch_cuda
    from emdcli.kernels.gpu_tree import tree_value_grad_cuda
    from emdcli.gibbs import Solve, gibbs_for
    from emdcli.spaces import Chain

    rng = np.random.default_rng(2)
    cases = {}
    chain = Chain.uniform(1000)
    for name, space, b in (("chain", chain, B), ("tree", tree, B), ("table1", tree, B1),
                           ("sinkhorn", tree, B1)):
        n = space.n
        dP, dQ = cuda.to_device(rows(rng, b, n)), cuda.to_device(rows(rng, b, n))
        if name == "sinkhorn":
            g = gibbs_for(tree, LAM, np.float32, False)
            outs = [cuda.device_array(b), cuda.device_array(b, np.int64),
                    cuda.device_array(b), cuda.device_array((b, n), np.float32)]

            run = Solve(LAM, ITERS, 0.0, False, False, True)

            def call(t, w, shared, p=dP, q=dQ, g=g, o=outs):
                return lambda: sinkhorn_batch_cuda(p, q, g, run, o, threads_per_block=t,
                                                   width=w, max_shared=shared)
            shapes = [(t, w) for t in (64, 128, 256) for w in (None, 32, 64, 128, 256)
                      if w is None or w <= t]
            compared = (outs[0], outs[3])
        else:
            outs = [cuda.device_array(b, np.float32), cuda.device_array((b, n), np.float32)]
            if name == "chain":
                def call(t, w, shared, p=dP, q=dQ, o=outs, d=chain.gaps):
                    return lambda: chain_batch_cuda(p, q, None, d, 2.0, *o, threads_per_block=t,
                                                    width=w, max_shared=shared)
                shapes = [(t, w) for t in (32, 64, 128, 256) for w in (None, 8, 16, 32)
                          if w is None or w <= t]
            else:
                c = cuda.to_device(np.full(b, -1, dtype=np.int64))
                args = ((space.parent, space.weight, space.bin_node, space.count), 2.0)

                def call(t, w, shared, p=dP, q=dQ, o=outs, c=c, a=args):
                    return lambda: tree_value_grad_cuda(p, q, c, *a, *o, threads_per_block=t,
                                                        width=w, max_shared=shared)
                shapes = [(t, w) for t in (64, 128, 256, 512) for w in (None, 32, 64, 128, 256)
                          if w is None or w <= t]
            compared = tuple(outs)
        sweep = [(t, w, stash) for t, w in shapes for stash in ("auto", "global")]
        cases[name] = (call(128, None, SHARED_BYTES), sweep,
                       lambda t, w, stash, call=call: call(t, w, SHARED_BYTES if stash == "auto" else 0),
                       compared)
    return cases


def bench_shapes(torch, cuda, tree, B, B1, reps, out, timer=None):
    """Time every launch shape of :func:`shape_cases` (CUDA events unless ``timer(fn,
    reps)`` is given); each shape's results must match the default shape's."""
    timer = timer or (lambda fn, r: event_time(torch, fn, r, warmup=1))
    for name, (default, sweep, make, compared) in shape_cases(cuda, tree, B, B1).items():
        default()
        cuda.synchronize()
        ref = [a.copy_to_host() for a in compared]
        r = max(2, reps // 4) if name == "sinkhorn" else reps
        base = timer(default, r)
        for t, w, stash in sweep:
            fn = make(t, w, stash)
            for a in compared:  # poison, so a shape that writes nothing cannot pass
                a.copy_to_device(np.full(a.shape, np.nan, dtype=a.dtype))
            fn()
            cuda.synchronize()
            err = max(rel_err(a.copy_to_host(), x) for a, x in zip(compared, ref))
            tol = 1e-3 if name == "sinkhorn" else 1e-5  # float32 order of summation
            time = timer(fn, r)
            out.append({"workload": name, "threads": t, "width": "auto" if w is None else w,
                        "stash": stash, "time": fmt(time), "vs default": time / base,
                        "rel err": "%.1e" % err + ("" if err <= tol else "  DISAGREES")})


def fmt(t):
    from emdcli.timing import format_seconds

    return format_seconds(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=65536, help="rows for chain and tree")
    ap.add_argument("--table1-batch", type=int, default=512)
    ap.add_argument("--reps", type=int, default=20, help="timed calls per measurement")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--quick", action="store_true", help="small batches, few calls (smoke run)")
    args = ap.parse_args(argv)
    torch, cuda = gpu_or_exit()
    from emdcli.spaces import Chain
    from emdcli.timing import format_table
    from emdcli.treefiles import load_tree, read_bins

    if args.quick:
        args.batch, args.reps = 2048, 3
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(WORKLOADS))
    if unknown:
        ap.error(f"unknown workloads: {', '.join(unknown)} (choose from {', '.join(WORKLOADS)})")
    tree = load_tree(os.path.join(SAMPLES, "imagenet_wordnet_tree.csv"),
                     bins=read_bins(os.path.join(SAMPLES, "imagenet_bins.txt")))
    out = []
    if "chain" in wanted:
        bench_emd(torch, cuda, "chain", Chain.uniform(1000), args.batch, args.reps, out)
    if "tree" in wanted:
        bench_emd(torch, cuda, "tree", tree, args.batch, args.reps, out)
    if "table1" in wanted:
        bench_emd(torch, cuda, "table1", tree, args.table1_batch, args.reps, out)
    if "sinkhorn" in wanted:
        bench_sinkhorn(torch, cuda, tree, args.table1_batch, args.reps, out)
    shape_rows = []
    if "shapes" in wanted:
        bench_shapes(torch, cuda, tree, args.batch, args.table1_batch, args.reps, shape_rows)
    dev = torch.cuda.get_device_properties(0)
    print(f"{dev.name}, {dev.multi_processor_count} SMs, torch {torch.__version__}, "
          f"float32, TF32 off, CUDA events, {args.reps} calls per time")
    columns = ["workload", "method", "time", "vs ours", "GB/s (P,Q,G)",
               "rel err value / grad", "vs paper GPU"]
    print(format_table([{c: r.get(c, "-") for c in columns} for r in out], columns))
    if shape_rows:
        columns = ["workload", "threads", "width", "stash", "time", "vs default", "rel err"]
        print("\nLaunch shapes (default: 128 threads, automatic width; "
              "stash auto: shared memory when it fits)")
        print(format_table(shape_rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())

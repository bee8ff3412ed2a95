"""What every GPU kernel costs an SM (sm_90), without a GPU: NVVM compiles, ptxas counts.

The host launchers run on tiny inputs of every kernel variant (chain and tree EMD with
shared or global scratch; Sinkhorn for each space kind × form; float32 and float64) with
the launches recorded instead of made; each recorded kernel is compiled to PTX for sm_90
and, where ``ptxas`` is on the PATH, assembled to count registers, spills and stack.

Checks (exit 1 when one fails): no out-of-line reshape call in a kernel (it is linked
from CUDA C at the first launch); with ptxas, the largest block a launcher makes fits an
SM's 65 536 registers and no kernel spills more than 64 bytes. The table says how many
128-thread blocks (the launchers' default) the registers let an SM hold. Exit 3 (and a line saying
why) where NVVM, NVRTC or the CUDA bindings are missing. ``tests/test_gpu.py`` runs it.

    python benchmarks/gpu_resources.py [--quiet]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CANNOT = ("CudaSupportError", "DynamicLibNotFoundError", "NvvmSupportError")
REGISTERS_PER_SM = 65536
MAX_SPILL = 64  # bytes: the chain Sinkhorn's unrolled recurrences spill a word or two


def cannot(why):
    print(f"cannot compile for a GPU here: {why}")
    sys.exit(3)


def record_launches():
    """{(label, dispatcher id, signature): (label, python function, signature, largest
    block)} of every kernel the launchers make, launching nothing."""
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    from numba import cuda, typeof

    try:  # NVVM compiles without a GPU; only the device query needs standing in for
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
        import numba.cuda.dispatcher as disp

        disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    except Exception as exc:
        cannot(exc)
    from emdcli.kernels import gpu_chain, gpu_sinkhorn, gpu_tree
    from emdcli.kernels.gpu_common import MAX_BLOCK
    from emdcli.gibbs import Solve, gibbs_for
    from emdcli.spaces import Chain, Tree

    # host arrays stand in for device arrays; launches are recorded
    cuda.to_device = lambda a, *args, **kw: np.array(a)
    cuda.device_array = lambda shape, dtype=np.float64, **kw: np.zeros(shape, dtype)
    seen = {}
    label = [""]

    class Recorder:
        def __init__(self, kernel, block):
            self.kernel, self.block = kernel, block

        def __getitem__(self, config):
            def launch(*args):
                sig = tuple(typeof(a) for a in args)
                seen[(label[0], id(self.kernel), sig)] = (label[0], self.kernel.py_func, sig,
                                                          self.block)
            return launch

    for mod in (gpu_chain, gpu_tree, gpu_sinkhorn):
        mod.finish = lambda dev, host, like: dev if host is None else host
        for name in ("_chain_shared", "_chain_global", "_tree_shared", "_tree_global"):
            if hasattr(mod, name):
                setattr(mod, name, Recorder(getattr(mod, name), MAX_BLOCK))
    make = gpu_sinkhorn.sinkhorn_kernel
    gpu_sinkhorn.sinkhorn_kernel = lambda *key: Recorder(make(*key), gpu_sinkhorn.MAX_THREADS)
    tree = Tree.from_edges(list("rabc"), ["", "r", "r", "a"], [0, 1, 2, 1])
    for dt in (np.float32, np.float64):
        P = np.full((2, 3), 1 / 3, dt)
        for shared in (0, 1 << 20):
            where = "shared" if shared else "global"
            label[0] = f"chain EMD {where} {np.dtype(dt)}"
            gpu_chain.chain_batch_cuda(P, P, None, np.ones(2), 2.0, None, np.empty((2, 3), dt),
                                       max_shared=shared)
            label[0] = f"tree EMD {where} {np.dtype(dt)}"
            gpu_tree.tree_value_grad_cuda(P[:, :2], P[:, :2], np.full(2, -1), (tree.parent,
                                          tree.weight, tree.bin_node, tree.count), 2.0, None,
                                          np.empty((2, 2), dt), max_shared=shared)
        for kind, sp, dense in (("chain", Chain.uniform(3), False), ("tree", tree, False),
                                ("dense", Chain.uniform(3), True)):
            for log_form in (False, True):
                g = gibbs_for(sp, 1.0, dt, log_form, dense=dense)
                q = P[:, :sp.n]
                for shared in (0, 1 << 20):
                    form = "log" if log_form else "plain"
                    label[0] = f"Sinkhorn {kind} {form} {np.dtype(dt)}"
                    gpu_sinkhorn.sinkhorn_batch_cuda(
                        q, q, g, Solve(1.0, 3, 0.0, log_form, dense, True), blas=False,
                        max_shared=shared)
    return seen


def ptxas_info(ptxas, ptx):
    """(registers, spill bytes, stack bytes, static shared bytes) from ``ptxas -v``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        info = subprocess.run([ptxas, "-arch=sm_90", "-v", path, "-o", os.devnull],
                              capture_output=True, text=True).stderr
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    spill = max([int(k) for k in re.findall(r"(\d+) bytes spill", info)] or [0])
    stack = int((re.search(r"(\d+) bytes stack frame", info) or [0, 0])[1])
    smem = int((re.search(r"(\d+) bytes smem", info) or [0, 0])[1])
    return regs, spill, stack, smem


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quiet", action="store_true", help="only the checks' verdict")
    args = ap.parse_args(argv)
    seen = record_launches()
    from numba import cuda

    ptxas = shutil.which("ptxas")
    rows, failures = [], []
    for label, func, sig, block in seen.values():
        try:
            ptx, _ = cuda.compile_ptx(func, sig, cc=(9, 0))
        except Exception as exc:
            if type(exc).__name__ in CANNOT:
                cannot(exc)
            raise
        name = f"{label} ({func.__name__})"
        if "nocopy_reshape" in ptx:
            failures.append(f"{name}: an out-of-line reshape call")
        row = {"kernel": name, "registers": "-", "spill B": "-", "stack B": "-",
               "static smem B": "-", "largest block": block, "blocks/SM at 128 threads": "-"}
        if ptxas:
            regs, spill, stack, smem = ptxas_info(ptxas, ptx)
            row.update({"registers": regs, "spill B": spill, "stack B": stack,
                        "static smem B": smem,
                        "blocks/SM at 128 threads": REGISTERS_PER_SM // (regs * 128)})
            if regs * block > REGISTERS_PER_SM:
                failures.append(f"{name}: {regs} registers × {block} threads > "
                                f"{REGISTERS_PER_SM}")
            if spill > MAX_SPILL:
                failures.append(f"{name}: spills {spill} bytes")
        rows.append(row)
    if not args.quiet:
        from emdcli.timing import format_table

        print(format_table(rows, list(rows[0])))
    for f in failures:
        print(f"gpu_resources: {f}", file=sys.stderr)
    print(f"compiled {len(rows)} kernels for sm_90" + ("" if ptxas else " (no ptxas: no counts)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

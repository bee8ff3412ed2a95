"""The numba.cuda kernels (``emdcli.kernels.gpu_*``, ``emdcli.gpu``) against the CPU kernels.

Without a GPU (CI) they run in the CUDA simulator: this module sets NUMBA_ENABLE_CUDASIM=1
just long enough to import numba.cuda (which picks its mode once, on first import) and
puts the variable back, so the other test modules in the same process are untouched;
the CPU kernels are plain ``numba.njit`` and keep compiling natively. On a real GPU run
``EMDCLI_TEST_CUDA=real pytest tests/test_gpu.py`` (the same tests, un-simulated).
The simulator runs every thread as a Python thread, so the inputs are tiny, with 4
threads per block so that rows span several blocks and lanes.

Every kernel is compared with its CPU twin (values and gradients, float32 and float64):
chain EMD^rho (random positions, rows and class targets, shared and global scratch, one
thread per row and a group per row), tree HEMD^rho (random trees, bins on internal nodes,
several bins on one node, value-only), Sinkhorn plain and log over chain, tree and dense
Gibbs kernels (an asymmetric ground matrix too, zero masses, per-row stopping). Device
arrays in give device arrays out (the launchers, ``gpu.emd_on_device``); ``emdcli.gpu``'s
dispatch agrees with ``emdcli.emd`` / ``emdcli.sinkhorn.sinkhorn``. A last test compiles
every kernel to PTX for sm_90 in a subprocess (when a CUDA toolkit's NVVM is installed),
which catches typing errors the simulator, being Python, cannot.
"""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

REAL = os.environ.get("EMDCLI_TEST_CUDA") == "real"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_cuda():
    """numba.cuda, in simulator mode unless a real GPU run was asked for (or numba.cuda
    was already imported), leaving NUMBA_ENABLE_CUDASIM as it was."""
    if REAL or "numba.cuda" in sys.modules:
        from numba import cuda

        return cuda
    from numba.core import config

    before = os.environ.get("NUMBA_ENABLE_CUDASIM")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    config.reload_config()
    try:
        from numba import cuda
    finally:
        if before is None:
            del os.environ["NUMBA_ENABLE_CUDASIM"]
        else:
            os.environ["NUMBA_ENABLE_CUDASIM"] = before
        config.reload_config()
    return cuda


cuda = _import_cuda()
SIM = ".simulator" in cuda.jit.__module__
if not SIM and not cuda.is_available():
    if REAL:
        pytest.fail("EMDCLI_TEST_CUDA=real but no usable GPU", pytrace=False)
    pytest.skip("numba.cuda was imported for a real GPU and none is usable", allow_module_level=True)

import emdcli  # noqa: E402
from emdcli import gpu  # noqa: E402
from emdcli.kernels.chain import chain_batch  # noqa: E402
from emdcli.kernels.gpu_chain import chain_batch_cuda  # noqa: E402
from emdcli.kernels.gpu_common import on_device  # noqa: E402
from emdcli.kernels.gpu_sinkhorn import sinkhorn_batch_cuda  # noqa: E402
from emdcli.kernels.gpu_tree import tree_value_cuda, tree_value_grad_cuda  # noqa: E402
from emdcli.kernels.gibbs import DENSE  # noqa: E402
from emdcli.kernels.sinkhorn import N_SCRATCH, dense_plain_batch, sinkhorn_batch  # noqa: E402
from emdcli.kernels.tree import tree_value, tree_value_grad  # noqa: E402
from emdcli.gibbs import Solve, gibbs_for  # noqa: E402
from emdcli.spaces import Chain, Ground, Tree  # noqa: E402

UNIT = np.empty(0)  # row scales 1: the rows are distributions already
TPB = 4  # threads per block: several blocks, several lanes per row
# the simulator computes with NumPy scalars in its own threads: log(0) warns there
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")


@pytest.fixture(autouse=True)
def _simulated():
    """Keep NUMBA_ENABLE_CUDASIM=1 visible to emdcli.gpu while a test runs (simulator
    only); the simulator computes with NumPy scalars, which warn where the GPU is silent."""
    if not SIM:
        yield
        return
    before = os.environ.get("NUMBA_ENABLE_CUDASIM")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        with np.errstate(all="ignore"):
            yield
    finally:
        if before is None:
            del os.environ["NUMBA_ENABLE_CUDASIM"]
        else:
            os.environ["NUMBA_ENABLE_CUDASIM"] = before


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("gpu",) + key).encode()))


def rows(rng, b, n, dt, zeros=False):
    a = rng.uniform(0.05, 1.0, (b, n)) ** 2
    if zeros:
        a[0, rng.integers(0, n)] = 0.0
    return (a / a.sum(axis=1, keepdims=True)).astype(dt)


def close(dt):
    return dict(rtol=1e-10, atol=1e-12) if dt == np.float64 else dict(rtol=2e-5, atol=2e-6)


def host(x):
    return x.copy_to_host() if on_device(x) else x


def random_tree(rng, nodes, n_bins, shared_nodes=False):
    """Flattened arrays (parent[v] < v): random parents, real weights (one zero), bins on a
    random subset of nodes (internal ones and the root included), or with repeats."""
    parent = np.array([-1] + [int(rng.integers(max(0, v - 3), v)) if rng.uniform() < 0.5
                              else int(rng.integers(0, v)) for v in range(1, nodes)], dtype=np.int64)
    weight = rng.uniform(0.1, 2.0, nodes)
    weight[0] = 0.0
    if nodes > 1:
        weight[rng.integers(1, nodes)] = 0.0
    if shared_nodes:
        bin_node = rng.integers(0, nodes, n_bins)
    else:
        bin_node = rng.permutation(nodes)[:n_bins]
    bin_node = bin_node.astype(np.int64)
    count = np.bincount(bin_node, minlength=nodes).astype(np.int64)
    for v in range(nodes - 1, 0, -1):
        count[parent[v]] += count[v]
    return parent, weight, bin_node, count


# ----------------------------------------------------------------------------- chain

CHAIN_CASES = [
    # dtype, classes, rho, width, max_shared, n
    (np.float64, False, 2.0, None, None, 7),
    (np.float32, False, 1.0, None, None, 7),
    (np.float64, True, 1.5, None, 0, 7),  # global stash
    (np.float32, True, 2.0, 1, None, 6),  # one thread per row
    (np.float64, False, 3.0, 2, 0, 9),  # two lanes, several tiles, global stash
    (np.float64, True, 1.0, None, None, 1),  # a single bin: no gaps
    (np.float32, False, 2.0, 2, None, 30),  # four tiles of 2 lanes × VEC bins
    (np.float64, True, 1.0, 4, 0, 41),  # three tiles of a whole 4-thread "warp", global
    (np.float64, False, 1.5, None, None, 5),  # one lane: N − 1 = VEC
]


@pytest.mark.parametrize("dt,classes,rho,width,max_shared,n", CHAIN_CASES)
def test_chain_matches_cpu(dt, classes, rho, width, max_shared, n):
    rng = rng_for("chain", dt.__name__, classes, rho, width, n)
    b = 5
    P, Q = rows(rng, b, n, dt), rows(rng, b, n, dt)
    x = np.cumsum(rng.uniform(0.2, 2.0, n))
    d = np.ascontiguousarray(np.diff(x))
    C = rng.integers(0, n, b).astype(np.int64) if classes else np.empty(0, np.int64)
    out, G = np.empty(b, dt), np.empty((b, n), dt)
    chain_batch((P, P if classes else Q, C, UNIT, UNIT), d, rho, out, G, np.empty((2, n)))
    kw = dict(threads_per_block=TPB, width=width)
    if max_shared is not None:
        kw["max_shared"] = max_shared
    got, grad = chain_batch_cuda(P, Q, C, d, rho, None, np.empty((b, n), dt), **kw)
    assert got.dtype == dt and grad.dtype == dt
    np.testing.assert_allclose(got, out, **close(dt))
    np.testing.assert_allclose(grad, G, **close(dt))
    value_only, none = chain_batch_cuda(P, Q, C, d, rho, np.empty(b, dt), None, **kw)
    assert none is None
    np.testing.assert_allclose(value_only, out, **close(dt))


# ------------------------------------------------------------------------------ tree

TREE_CASES = [
    # dtype, classes, rho, nodes, bins, shared_nodes, max_shared
    (np.float64, False, 2.0, 9, 6, False, None),
    (np.float32, True, 1.0, 11, 7, False, None),
    (np.float64, True, 1.5, 10, 10, False, 0),  # every node a bin, global scratch
    (np.float32, False, 2.0, 8, 6, True, None),  # several bins on one node
    (np.float64, False, 1.0, 1, 1, False, None),  # the root alone
]


@pytest.mark.parametrize("dt,classes,rho,nodes,n_bins,shared_nodes,max_shared", TREE_CASES)
def test_tree_matches_cpu(dt, classes, rho, nodes, n_bins, shared_nodes, max_shared):
    rng = rng_for("tree", dt.__name__, classes, rho, nodes, n_bins, shared_nodes)
    parent, weight, bin_node, count = random_tree(rng, nodes, n_bins, shared_nodes)
    b, n = 4, n_bins
    P, Q = rows(rng, b, n, dt), rows(rng, b, n, dt)
    c = rng.integers(0, n, b).astype(np.int64) if classes else np.full(b, -1, np.int64)
    out, G = np.empty(b, dt), np.empty((b, n), dt)
    tree_value_grad((P, Q, c, UNIT, UNIT), (parent, weight, bin_node, count), rho, out, G, np.empty((2, nodes)))
    kw = dict(threads_per_block=TPB)
    if max_shared is not None:
        kw["max_shared"] = max_shared
    got, grad = tree_value_grad_cuda(P, Q, c, (parent, weight, bin_node, count), rho,
                                     np.empty(b, dt), np.empty((b, n), dt), **kw)
    np.testing.assert_allclose(got, out, **close(dt))
    np.testing.assert_allclose(grad, G, **close(dt))
    values = np.empty(b, dt)
    tree_value((P, Q, c, UNIT, UNIT), (parent, weight, bin_node, count), rho, values, np.empty((2, nodes)))
    np.testing.assert_allclose(tree_value_cuda(P, Q, c, parent, weight, bin_node, rho, **kw),
                               values, **close(dt))


# -------------------------------------------------------------------------- sinkhorn


def small_tree():
    """8 nodes, bins on leaves and on internal nodes, one zero-cost edge."""
    return Tree.from_edges(list("rabcdefg"), ["", "r", "r", "a", "a", "b", "c", "c"],
                           [0, 1.0, 2.0, 0.5, 0.0, 1.0, 0.7, 0.3], bins=list("dfgbe"))


def space_for(kind, rng):
    if kind == "chain":
        return Chain.from_positions(np.cumsum(rng.uniform(0.2, 1.5, 5))), False
    if kind == "tree":
        return small_tree(), False
    m = rng.uniform(0.0, 2.0, (4, 4))  # asymmetric, not a metric
    np.fill_diagonal(m, 0.0)
    return Ground.from_matrix(m), True


def solve(lam, iters, tol, log_form, g):
    """The :class:`Solve` of a run on g's kernel, with the gradient."""
    return Solve(lam, iters, tol, log_form, g.kind == DENSE, True)


def cpu_sinkhorn(P, Q, g, lam, iters, tol, log_form, width):
    """What the CPU runs: the batched BLAS form for dense plain, the row solver otherwise."""
    if g.kind == DENSE and not log_form:
        with np.errstate(all="ignore"):
            return dense_plain_batch(P, Q, g.mat, g.mat2, Solve(lam, iters, tol, False, True, True))
    b, n = P.shape
    values, errors = np.empty(b), np.empty(b)
    its = np.empty(b, np.int64)
    G = np.empty((b, n), P.dtype)
    with np.errstate(all="ignore"):
        sinkhorn_batch(P, Q, g, Solve(lam, iters, tol, log_form, g.kind == DENSE, True),
                       (values, its, errors, G), np.empty((2, N_SCRATCH, width), P.dtype))
    return values, its, errors, G


def assert_same_sinkhorn(got, want, dt):
    values, its, errors, G = (host(x) for x in got)
    np.testing.assert_array_equal(its, want[1])
    np.testing.assert_allclose(values, want[0], **close(dt))
    np.testing.assert_allclose(errors, want[2], rtol=1e-4 if dt == np.float32 else 1e-8,
                               atol=1e-6 if dt == np.float32 else 1e-12)
    finite = np.isfinite(want[3])
    np.testing.assert_array_equal(np.isfinite(G), finite)
    np.testing.assert_allclose(G[finite], want[3][finite], **close(dt))


@pytest.mark.parametrize("kind", ["chain", "tree", "dense"])
@pytest.mark.parametrize("log_form", [False, True])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_sinkhorn_matches_cpu(kind, log_form, dt):
    rng = rng_for("sinkhorn", kind, log_form, dt.__name__)
    sp, dense = space_for(kind, rng)
    b, n, lam = (2 if kind == "tree" else 3), sp.n, 2.5
    P, Q = rows(rng, b, n, dt, zeros=True), rows(rng, b, n, dt)
    g = gibbs_for(sp, lam, dt, log_form, dense=dense)
    width = max(n, getattr(sp, "n_nodes", n))
    want = cpu_sinkhorn(P, Q, g, lam, 3, 0.0, log_form, width)
    got = sinkhorn_batch_cuda(P, Q, g, solve(lam, 3, 0.0, log_form, g), threads_per_block=TPB,
                              blas=False)  # the Numba kernel, also where CuPy is installed
    assert_same_sinkhorn(got, want, dt)


class _HostArray(np.ndarray):
    """A numpy array with CuPy's ``get``: what the fake CuPy below hands out."""

    def get(self):
        return np.asarray(self).copy()


class _FakeCupy:
    """numpy dressed as CuPy (arrays with ``get``), to run the cuBLAS path's glue on CI."""

    def asarray(self, x, dtype=None):
        return np.array(host(x), dtype=dtype).view(_HostArray)

    def __getattr__(self, name):
        f = getattr(np, name)
        if not callable(f):
            return f

        def wrapped(*args, **kwargs):
            r = f(*args, **kwargs)
            return r.view(_HostArray) if isinstance(r, np.ndarray) else r

        return wrapped


@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_dense_plain_as_cublas_products(monkeypatch, dt, tol):
    """The dense plain form through CuPy is the CPU's batched products on CuPy arrays:
    with numpy dressed as CuPy it gives the CPU's results bit for bit (host outputs
    given or allocated, K from the Gibbs kernel or from ``dense_arrays``); with a real
    CuPy on a real GPU, to rounding."""
    from emdcli.kernels import gpu_sinkhorn

    rng = rng_for("cublas", dt.__name__, tol)
    sp = Chain.from_positions(np.cumsum(rng.uniform(0.5, 1.5, 6)))
    b, n, lam = 4, sp.n, 2.0
    P, Q = rows(rng, b, n, dt, zeros=True), rows(rng, b, n, dt)
    g = gibbs_for(sp, lam, dt, False, dense=True)
    want = cpu_sinkhorn(P, Q, g, lam, 8, tol, False, n)
    real = gpu_sinkhorn.cublas()
    if real is not None:
        assert_same_sinkhorn(sinkhorn_batch_cuda(P, Q, g, solve(lam, 8, tol, False, g), blas=True),
                             want, dt)
    monkeypatch.setattr(gpu_sinkhorn, "cublas", lambda: _FakeCupy())
    got = sinkhorn_batch_cuda(P, Q, g, solve(lam, 8, tol, False, g), blas=True)
    for x, w in zip(got, want):
        assert type(x) is np.ndarray
        np.testing.assert_array_equal(x, w)
    outs = [np.empty(b), np.empty(b, np.int64), np.empty(b), np.empty((b, n), dt)]
    got = sinkhorn_batch_cuda(P, Q, g, solve(lam, 8, tol, False, g), outs, blas=True,
                              dense=(g.mat, g.mat.T, np.ascontiguousarray(g.mat2.T)))
    for x, o, w in zip(got, outs, want):
        assert x is o
        np.testing.assert_array_equal(x, w)
    if SIM:
        monkeypatch.undo()
        with pytest.raises(RuntimeError, match="CuPy"):
            sinkhorn_batch_cuda(P, Q, g, solve(lam, 8, tol, False, g), blas=True)


@pytest.mark.parametrize("kind,width,lam", [("chain", 2, 0.5), ("tree", 2, 0.5), ("dense", 1, 2.0)])
def test_sinkhorn_rows_stop_on_their_own(kind, width, lam):
    """With a tolerance, rows converge after different numbers of iterations (as on the
    CPU) while the others go on; group widths other than the default; the work rows in
    shared and in global memory."""
    rng = rng_for("stop", kind)
    sp, dense = space_for(kind, rng)
    b, n = 3, sp.n
    P, Q = rows(rng, b, n, np.float64), rows(rng, b, n, np.float64)
    g = gibbs_for(sp, lam, np.float64, False, dense=dense)
    want = cpu_sinkhorn(P, Q, g, lam, 8, 1e-3, False, max(n, getattr(sp, "n_nodes", n)))
    assert len(set(want[1].tolist())) > 1
    for max_shared in (None, 0):  # work rows in shared memory, then in global memory
        kw = {} if max_shared is None else {"max_shared": max_shared}
        got = sinkhorn_batch_cuda(P, Q, g, solve(lam, 8, 1e-3, False, g), threads_per_block=TPB,
                                  width=width, blas=False, **kw)
        assert_same_sinkhorn(got, want, np.float64)


# ------------------------------------------------------- real launch shapes (real GPU)

# Production launches: 128-thread blocks (full warps, several rows per block for the chain,
# a block per row for the tree), rows long enough for several tiles. Too slow for the
# simulator on CI; EMDCLI_TEST_CUDA=sim-full runs them there too.
FULL_SHAPES = not SIM or os.environ.get("EMDCLI_TEST_CUDA") == "sim-full"


def test_launch_shapes_stay_within_hardware_limits():
    """Blocks of at most MAX_BLOCK threads (a 1024-thread block of these kernels needs more
    registers than an SM has), powers of two, groups that tile the block."""
    from emdcli.kernels.gpu_chain import chain_shape
    from emdcli.kernels.gpu_common import MAX_BLOCK, launch_shape

    for tpb in (1, 3, 32, 100, 128, 512, 1000, 1024, 4096):
        for n in (1, 2, 7, 33, 1000, 5000):
            for shape in (launch_shape(n, tpb), chain_shape(n, tpb), launch_shape(n, tpb, 64)):
                threads, width, per_block = shape
                assert threads <= MAX_BLOCK and threads & (threads - 1) == 0
                assert width * per_block == threads and width <= threads
    assert launch_shape(1000, 1024)[0] == MAX_BLOCK == 512


@pytest.mark.skipif(not FULL_SHAPES, reason="production launch shapes: a real GPU (or sim-full)")
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_production_launch_shapes_match_cpu(dt):
    from emdcli.bench import default_tree

    rng = rng_for("production", dt.__name__)
    if SIM:  # sim-full: the same code on sizes the simulator finishes (still full warps)
        parent, weight, bin_node, _ = random_tree(rng, 60, 40)
        names = [f"n{v}" for v in range(60)]
        tree = Tree.from_edges(names, [names[u] if u >= 0 else "" for u in parent], weight,
                               bins=[names[v] for v in bin_node])
        b, n_chain, iters = 2, 70, 3
    else:
        tree = default_tree()  # WordNet: 1371 nodes, 1000 bins
        b, n_chain, iters = 6, 300, 20
    for n, use_tree in ((n_chain, False), (tree.n, True)):
        P, Q = rows(rng, b, n, dt), rows(rng, b, n, dt)
        labels = rng.integers(0, n, b).astype(np.int64)
        sp = tree if use_tree else Chain.from_positions(np.cumsum(rng.uniform(0.2, 1.5, n)))
        for q in (Q, labels):
            for rho in (1.0, 2.0):
                want_v, want_g = emdcli.emd(P, q, space=sp, rho=rho, gradient=True, dtype=dt,
                                            normalize="none")
                got_v, got_g = emdcli.emd(P, q, space=sp, rho=rho, gradient=True, dtype=dt,
                                          normalize="none", device="cuda")
                np.testing.assert_allclose(got_v, want_v, **close(dt))
                np.testing.assert_allclose(got_g, want_g, **close(dt))
    for log_form in (False, True):
        P, Q = rows(rng, b, tree.n, dt), rows(rng, b, tree.n, dt)
        for kind_dense in (False, True):
            g = gibbs_for(tree, 3.0, dt, log_form, dense=kind_dense)
            want = cpu_sinkhorn(P, Q, g, 3.0, iters, 0.0, log_form, tree.n_nodes)
            got = sinkhorn_batch_cuda(P, Q, g, solve(3.0, iters, 0.0, log_form, g))
            assert_same_sinkhorn(got, want, dt)


# --------------------------------------------------------------- device arrays, dispatch


def test_device_arrays_in_device_arrays_out():
    """Arrays already on the GPU stay there: the launchers and gpu.emd_on_device."""
    rng = rng_for("device")
    b, n = 3, 5
    P, Q = rows(rng, b, n, np.float32), rows(rng, b, n, np.float32)
    dP, dQ = cuda.to_device(P), cuda.to_device(Q)
    chain = Chain.uniform(n)
    want = chain_batch_cuda(P, Q, None, chain.gaps, 2.0, None, np.empty((b, n), np.float32),
                            threads_per_block=TPB)
    out, G = chain_batch_cuda(dP, dQ, None, chain.gaps, 2.0, None,
                              cuda.device_array((b, n), np.float32), threads_per_block=TPB)
    assert on_device(out) and on_device(G)
    np.testing.assert_array_equal(out.copy_to_host(), want[0])
    np.testing.assert_array_equal(G.copy_to_host(), want[1])
    values, G = gpu.emd_on_device(dP, dQ, chain, 2.0, gradient=True, threads_per_block=TPB)
    assert on_device(values) and on_device(G)
    np.testing.assert_array_equal(values.copy_to_host(), want[0])
    np.testing.assert_array_equal(G.copy_to_host(), want[1])
    tree = small_tree()
    labels = np.array([4, 0, 2])
    values = gpu.emd_on_device(dP, cuda.to_device(labels), tree, threads_per_block=TPB)
    np.testing.assert_allclose(values.copy_to_host(), emdcli.emd(P, labels, space=tree, dtype="float32"),
                               **close(np.float32))
    c = np.full(b, -1, np.int64)
    out, G = tree_value_grad_cuda(dP, dQ, c, (tree.parent, tree.weight, tree.bin_node,
                                  tree.count), 2.0, None, cuda.device_array((b, n), np.float32),
                                  threads_per_block=TPB)
    assert on_device(out) and on_device(G)
    vals, grads = np.empty(b, np.float32), np.empty((b, n), np.float32)
    tree_value_grad((P, Q, c, UNIT, UNIT), (tree.parent, tree.weight, tree.bin_node, tree.count), 2.0,
                    vals, grads, np.empty((1, tree.n_nodes)))
    np.testing.assert_allclose(out.copy_to_host(), vals, **close(np.float32))
    np.testing.assert_allclose(G.copy_to_host(), grads, **close(np.float32))
    g = gibbs_for(chain, 2.0, np.float32, True)
    got = sinkhorn_batch_cuda(dP, dQ, g, solve(2.0, 3, 0.0, True, g), threads_per_block=TPB)
    assert all(on_device(x) for x in got)
    assert_same_sinkhorn(got, cpu_sinkhorn(P, Q, g, 2.0, 3, 0.0, True, n), np.float32)
    g = gibbs_for(chain, 2.0, np.float32, False, dense=True)  # dense plain: CuPy where present
    outs = [cuda.device_array(b), None, None, cuda.device_array((b, n), np.float32)]
    got = sinkhorn_batch_cuda(dP, dQ, g, solve(2.0, 3, 0.0, False, g), outs,
                              threads_per_block=TPB)
    assert all(on_device(x) for x in got) and got[0] is outs[0] and got[3] is outs[3]
    assert_same_sinkhorn(got, cpu_sinkhorn(P, Q, g, 2.0, 3, 0.0, False, n), np.float32)


class _GradCudaTensor:
    """A PyTorch CUDA tensor that requires grad, as numba sees one: exporting
    ``__cuda_array_interface__`` raises until the tensor is detached."""

    requires_grad = True

    def __init__(self, dev):
        self._dev = dev
        self.shape = dev.shape

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad.")

    def detach(self):
        return self._dev


def test_device_tensors_that_require_grad_are_detached():
    """A training loop's prediction (a CUDA tensor that requires grad) is computed from
    its detached value, results on the device; hasattr would raise on it."""
    rng = rng_for("grad")
    b, n = 3, 5
    P, Q = rows(rng, b, n, np.float32), rows(rng, b, n, np.float32)
    dP, dQ = cuda.to_device(P), cuda.to_device(Q)
    chain = Chain.uniform(n)
    want = gpu.emd_on_device(dP, dQ, chain, 2.0, gradient=True, threads_per_block=TPB)
    assert on_device(_GradCudaTensor(dP))
    got = emdcli.emd(_GradCudaTensor(dP), _GradCudaTensor(dQ), space=chain, rho=2.0,
                     gradient=True, device="cuda")
    assert on_device(got[0]) and on_device(got[1])
    np.testing.assert_array_equal(got[0].copy_to_host(), want[0].copy_to_host())
    np.testing.assert_array_equal(got[1].copy_to_host(), want[1].copy_to_host())


def test_exported_arrays_wait_only_for_other_streams(monkeypatch):
    """A CuPy / PyTorch array on a default stream is taken without a host synchronisation
    (the launches are ordered after that stream's work); one on another stream waits."""
    from emdcli.kernels import gpu_common

    calls = []
    monkeypatch.setattr(gpu_common.cuda, "as_cuda_array",
                        lambda x, sync=True: calls.append(sync) or x, raising=False)

    class Exported:
        def __init__(self, stream):
            self.__cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "version": 3,
                                             "data": (0, False), "stream": stream}

    for stream, sync in ((1, False), (2, False), (None, True), (0x7F00AB, True)):
        x = Exported(stream)
        assert gpu_common.to_device(x) is x and calls[-1] is sync


def test_dispatch_matches_public_functions():
    """emdcli.gpu's chain_cuda / tree_cuda / sinkhorn_cuda, called as api._chain / _tree
    and sinkhorn._structured are, agree with emdcli.emd and emdcli.sinkhorn.sinkhorn."""
    from emdcli.sinkhorn import sinkhorn

    assert gpu.cuda_available()
    rng = rng_for("dispatch")
    b, n = 2, 5
    P, Q = rows(rng, b, n, np.float64), rows(rng, b, n, np.float64)
    labels = rng.integers(0, n, b).astype(np.int64)
    chain = Chain.from_positions(np.cumsum(rng.uniform(0.5, 1.5, n)))
    tree = small_tree()
    for sp, call, kind, q in [(chain, gpu.chain_cuda, "rows", Q),
                              (tree, gpu.tree_cuda, "classes", labels)]:
        want_v, want_g = emdcli.emd(P, q, space=sp, rho=2.0, gradient=True)
        values, g = np.empty(b), np.empty((b, n))
        call(P, kind, q, sp, 2.0, values, g, threads_per_block=TPB)
        np.testing.assert_allclose(values, want_v, **close(np.float64))
        np.testing.assert_allclose(g, want_g, **close(np.float64))
    values = np.empty(b)
    gpu.tree_cuda(P, "rows", Q, tree, 1.0, values, None, threads_per_block=TPB)
    np.testing.assert_allclose(values, emdcli.emd(P, Q, space=tree), **close(np.float64))
    values, _ = gpu.chain_cuda(P, "classes", labels, chain, 1.0, None, None, threads_per_block=TPB)
    np.testing.assert_allclose(values, emdcli.emd(P, labels, space=chain), **close(np.float64))
    res = sinkhorn(P, Q, lam=2.0, iters=3, tol=0.0, space=chain, kernel="dense", gradient=True)
    from emdcli.gibbs import Solve

    values, its, errors, G = gpu.sinkhorn_cuda(P, Q, chain, Solve(2.0, 3, 0.0, False, True, True),
                                               np.float64, threads_per_block=TPB)
    np.testing.assert_array_equal(its, res.iterations)
    np.testing.assert_allclose(values, res.values, **close(np.float64))
    np.testing.assert_allclose(G, res.gradient, **close(np.float64))


def test_clock_books_copies_compilation_and_kernels():
    """gpu.clock_phases: every phase of a host-array call is booked; a first launch of a
    new signature goes to compilation where the dispatcher shows it; off afterwards."""
    from emdcli.kernels.gpu_common import CLOCK

    rng = rng_for("clock")
    P, Q = rows(rng, 3, 5, np.float64), rows(rng, 3, 5, np.float64)
    d = np.ones(4)
    with gpu.clock_phases() as seconds:
        chain_batch_cuda(P, Q, None, d, 2.0, None, np.empty((3, 5)), threads_per_block=TPB)
    assert set(seconds) == {"to_device", "compile", "kernel", "to_host"}
    assert seconds["to_device"] > 0 and seconds["to_host"] > 0
    assert seconds["kernel"] + seconds["compile"] > 0
    assert not CLOCK.on
    before = dict(CLOCK.seconds)
    chain_batch_cuda(P, Q, None, d, 2.0, None, None, threads_per_block=TPB)
    assert CLOCK.seconds == before  # off: nothing booked


def test_compute_verbose_and_bench_split_gpu_time(tmp_path):
    """``emd compute --device cuda --verbose`` reports the GPU phases; ``emd bench``'s
    cuda rows carry kernel and copy seconds."""
    from common import cli_runner

    from emdcli import bench
    from emdcli.cli import app

    rng = rng_for("verbose")
    np.save(tmp_path / "p.npy", rows(rng, 4, 3, np.float64))
    np.save(tmp_path / "c.npy", rng.integers(0, 3, 4))
    r = cli_runner().invoke(app, ["compute", str(tmp_path / "p.npy"), str(tmp_path / "c.npy"),
                                 "--device", "cuda", "-v"])
    assert r.exit_code == 0, r.stderr
    line = r.stderr.splitlines()[-1]
    assert line.startswith("timing: 4 rows in ") and "on the GPU: copies in " in line
    assert "kernels " in line and "copies out " in line
    cfg = bench.BenchConfig(space=Chain.uniform(3), batch=2, iters=[2], dtypes=["float64"],
                            repeat=1, devices=["cuda"], budget=0.0)
    got, _ = bench.run_bench(cfg)
    assert [r["metric"] for r in got] == ["emd", "emd2", "sinkhorn"]
    for row in got:
        assert row["device"] == "cuda" and row["kernel_s"] > 0 and row["copies_s"] > 0


def test_cuda_available_follows_the_simulator_switch(monkeypatch):
    if not SIM:
        assert gpu.cuda_available() and gpu.resolve_device("auto") == "cuda"
        return
    assert gpu.cuda_available() and gpu.resolve_device("auto") == "cuda"
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM")
    assert not gpu.cuda_available()
    assert gpu.resolve_device("auto") == "cpu"
    with pytest.raises(gpu.EMDInputError, match="device cuda is not available"):
        gpu.resolve_device("cuda")


def test_importing_emdcli_does_not_import_numba_cuda():
    code = ("import sys, emdcli, emdcli.api, emdcli.sinkhorn, emdcli.gpu; "
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


# ------------------------------------------------------------------- real compilation



@pytest.mark.skipif(REAL, reason="the real run compiles every kernel anyway")
def test_kernels_compile_for_a_real_gpu():
    """The simulator runs the kernels as Python; NVVM types and compiles them (sm_90), so
    unsupported constructs and dtype slips show up here without a GPU, and with ptxas
    the resources: no spills, the largest block within an SM's registers
    (``benchmarks/gpu_resources.py``, which prints the table)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    script = os.path.join(ROOT, "benchmarks", "gpu_resources.py")
    proc = subprocess.run([sys.executable, script, "--quiet"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip() or "no CUDA toolkit (NVVM)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("compiled 24 kernels")

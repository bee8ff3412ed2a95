"""Chain EMD² (rho = 2) value + projected gradient: our Numba kernel against the rest.

For each batch shape and dtype, measured in one run:

  ours      the kernel emdcli.emd dispatches to — kernels.chain_lanes.chain_lanes (LANES
            rows side by side) where use_lanes says so, else kernels.chain.chain_batch —
            on prepared, normalised, C-contiguous arrays with preallocated outputs (the
            batch driver alone); "ours, row at a time" is chain_batch in every case
  emd2      the public emdcli.emd2(p, q, gradient=True): validation + l1 normalisation
            + allocation + the kernel (and emd2(..., check=False))
  (a) numpy the same value and projected gradient, vectorised numpy: cumsum, square,
            suffix sum by a cumsum of the reversed array, minus the mean
  (b) POT   ot.wasserstein_1d(x, x, p, q, p=2), value only. That is W_2² between the
            two histograms (|quantile difference|² integrated over mass), NOT our
            EMD² = Σ d_i φ_i² (|CDF difference|² integrated over space): the numbers
            differ. For p = 1 both are W_1 and must agree, which is checked. With the
            numpy backend it gives no gradient (torch/jax backends give one by autograd).
  (c) copy  the memory floor: numpy moving the kernel's bytes once — G = P − Q reads p
            and q and writes one (B, N) array, exactly the kernel's traffic
            (class targets: np.copyto(G, P)). numpy is single-threaded.
  (d) moves where the lanes kernel runs: its data movement alone, on its threads — each
            block of 32 rows of P (and Q) transposed into a float64 tile and the tile
            transposed out to G (kernels.tiles), no arithmetic: what the lanes design
            costs before it computes anything

and the same for class-index (int) targets. Values (and gradients) are checked against
the numpy version before anything is timed. Run:

    python benchmarks/bench_chain.py [--quick] [--budget SECONDS] [--no-pot] [--stat min]

On a small shared machine a 2-thread Numba call can stall for a scheduler slice while
another process holds a core: compare the "ours, 1 thread" rows and the load average.
"""

import argparse
import contextlib
import dataclasses
import os
import platform
import sys

import numba
import numpy as np

from emdcli.kernels.tiles import LANES, from_lanes, to_lanes
from emdcli.rows import aligned_empty
from emdcli.timing import format_seconds, format_table, measure

CASES = [(100_000, 32), (512, 1000)]
QUICK_CASES = [(2_000, 32), (64, 200)]
RHO = 2.0


def numpy_value_grad(P, Q, d):
    """EMD² and its projected gradient, written the way a numpy user would."""
    phi = np.cumsum(P - Q, axis=1)[:, :-1]  # (B, N−1)
    value = (d * phi * phi).sum(axis=1)
    a = 2.0 * d * phi
    r = np.zeros_like(P)
    r[:, :-1] = np.cumsum(a[:, ::-1], axis=1)[:, ::-1]  # suffix sums S_k
    return value, r - r.mean(axis=1, keepdims=True)


def numpy_value_grad_class(P, c, d):
    """As :func:`numpy_value_grad` against one-hot targets of classes ``c`` (B,)."""
    step = np.arange(P.shape[1] - 1) >= c[:, None]  # CDF of the one-hot target
    phi = np.cumsum(P, axis=1)[:, :-1] - step
    value = (d * phi * phi).sum(axis=1)
    a = 2.0 * d * phi
    r = np.zeros_like(P)
    r[:, :-1] = np.cumsum(a[:, ::-1], axis=1)[:, ::-1]
    return value, r - r.mean(axis=1, keepdims=True)


def rows(rng, b, n, dtype):
    x = rng.random((b, n)) + 1e-3
    return np.ascontiguousarray(x / x.sum(axis=1, keepdims=True), dtype=dtype)


def check_close(name, got, want, dtype):
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    atol = rtol * float(np.abs(want).max())
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = float(np.abs(np.asarray(got, np.float64) - want).max())
        raise AssertionError(f"{name}: max abs difference {err:.3g} (rtol {rtol})")


def bench_case(b, n, dtype, args, rng, timings, ratios, notes):
    import emdcli
    from emdcli.kernels import chain as K
    from emdcli.kernels import chain_lanes as CL

    dt = np.dtype(dtype).type
    case = f"{b}x{n}"
    P, Q = rows(rng, b, n, dt), rows(rng, b, n, dt)
    c = rng.integers(0, n, size=b).astype(np.int64)
    d = emdcli.Chain.uniform(n).gaps  # float64, (N−1,)
    d_np = d.astype(dt)
    assert P.flags.c_contiguous and Q.flags.c_contiguous and d.flags.c_contiguous
    vals, G = np.empty(b, dt), np.empty((b, n), dt)
    scratch = np.empty((4 * numba.get_num_threads(), n))
    lanes = CL.use_lanes(b, n, RHO, np.dtype(dt).itemsize)
    kernel = CL.chain_lanes if lanes else K.chain_batch  # the same arguments
    k_scratch = aligned_empty((4 * numba.get_num_threads(), CL.lanes_width(n))) if lanes else scratch
    G_rows = np.empty((b, n), dt)
    no_class = np.empty(0, np.int64)
    unit = np.empty(0)  # row scales 1: the rows are distributions
    size = np.dtype(dt).itemsize
    dname = np.dtype(dt).name
    kw = {"min_time": args.min_time, "budget": args.budget, "repeat": args.repeat}

    for target in ("rows", "class"):
        if target == "rows":
            ours = lambda: kernel((P, Q, no_class, unit, unit), d, RHO, vals, G, k_scratch)
            by_row = lambda: K.chain_batch((P, Q, no_class, unit, unit), d, RHO, vals, G_rows,
                                           scratch)
            ref = lambda: numpy_value_grad(P, Q, d_np)
            api = lambda: emdcli.emd2(P, Q, gradient=True, dtype=dname)
            api_nc = lambda: emdcli.emd2(P, Q, gradient=True, dtype=dname, check=False)
            floor = lambda: np.subtract(P, Q, out=G)
            moved = 3 * b * n * size + b * size
        else:
            ours = lambda: kernel((P, P, c, unit, unit), d, RHO, vals, G, k_scratch)
            by_row = lambda: K.chain_batch((P, P, c, unit, unit), d, RHO, vals, G_rows, scratch)
            ref = lambda: numpy_value_grad_class(P, c, d_np)
            api = lambda: emdcli.emd2(P, c, gradient=True, dtype=dname)
            api_nc = lambda: emdcli.emd2(P, c, gradient=True, dtype=dname, check=False)
            floor = lambda: np.copyto(G, P)
            moved = 2 * b * n * size + b * (size + 8)

        # Correctness first: ours and the public API against the numpy version.
        t_first = measure(ours, repeat=1, warmup=0, min_time=0, budget=0, min_repeat=1)
        want_v, want_g = ref()
        check_close(f"{case} {dname} {target}: value", vals, want_v, dt)
        check_close(f"{case} {dname} {target}: gradient", G, want_g, dt)
        v_api, g_api = api()
        check_close(f"{case} {dname} {target}: emd2 value", v_api, want_v, dt)
        check_close(f"{case} {dname} {target}: emd2 gradient", g_api, want_g, dt)

        def ours_1thread(ours=ours):
            with one_thread():
                ours()

        by_row()  # the row-at-a-time kernel gives the same bits
        np.testing.assert_array_equal(G_rows, G)
        methods = [
            ("ours (kernel)", ours, 1),
            ("ours, row at a time", by_row, 1),
            ("ours, 1 thread", ours_1thread, 1),
            ("emd2 (public)", api, 1),
            ("emd2 check=False", api_nc, 1),
            ("(a) numpy", ref, 1),
        ]
        pot = None
        if target == "rows" and dt == np.float64 and not args.no_pot:
            pot = make_pot(P, Q, d, K, notes)
            if pot is not None:
                methods.append(("(b) POT w1d p=2", pot, 0))
        methods.append(("(c) copy floor", floor, 1))
        if lanes:
            both = target == "rows"
            methods.append(("(d) lanes moves",
                            lambda both=both: lane_moves(P, Q, G, k_scratch, both), 1))

        res = {}
        for name, fn, warmup in methods:
            t = measure(fn, warmup=warmup, **kw)
            if name == "ours (kernel)":  # its first call came before the checks
                t = dataclasses.replace(t, first_call_s=t_first.first_call_s)
            res[name] = t
            timings.append(
                {
                    "case": case,
                    "dtype": dname,
                    "target": target,
                    "method": name,
                    "first call": format_seconds(t.first_call_s),
                    "median": format_seconds(t.median_s),
                    "min": format_seconds(t.min_s),
                    "IQR %": 100 * t.rel_iqr,
                    "loops x reps": f"{t.loops}x{t.repeats}",
                    "GB/s": moved / t.median_s / 1e9,
                }
            )
            print(
                f"  {case:>10} {dname} {target:5} {name:18} {format_seconds(t.median_s)}",
                file=sys.stderr,
                flush=True,
            )

        st = {name: getattr(t, f"{args.stat}_s") for name, t in res.items()}
        o = st["ours (kernel)"]
        pot_t = st.get("(b) POT w1d p=2")
        ratios.append(
            {
                "case": case,
                "dtype": dname,
                "target": target,
                "ours": format_seconds(o),
                "ours/(a) numpy": o / st["(a) numpy"],
                "ours/(b) POT": o / pot_t if pot_t else None,
                "ours/(c) copy": o / st["(c) copy floor"],
                "(d) moves/(c)": st["(d) lanes moves"] / st["(c) copy floor"] if lanes else None,
                "lanes": "yes" if lanes else "no",
                "row at a time/(c)": st["ours, row at a time"] / st["(c) copy floor"],
                "ours 1thr/(c)": st["ours, 1 thread"] / st["(c) copy floor"],
                "emd2/ours": st["emd2 (public)"] / o,
                "emd2 nocheck/ours": st["emd2 check=False"] / o,
            }
        )


@numba.njit(parallel=True, cache=True)
def _lane_moves(P, Q, G, scratch, both):
    n_blocks, n, parts = P.shape[0] // LANES, P.shape[1], scratch.shape[0]
    for k in numba.prange(parts):
        X = scratch[k, :n * LANES].reshape((n, LANES))
        for blk in range(k * n_blocks // parts, (k + 1) * n_blocks // parts):
            to_lanes(P, blk * LANES, X)
            if both:
                to_lanes(Q, blk * LANES, X)
            from_lanes(X, G, blk * LANES)


def lane_moves(P, Q, G, scratch, both):
    """(d): the lanes kernel's transposes alone, one run of blocks per thread."""
    _lane_moves(P, Q, G, scratch[:numba.get_num_threads()], both)


@contextlib.contextmanager
def one_thread():
    """Run Numba parallel kernels on one thread inside the block."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def make_pot(P, Q, d, K, notes):
    """A no-argument POT call on the same rows (positions 0…N−1), after checking p = 1."""
    try:
        import ot
    except ImportError:
        print("POT not installed: skipping (b)", file=sys.stderr)
        return None
    b, n = P.shape
    x = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None], (n, b))  # sorted already
    PT, QT = np.ascontiguousarray(P.T), np.ascontiguousarray(Q.T)  # POT batches on axis 1
    w1 = np.empty(b)
    no_grad, no_class, unit = np.empty((b, 0)), np.empty(0, np.int64), np.empty(0)
    scratch = np.empty((4 * numba.get_num_threads(), n))
    K.chain_batch((P, Q, no_class, unit, unit), d, 1.0, w1, no_grad, scratch)
    pot_w1 = ot.wasserstein_1d(x, x, PT, QT, p=1, require_sort=False)
    check_close(f"{b}x{n}: POT p=1 vs our EMD", pot_w1, w1, np.float64)
    pot_w22 = ot.wasserstein_1d(x, x, PT, QT, p=2, require_sort=False)
    emd2 = np.empty(b)
    K.chain_batch((P, Q, no_class, unit, unit), d, 2.0, emd2, no_grad, scratch)
    rel = np.abs(pot_w22 - emd2) / emd2
    notes.append(
        f"{b}x{n}: POT p=1 equals our EMD (checked, rtol 1e-9); POT p=2 (W_2^2) vs "
        f"our EMD^2: median |rel. difference| {np.median(rel):.3g} (other quantity)"
    )
    return lambda: ot.wasserstein_1d(x, x, PT, QT, p=2, require_sort=False)


def _load():
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, short budget")
    ap.add_argument("--budget", type=float, default=None, help="seconds per measurement")
    ap.add_argument("--repeat", type=int, default=7, help="samples per measurement")
    ap.add_argument("--min-time", type=float, default=0.02, help="least seconds per sample")
    ap.add_argument("--no-pot", action="store_true", help="skip POT")
    ap.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="statistic used for the ratios (min resists a busy machine)",
    )
    ap.add_argument("--dtypes", default="float64,float32")
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 1.0 if args.quick else 5.0

    import numba

    cases = QUICK_CASES if args.quick else CASES
    load0 = _load()
    rng = np.random.default_rng(0)
    timings, ratios, notes = [], [], []
    for b, n in cases:
        for dtype in args.dtypes.split(","):
            bench_case(b, n, dtype, args, rng, timings, ratios, notes)

    try:
        import ot

        pot_version = ot.__version__
    except ImportError:
        pot_version = "absent"
    print("# bench_chain: EMD^2 (rho=2) value + projected gradient, chain spaces, unit gaps")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; numba "
        f"{numba.__version__} with {numba.get_num_threads()} threads "
        f"({numba.threading_layer()} layer), NUMBA_NUM_THREADS="
        f"{os.environ.get('NUMBA_NUM_THREADS', 'unset')}; numpy {np.__version__} "
        f"(single-threaded here); POT {pot_version}"
    )
    print(
        f"# load average (1 min) at start / end: {load0} / {_load()} — this run counts about "
        f"1; more means other processes shared the CPUs and timings are noisier"
    )
    print(
        "# times are per call; GB/s = the kernel's minimal traffic (p, q in; g, values "
        "out) / median time"
    )
    print(
        "# 'first call' of ours includes Numba compile or cache load; later methods reuse "
        "the loaded kernel"
    )
    print("# checked before timing: ours and emd2 == (a) numpy, values and gradients")
    for note in notes:
        print(f"# {note}")
    print()
    print(format_table(timings))
    print()
    print(
        f"# ratios of {args.stat} times (< 1: ours is faster); ours 1thr = ours on one Numba "
        "thread; emd2/ours = cost of the public API"
    )
    print(format_table(ratios))


if __name__ == "__main__":
    main()

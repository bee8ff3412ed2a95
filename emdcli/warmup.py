"""Compiling the Numba kernels ahead of time, and saying when a job is about to.

The CPU kernels are compiled by Numba on their first call and kept in its on-disk cache
(``cache=True``), so only the first run after an install (or an upgrade, or on a new CPU)
pays for it — a few seconds to tens of seconds, which looks like a hang unless something
says so. Two tools:

``notice(space_kind, dtype, *, metric="emd", form="plain", gradient=False, ...)``
    ``None`` when Numba's cache already holds the kernels such a job calls, else the one
    line to print first, e.g. ``compiling kernels for float64 chains (once per install,
    ~3 s)``. Cheap: it reads a few small index files and hashes the kernel sources; it
    compiles nothing and imports neither numpy nor Numba (``llvmlite`` only, for the
    CPU's name, once an index has been found). :func:`notice_jobs` does the same for
    several jobs in one line.

``warm(all=False, progress=None, groups=None)``
    Compiles (or loads) the common kernels by calling the public functions on tiny
    inputs, so that every specialisation they use is cached: ``emd warmup [--all]`` on
    the command line, e.g. in a Docker build or a cluster's bootstrap.

How a kernel is known to be cached (Numba's ``numba/core/caching.py``): each
``@njit(cache=True)`` function has an index file
``<module>.<qualname>-<first line>.py<XY>.nbi`` in the first usable of
``$NUMBA_CACHE_DIR/<folder>_<sha1 of the folder's path>/``, the package's ``__pycache__``
and the user-wide cache (``~/.cache/numba/…``). The index holds the Numba version, the
SHA-256 of the module's source and a map from keys (argument types, target triple, CPU
name and features, bytecode hashes) to the data files. :func:`notice` counts an entry
point as cached when an index for it exists whose Numba version and source hash are
current and which holds an entry compiled for this CPU whose argument types say the
job's dtype (and, for Sinkhorn, its kind of space). The index is read with an unpickler
that builds no objects, only records the type names.

The approximation: the argument types are matched on the data array's dtype (and the
Gibbs kernel's class), not type by type; the CPU on its name, not its feature string;
the bytecode hashes are not checked (the source hash covers them within one Python
version, which is in the file name); a ``.numba_config.yaml`` or
``NUMBA_CACHE_LOCATOR_CLASSES`` that moves the cache is not followed; and only the entry
points are looked at (a cached entry point carries its callees' code, so Numba loads it
without them). Plain-form Sinkhorn on a chain or tree runs LANES rows side by side in
batches of at least ``LANES`` rows and one row at a time in smaller ones: pass ``rows``
(the batch size) to say which; without it the lane solver is assumed. Only the CPU
kernels are covered (``--device cuda`` compiles its own).
"""

import os
import time

from . import numba_cache

LANES = 32  # kernels.lanes.LANES (not imported: that would import Numba)
# kernels.chain_lanes.MIN_LANE_BINS_FLOAT64, MAX_LANE_BINS, MIN_SUMS_BINS, MIN_LANE_ROWS
# and kernels.tree_lanes.MIN_LANE_ROWS (tests/test_lanes.py checks they agree)
CHAIN_LANES_MIN_BINS_FLOAT64 = 256
CHAIN_LANES_MAX_BINS = 4096
CHAIN_SUMS_MIN_BINS = 64
LANES_MIN_ROWS = 2 * LANES
SPACE_KINDS = ("chain", "tree", "ground")
FORMS = ("plain", "log")
DTYPES = ("float32", "float64")
EMD_METRICS = ("emd", "emd2", "emd-rho", "emd_rho")
# the chain's lanes kernel (_lanes_runs, _lanes_parallel) is compiled in specialisations
# with or without the l1 check's row sums (its stats argument, an array or None) and with
# or without gradients (G): their variant tags, e.g. "row sums, gradients"
ROW_SUMS, NO_ROW_SUMS, GRADIENTS = "row sums", "no row sums", "gradients"
STATS_ARG, G_ARG = 10, 8
# and the tree's (_lanes_runs, _lanes_parallel) with or without gradients (G) and flows
# (F, the 10th): "tree values", "tree gradients", "tree values, flows"
TREE_VALUES, TREE_GRADIENTS, FLOWS = "tree values", "tree gradients", "flows"
F_ARG = 9

# Cold compile seconds of each entry point alone (kernels/<module>.py, function, and for
# the Sinkhorn drivers the Gibbs class), float64, measured on the project's 2-core machine
# (shared, under load) with an empty NUMBA_CACHE_DIR; they add up to the estimate
# :func:`notice` prints.
ESTIMATE_S = {
    ("rowstats", "_sums_mins", None): 0.4,
    ("chain", "_runs", None): 2.0,
    ("tree", "_value_runs", None): 2.0,
    ("tree", "_grad_runs", None): 2.5,
    ("chain_lanes", "_lanes_runs", None): 2.6,
    ("tree_lanes", "_lanes_runs", None): 3.5,
    ("chain_lanes", "_softmax_runs", None): 3.0,
    ("tree_lanes", "_softmax_runs", None): 3.5,
    ("rowstats", "_sums_mins_parallel", None): 0.6,
    ("chain", "_runs_parallel", None): 1.5,
    ("chain_lanes", "_lanes_parallel", None): 2.2,
    ("tree", "_value_parallel", None): 1.5,
    ("tree", "_grad_parallel", None): 2.0,
    ("tree_lanes", "_lanes_parallel", None): 2.5,
    ("chain_lanes", "_softmax_parallel", None): 2.2,
    ("tree_lanes", "_softmax_parallel", None): 2.5,
    ("quantile", "_runs", None): 4.5,
    ("quantile", "_runs_parallel", None): 1.0,
    ("lanes", "_lanes_batch", "ChainGibbs"): 5.0,
    ("lanes", "_lanes_batch", "TreeGibbs"): 8.5,
    ("sinkhorn", "_plain_batch", "ChainGibbs"): 3.0,
    ("sinkhorn", "_plain_batch", "TreeGibbs"): 5.0,
    ("sinkhorn", "_log_batch", "ChainGibbs"): 3.5,
    ("sinkhorn", "_log_batch", "TreeGibbs"): 5.5,
    ("sinkhorn", "_log_batch", "DenseGibbs"): 3.5,
    ("flows", "_chain_runs", None): 2.5,
    ("flows", "_tree_runs", None): 3.5,
}
GIBBS_CLASS = {"chain": "ChainGibbs", "tree": "TreeGibbs", "dense": "DenseGibbs"}


# ----------------------------------------------------------------------------- the jobs


def _small_elements():
    """Batches of at most this many elements skip Numba for the row sums and the chain's
    EMD with rho 1 or 2 (``emdcli.rows.SMALL_ELEMENTS``; 0 where there is no such path)."""
    from . import rows as rowlib

    return getattr(rowlib, "SMALL_ELEMENTS", 0)


# serial kernels (module, function) → their prange twin, which a batch of several runs
# calls when Numba has more than one thread (``kernels.threads``)
TWINS = {("rowstats", "_sums_mins"): "_sums_mins_parallel", ("chain", "_runs"): "_runs_parallel",
         ("chain_lanes", "_lanes_runs"): "_lanes_parallel",
         ("tree", "_value_runs"): "_value_parallel", ("tree", "_grad_runs"): "_grad_parallel",
         ("tree_lanes", "_lanes_runs"): "_lanes_parallel", ("quantile", "_runs"): "_runs_parallel",
         ("chain_lanes", "_softmax_runs"): "_softmax_parallel",
         ("tree_lanes", "_softmax_runs"): "_softmax_parallel"}
# a batch of this many values splits into two runs or more in every kernel, so it surely
# calls the twins; smaller ones may or may not (the notice then leaves the twins out: a
# silent second or two once, rather than a notice on every run that never needs them)
TWIN_MIN_VALUES = 1 << 20


def _threads():
    """Numba's thread count as it will start (``NUMBA_NUM_THREADS``, else the cores)."""
    try:
        return int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
    except ValueError:
        return 1


def entry_points(space_kind, dtype, *, metric="emd", form="plain", gradient=False,
                 kernel="auto", rows=None, input_dtype=None, bins=None, rho=None, extras=(),
                 normalize="l1"):
    """The compiled functions a job calls: a list of (module, function, variant or None)
    under ``emdcli/kernels``, the variant a Sinkhorn driver's Gibbs class or whether the
    chain's lanes kernel takes the row sums (:data:`ROW_SUMS`). See :func:`notice` for
    the arguments. With more than one Numba thread, batches of several runs also call
    the serial kernels' prange twins (:data:`TWINS`)."""
    points = _serial_points(space_kind, dtype, metric=metric, form=form, gradient=gradient,
                            kernel=kernel, rows=rows, input_dtype=input_dtype, bins=bins,
                            rho=rho, extras=extras, normalize=normalize)
    if rows is None and bins is None:  # any batch (``emd warmup``'s groups)
        several = True
    else:  # a batch of unknown width may be small: no notice for what may never compile
        several = rows is not None and bins is not None and rows * bins >= TWIN_MIN_VALUES
    if _threads() > 1 and several:
        points += [(m, TWINS[(m, f)], g) for m, f, g in points if (m, f) in TWINS]
    return points


def _serial_points(space_kind, dtype, *, metric, form, gradient, kernel, rows, input_dtype,
                   bins, rho, extras, normalize):
    if space_kind not in SPACE_KINDS:
        raise ValueError(f"space_kind must be one of {', '.join(SPACE_KINDS)}, got {space_kind!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if form not in FORMS:
        raise ValueError(f"form must be plain or log, got {form!r}")
    if kernel not in ("auto", "structured", "dense"):
        raise ValueError(f"kernel must be auto, structured or dense, got {kernel!r}")
    small = rows is not None and bins is not None and rows * bins <= _small_elements()
    # the checks and the l1 row sums (numpy for small batches)
    out = [] if small else [("rowstats", "_sums_mins", None)]
    if metric in EMD_METRICS:
        if rho is None:
            rho = {"emd": 1.0, "emd2": 2.0}.get(metric)
        lanes = rho in (1.0, 2.0)  # LANES rows side by side (kernels.chain_lanes, tree_lanes)
        if extras and space_kind != "ground":  # --flows, --plan: kernels.flows (and plans,
            # which run for row targets only, which the notice cannot know: not counted;
            # ``emd warmup --all`` compiles them); a tree's values-only batches: its lanes
            many = rows is None or rows >= LANES_MIN_ROWS
            if space_kind == "tree" and lanes and many and not gradient:
                return [("rowstats", "_sums_mins", None),
                        ("tree_lanes", "_lanes_runs", f"{TREE_VALUES}, {FLOWS}")]
            return [("rowstats", "_sums_mins", None), ("flows", f"_{space_kind}_runs", None)]
        # logits (softmax) of large enough batches: the lanes kernels compute the softmax
        softmax = normalize == "softmax" and not small and lanes
        if space_kind == "chain" and not (small and lanes):
            narrow = dtype == "float64" and input_dtype != "float32" and (
                bins is None or bins < CHAIN_LANES_MIN_BINS_FLOAT64)
            wide = bins is not None and bins > CHAIN_LANES_MAX_BINS
            few = rows is not None and rows < LANES_MIN_ROWS
            if softmax and not wide and not few:
                out.append(("chain_lanes", "_softmax_runs", None))
            elif lanes and not narrow and not wide and not few:
                sums = ((bins is None or bins >= CHAIN_SUMS_MIN_BINS)
                        and _sums_in_lanes(out, dtype, input_dtype, normalize))
                out.append(("chain_lanes", "_lanes_runs", chain_lanes_variant(sums, gradient)))
            else:
                out.append(("chain", "_runs", None))
        elif space_kind == "tree":
            if lanes and (rows is None or rows >= LANES_MIN_ROWS):
                if not softmax:
                    _sums_in_lanes(out, dtype, input_dtype, normalize)
                out.append(("tree_lanes", "_softmax_runs", None) if softmax else
                           ("tree_lanes", "_lanes_runs", TREE_GRADIENTS if gradient else TREE_VALUES))
            else:
                out.append(("tree", "_grad_runs" if gradient else "_value_runs", None))
        return out  # a ground matrix: numpy (class targets) or POT (soft targets)
    if metric == "wasserstein":
        return out + [("quantile", "_runs", None)]
    if metric != "sinkhorn":
        raise ValueError(f"metric must be emd (any rho), wasserstein or sinkhorn, got {metric!r}")
    dense = space_kind == "ground" or kernel == "dense"
    kind = "dense" if dense else space_kind
    if form == "log":
        out.append(("sinkhorn", "_log_batch", GIBBS_CLASS[kind]))
    elif not dense:  # (the dense plain form is batched BLAS products: nothing to compile)
        if rows is None or rows >= LANES:
            out.append(("lanes", "_lanes_batch", GIBBS_CLASS[kind]))
        else:
            out.append(("sinkhorn", "_plain_batch", GIBBS_CLASS[kind]))
    return out


def _sums_in_lanes(points, dtype, input_dtype, normalize):
    """l1 rows as stored: the lanes kernels take the check's row sums themselves
    (``api._sums_in_kernel``), so the row statistics kernel leaves the points (row
    targets still call it: a second or so, silent, the first time). Returns whether
    they take them."""
    point = ("rowstats", "_sums_mins", None)  # (absent for a small batch: numpy's sums)
    if normalize == "l1" and not (dtype == "float32" and input_dtype == "float64") \
            and point in points:
        points.remove(point)
        return True
    return False


def describe(space_kind, dtype, *, metric="emd", form="plain", gradient=False, **_):
    """``float64 chains``, ``float32 trees with gradients``, ``float64 Sinkhorn (log form)
    on chains``: what a job compiles, for the notice."""
    spaces = {"chain": "chains", "tree": "trees", "ground": "ground matrices"}[space_kind]
    if metric == "sinkhorn":
        return f"{dtype} Sinkhorn ({form} form) on {spaces}"
    grad = " with gradients" if gradient and space_kind == "tree" else ""
    extras = " and ".join({"flows": "flows", "plan": "plans"}[e] for e in _.get("extras", ()))
    return f"{dtype} {spaces}{grad}{f' with {extras}' if extras else ''}"


def missing(space_kind, dtype, **job):
    """The entry points of a job (:func:`entry_points`) that Numba has not cached; all of
    them when no cache folder is writable, none when the JIT is disabled."""
    points = entry_points(space_kind, dtype, **job)
    _, _, disabled = numba_cache.numba_config()
    if disabled:
        return []
    folder = numba_cache.cache_dir()
    if folder is None or not os.path.isdir(folder):
        return points
    # the exact EMD's kernels read float32 rows as stored, also under a float64 dtype
    stored = {dtype}
    if job.get("metric", "emd") in EMD_METRICS and job.get("input_dtype") in DTYPES:
        stored.add(job["input_dtype"])
    out = f"array({dtype}, 1d, C)"
    return [p for p in points
            if not numba_cache.cached(folder, p[0], p[1], _variant(p), stored,
                           out if p[0] in ("chain", "tree", "chain_lanes", "tree_lanes", "flows")
                           else None)]


def chain_lanes_variant(sums, gradient):
    """The chain lanes kernel's variant tag: ``"row sums"`` or ``"no row sums"``, and
    ``", gradients"``."""
    return (ROW_SUMS if sums else NO_ROW_SUMS) + (f", {GRADIENTS}" if gradient else "")


def _variant(point):
    """((argument index, type name prefix), …) that tell an entry point's specialisation
    in Numba's index (:func:`numba_cache.cached`), or None: any."""
    tag = point[2]
    if tag in GIBBS_CLASS.values():
        return ((2, tag + "("),)
    if tag is not None and tag.split(", ")[0] in (ROW_SUMS, NO_ROW_SUMS):
        return ((STATS_ARG, "array(" if tag.startswith(ROW_SUMS) else "none"),
                (G_ARG, "array(" if tag.endswith(GRADIENTS) else "none"))
    if tag is not None and tag.split(", ")[0] in (TREE_VALUES, TREE_GRADIENTS):
        return ((G_ARG, "array(" if tag.startswith(TREE_GRADIENTS) else "none"),
                (F_ARG, "array(" if tag.endswith(FLOWS) else "none"))
    return None


def _seconds(points):
    total = sum(ESTIMATE_S.get(p, ESTIMATE_S.get((*p[:2], None), 3.0)) for p in points)
    return max(1, round(total))


def notice_jobs(jobs):
    """One line for several jobs (dicts of :func:`notice`'s arguments, ``space_kind``
    and ``dtype`` included), or None when all of their kernels are cached."""
    parts, points = [], []
    for job in jobs:
        job = dict(job)
        space_kind, dtype = job.pop("space_kind"), job.pop("dtype")
        miss = [p for p in missing(space_kind, dtype, **job) if (p, dtype) not in points]
        if not miss:
            continue
        points += [(p, dtype) for p in miss]
        text = describe(space_kind, dtype, **job)
        if text not in parts:
            parts.append(text)
    if not parts:
        return None
    seconds = _seconds([p for p, _ in points])
    if numba_cache.cache_dir() is None:
        when = f"every run: no writable Numba cache, set NUMBA_CACHE_DIR; ~{seconds} s"
    else:
        when = f"once per install, ~{seconds} s"
    return f"compiling kernels for {'; '.join(parts)} ({when})"


def notice(space_kind, dtype, *, metric="emd", form="plain", gradient=False, kernel="auto",
           rows=None, input_dtype=None, bins=None, rho=None, extras=(), normalize="l1"):
    """None when Numba's cache holds the compiled kernels this kind of job calls, else
    the line to print before the job starts, e.g. ``compiling kernels for float64 chains
    (once per install, ~3 s)``.

    space_kind: ``"chain"``, ``"tree"`` or ``"ground"``. dtype: ``"float32"`` or
    ``"float64"`` (the working dtype: inputs are cast to it before the kernels). metric:
    ``"emd"`` (any rho; ``"emd2"`` and ``"emd-rho"`` too) or ``"sinkhorn"``; form:
    ``"plain"`` or ``"log"`` (Sinkhorn); gradient: whether the gradient is wanted (the
    tree has a kernel for each); kernel: Sinkhorn's ``"auto"``/``"structured"``/``"dense"``;
    rows: the batch size, when known (plain Sinkhorn on chains and trees runs batches of
    fewer than 32 rows through another kernel). input_dtype: the dtype the predictions
    are stored in (``"float32"``/``"float64"``), when known: the exact EMD's kernels read
    float32 rows as they are under a float64 dtype, a specialisation of its own. bins
    (with rows): a batch of at most ``emdcli.rows.SMALL_ELEMENTS`` elements is checked,
    and on a chain its EMD (rho 1 or 2: ``rho``, default 1 for ``"emd"``, 2 for
    ``"emd2"``) computed, in numpy, without Numba. extras: ``"flows"`` and/or ``"plan"``
    (``--flows``, ``--plan``: the flows kernels replace the EMD's). normalize: ``"softmax"``
    (logits: the lanes kernels compute the softmax, kernels of their own), ``"l1"`` or
    ``"none"``. Reads files only (see the module's docstring for how, and what it
    approximates; ``bins`` imports numpy); never compiles.
    """
    return notice_jobs([dict(space_kind=space_kind, dtype=dtype, metric=metric, form=form,
                             gradient=gradient, kernel=kernel, rows=rows,
                             input_dtype=input_dtype, bins=bins, rho=rho, extras=tuple(extras),
                             normalize=normalize)])


# ------------------------------------------------------------------------------ warm-up


def _big_rows():
    """Rows of 5 bins enough to pass the small-batch numpy paths (Numba's kernels are
    what is warmed)."""
    return _small_elements() // 5 + 1


def _tiny(n_rows, dtype_in, n_bins=5):
    import numpy as np

    rng = np.random.default_rng(0)
    p = (rng.random((n_rows, n_bins)) + 0.1).astype(dtype_in)
    q = (rng.random((n_rows, n_bins)) + 0.1).astype(dtype_in)
    c = rng.integers(0, n_bins, n_rows)
    return p, q, c


def _tiny_tree():
    from .spaces import Tree

    # root → a, b; a → c, d; b → e, f, g: five bins on two levels
    return Tree.from_edges(list("rabcdefg"), ["", "r", "r", "a", "a", "b", "b", "b"])


def _space(kind):
    from .spaces import Chain

    if kind == "chain":
        return Chain.from_positions([0.0, 1.0, 2.5, 3.0, 5.0])
    return _tiny_tree()


def _warm_emd(kind, dtype):
    from .api import emd
    from .spaces import Chain

    space = _space(kind)
    for dtype_in in DTYPES:
        p, q, c = _tiny(_big_rows(), dtype_in)
        for target in (c, q):
            for rho in (1.0, 2.0, 1.5):
                for gradient in (False, True):
                    emd(p, target, space=space, rho=rho, dtype=dtype, gradient=gradient)
            for rho in (1.0, 2.0):  # logits: the lanes kernels' softmax (any batch of
                emd(p, target, space=space, rho=rho, dtype=dtype, gradient=True,  # 64 rows)
                    normalize="softmax", grad_wrt="input")
        if kind == "chain":  # rows wide enough for the lanes kernel to take the row sums
            n = CHAIN_LANES_MIN_BINS_FLOAT64  # (ROW_SUMS; 256 bins: float64 rows too)
            p, q, c = _tiny(_small_elements() // n + 1, dtype_in, n)
            for target in (c, q):
                for rho in (1.0, 2.0):
                    for gradient in (False, True):
                        emd(p, target, space=Chain.uniform(n), rho=rho, dtype=dtype,
                            gradient=gradient)


def _warm_sinkhorn(form, dtype):
    from .sinkhorn import sinkhorn
    from .spaces import Ground

    p, q, _ = _tiny(_big_rows(), dtype)  # the row sums' kernel (and the lane solver)
    sinkhorn(p, q, lam=2.0, iters=1, form=form, space=_space("chain"), dtype=dtype)
    for kind in ("chain", "tree"):
        space = _space(kind)
        kernels = ("structured", "dense")
        for kernel in kernels:
            for n_rows in ((LANES + 1, 2) if form == "plain" and kernel == "structured" else (2,)):
                for dtype_in in DTYPES:
                    p, q, c = _tiny(n_rows, dtype_in)
                    for target in (q, c):
                        sinkhorn(p, target, lam=2.0, iters=3, tol=0.0, form=form, space=space,
                                 kernel=kernel, dtype=dtype, gradient=True)
    ground = Ground.from_matrix(_space("tree").ground_matrix())
    p, q, _ = _tiny(2, dtype)
    sinkhorn(p, q, lam=2.0, iters=3, form=form, space=ground, dtype=dtype, gradient=True)


def _warm_transport(kind, dtype):
    import numpy as np

    from .kernels import ranks
    from .transport import flows, plan

    space = _space(kind)
    for dtype_in in DTYPES:
        p, q, c = _tiny(_big_rows(), dtype_in)
        for target in (c, q):
            for gradient in (False, True):
                _, f, *_ = flows(p, target, space=space, dtype=dtype, gradient=gradient)
        plan(p, q, space=space, dtype=dtype)
        ranks.class_ranks(p, c, np.empty(len(c), np.int64), np.empty(len(c)))  # emd report
        acc = np.zeros((1, 1, f.shape[1]))
        ranks.flow_columns(f, np.ones(f.shape[1]), np.zeros(len(c), np.int64),
                           np.empty(len(c)), acc, acc.copy())


def _groups():
    """name → (what it compiles (notice jobs), the function compiling it), in order."""
    groups = {}
    for kind in ("chain", "tree"):
        for dtype in ("float64", "float32"):
            jobs = [dict(space_kind=kind, dtype=dtype, gradient=g, input_dtype=i, normalize=nm)
                    for g in (False, True) for i in DTYPES for nm in ("l1", "softmax")]
            groups[f"{kind}-{dtype}"] = (jobs, lambda k=kind, d=dtype: _warm_emd(k, d))
    for form in FORMS:
        for dtype in ("float64", "float32"):
            jobs = [dict(space_kind=k, dtype=dtype, metric="sinkhorn", form=form, rows=r)
                    for k in ("chain", "tree") for r in (None, 1)]
            if form == "log":
                jobs.append(dict(space_kind="ground", dtype=dtype, metric="sinkhorn", form=form))
            groups[f"sinkhorn-{form}-{dtype}"] = (
                jobs, lambda f=form, d=dtype: _warm_sinkhorn(f, d))
    for dtype in ("float64", "float32"):
        jobs = [dict(space_kind=k, dtype=dtype, input_dtype=i, extras=("flows", "plan"))
                for k in ("chain", "tree") for i in DTYPES]
        groups[f"transport-{dtype}"] = (jobs, lambda d=dtype: [_warm_transport(k, d)
                                                               for k in ("chain", "tree")])
    return groups


DEFAULT_GROUPS = ("chain-float64", "chain-float32", "tree-float64", "tree-float32")
ALL_GROUPS = tuple(_groups())


def group_jobs(name):
    """The jobs (dicts for :func:`notice_jobs`) that group ``name`` compiles."""
    return _groups()[name][0]


def warm(all=False, progress=None, groups=None):  # noqa: A002 - the CLI's --all
    """Compile, or load from Numba's cache, the kernels of the common jobs by calling
    :func:`emdcli.emd` and :func:`emdcli.sinkhorn.sinkhorn` on tiny inputs.

    Default: chains and trees, float32 and float64 (inputs and dtype), class and row
    targets, value and value + gradient, rho 1, 2 and a general rho (1.5). all: also
    Sinkhorn, plain and log forms, structured and dense kernels (and a ground matrix),
    and the flows, plans and report kernels (``--flows``, ``--plan``, ``emd report``),
    both dtypes. groups: run only these (names from :data:`ALL_GROUPS`, e.g.
    ``"chain-float64"``). ``progress(name, seconds, compiled)`` is called after each group
    (compiled: whether its kernels were missing from the cache before). Returns a list of
    (name, seconds, compiled).
    """
    table = _groups()
    names = list(groups) if groups is not None else list(ALL_GROUPS if all else DEFAULT_GROUPS)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown warm-up group {unknown[0]!r}; the groups: {', '.join(table)}")
    done = []
    for name in names:
        jobs, run = table[name]
        compiled = notice_jobs(jobs) is not None
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
        done.append((name, seconds, compiled))
        if progress:
            progress(name, seconds, compiled)
    return done

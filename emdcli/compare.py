"""The study behind ``emd compare``: how far is Sinkhorn from the exact EMD?

For one evaluation batch on one space it computes the exact EMD (ρ = 1) and its projected
gradient once, in float64 on the CPU, then runs the Sinkhorn distance (SD, the paper's
Algorithm 1) for every cell of a grid λ × iteration limit × dtype × form × device (``cpu``,
or ``cuda`` through :func:`emdcli.sinkhorn.sinkhorn`'s ``device``) and reports, per cell
(the paper's Fig. 3):

- ``ratio_mean``, ``ratio_p05``, ``ratio_p95``: SD/EMD per row — mean and 5th/95th
  percentiles over the rows whose SD value and gradient are finite and whose EMD is > 0;
- ``angle_mean``, ``angle_p05``, ``angle_p95``: the angle in degrees between the SD
  gradient and the EMD gradient of each row (over the same finite rows). Bins where the
  prediction has no mass get an SD gradient of −∞ (log u = log 0), so the angle is taken
  over the bins *with* predicted mass: both gradients are restricted to them and
  re-projected to sum zero there before the cosine is taken;
- ``nonconverged``: the fraction of rows that did not converge within the iteration limit
  or went non-finite; ``nonfinite``: the fraction that went non-finite (value, or gradient
  at a bin with mass) — a subset of ``nonconverged``;
- ``seconds``: the wall time of the cell's Sinkhorn call (value + gradient, whole batch;
  on ``cuda`` including the transfers to and from the GPU), after an untimed warm-up that
  loads or compiles the kernels (one iteration on the same rows, so that it takes the
  same kernels: never compilation, even on a cold Numba cache); ``iterations_mean``: the
  mean number of iterations the rows ran; ``sd_mean``: the mean finite SD.

Each Sinkhorn call uses the library's default tolerance (a row stops once its marginal
error ‖T·1 − p‖₁ < 1e-9 in float64, 1e-5 in float32) and the cell's iteration limit, so
rows that converge stop early: cells with small λ cost a few iterations per row.

One-hot (class) targets make Sinkhorn trivial: the only plan with a one-hot column
marginal is ``T[:, c] = p``, reached after one iteration, so SD = EMD for every λ (only
float32 underflow at large λ, and the log(p)/λ term of the gradient, show). Label
smoothing (``(1 − ε)·q + ε/N``) turns them into the soft targets of training with label
smoothing, a non-trivial case.

:func:`profile` gives, for one row, the per-bin gradients of MSE, EMD, EMD² and SD at a
few λ (the paper's Fig. 5).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import EMDInputError
from .options import check_devices

MAX_ROWS = 100_000
DEFAULT_LAMS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
DEFAULT_ITERS = [10, 100, 1000]
DEFAULT_DTYPES = ["float32", "float64"]
DEFAULT_FORMS = ["plain"]
DEFAULT_DEVICES = ["cpu"]
PROFILE_LAMS = [1.0, 10.0, 100.0]
PROFILE_ITERS = 100_000
DTYPES = ("float32", "float64")
FORMS = ("plain", "log")
COLUMNS = ["lam", "iters", "dtype", "form", "device", "ratio_mean", "ratio_p05",
           "ratio_p95", "angle_mean", "angle_p05", "angle_p95", "nonconverged", "seconds",
           "nonfinite", "iterations_mean", "sd_mean", "rows"]
UNUSABLE_RATIO = 0.10  # a cell whose mean ratio is more than 10 % from 1 is flagged


# ----------------------------------------------------------------------------- the grid


@dataclass
class Grid:
    """The cells to run: every combination of the five lists."""

    lams: list = field(default_factory=lambda: list(DEFAULT_LAMS))
    iters: list = field(default_factory=lambda: list(DEFAULT_ITERS))
    dtypes: list = field(default_factory=lambda: list(DEFAULT_DTYPES))
    forms: list = field(default_factory=lambda: list(DEFAULT_FORMS))
    devices: list = field(default_factory=lambda: list(DEFAULT_DEVICES))

    def cells(self):
        """(lam, iters, dtype, form, device) in report order: one curve (λ varying) after
        another, grouped by device, form, dtype and iteration limit."""
        return [(lam, it, dt, form, dev) for dev in self.devices for form in self.forms
                for dt in self.dtypes for it in self.iters for lam in self.lams]

    def __len__(self):
        return (len(self.lams) * len(self.iters) * len(self.dtypes) * len(self.forms)
                * len(self.devices))


# ----------------------------------------------------------------------------- the batch


@dataclass
class Batch:
    """The rows under study, normalised once (float64).

    p: (B, N) distributions. q: (B, N) target distributions, or (B,) class indices when
    the targets are classes and no smoothing was asked for. rows: the file rows they came
    from (0-based). one_hot: the targets (before smoothing) were one-hot.
    """

    p: np.ndarray
    q: np.ndarray
    space: object
    rows: np.ndarray
    ids: object
    n_rows_file: int
    one_hot: bool
    smoothing: float
    normalize: str
    names: dict

    @property
    def n(self):
        return self.p.shape[1]


def _sample(n_rows, rows, seed, only_row):
    """Sorted file rows to read, or None for all of them."""
    if only_row is not None:
        if not 0 <= only_row < n_rows:
            raise EMDInputError(f"--profile {only_row}: the input has rows 0..{n_rows - 1}",
                                source="--profile")
        return np.array([only_row])
    if rows is not None and rows < n_rows:
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n_rows, size=rows, replace=False))
    if n_rows > MAX_ROWS and rows is None:
        raise EMDInputError(
            f"the input has {n_rows} rows; compare is meant for evaluation batches of at "
            f"most {MAX_ROWS}", hint="study a random sample with --rows N (e.g. --rows 10000)",
        )
    return None


def load(inputs, space_spec, normalize="l1", *, rows=None, seed=0, only_row=None,
         smoothing=0.0, warn=print):
    """Read the rows of ``inputs`` (a :class:`emdcli.jobs.plan.Inputs`) on the space of
    ``space_spec`` (a :class:`~emdcli.jobs.plan.SpaceSpec`), normalised by ``normalize``,
    into a :class:`Batch`.

    rows: study a random sample of this many rows (seeded, in file order) instead of all;
    without it, inputs over :data:`MAX_ROWS` rows are refused. only_row: read just this
    row (for :func:`profile`). smoothing: label smoothing ε applied to the targets.
    """
    from . import io
    from . import rows as rowlib
    from .jobs import run as jobs
    from .spaces import Chain

    positions = io.read_positions(space_spec.positions) if space_spec.positions else None
    pred, target = jobs.open_sources(inputs)
    names = {"pred": pred.name, "target": target.name,
             "positions": jobs.positions_name(space_spec.positions)}
    try:
        space = jobs.build_space(space_spec, pred, target, warn)
        wanted = _sample(pred.n_rows, rows, seed, only_row)
        size = jobs.batch_rows(pred, target)
        ps, qs, idss, taken = [], [], [], []
        for offset, p, q, ids, _groups in jobs.aligned_batches(pred, target, size):
            stop = offset + len(p)
            if wanted is None:
                keep = np.arange(len(p))
            else:
                keep = wanted[(wanted >= offset) & (wanted < stop)] - offset
            if keep.size:
                ps.append(np.asarray(p)[keep])
                qs.append(np.asarray(q)[keep])
                idss.append(None if ids is None else np.asarray(ids)[keep])
                taken.append(keep + offset)
            if wanted is not None and stop > wanted[-1]:
                break
        if not ps:
            raise EMDInputError("has no rows to compare", source="pred")
        file_rows = np.concatenate(taken)
        P, T = np.concatenate(ps), np.concatenate(qs)
        ids = None if idss[0] is None else np.concatenate(idss)
        n = P.shape[1] if P.ndim == 2 else 0
        if space is None:
            space = Chain.uniform(n) if positions is None else Chain.from_positions(positions, n)
        try:
            p = rowlib.prepare_pred(P, normalize, np.float64)
            kind, q = rowlib.prepare_target(T, p.shape[0], n, normalize, np.float64)
            if normalize == "none":
                rowlib.check_equal_mass(p, kind, q)
        except EMDInputError as e:
            if e.row is not None:  # back to the file's row numbers
                e = EMDInputError(e.message, source=e.source, row=int(file_rows[e.row]),
                                  column=e.column, hint=e.hint)
            raise
        if kind == "classes":
            one_hot = True
        else:
            one_hot = bool(((q != 0).sum(axis=1) == 1).all())
        if smoothing > 0:
            if kind == "classes":
                rows_q = np.zeros((len(q), n))
                rows_q[np.arange(len(q)), q] = 1.0
                q = rows_q
            mass = q.sum(axis=1, keepdims=True)  # 1, or the row mass under --normalize none
            q = (1.0 - smoothing) * q + smoothing * mass / n
    except EMDInputError as e:
        e.source = names.get(e.source, e.source)
        raise
    finally:
        pred.close()
        if target is not pred:
            target.close()
    return Batch(p=p, q=q, space=space, rows=file_rows, ids=ids, n_rows_file=pred.n_rows,
                 one_hot=one_hot, smoothing=smoothing, normalize=normalize, names=names)


def _base_normalize(batch):
    """Rows are already distributions: renormalise in the cell's dtype (l1), or keep them
    as they are under ``--normalize none``."""
    return "none" if batch.normalize == "none" else "l1"


def exact(batch):
    """(EMD (B,), projected EMD gradient (B, N)) in float64, ρ = 1."""
    from .api import emd

    return emd(batch.p, batch.q, space=batch.space, rho=1.0, gradient=True,
               normalize=_base_normalize(batch), dtype="float64")


# ----------------------------------------------------------------------------- statistics


def _quantiles(v):
    """(mean, p05, p95) of the finite values of ``v``, NaN when there are none."""
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    p05, p95 = np.percentile(v, [5, 95])
    return float(v.mean()), float(p05), float(p95)


def angles(sd_grad, emd_grad):
    """Per-row angle in degrees between two gradients, over the finite entries of
    ``sd_grad``, both re-projected to sum zero over those entries. NaN when fewer than two
    entries are finite or either restricted gradient is zero."""
    a = np.asarray(sd_grad, dtype=np.float64)
    b = np.asarray(emd_grad, dtype=np.float64)
    mask = np.isfinite(a) & np.isfinite(b)
    cnt = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(mask, a, 0.0)
        b = np.where(mask, b, 0.0)
        a -= mask * (a.sum(axis=1) / cnt)[:, None]
        b -= mask * (b.sum(axis=1) / cnt)[:, None]
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.einsum("ij,ij->i", a, b) / (na * nb)
    out = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    out[(cnt < 2) | ~(na > 0) | ~(nb > 0)] = np.nan
    return out


def finite_rows(values, grad, has_mass):
    """Rows whose SD value is finite and whose gradient is finite at every bin with
    predicted mass (−∞ where the prediction is 0 is expected, anything else is not)."""
    g = np.asarray(grad)
    ok_entries = np.isfinite(g) | (np.isneginf(g) & ~has_mass)
    return np.isfinite(values) & ok_entries.all(axis=1)


def cell_stats(result, emd_values, emd_grad, has_mass):
    """The statistics of one cell from a :class:`emdcli.sinkhorn.SinkhornResult`."""
    values = np.asarray(result.values, dtype=np.float64)
    fin = finite_rows(values, result.gradient, has_mass)
    use = fin & (emd_values > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(use, values / emd_values, np.nan)
    ang = np.where(fin, angles(result.gradient, emd_grad), np.nan)
    r_mean, r05, r95 = _quantiles(ratio)
    a_mean, a05, a95 = _quantiles(ang)
    bad = ~(np.asarray(result.converged) & fin)
    b = len(values)
    return {
        "ratio_mean": r_mean, "ratio_p05": r05, "ratio_p95": r95,
        "angle_mean": a_mean, "angle_p05": a05, "angle_p95": a95,
        "nonconverged": float(bad.mean()) if b else float("nan"),
        "nonfinite": float((~fin).mean()) if b else float("nan"),
        "iterations_mean": float(np.mean(result.iterations)) if b else float("nan"),
        "sd_mean": _quantiles(values[fin])[0],
        "rows": int(b),
    }


def unusable(row):
    """Why a cell's SD cannot be trusted, as a set of column names (empty: usable)."""
    bad = set()
    if not row["nonconverged"] == 0:
        bad.add("nonconverged")
    if row["nonfinite"] > 0:
        bad.add("nonfinite")
    for c in ("ratio_mean", "ratio_p05", "ratio_p95"):
        if not abs(row[c] - 1.0) <= UNUSABLE_RATIO:
            bad.add(c)
    for c in ("angle_mean", "angle_p05", "angle_p95"):
        if not np.isfinite(row[c]):
            bad.add(c)
    return bad


# ----------------------------------------------------------------------------- the study


@dataclass
class Study:
    """What :func:`run` found: one dict per cell (keys :data:`COLUMNS`), the exact EMD
    values, and timings (seconds): exact EMD, kernel warm-up, all cells."""

    rows: list
    emd_values: np.ndarray
    exact_s: float
    warmup_s: float
    cells_s: float


def space_kind(space):
    """``"chain"``, ``"tree"`` or ``"ground"``: the kind of space, as
    :func:`emdcli.warmup.notice` names it."""
    from .spaces import Chain, Tree

    return "tree" if isinstance(space, Tree) else "chain" if isinstance(space, Chain) else "ground"


def compile_notice(batch, grid, *, kernel="auto"):
    """The line to print before :func:`run` when Numba's cache lacks kernels it will call
    (they are compiled in its untimed warm-up), or None (:func:`emdcli.warmup.notice`)."""
    from .warmup import notice_jobs

    kind = space_kind(batch.space)
    jobs = [dict(space_kind=kind, dtype="float64", gradient=True, input_dtype="float64")]
    if "cpu" in grid.devices:
        jobs += [dict(space_kind=kind, dtype=dt, metric="sinkhorn", form=form, kernel=kernel,
                      rows=len(batch.p)) for dt in grid.dtypes for form in grid.forms]
    return notice_jobs(jobs)


def warm_cell(batch, lam, dtype, form, device, *, tol=None, kernel="auto"):
    """Load or compile the kernels of a cell: one iteration on the cell's rows (the same
    shapes, dtypes and options as the timed call, so the same kernels; the iteration
    limit is a run-time argument)."""
    from .sinkhorn import sinkhorn

    sinkhorn(batch.p, batch.q, lam=lam, iters=1, tol=tol, form=form, space=batch.space,
             kernel=kernel, normalize=_base_normalize(batch), dtype=dtype, gradient=True,
             device=device)


def run(batch, grid, *, tol=None, kernel="auto", progress=None):
    """Run every cell of ``grid`` on ``batch``; returns a :class:`Study`.

    tol: Sinkhorn's stopping tolerance (default: the library's, per dtype). kernel:
    ``auto``/``structured``/``dense`` Gibbs kernel. ``progress(message)`` is called after
    each cell. Every kernel is loaded or compiled before it is timed (:func:`warm_cell`,
    and the exact EMD run once untimed), so no time reported includes compilation.
    """
    from .sinkhorn import sinkhorn

    check_devices(grid.devices)
    t0 = time.perf_counter()
    exact(batch)  # the exact EMD's kernels, on the same rows (it is cheap): untimed
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emd_values, emd_grad = exact(batch)
    exact_s = time.perf_counter() - t0
    norm = _base_normalize(batch)
    has_mass = {dt: batch.p.astype(dt) > 0 for dt in grid.dtypes}
    warm = set()
    cells_s = 0.0
    out = []
    cells = grid.cells()
    for k, (lam, iters, dtype, form, device) in enumerate(cells, 1):
        if (dtype, form, device) not in warm:  # load / compile the kernels, untimed
            t0 = time.perf_counter()
            warm_cell(batch, lam, dtype, form, device, tol=tol, kernel=kernel)
            warmup_s += time.perf_counter() - t0
            warm.add((dtype, form, device))
        t0 = time.perf_counter()
        res = sinkhorn(batch.p, batch.q, lam=lam, iters=iters, tol=tol, form=form,
                       space=batch.space, kernel=kernel, normalize=norm, dtype=dtype,
                       gradient=True, device=device)
        seconds = time.perf_counter() - t0
        cells_s += seconds
        row = {"lam": float(lam), "iters": int(iters), "dtype": dtype, "form": form,
               "device": device}
        row.update(cell_stats(res, emd_values, emd_grad, has_mass[dtype]))
        row["seconds"] = seconds
        out.append({c: row[c] for c in COLUMNS})
        if progress:
            progress(k, len(cells), out[-1])
    return Study(out, emd_values, exact_s, warmup_s, cells_s)


def describe_cell(row):
    """One short line for progress messages."""
    return (f"λ={row['lam']:g} iters={row['iters']} {row['dtype']} {row['form']} "
            f"{row['device']}: {row['seconds']:.3g} s, ratio {row['ratio_mean']:.4g}, "
            f"angle {row['angle_mean']:.3g}°, nonconverged {row['nonconverged']:.3g}")


# ----------------------------------------------------------------------------- Fig. 5


@dataclass
class Profile:
    """Per-bin gradients of one row: ``columns`` (name → (N,) array, in :attr:`order`),
    and per-λ SD facts ``sd`` (λ → dict value, iterations, converged, error)."""

    columns: dict
    order: list
    sd: dict
    emd: float
    emd2: float | None
    row: int
    id: object


def _bin_labels(space, n):
    from .spaces import Chain, Tree

    if isinstance(space, Tree):
        return list(space.bin_names)
    if isinstance(space, Chain):
        from .report import format_float

        return [format_float(x) for x in space.positions]
    return [str(i) for i in range(n)]


def sd_column(lam):
    return f"sd_{lam:g}"


def profile(batch, lams=None, *, iters=PROFILE_ITERS, tol=None):
    """The per-bin gradients of MSE (``2(p − q)`` projected), EMD, EMD² and SD at each λ
    (log form, float64, run to convergence: at most ``iters`` iterations) for the one row
    of ``batch``. Bins follow the space's bin order. EMD² is left out on a ground matrix."""
    from .api import emd
    from .sinkhorn import sinkhorn
    from .spaces import Ground

    lams = list(PROFILE_LAMS if lams is None else lams)
    p, q = batch.p[:1], batch.q[:1]
    n = batch.n
    q_row = np.zeros(n)
    if q.ndim == 1:
        q_row[int(q[0])] = 1.0
    else:
        q_row[:] = q[0]
    norm = _base_normalize(batch)
    mse = 2.0 * (p[0] - q_row)
    mse -= mse.mean()
    e, g = emd(p, q, space=batch.space, rho=1.0, gradient=True, normalize=norm)
    cols = {"bin": np.arange(n), "name": np.array(_bin_labels(batch.space, n), dtype=object),
            "pred": p[0].copy(), "target": q_row, "mse": mse, "emd": g[0]}
    e2 = None
    if not isinstance(batch.space, Ground):
        e2v, g2 = emd(p, q, space=batch.space, rho=2.0, gradient=True, normalize=norm)
        cols["emd2"] = g2[0]
        e2 = float(e2v[0])
    sd = {}
    for lam in lams:
        r = sinkhorn(p, q, lam=lam, iters=iters, tol=tol, form="log", space=batch.space,
                     normalize=norm, dtype="float64", gradient=True)
        cols[sd_column(lam)] = r.gradient[0]
        sd[lam] = {"value": float(r.values[0]), "iterations": int(r.iterations[0]),
                   "converged": bool(r.converged[0]), "error": float(r.errors[0])}
    row = int(batch.rows[0])
    rid = None if batch.ids is None else batch.ids[0]
    return Profile(cols, list(cols), sd, float(e[0]), e2, row, rid)

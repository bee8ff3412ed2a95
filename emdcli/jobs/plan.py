"""The plan of an ``emd compute`` job: inputs, space, metric, outputs — validated once.

A :class:`ComputePlan` is frozen and made of strings and numbers only, so it pickles
(a worker process can run it) and running it needs nothing else. :func:`make_plan` turns
the command line's options into one, with every option error naming the option as typed.
"""

import os
from dataclasses import dataclass, field, replace

from ..errors import EMDInputError

METRICS = {  # --metric → (value column, fixed rho or None)
    "emd": ("emd", 1.0), "emd2": ("emd2", 2.0), "emd-rho": ("emd_rho", None),
    "sinkhorn": ("sinkhorn", None), "wasserstein": ("wasserstein_p", None),
}
GRADIENT_FORMATS = (".npy", ".parquet")
FLOW_METRICS = ("emd", "emd2", "emd-rho")  # --flows and --plan: the chain and tree EMD^rho
SINKHORN_FLAGS = ("--lam", "--iters", "--tol", "--sinkhorn-form", "--sinkhorn-kernel")


@dataclass(frozen=True)
class Inputs:
    """Where the rows come from: PRED [TARGET] (files or datasets) and their columns;
    ``batch_rows`` fixes the rows per batch (else batches are sized by bytes);
    ``group_by`` a column (or partition key) the summary is split by; ``partition`` the
    ``((key, value), …)`` of one part of a dataset (its constant columns); ``rows`` a
    ``(start, stop)`` window of the file(s), one task's share of a large file."""

    pred: str
    target: str | None = None
    pred_column: str | None = None
    target_column: str | None = None
    id_column: str | None = None
    batch_rows: int | None = None
    group_by: str | None = None
    partition: tuple = ()
    rows: tuple | None = None


@dataclass(frozen=True)
class SpaceSpec:
    """The space: a chain (``positions`` or unit gaps), a tree file, or a ground matrix."""

    positions: str | None = None
    tree: str | None = None
    bins: str | None = None
    tree_weights: str | None = None
    ground: str | None = None

    @property
    def kind(self):
        return "tree" if self.tree else "ground" if self.ground else "chain"


@dataclass(frozen=True)
class MetricSpec:
    """What each row gets: ``metric`` (emd, emd2, emd-rho, sinkhorn) with its ``rho`` or
    Sinkhorn parameters (defaults filled in), normalisation, dtype, gradient, device."""

    metric: str = "emd"
    rho: float = 1.0
    normalize: str = "l1"
    dtype: str = "float64"
    gradient: bool = False
    grad_wrt: str = "distribution"
    device: str = "cpu"
    sinkhorn: dict = field(default_factory=dict)  # lam, iters, tol, form, kernel
    power: float | None = None  # --metric wasserstein: W_p^p's p
    flows: bool = False  # also each row's flows (--flows)
    transport: bool = False  # also each row's optimal transport plan (--plan)

    @property
    def column(self):
        return METRICS[self.metric][0]


@dataclass(frozen=True)
class Outputs:
    """Rows to ``output`` (a file, or with ``folder`` a dataset folder: one Parquet part
    per input file) or standard output in ``fmt``; gradients to ``gradient`` (a file, or
    a folder beside a folder output); the summary's statistics to ``summary`` (.csv/.json);
    the flows (B, gaps or edges) to ``flows`` (.npy/.parquet), the transport plans to
    ``transport`` (.parquet). ``statistics``: whether the summary's statistics are
    computed (not when nothing shows or writes them: ``--quiet``, no ``--summary`` and
    no dataset output; the rows are counted either way)."""

    fmt: str = "csv"
    output: str | None = None
    gradient: str | None = None
    folder: bool = False
    summary: str | None = None
    flows: str | None = None
    transport: str | None = None
    statistics: bool = True


@dataclass(frozen=True)
class ComputePlan:
    inputs: Inputs
    space: SpaceSpec
    metric: MetricSpec
    outputs: Outputs


def _flagged(error, flags):
    """``error`` with its leading parameter name spelt as the option (``lam`` → ``--lam``)."""
    word = error.message.split(" ", 1)[0]
    if word in flags:
        return EMDInputError(flags[word] + error.message[len(word):], hint=error.hint)
    return error


def metric_spec(metric="emd", rho=None, *, normalize="l1", dtype="float64", gradient=False,
                grad_wrt="distribution", device="cpu", sinkhorn=None, power=None):
    """A validated :class:`MetricSpec`; ``sinkhorn`` maps the Sinkhorn options (None =
    not given) by their flag names without dashes: lam, iters, tol, form, kernel;
    ``power`` is ``--p`` (``--metric wasserstein`` only)."""
    given = {k: v for k, v in (sinkhorn or {}).items() if v is not None}
    if metric not in METRICS:
        raise EMDInputError(f"--metric {metric!r} is unknown; choose one of {', '.join(METRICS)}")
    fixed = METRICS[metric][1]
    if (power is not None) != (metric == "wasserstein"):
        raise EMDInputError("--metric wasserstein needs --p P (P >= 1)" if power is None
                            else "--p applies only to --metric wasserstein (use --rho for EMD^rho)")
    if metric == "wasserstein":
        if rho is not None:
            raise EMDInputError("--rho does not apply to --metric wasserstein; its power is --p")
        if not (float(power) >= 1.0 and float(power) < float("inf")):
            raise EMDInputError(f"--p must be a finite number >= 1, got {power!r}")
        if device != "cpu":
            raise EMDInputError("--metric wasserstein runs on the CPU", source="--device")
        rho = 1.0
    elif metric == "sinkhorn":
        if rho is not None:
            raise EMDInputError("--rho does not apply to --metric sinkhorn")
        rho = 1.0
    elif fixed is None:
        if rho is None:
            raise EMDInputError("--metric emd-rho needs --rho R (R >= 1)")
    elif rho is not None and float(rho) != fixed:
        raise EMDInputError(f"--rho {rho} conflicts with --metric {metric}; use --metric emd-rho")
    else:
        rho = fixed
    if not (float(rho) >= 1.0 and float(rho) < float("inf")):
        raise EMDInputError(f"--rho must be a finite number >= 1, got {rho!r}")
    if metric != "sinkhorn":
        if given:
            names = [f for f, k in zip(SINKHORN_FLAGS, ("lam", "iters", "tol", "form", "kernel"))
                     if k in given]
            verb = "applies" if len(names) == 1 else "apply"
            raise EMDInputError(f"{', '.join(names)} {verb} only to --metric sinkhorn")
        params = {}
    else:
        params = _sinkhorn_params(given, dtype)
    return MetricSpec(metric=metric, rho=float(rho), normalize=normalize, dtype=dtype,
                      gradient=bool(gradient), grad_wrt=grad_wrt, device=device,
                      sinkhorn=params, power=None if power is None else float(power))


def _sinkhorn_params(given, dtype):
    import numpy as np

    from ..sinkhorn import DEFAULT_TOL, check_params

    if "lam" not in given:
        raise EMDInputError("--metric sinkhorn needs --lam (λ > 0; POT's reg is 1/λ)")
    params = {"lam": given["lam"], "iters": given.get("iters", 100),
              "tol": given.get("tol", DEFAULT_TOL[np.dtype(dtype).type]),
              "form": given.get("form", "plain"), "kernel": given.get("kernel", "auto")}
    try:
        lam, iters, tol = check_params(params["lam"], params["iters"], params["tol"],
                                       params["form"], params["kernel"])
    except EMDInputError as e:
        raise _flagged(e, {"lam": "--lam", "iters": "--iters", "tol": "--tol",
                           "form": "--sinkhorn-form", "kernel": "--sinkhorn-kernel"}) from None
    return {**params, "lam": lam, "iters": iters, "tol": tol}


def space_spec(positions=None, tree=None, bins=None, tree_weights=None, ground=None):
    """A validated :class:`SpaceSpec` (one of positions, tree, ground; --bins and
    --tree-weights only with a tree)."""
    given = [f for f, v in (("--positions", positions), ("--tree", tree), ("--ground", ground)) if v]
    if len(given) > 1:
        raise EMDInputError(f"{' and '.join(given)} both describe the space; give one")
    for flag, value in (("--bins", bins), ("--tree-weights", tree_weights)):
        if value and not tree:
            raise EMDInputError(f"{flag} needs --tree")
    return SpaceSpec(positions, tree, bins, tree_weights, ground)


def outputs(output=None, fmt=None, gradient=None, *, stdout_is_tty=False, summary=None,
            flows=None, transport=None, statistics=True):
    """Validated :class:`Outputs`: the format from ``--output``'s extension, else
    ``--format``, else a table on a terminal and CSV when piped; ``-o DIR/`` (a trailing
    slash or an existing directory) a Parquet dataset; every file checked writable (not a
    directory, its folder there and writable) before any work. ``statistics`` stays on
    whenever a file holds them (``summary``, a dataset's ``_summary.json``)."""
    statistics = bool(statistics or summary)
    from ..io.atomic import check_writable
    from ..io.dataset import is_folder_output
    from ..report import output_format

    if summary and summary != "-":
        if os.path.splitext(summary)[1].lower() not in (".csv", ".json"):
            raise EMDInputError("the summary is written to a .csv or .json file", source="--summary")
        check_writable(summary, "--summary")
    extra = [(f, v) for f, v in (("--flows", flows), ("--plan", transport)) if v]
    if is_folder_output(output) or is_folder_output(gradient):
        if extra:
            raise EMDInputError(f"{extra[0][0]} writes one file, not beside a dataset output "
                                "(-o DIR/)", source=extra[0][0], hint="run it per file")
        return _folder_outputs(output, gradient, summary)  # (its _summary.json: statistics)
    fmt = output_format(output, fmt, stdout_is_tty)
    if fmt in ("arrow", "parquet") and (not output or output == "-") and stdout_is_tty:
        raise EMDInputError(f"-f {fmt} writes binary data; pipe or redirect standard output",
                            source="--format", hint="or give --output FILE")
    if gradient:
        if os.path.splitext(gradient)[1].lower() not in GRADIENT_FORMATS:
            raise EMDInputError(f"gradients are written to {' or '.join(GRADIENT_FORMATS)} files",
                                source="--gradient")
        if output and os.path.abspath(output) == os.path.abspath(gradient):
            raise EMDInputError("--output and --gradient name the same file", source="--gradient")
    _check_extra(extra, output, gradient)
    for flag, path in (("--output", output), ("--gradient", gradient), *extra):
        if path and path != "-":
            check_writable(path, flag)
    return Outputs(fmt=fmt, output=None if output == "-" else output, gradient=gradient,
                   summary=summary, flows=flows, transport=transport, statistics=statistics)


def _check_extra(extra, output, gradient):
    """``--flows`` (.npy/.parquet) and ``--plan`` (.parquet) files: their formats, and
    no file named twice."""
    seen = {os.path.abspath(p): f for f, p in (("--output", output), ("--gradient", gradient))
            if p and p != "-"}
    for flag, path in extra:
        allowed = GRADIENT_FORMATS if flag == "--flows" else (".parquet",)
        if path == "-" or os.path.splitext(path)[1].lower() not in allowed:
            raise EMDInputError(f"{flag} is written to {' or '.join(allowed)} files", source=flag)
        if os.path.abspath(path) in seen:
            raise EMDInputError(f"{seen[os.path.abspath(path)]} and {flag} name the same file",
                                source=flag)
        seen[os.path.abspath(path)] = flag


def _folder_outputs(output, gradient, summary):
    """Outputs of a dataset output (``-o DIR/``): its folders checked creatable."""
    from ..io.atomic import check_folder
    from ..io.dataset import is_folder_output

    if not is_folder_output(output):
        raise EMDInputError("a --gradient folder needs --output DIR/ (a dataset) too",
                            source="--gradient")
    if gradient and not is_folder_output(gradient):
        raise EMDInputError("with --output DIR/, --gradient names a folder too (DIR/)",
                            source="--gradient")
    if gradient and os.path.abspath(output) == os.path.abspath(gradient):
        raise EMDInputError("--output and --gradient name the same folder", source="--gradient")
    for flag, path in (("--output", output), ("--gradient", gradient)):
        if path:
            check_folder(path, flag)
    return Outputs(fmt="parquet", output=output, gradient=gradient, folder=True, summary=summary)


def make_plan(inputs, space, metric, outs, *, device_check=True):
    """A :class:`ComputePlan` whose parts are already validated; checks what spans them
    (structured Sinkhorn needs a chain or tree, the device is usable)."""
    if metric.metric == "wasserstein" and space.kind != "chain":
        raise EMDInputError(f"--metric wasserstein is defined on the line: --{space.kind} "
                            "does not apply", hint="give --positions (or none: 0, 1, …)")
    if metric.sinkhorn.get("kernel") == "structured" and space.ground:
        raise EMDInputError("--sinkhorn-kernel structured needs a chain or a tree",
                            hint="use --sinkhorn-kernel dense (or auto) with --ground")
    if inputs.target == "-" and inputs.pred == "-":
        raise EMDInputError("only one input can come from standard input", source="-")
    wants = [f for f, v in (("--flows", outs.flows), ("--plan", outs.transport)) if v]
    if wants:
        if metric.metric not in FLOW_METRICS or space.ground or metric.device != "cpu":
            raise EMDInputError(
                f"{wants[0]} needs the exact EMD on a chain or a tree, on the CPU",
                source=wants[0], hint=f"use --metric {'|'.join(FLOW_METRICS)} without --ground "
                "and --device cuda")
        metric = replace(metric, flows=bool(outs.flows), transport=bool(outs.transport))
    if device_check and metric.device == "cuda":
        from ..gpu import require_cuda

        require_cuda("--device")
    return ComputePlan(inputs, space, metric, outs)

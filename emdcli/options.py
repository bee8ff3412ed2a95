"""The list options ``emd compare`` and ``emd bench`` share: repeatable flags and comma
lists (``--lam 1,10 --lam 100``), parsed and checked into plain Python lists; every
refusal is an :class:`~emdcli.errors.EMDInputError` (exit 2 in the CLI)."""

import math

from .errors import EMDInputError

DEVICES = ("cpu", "cuda")


def split_values(values, flag):
    """Repeated options and comma lists → one flat list of stripped, non-empty strings."""
    out = []
    for v in values or []:
        parts = [s.strip() for s in str(v).split(",")]
        if any(not s for s in parts):
            raise EMDInputError(f"{flag} {v!r} has an empty item", hint=f"e.g. {flag} 1,10")
        out += parts
    return out


def _unique(seq):
    return list(dict.fromkeys(seq))


def parse_lams(values, default):
    """``--lam``: numbers > 0, repeatable or comma lists; sorted ascending."""
    items = split_values(values, "--lam")
    if not items:
        return list(default)
    out = []
    for s in items:
        try:
            lam = float(s)
        except ValueError:
            raise EMDInputError(f"--lam {s!r} is not a number", hint="e.g. --lam 1,10,100") from None
        if not (math.isfinite(lam) and lam > 0):
            raise EMDInputError(f"--lam {s!r}: λ must be a finite number > 0",
                                hint="the paper's λ; POT's reg is 1/λ")
        out.append(lam)
    return sorted(_unique(out))


def parse_iters(values, default):
    """``--iters``: integers >= 1, repeatable or comma lists; sorted ascending."""
    items = split_values(values, "--iters")
    if not items:
        return list(default)
    out = []
    for s in items:
        try:
            it = int(s)
        except ValueError:
            raise EMDInputError(f"--iters {s!r} is not an integer",
                                hint="e.g. --iters 10,100,1000") from None
        if it < 1:
            raise EMDInputError(f"--iters {s!r}: the iteration limit must be >= 1")
        out.append(it)
    return sorted(_unique(out))


def parse_choices(values, flag, choices, default):
    """``--dtype`` / ``--form`` / ``--device``: names from ``choices``, in the given order."""
    items = split_values(values, flag)
    if not items:
        return list(default)
    for s in items:
        if s not in choices:
            raise EMDInputError(f"{flag} {s!r}: choose from {', '.join(choices)}")
    return _unique(items)


def parse_devices(values, default):
    """``--device``: cpu and/or cuda, ``cuda`` checked (a usable NVIDIA GPU, or the CUDA
    simulator); numba.cuda is imported only when ``cuda`` is named."""
    devices = parse_choices(values, "--device", DEVICES, default)
    check_devices(devices)
    return devices


def check_devices(devices):
    """Refuse ``cuda`` in ``devices`` with the reason when CUDA cannot run here."""
    if "cuda" in devices:
        from . import gpu

        gpu.require_cuda("--device", hint="use --device cpu")


def check_smoothing(eps):
    """``--label-smoothing``: ε in [0, 1) (None: 0)."""
    if eps is None:
        return 0.0
    eps = float(eps)
    if not (0.0 <= eps < 1.0):
        raise EMDInputError(f"--label-smoothing {eps!r}: ε must be in [0, 1)",
                            hint="e.g. --label-smoothing 0.1")
    return eps

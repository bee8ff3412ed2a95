"""Figures for ``emd compare --plot``: the paper's Fig. 3 (grid) and Fig. 5 (profile).

matplotlib is an optional extra (``pip install 'emdcli[plot]'``), imported only here and
only when a figure is drawn. Figures are built with ``matplotlib.figure.Figure`` and saved
through the Agg canvas (PNG) or the SVG/PDF backends — pyplot and its global backend state
are never touched. Files are written under a temporary name and renamed when complete.
"""

import math
import os

import numpy as np

from .errors import EMDInputError

FORMATS = (".png", ".svg", ".pdf")
INSTALL_HINT = "pip install 'emdcli[plot]'"
ITER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
FORM_STYLES = {"plain": "-", "log": "--"}
RATIO_CAP = 2.0  # ratios above are drawn at the cap with an upward triangle


def require():
    """Import matplotlib (the Figure class) or raise a one-line error naming the extra."""
    try:
        import matplotlib  # noqa: F401 - first, so that a blocked package is seen
        from matplotlib.figure import Figure
    except ImportError:
        raise EMDInputError("--plot needs matplotlib, which is not installed",
                            hint=INSTALL_HINT) from None
    return Figure


def check_path(path):
    """Refuse a plot path with an unknown extension, or one that cannot be written (a
    directory; a missing, read-only or forbidden folder), before any work."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise EMDInputError(f"cannot tell the image format of {path!r}", source="--plot",
                            hint=f"use one of {', '.join(FORMATS)}")
    from .io.atomic import check_writable

    check_writable(path, "--plot")


def _save(fig, path, dpi=100):
    from .io.atomic import AtomicPath

    atomic = AtomicPath(path)
    try:
        fig.savefig(atomic.tmp, format=os.path.splitext(path)[1].lower()[1:], dpi=dpi,
                    bbox_inches="tight", metadata=_metadata(path))
        atomic.commit()
    except BaseException:
        atomic.abort()
        raise


def _metadata(path):
    # no creation date in the file, so the same study draws the same bytes
    ext = os.path.splitext(path)[1].lower()
    if ext == ".svg":
        return {"Date": None}
    if ext == ".pdf":
        return {"CreationDate": None}
    return {"Software": "emdcli"}


def _lam_ticks(ax, lams):
    ax.set_xscale("log")
    ax.set_xticks(lams)
    ax.set_xticklabels([f"{v:g}" for v in lams])
    ax.minorticks_off()


def grid_figure(rows, path, title=None):
    """Fig. 3: SD/EMD (top) and the gradient angle (bottom) against λ (log axis), one panel
    column per dtype (and device), one line per iteration limit (colour) and form (solid
    plain, dashed log), the 5–95 % band shaded. Filled circles: every row converged;
    hollow circles: some rows did not converge within the limit; hollow squares: some rows
    went non-finite (the statistics are over the others); × on the lower edge: no row gave
    a finite SD; ▲ at the top: the mean ratio is above the axis. The grey dashed line is
    the exact EMD (ratio 1, angle 0)."""
    Figure = require()
    from matplotlib.lines import Line2D

    panels = sorted({(r["dtype"], r["device"]) for r in rows},
                    key=lambda k: (k[0] != "float32", k[1]))
    iters = sorted({r["iters"] for r in rows})
    forms = [f for f in FORM_STYLES if any(r["form"] == f for r in rows)]
    lams = sorted({r["lam"] for r in rows})
    colour = {it: ITER_COLOURS[i % len(ITER_COLOURS)] for i, it in enumerate(iters)}

    ratios = [r[c] for r in rows for c in ("ratio_mean", "ratio_p05", "ratio_p95")
              if math.isfinite(r[c])]
    r_lo = max(0.0, min(ratios + [1.0]) - 0.05)
    r_hi = min(RATIO_CAP, max(ratios + [1.0]) + 0.05)
    angles = [r[c] for r in rows for c in ("angle_p95", "angle_mean") if math.isfinite(r[c])]
    a_hi = min(180.0, max(angles + [10.0]) * 1.08)

    ncol = len(panels)
    fig = Figure(figsize=(5.6 * ncol, 7.6), layout="constrained")
    axes = fig.subplots(2, ncol, squeeze=False, sharex=True)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for what, (lo, hi), ylabel in (("ratio", (r_lo, r_hi), "SD / EMD"),
                                    ("angle", (0.0, a_hi), "angle(∇SD, ∇EMD) [degrees]")):
        i = 0 if what == "ratio" else 1
        for j, (dtype, device) in enumerate(panels):
            ax = axes[i][j]
            ax.axhline(1.0 if what == "ratio" else 0.0, color="0.45", ls=(0, (5, 4)), lw=1.3,
                       zorder=1)
            for it in iters:
                for form in forms:
                    cells = sorted((r for r in rows if r["dtype"] == dtype and r["device"] == device
                                    and r["iters"] == it and r["form"] == form),
                                   key=lambda r: r["lam"])
                    if cells:
                        _curve(ax, cells, what, colour[it], FORM_STYLES[form], lo, hi,
                               stagger=1.09 ** (iters.index(it) - (len(iters) - 1) / 2))
            ax.set_ylim(lo, hi)
            _lam_ticks(ax, lams)
            where = dtype if len({d for _, d in panels}) == 1 else f"{dtype}, {device}"
            name = "SD / EMD" if what == "ratio" else "gradient angle"
            ax.set_title(f"({next(letters)}) {name} — {where}", fontsize=11)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 1:
                ax.set_xlabel("λ")
            ax.grid(True, which="major", color="0.9", lw=0.8)
    handles = []
    for it in iters:
        for form in forms:
            label = f"{it} iterations" + (f", {form}" if len(forms) > 1 else "")
            handles.append(Line2D([], [], color=colour[it], ls=FORM_STYLES[form], marker="o",
                                  label=label))
    handles += [
        Line2D([], [], color="0.45", ls=(0, (5, 4)), label="exact EMD"),
        Line2D([], [], color="0.3", ls="", marker="o", label="all rows converged"),
        Line2D([], [], color="0.3", ls="", marker="o", mfc="white", mew=1.4,
               label="some rows not converged"),
        Line2D([], [], color="0.3", ls="", marker="s", mfc="white", mew=1.4,
               label="some rows non-finite (stats over the rest)"),
        Line2D([], [], color="0.3", ls="", marker="x", mew=1.6, label="no finite row"),
    ]
    # below the panels; bbox_inches="tight" takes it into the saved image (matplotlib >= 3.6)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4,
               fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, path)


def _curve(ax, cells, what, colour, ls, lo, hi, stagger=1.0):
    lam = np.array([r["lam"] for r in cells])
    mean = np.array([r[f"{what}_mean"] for r in cells])
    p05 = np.array([r[f"{what}_p05"] for r in cells])
    p95 = np.array([r[f"{what}_p95"] for r in cells])
    nonconv = np.array([r["nonconverged"] for r in cells])
    shown = np.clip(mean, lo, hi)
    ax.fill_between(lam, np.clip(p05, lo, hi), np.clip(p95, lo, hi), color=colour,
                    alpha=0.10, lw=0, zorder=2)
    ax.plot(lam, shown, color=colour, ls=ls, lw=1.6, zorder=3)
    finite = np.isfinite(mean)
    nonfinite = np.array([r["nonfinite"] for r in cells])
    full = finite & (nonconv == 0)
    part = finite & (nonconv > 0) & (nonfinite == 0)
    blown = finite & (nonfinite > 0)
    above = finite & (mean > hi)
    ax.plot(lam[full & ~above], shown[full & ~above], ls="", marker="o", ms=5, color=colour,
            zorder=4)
    ax.plot(lam[part & ~above], shown[part & ~above], ls="", marker="o", ms=5, mfc="white",
            mec=colour, mew=1.4, zorder=4)
    ax.plot(lam[blown & ~above], shown[blown & ~above], ls="", marker="s", ms=5.5, mfc="white",
            mec=colour, mew=1.4, zorder=4)
    ax.plot(lam[above], shown[above], ls="", marker="^", ms=6, color=colour, zorder=4)
    if (~finite).any():
        # on the lower edge, shifted along λ by iteration limit so that they do not hide
        # each other
        ax.plot(lam[~finite] * stagger, np.zeros((~finite).sum()), ls="", marker="x", ms=7,
                mew=1.6, color=colour, transform=ax.get_xaxis_transform(), clip_on=False,
                zorder=5)


def profile_figure(prof, path, title=None):
    """Fig. 5: for one row, the prediction and target (a), the MSE gradient (b), the EMD
    and EMD² gradients (c) and the SD gradients at each λ against the EMD's (d), per bin in
    the space's bin order. SD gradients are −∞ at bins without predicted mass; those bins
    are left out of the SD lines."""
    Figure = require()

    cols = prof.columns
    x = np.asarray(cols["bin"])
    n = len(x)
    style = dict(lw=1.2, marker="." if n <= 60 else None, ms=4)
    fig = Figure(figsize=(10, 10), layout="constrained")
    ax = fig.subplots(4, 1, sharex=True)
    ax[0].plot(x, cols["pred"], label="prediction p", color="#1f77b4", **style)
    ax[0].plot(x, cols["target"], label="target q", color="#d62728", **style)
    ax[0].set_title("(a) the row", fontsize=11)
    ax[1].plot(x, cols["mse"], color="#7f7f7f", label="MSE: 2(p − q), projected", **style)
    ax[1].set_title("(b) MSE gradient", fontsize=11)
    ax[2].plot(x, cols["emd"], color="black", label="EMD", **style)
    if "emd2" in cols:
        ax[2].plot(x, cols["emd2"], color="#9467bd", label="EMD²", **style)
    ax[2].set_title("(c) EMD and EMD² gradients", fontsize=11)
    lams = sorted(prof.sd)
    cmap = ["#2ca02c", "#ff7f0e", "#1f77b4", "#e377c2", "#8c564b", "#17becf"]
    ax[3].plot(x, cols["emd"], color="black", ls=(0, (4, 3)), lw=1.0, label="EMD")
    from .compare import sd_column

    for k, lam in enumerate(lams):
        g = np.asarray(cols[sd_column(lam)], dtype=float)
        g = np.where(np.isfinite(g), g, np.nan)
        facts = prof.sd[lam]
        note = "" if facts["converged"] else " (not converged)"
        ax[3].plot(x, g, color=cmap[k % len(cmap)], label=f"SD λ={lam:g}{note}",
                   **{**style, "marker": "." if n <= 60 or np.isnan(g).any() else None,
                      "ms": 3 if n > 60 else 4})
    ax[3].set_title("(d) SD gradients (log form, float64, converged) against the EMD's",
                    fontsize=11)
    ax[3].set_xlabel("bin" + (" (bin order of the tree)" if n > 60 else ""))
    for a in ax:
        a.legend(fontsize=8, loc="best")
        a.grid(True, color="0.92", lw=0.8)
        if a is not ax[0]:
            a.axhline(0.0, color="0.6", lw=0.6)
    if title:
        fig.suptitle(title, fontsize=12)
    _save(fig, path)

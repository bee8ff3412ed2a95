"""Figures for ``emd compare --plot``: the paper's Fig. 3 (grid) and Fig. 5 (profile).

matplotlib is an optional extra (``pip install 'emdcli[plot]'``), imported only here and
only when a figure is drawn. The look, the resolution and the saving are
:mod:`emdcli.figstyle`'s.
"""

import math
import os

import numpy as np

from . import figstyle
from .errors import EMDInputError

FORMATS = figstyle.FORMATS
INSTALL_HINT = "pip install 'emdcli[plot]'"
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


def _lam_ticks(ax, lams):
    ax.set_xscale("log")
    ax.set_xticks(lams)
    ax.set_xticklabels([f"{v:g}" for v in lams])
    ax.minorticks_off()



def _no_finite(rows):
    return [r for r in rows if not math.isfinite(r["ratio_mean"])]


def grid_figure(rows, path, title=None, dpi=figstyle.DPI):
    """Fig. 3: SD/EMD (top) and the gradient angle (middle) against λ (log axis), one
    panel column per dtype (and device), one line per iteration limit (colour) and form
    (solid plain, dashed log); the 5–95 % range of the rows as a light band edged by thin
    dotted lines. Filled circles: every row converged; hollow circles: some rows did not
    converge; hollow squares: some rows went non-finite (the statistics are over the
    others); ▲ at the top: the mean ratio is above the axis. Cells where no row gave a
    finite SD are marked × in a strip of their own below the panels, never on the data
    axes. The grey dashed line is the exact EMD (ratio 1, angle 0)."""
    Figure = require()
    from matplotlib.lines import Line2D

    panels = sorted({(r["dtype"], r["device"]) for r in rows},
                    key=lambda k: (k[0] != "float32", k[1]))
    iters = sorted({r["iters"] for r in rows})
    forms = [f for f in FORM_STYLES if any(r["form"] == f for r in rows)]
    lams = sorted({r["lam"] for r in rows})
    colours = figstyle.COLOURS
    colour = {it: colours[i % len(colours)] for i, it in enumerate(iters)}
    blank = _no_finite(rows)

    ratios = [r[c] for r in rows for c in ("ratio_mean", "ratio_p05", "ratio_p95")
              if math.isfinite(r[c])]
    r_lo = max(0.0, min(ratios + [1.0]) - 0.05)
    r_hi = min(RATIO_CAP, max(ratios + [1.0]) + 0.05)
    angles = [r[c] for r in rows for c in ("angle_p95", "angle_mean") if math.isfinite(r[c])]
    a_hi = min(180.0, max(angles + [10.0]) * 1.08)

    ncol = len(panels)
    with figstyle.style():
        fig = Figure(figsize=(5.4 * ncol, 7.8 if blank else 7.2), layout="constrained")
        nrow = 3 if blank else 2
        axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True,
                            gridspec_kw={"height_ratios": [1, 1, 0.2][:nrow]})
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        for i, (what, (lo, hi), ylabel) in enumerate(
                (("ratio", (r_lo, r_hi), "SD / EMD"),
                 ("angle", (0.0, a_hi), "angle(∇SD, ∇EMD) [degrees]"))):
            for j, (dtype, device) in enumerate(panels):
                ax = axes[i][j]
                ax.axhline(1.0 if what == "ratio" else 0.0, zorder=1, **figstyle.EXACT)
                for it in iters:
                    for form in forms:
                        cells = sorted((r for r in rows if r["dtype"] == dtype
                                        and r["device"] == device and r["iters"] == it
                                        and r["form"] == form), key=lambda r: r["lam"])
                        if cells:
                            _curve(ax, cells, what, colour[it], FORM_STYLES[form], lo, hi)
                ax.set_ylim(lo, hi)
                _lam_ticks(ax, lams)
                where = dtype if len({d for _, d in panels}) == 1 else f"{dtype}, {device}"
                name = "SD / EMD" if what == "ratio" else "gradient angle"
                ax.set_title(f"({next(letters)}) {name} — {where}")
                ax.set_ylabel(ylabel)
                if not blank and i == 1:
                    ax.set_xlabel("λ")
        if blank:
            for j, (dtype, device) in enumerate(panels):
                _blank_strip(axes[2][j], [r for r in blank if (r["dtype"], r["device"])
                                          == (dtype, device)], iters, colour, lams)
        handles = []
        for it in iters:
            for form in forms:
                label = f"{it} iterations" + (f", {form}" if len(forms) > 1 else "")
                handles.append(Line2D([], [], color=colour[it], ls=FORM_STYLES[form],
                                      marker="o", label=label))
        handles += [
            Line2D([], [], color="0.3", ls=":", lw=0.9, label="5th and 95th percentiles"),
            Line2D([], [], label="exact EMD", **figstyle.EXACT),
            Line2D([], [], color="0.3", ls="", marker="o", label="all rows converged"),
            Line2D([], [], color="0.3", ls="", marker="o", mfc="white", mew=1.4,
                   label="some rows not converged"),
            Line2D([], [], color="0.3", ls="", marker="s", mfc="white", mew=1.4,
                   label="some rows non-finite (stats over the rest)"),
        ]
        if blank:
            handles.append(Line2D([], [], color="0.3", ls="", marker="x", mew=1.6,
                                  label="no finite row (strip below)"))
        # below the panels; bbox_inches="tight" takes it into the saved image
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=4, frameon=False)
        if title:
            fig.suptitle(title, fontsize=11.5)
        figstyle.save(fig, path, dpi)
    return fig


def _blank_strip(ax, cells, iters, colour, lams):
    """The cells without a finite row: × at (λ, iteration limit), off the data axes."""
    for r in cells:
        ax.plot(r["lam"], iters.index(r["iters"]), ls="", marker="x", ms=7, mew=1.6,
                color=colour[r["iters"]])
    ax.set_ylim(-0.7, len(iters) - 0.3)
    ax.set_yticks(range(len(iters)))
    ax.set_yticklabels([str(it) for it in iters])
    ax.set_ylabel("no finite\nrow: iters", fontsize=8)
    ax.grid(False, axis="y")
    ax.set_xlabel("λ")
    _lam_ticks(ax, lams)


def _curve(ax, cells, what, colour, ls, lo, hi):
    lam = np.array([r["lam"] for r in cells])
    mean = np.array([r[f"{what}_mean"] for r in cells])
    p05 = np.clip(np.array([r[f"{what}_p05"] for r in cells]), lo, hi)
    p95 = np.clip(np.array([r[f"{what}_p95"] for r in cells]), lo, hi)
    nonconv = np.array([r["nonconverged"] for r in cells])
    shown = np.clip(mean, lo, hi)
    ax.fill_between(lam, p05, p95, color=colour, alpha=0.08, lw=0, zorder=2)
    for edge in (p05, p95):
        ax.plot(lam, edge, color=colour, ls=":", lw=0.9, alpha=0.9, zorder=2)
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


def _bin_axis(ax, space, n):
    """x of each bin: chain positions, else the bin order; tree bins named on the ticks
    when there are few. Returns (x, axis label)."""
    from .spaces import Chain, Tree

    if isinstance(space, Chain):
        return np.asarray(space.positions, dtype=float), "bin position"
    x = np.arange(n)
    if isinstance(space, Tree):
        if n <= 30:
            ax.set_xticks(x)
            ax.set_xticklabels(list(space.bin_names), rotation=60, ha="right", fontsize=7.5)
        return x, "bin (node order of the tree)"
    return x, "bin (column of the ground matrix)"


def profile_figure(prof, path, title=None, space=None, dpi=figstyle.DPI):
    """Fig. 5: for one row, the prediction and target (a), the MSE gradient (b), the EMD
    gradient with the EMD² gradient on an axis of its own (c), and the SD gradients at
    each λ against the EMD's (d), per bin: x is the chain's bin positions, or the bin
    order on a tree or a ground matrix. SD gradients are −∞ at bins without predicted
    mass; those bins are left out of the SD lines."""
    Figure = require()
    from .compare import sd_column

    cols = prof.columns
    n = len(cols["bin"])
    style = dict(lw=1.2, marker="." if n <= 60 else None, ms=4)
    c = figstyle.COLOURS
    with figstyle.style():
        fig = Figure(figsize=(9, 10), layout="constrained")
        ax = fig.subplots(4, 1, sharex=True)
        x, xlabel = _bin_axis(ax[3], space, n)
        ax[0].plot(x, cols["pred"], label="prediction p", color=c[0], **style)
        ax[0].plot(x, cols["target"], label="target q", color=c[3], **style)
        ax[0].set_title("(a) the row")
        ax[0].set_ylabel("mass")
        ax[1].plot(x, cols["mse"], color="0.4", label="MSE: 2(p − q), projected", **style)
        ax[1].set_title("(b) MSE gradient")
        ax[1].set_ylabel("∂MSE/∂p")
        ax[2].plot(x, cols["emd"], color="black", label="EMD", **style)
        ax[2].set_ylabel("∂EMD/∂p")
        handles = ax[2].get_lines()[:]
        if "emd2" in cols:
            twin = ax[2].twinx()
            twin.spines["right"].set_visible(True)
            twin.grid(False)
            handles += twin.plot(x, cols["emd2"], color=c[4], label="EMD² (right axis)",
                                 **style)
            twin.set_ylabel("∂EMD²/∂p", color=c[4])
            twin.tick_params(axis="y", colors=c[4])
            ax[2].set_title("(c) EMD gradient (left axis) and EMD² gradient (right axis)")
        else:
            ax[2].set_title("(c) EMD gradient")
        ax[2].legend(handles=handles, loc="best")
        ax[3].plot(x, cols["emd"], color="black", ls=(0, (4, 3)), lw=1.0, label="EMD")
        for k, lam in enumerate(sorted(prof.sd)):
            g = np.asarray(cols[sd_column(lam)], dtype=float)
            g = np.where(np.isfinite(g), g, np.nan)
            note = "" if prof.sd[lam]["converged"] else " (not converged)"
            ax[3].plot(x, g, color=c[(k + 1) % len(c)], label=f"SD λ={lam:g}{note}",
                       **{**style, "marker": "." if n <= 60 or np.isnan(g).any() else None,
                          "ms": 3 if n > 60 else 4})
        ax[3].set_title("(d) SD gradients (log form, float64, converged) against the EMD's")
        ax[3].set_ylabel("∂SD/∂p")
        ax[3].set_xlabel(xlabel)
        for a in ax:
            if a is not ax[2]:
                a.legend(loc="best")
            if a is not ax[0]:
                a.axhline(0.0, color="0.6", lw=0.6)
        if title:
            fig.suptitle(title, fontsize=11.5)
        figstyle.save(fig, path, dpi)
    return fig

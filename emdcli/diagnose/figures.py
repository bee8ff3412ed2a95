"""The report's plots, drawn from its document (:mod:`.content`) as inline SVG text.

matplotlib is imported here only (``pip install 'emdcli[plot]'``); the look is
:mod:`emdcli.figstyle`'s. Every figure is a ``matplotlib.figure.Figure`` (no pyplot),
saved as SVG with its text kept as text and ids salted per figure (several figures live
in one page).
"""

import io

import numpy as np

from .. import figstyle

WIDTH, HEIGHT = 5.6, 3.0  # inches; the page scales them to its columns
WIDE = 8.4  # a figure across the page
MAX_LABEL = 38


def available():
    """True when matplotlib is installed (found, not imported: that takes a while)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def preload():
    """Import matplotlib (about half a second) on a thread while the rows are read and
    measured; returns the thread, to join before drawing."""
    import threading

    def load():
        try:
            import matplotlib.backends.backend_svg  # noqa: F401
            import matplotlib.figure  # noqa: F401
            import matplotlib.font_manager  # noqa: F401 - reads the font list
        except ImportError:
            pass

    t = threading.Thread(target=load, name="emd-matplotlib", daemon=True)
    t.start()
    return t


def _svg(fig, salt):
    """``fig`` as SVG text from its ``<svg`` on (no XML prolog), deterministic."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"emd-{salt}"}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg"):]


def _figure(height=HEIGHT, width=WIDTH):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=figstyle.DPI, layout="constrained")  # one draw
    ax = fig.add_subplot()
    ax.set_axisbelow(True)  # the grid under the bars
    return fig, ax


def _short(text, n=MAX_LABEL):
    return text if len(text) <= n else text[:n - 1] + "…"


def histogram(sections, metric_unit):
    """Per-row EMD: one histogram (or, with groups, one step line per group)."""
    with figstyle.style():
        fig, ax = _figure()
        for i, (label, s) in enumerate(sections):
            edges = np.asarray(s["histogram"]["edges"])
            counts = np.asarray(s["histogram"]["counts"], dtype=float)
            colour = figstyle.COLOURS[i % len(figstyle.COLOURS)]
            if len(sections) == 1:
                ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=colour,
                       edgecolor="white", linewidth=0.4)
            else:
                ax.stairs(counts / max(counts.sum(), 1), edges, color=colour, lw=1.5,
                          label=_short(str(label), 24))
        above = [s["histogram"]["above"] for _, s in sections]
        if any(above):
            n = sum(above)
            ax.text(0.99, 0.97, f"{n:,} row{'s' if n > 1 else ''} above {edges[-1]:.3g} not shown",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7.5,
                    color=figstyle.GREY)
        ax.set_xlabel(f"EMD per row ({metric_unit})")
        ax.set_ylabel("rows" if len(sections) == 1 else "share of the group's rows")
        ax.set_title("Distribution of the per-row EMD")
        if len(sections) > 1:
            ax.legend(frameon=False)
        return _svg(fig, "hist")


def classes(section, top, chain_positions=None):
    """Mean EMD per target class: on a chain against the class position (every class),
    on a tree the ``top`` worst classes as horizontal bars."""
    rows = section["classes"]
    with figstyle.style():
        if chain_positions is not None:
            fig, ax = _figure()
            x = np.asarray(chain_positions)
            idx = np.array([r["index"] for r in rows], dtype=int)
            mean = np.array([r["mean_emd"] for r in rows])
            order = np.argsort(idx)
            ax.plot(x[idx[order]], mean[order], marker="o", ms=3, lw=1.2,
                    color=figstyle.COLOURS[0])
            ax.set_xlabel("target class: bin position")
            ax.set_ylabel("mean EMD (position units)")
            ax.set_title("Mean EMD per target class")
            return _svg(fig, "classes")
        rows = rows[:top]
        fig, ax = _figure(height=max(2.2, 0.24 * len(rows) + 0.9))
        y = np.arange(len(rows))
        ax.barh(y, [r["mean_emd"] for r in rows], color=figstyle.COLOURS[3], height=0.7)
        ax.set_yticks(y, [f"{_short(r['class'], 30)} (n={r['count']})" for r in rows])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("mean EMD (tree path length)")
        ax.set_title(f"The {len(rows)} target classes with the largest mean EMD")
        return _svg(fig, "classes")


def edges(section):
    """The tree edges carrying the most error mass, as shares of the total."""
    rows = section["tree"]["edges"]
    with figstyle.style():
        fig, ax = _figure(height=max(2.2, 0.2 * len(rows) + 0.9), width=WIDE)
        y = np.arange(len(rows))
        ax.barh(y, [100 * r["share"] for r in rows], color=figstyle.COLOURS[0], height=0.7)
        ax.set_yticks(y, [_short(r["edge"], 44) for r in rows])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("share of the total error mass Σ w·|φ| (%)")
        ax.set_title("Edges carrying the most error mass (child ← parent)")
        return _svg(fig, "edges")


def flows(sections, everything):
    """A chain's mean signed CDF difference per gap against the gap's position (one
    colour per group), with the mean |φ| of ``everything`` (all rows) dotted."""
    with figstyle.style():
        fig, ax = _figure(height=3.4, width=WIDE)
        for i, (label, s) in enumerate(sections):
            gaps = s["chain"]["gaps"]
            mid = [(g["from"] + g["to"]) / 2 for g in gaps]
            colour = figstyle.COLOURS[i % len(figstyle.COLOURS)]
            name = "mean φ" if len(sections) == 1 else f"{_short(str(label), 20)}: mean φ"
            ax.plot(mid, [g["mean_flow"] for g in gaps], color=colour, lw=1.6, label=name)
        gaps = everything["chain"]["gaps"]
        ax.plot([(g["from"] + g["to"]) / 2 for g in gaps], [g["mean_abs_flow"] for g in gaps],
                color=figstyle.GREY, lw=1.1, ls=":", label="mean |φ| (all rows)")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel("gap between bins (position of its midpoint)")
        ax.set_ylabel("φ = F_pred − F_target (mass)")
        ax.set_title("Mean CDF difference per gap: > 0 predicts too low, < 0 too high")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return _svg(fig, "flows")


def build(doc):
    """Every figure of the document: name → SVG text (as :func:`.render.blocks` places them)."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as e:
        from ..errors import EMDInputError

        raise EMDInputError(f"the plots need matplotlib, which cannot be imported ({e})",
                            hint="pip install 'emdcli[plot]', or --format md|json") from None
    a = doc["all"]
    secs = [("all", a)] if not doc["groups"] else [(g["group"], g) for g in doc["groups"]]
    tree = doc["space"]["kind"] == "tree"
    unit = "tree path length" if tree else "position units"
    out = {"histogram": histogram(secs, unit)}
    if tree:
        out["classes"] = classes(a, doc["options"]["worst"])
        if a["tree"]["edges"]:
            out["edges"] = edges(a)
    else:
        x = [g["from"] for g in a["chain"]["gaps"]] + [doc["space"]["last"]]
        out["classes"] = classes(a, doc["options"]["worst"], x) if a["classes"] else None
        out["flows"] = flows(secs, a) if a["chain"]["gaps"] else None
    return out

"""One look for every figure emdcli draws: sizes, fonts, colours, resolution, saving.

PNGs are raster at :data:`DPI` (``--dpi``); SVG and PDF are vector (the dpi only places
any raster parts). Figures are built from ``matplotlib.figure.Figure`` (no pyplot, no
global backend state) inside :func:`style`, and written atomically by :func:`save`.
"""

import os
from contextlib import contextmanager

DPI = 150
FORMATS = (".png", ".svg", ".pdf")
# colour-blind-safe (Okabe–Ito), in the order lines are given them
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442"]
GREY = "0.45"
EXACT = dict(color=GREY, ls=(0, (5, 4)), lw=1.3)  # the exact EMD reference line
RC = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # SVG text stays text
    "pdf.fonttype": 42,  # TrueType in PDFs (editable, searchable)
}


@contextmanager
def style():
    """matplotlib's settings for one figure, restored afterwards."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def save(fig, path, dpi=DPI):
    """``fig`` to ``path`` (.png, .svg or .pdf by its extension), atomically; no dates
    in the file, so the same figure gives the same bytes."""
    from .io.atomic import AtomicPath

    ext = os.path.splitext(path)[1].lower()
    atomic = AtomicPath(path)
    try:
        fig.savefig(atomic.tmp, format=ext[1:], dpi=dpi, bbox_inches="tight",
                    metadata=_metadata(ext))
        atomic.commit()
    except BaseException:
        atomic.abort()
        raise


def _metadata(ext):
    if ext == ".svg":
        return {"Date": None}
    if ext == ".pdf":
        return {"CreationDate": None}
    return {"Software": "emdcli"}

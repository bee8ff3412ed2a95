"""The ``emd compare`` table on a terminal: every column at any width from 60 columns.

The widest layout that fits is chosen: headers on two lines, then each SD/EMD and angle
cell folded into two lines (the mean above its 5–95 % range), then short dtypes and
times; the footer says what was folded.
"""

import math

HEADERS = {  # column → (header, header on two lines)
    "lam": ("λ", "λ"), "iters": ("iters", "iters"), "dtype": ("dtype", "dtype"),
    "form": ("form", "form"), "device": ("device", "device"),
    "ratio": ("SD/EMD (p05–p95)", "SD/EMD\n(p05–p95)"),
    "angle": ("angle° (p05–p95)", "angle°\n(p05–p95)"),
    "nonconverged": ("not conv.", "not\nconv."), "nonfinite": ("non-finite", "non-\nfinite"),
    "iterations_mean": ("iters run", "iters\nrun"), "seconds": ("time", "time"),
}
LEFT = ("dtype", "form", "device")
LEVELS = 4  # 0: one line each; 1: two-line headers; 2: folded cells; 3: short dtypes, times


def _num(v, digits=4):
    if math.isnan(v):
        return "nan"
    if v != 0 and math.isfinite(v) and not 1e-4 <= abs(v) < 1e5:
        digits = 2  # 2.4e-187: the exponent is the news
    return f"{v:.{digits}g}"


def _red(text, flag):
    return f"[bold red]{text}[/]" if flag else text


def _seconds(s, short):
    from ..timing import format_seconds

    text = format_seconds(s)
    return text.replace(" ", "") if short else text


def _cells(r, level):
    """The table cells of one grid row at a layout level (Rich markup)."""
    from ..compare import unusable

    bad = unusable(r)

    def stat(what, digits, flagged):
        mean, lo, hi = (_red(_num(r[f"{what}_{k}"], d), f"{what}_{k}" in flagged)
                        for k, d in (("mean", digits), ("p05", 3), ("p95", 3)))
        if level < 2:
            return f"{mean} ({lo}–{hi})"
        if level < 3:
            return f"{mean}\n({lo}–{hi})"
        wide = len(_num(r[f"{what}_p05"], 3)) + len(_num(r[f"{what}_p95"], 3)) > 8
        return f"{mean}\n{lo}–" + ("\n" if wide else "") + hi

    ratio = stat("ratio", 4, bad)
    angle = stat("angle", 3, ())
    dtype = r["dtype"].replace("float", "f") if level >= 3 else r["dtype"]
    return {
        "lam": f"{r['lam']:g}", "iters": str(r["iters"]), "dtype": dtype, "form": r["form"],
        "device": r["device"], "ratio": ratio, "angle": angle,
        "nonconverged": _red(f"{r['nonconverged']:.0%}", "nonconverged" in bad),
        "nonfinite": _red(f"{r['nonfinite']:.0%}", "nonfinite" in bad),
        "iterations_mean": _num(r["iterations_mean"], 3),
        "seconds": _seconds(r["seconds"], level >= 3),
    }


def _table(rows, columns, level):
    from rich import box
    from rich.table import Table

    narrow = level >= 3  # one space between columns, no edges
    table = Table(box=box.SIMPLE_HEAD, padding=0 if narrow else (0, 1), show_edge=not narrow)
    for c in columns:
        header = HEADERS[c][1 if level >= 1 else 0]
        table.add_column("non-\nfin." if narrow and c == "nonfinite" else header,
                         justify="left" if c in LEFT else "right", no_wrap=level < 3,
                         overflow="fold")
    for r in rows:
        cells = _cells(r, level)
        table.add_row(*(cells[c] for c in columns))
    return table


def _fits(table, width):
    import io

    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000, file=io.StringIO())  # unclamped: the natural width
    return Measurement.get(console, console.options, table).maximum <= width


def compare_table(rows, title, width):
    """The grid as a Rich renderable (title, table, footer) for a ``width``-column
    terminal; a dtype, form or device shared by every cell goes into the title."""
    from rich.console import Group
    from rich.text import Text

    from ..compare import UNUSABLE_RATIO

    columns = list(HEADERS)
    for c in ("dtype", "device", "form"):
        values = {r[c] for r in rows}
        if len(values) == 1:
            title += f", {values.pop()}" + (" form" if c == "form" else "")
            columns.remove(c)
    for level in range(LEVELS):
        table = _table(rows, columns, level)
        if _fits(table, width):
            break
    notes = []
    if level >= 2:
        notes.append("each SD/EMD and angle cell is the mean over rows above its 5–95 % range")
    if level >= 3:
        notes.append("f32/f64 = float32/float64; non-fin. = non-finite")
    footer = (f"Red: rows not converged or non-finite, SD/EMD more than {UNUSABLE_RATIO:.0%} "
              "from 1, or no finite result. Rounded: --format csv gives full precision.")
    if notes:
        footer += " Folded to fit the terminal: " + "; ".join(notes) + "."
    return Group(Text(title, style="italic"), table, Text(footer, style="dim"))

"""A report document (:mod:`.content`) as HTML, Markdown or JSON: the same content.

:func:`blocks` lays the document out once — headings, paragraphs, tables (cells with a
kind: text, int, num, pct) and figure slots; :func:`html` and :func:`markdown` write those
blocks (Markdown leaves the figures out), :func:`json_text` the document itself. The HTML
page is self-contained: the CSS inline, the plots inline SVG, no script, nothing fetched.
"""

import html as _html
import json
import os

FORMATS = ("html", "md", "json")
EXTENSIONS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


# ----------------------------------------------------------------------------- cells


def num(v):
    """A number for people: 4 significant digits (3 in scientific notation)."""
    if v is None:
        return "–"
    v = float(v) + 0.0  # no "-0"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def pct(v):
    return "–" if v is None else f"{100 * float(v):.1f}%"


def text_of(kind, v):
    if kind == "int":
        return "–" if v is None else f"{int(v):,}"
    if kind == "num":
        return num(v)
    if kind == "pct":
        return pct(v)
    return "–" if v is None else str(v)


class Table:
    """A titled table: ``columns`` [(header, kind)], ``rows`` of raw values."""

    def __init__(self, title, columns, rows, note=None):
        self.title, self.columns, self.rows, self.note = title, columns, rows, note
        self.preformatted = False  # rows already text (a table whose kinds vary by row)

    def cells(self):
        if self.preformatted:
            return self.rows
        return [[text_of(k, v) for (_, k), v in zip(self.columns, r)] for r in self.rows]


# ----------------------------------------------------------------------------- layout


STAT_COLUMNS = ("mean", "std", "min", "p05", "p25", "p50", "p75", "p95", "p99", "max")
METRICS = (("emd", "EMD"), ("emd2", "EMD²"), ("cross_entropy", "cross entropy (nats)"))


def _summary_table(s, title="Summary"):
    cols = [("", "text"), ("rows", "int")] + [(c, "num") for c in STAT_COLUMNS]
    rows = [[label, s["summary"][k]["count"]] + [s["summary"][k][c] for c in STAT_COLUMNS]
            for k, label in METRICS]
    approx = any(s["summary"][k]["approximate"] for k, _ in METRICS)
    return Table(title, cols, rows, "quantiles within a relative 1e-4 (a sketch)" if approx else None)


def _accuracy(s):
    a = s["accuracy"]
    return (f"Top-1 accuracy {pct(a['top1'])}, top-{a['k']} accuracy {pct(a['topk'])}, "
            f"mean EMD {num(s['summary']['emd']['mean'])}, mean cross entropy "
            f"{num(s['summary']['cross_entropy']['mean'])} nats over {s['count']:,} rows.")


def _classes_table(s, k, worst, title="Target classes with the largest mean EMD", compact=False):
    cols = [("class", "text"), ("rows", "int"), ("mean EMD", "num"), ("mean EMD²", "num"),
            ("mean CE", "num"), ("top-1", "pct"), (f"top-{k}", "pct"), ("predicted", "int")]
    keep = [0, 1, 2, 4, 5, 6] if compact else list(range(len(cols)))
    rows = [[r["class"], r["count"], r["mean_emd"], r["mean_emd2"], r["mean_cross_entropy"],
             r["top1"], r["topk"], r["predicted"]] for r in s["classes"][:worst]]
    more = len(s["classes"]) - len(rows)
    note = [f"{more} more classes in --format json"] if more > 0 else []
    if not compact:
        note.append("'predicted': rows whose argmax is this class")
    return Table(title, [cols[i] for i in keep], [[r[i] for i in keep] for r in rows],
                 "; ".join(note) or None)


def _worst_table(s, grouped):
    cols = [("id", "text")] + ([("group", "text")] if grouped else []) + [
        ("EMD", "num"), ("EMD²", "num"), ("target", "text"), ("predicted", "text"),
        ("p(target)", "num")]
    rows = [[r["id"]] + ([r["group"]] if grouped else []) +
            [r["emd"], r["emd2"], r["target"], r["predicted"], r["p_target"]]
            for r in s["worst_rows"]]
    return Table("Rows with the largest EMD", cols, rows)


def _tree_tables(t, title_suffix=""):
    edges = Table("Edges by error mass" + title_suffix,
                  [("edge (child ← parent)", "text"), ("weight", "num"), ("share", "pct"),
                   ("per row", "num")],
                  [[e["edge"], e["weight"], e["share"], e["per_row"]] for e in t["edges"]],
                  "per row: the edge's mean contribution to the EMD (the shares add up to 100%)")
    nodes = Table("Internal nodes by error inside their subtree" + title_suffix,
                  [("node", "text"), ("bins", "int"), ("inside", "pct"), ("across its edge", "pct"),
                   ("stays inside", "pct")],
                  [[n["node"], n["bins"], n["inside_share"], n["across_share"], n["stays_inside"]]
                   for n in t["nodes"]],
                  "inside: share of all error mass on edges below the node (confusions among "
                  "its bins); across: on the edge above it (its bins against the rest)")
    return [edges, nodes]


def _chain_blocks(c, worst):
    gaps = sorted(c["gaps"], key=lambda g: -g["mean_abs_flow"])[:worst]
    table = Table("Gaps with the most error mass",
                  [("gap", "text"), ("mean φ", "num"), ("mean |φ|", "num"), ("reads", "text")],
                  [[f"{num(g['from'])} – {num(g['to'])}", g["mean_flow"], g["mean_abs_flow"],
                    _reads(g)]
                   for g in gaps],
                  "φ = F_pred − F_target at the gap, averaged over rows; 'reads' says too low "
                  "(φ > 0) or too high (φ < 0) when the mean φ is at least a fifth of the mean |φ|")
    bias = c["bias"]
    side = ("has no rows" if bias is None else "sits too high" if bias > 0
            else "sits too low" if bias < 0 else "is centred")
    text = (f"Bias E_pred[x] − E_target[x] = {num(bias)} (position units: on average the "
            f"prediction {side}); class error x[argmax p] − x[target]: mean "
            f"{num(c['mean_class_error'])}, mean absolute {num(c['mean_abs_class_error'])}.")
    return [("p", text), ("figure", "flows"), ("table", table)]


def _reads(g):
    """too low / too high where the signed mean flow is a fifth of the mean |φ| or more."""
    f, a = g["mean_flow"], g["mean_abs_flow"]
    if a <= 0 or abs(f) < 0.2 * a:
        return "both ways"
    return "too low" if f > 0 else "too high"


def _group_table(doc):
    """One column per group (then all rows) of the headline numbers."""
    secs = [(str(g["group"]), g) for g in doc["groups"]] + [("all", doc["all"])]
    k = doc["options"]["top_k"]
    lines = [("rows", "int", lambda s: s["count"]),
             ("mean EMD", "num", lambda s: s["summary"]["emd"]["mean"]),
             ("p50 EMD", "num", lambda s: s["summary"]["emd"]["p50"]),
             ("p95 EMD", "num", lambda s: s["summary"]["emd"]["p95"]),
             ("mean EMD²", "num", lambda s: s["summary"]["emd2"]["mean"]),
             ("mean cross entropy", "num", lambda s: s["summary"]["cross_entropy"]["mean"]),
             ("top-1 accuracy", "pct", lambda s: s["accuracy"]["top1"]),
             (f"top-{k} accuracy", "pct", lambda s: s["accuracy"]["topk"])]
    if doc["space"]["kind"] == "tree":
        lines.append(("top edge", "text", lambda s: s["tree"]["edges"][0]["edge"]
                      if s["tree"]["edges"] else None))
        lines.append(("its share", "pct", lambda s: s["tree"]["edges"][0]["share"]
                      if s["tree"]["edges"] else None))
    else:
        lines.append(("bias", "num", lambda s: s["chain"]["bias"]))
        lines.append(("mean |class error|", "num", lambda s: s["chain"]["mean_abs_class_error"]))
    rows = []
    for label, kind, get in lines:  # a row's cells share the row's kind
        rows.append([(label, "text")] + [(get(s), kind) for _, s in secs])
    t = Table(f"By {doc['options']['group_by']}", [("", "text")] + [(n, "text") for n, _ in secs], [])
    t.rows = [[text_of(kind, v) for v, kind in r] for r in rows]
    t.preformatted = True
    return t


def blocks(doc):
    """The page as a list of blocks: ("h1"|"h2"|"h3"|"p"|"meta", text), ("table", Table),
    ("figure", name), ("grid", [blocks]), ("notes", [text])."""
    a, opts = doc["all"], doc["options"]
    k, worst, grouped = opts["top_k"], opts["worst"], bool(doc["groups"])
    tree = doc["space"]["kind"] == "tree"
    out = [("h1", f"What is the model getting wrong? {os.path.basename(doc['inputs'].get('pred', ''))}"),
           ("meta", _meta(doc)), ("table", _summary_table(a)), ("p", _accuracy(a))]
    if grouped:
        out.append(("table", _group_table(doc)))
    out.append(("grid", [("figure", "histogram"), ("figure", "classes")]))
    if tree:
        out += [("h2", "Where the error mass goes"), ("figure", "edges"),
                ("grid", [("table", t) for t in _tree_tables(a["tree"])])]
    else:
        out += [("h2", "Too high or too low?")] + _chain_blocks(a["chain"], worst)
    out += [("h2", "Per target class"), ("table", _classes_table(a, k, worst)),
            ("h2", "Worst rows"), ("table", _worst_table(a, grouped))]
    if grouped:
        out.append(("h2", f"Per {opts['group_by']}"))
        per = []
        for g in doc["groups"]:
            name = f"{opts['group_by']} = {g['group']}"
            per.append(("table", _classes_table(g, k, min(worst, 10), f"{name}: worst classes",
                                                compact=True)))
            if tree:
                t = _tree_tables(g["tree"], f" ({name})")[0]
                t.rows = t.rows[:min(worst, 10)]
                per.append(("table", t))
        out.append(("grid", per))
    out.append(("notes", doc["notes"]))
    return out


def _meta(doc):
    i, sp, o = doc["inputs"], doc["space"], doc["options"]
    files = " + ".join(os.path.basename(str(v)) for v in (i.get("pred"), i.get("target")) if v)
    if sp["kind"] == "tree":
        space = (f"tree of {sp['nodes']:,} nodes, {sp['bins']:,} bins "
                 f"({os.path.basename(str(sp['source']))})")
    else:
        space = f"chain of {sp['bins']:,} bins at {num(sp['first'])} … {num(sp['last'])}"
    return (f"{files} · {doc['all']['count']:,} rows · {space} · normalize {o['normalize']} · "
            f"{o['dtype']} · emdcli {doc['emdcli']}")


# ----------------------------------------------------------------------------- writers


def json_text(doc):
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def markdown(doc):
    """The report as GitHub Markdown (tables; the plots are in the HTML form)."""
    lines = []

    def emit(block):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines.extend(["#" * int(kind[1]) + " " + block[1], ""])
        elif kind in ("p", "meta"):
            lines.extend([block[1], ""])
        elif kind == "table":
            t = block[1]
            lines.extend([f"**{t.title}**", ""])
            head = [h or " " for h, _ in t.columns]
            lines.append("| " + " | ".join(_md(h) for h in head) + " |")
            lines.append("|" + "|".join("---:" if k in ("int", "num", "pct") else ":---"
                                        for _, k in t.columns) + "|")
            for r in t.cells():
                lines.append("| " + " | ".join(_md(c) for c in r) + " |")
            lines.append("")
            if t.note:
                lines.extend([f"_{t.note}_", ""])
        elif kind == "grid":
            for b in block[1]:
                emit(b)
        elif kind == "notes":
            lines.extend(["## Notes", ""] + [f"- {n}" for n in block[1]] + [""])

    for b in blocks(doc):
        emit(b)
    return "\n".join(lines).rstrip() + "\n"


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1d232a;margin:0;background:#fff}
main{max-width:1200px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:22px;margin:4px 0 2px}
h2{font-size:17px;margin:26px 0 6px;border-bottom:1px solid #e3e6ea;padding-bottom:3px}
p{margin:6px 0}.meta{color:#5b6570;font-size:13px}
table{border-collapse:collapse;margin:6px 0 2px;font-size:13px;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{padding:3px 9px;border-bottom:1px solid #edf0f2;text-align:left;white-space:nowrap}
th{background:#f5f7f9;font-weight:600}td.n,th.n{text-align:right}
td.t{max-width:340px;overflow:hidden;text-overflow:ellipsis}
tbody tr:nth-child(even){background:#fafbfc}
.note{color:#68727d;font-size:12px;margin:0 0 10px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:8px 28px;align-items:start}
.grid>div{min-width:0;overflow-x:auto}
figure{margin:8px 0}figure svg{width:100%;height:auto;display:block}
.wide svg{max-width:900px}
ul.notes{color:#4a545e;font-size:13px;padding-left:20px}
.missing{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
"""


def html(doc, figures):
    """The report as one self-contained HTML page; ``figures`` maps a figure's name to
    its SVG text (None: matplotlib is missing, said on the page)."""
    e = _html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e('emd report: ' + os.path.basename(doc['inputs'].get('pred', '')))}</title>",
           f"<style>{CSS}</style></head><body><main>"]

    def emit(block, wide=True):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind in ("p", "meta"):
            css = ' class="meta"' if kind == "meta" else ""
            out.append(f"<p{css}>{e(block[1])}</p>")
        elif kind == "table":
            out.append(_html_table(block[1]))
        elif kind == "figure":
            svg = (figures or {}).get(block[1])
            if figures is None:
                if block[1] == "histogram":
                    out.append('<p class="missing">The plots need matplotlib: '
                               "pip install 'emdcli[plot]'</p>")
            elif svg:
                out.append(f'<figure class="{"wide" if wide else ""}">{svg}</figure>')
        elif kind == "grid":
            out.append('<div class="grid">')
            for b in block[1]:
                out.append("<div>")
                emit(b, wide=False)
                out.append("</div>")
            out.append("</div>")
        elif kind == "notes":
            out.append("<h2>Notes</h2><ul class=\"notes\">" +
                       "".join(f"<li>{e(n)}</li>" for n in block[1]) + "</ul>")

    for b in blocks(doc):
        emit(b)
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _html_table(t):
    e = _html.escape
    nums = [k in ("int", "num", "pct") for _, k in t.columns]
    head = "".join(f'<th class="{"n" if n else ""}">{e(h)}</th>' for (h, _), n in zip(t.columns, nums))
    body = []
    for r in t.cells():
        tds = []
        for c, n in zip(r, nums):
            if n or (t.preformatted and _numeric(c)):
                tds.append(f'<td class="n">{e(c)}</td>')
            else:
                tds.append(f'<td class="t" title="{e(c)}">{e(c)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return (f"<table><caption>{e(t.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}")


def _numeric(text):
    return text[:1].isdigit() or text[:1] in "-–" and text[1:2].isdigit() or text.endswith("%")

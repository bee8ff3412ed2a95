"""Figures: Fig. 3 and Fig. 5 are valid PNG/SVG/PDF files at the asked resolution, with
the expected axes, labels and markers (matplotlib objects inspected, not pixels)."""

import math

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from emdcli import compare, plot  # noqa: E402
from emdcli.cli import app  # noqa: E402
from emdcli.spaces import Chain  # noqa: E402

RATIO_LABEL, ANGLE_LABEL = "SD / EMD", "angle(∇SD, ∇EMD) [degrees]"


def _cell(lam, iters, dtype, finite=True):
    nan = float("nan")
    v = (lambda x: x) if finite else (lambda x: nan)
    return dict(lam=lam, iters=iters, dtype=dtype, form="plain", device="cpu",
                ratio_mean=v(0.9 + 0.01 * iters ** 0.5), ratio_p05=v(0.8), ratio_p95=v(1.05),
                angle_mean=v(20.0 / lam), angle_p05=v(5.0 / lam), angle_p95=v(40.0 / lam),
                nonconverged=0.0 if finite else 1.0, nonfinite=0.0 if finite else 1.0,
                seconds=0.01, iterations_mean=float(iters), sd_mean=1.0, rows=10)


def _grid(blank=True):
    rows = [_cell(lam, it, dt) for dt in ("float32", "float64") for it in (10, 100)
            for lam in (1.0, 10.0, 100.0)]
    if blank:
        rows.append(_cell(500.0, 100, "float32", finite=False))
    return rows


def _markers(ax):
    return [line.get_marker() for line in ax.get_lines() if len(line.get_xdata())]


def test_grid_figure_axes_labels_and_the_no_finite_strip(tmp_path):
    png = tmp_path / "fig3.png"
    fig = plot.grid_figure(_grid(), str(png), title="t")
    axes = fig.axes
    assert len(axes) == 6  # ratio, angle and the strip, per dtype
    data, strips = [a for a in axes if "no finite" not in a.get_ylabel()], \
        [a for a in axes if "no finite" in a.get_ylabel()]
    assert len(strips) == 2 and len(data) == 4
    assert sorted(a.get_ylabel() for a in data) == sorted([RATIO_LABEL] * 2 + [ANGLE_LABEL] * 2)
    assert all(a.get_xscale() == "log" for a in axes)
    assert all(s.get_xlabel() == "λ" for s in strips)
    # × only in the strip (float32 has the blank cell), never on the data axes
    assert all("x" not in _markers(a) for a in data)
    assert "x" in _markers(strips[0]) and "x" not in _markers(strips[1])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "no finite row (strip below)" in labels and "5th and 95th percentiles" in labels
    # the bands: a dotted line at each edge, besides the shaded area
    dotted = [ln for ln in data[0].get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 2 * 2  # two iteration limits, p05 and p95
    with PIL.open(png) as im:
        assert im.format == "PNG" and round(im.info["dpi"][0]) == 150


def test_grid_figure_without_blank_cells_has_no_strip(tmp_path):
    fig = plot.grid_figure(_grid(blank=False), str(tmp_path / "fig3.svg"))
    assert len(fig.axes) == 4
    assert "no finite row (strip below)" not in [t.get_text() for t in fig.legends[0].get_texts()]
    text = (tmp_path / "fig3.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert RATIO_LABEL in text  # vector text, not paths


def _profile(n, emd2=True):
    rng = np.random.default_rng(0)
    p = rng.random(n)
    p /= p.sum()
    q = np.full(n, 1.0 / n)
    cols = {"bin": np.arange(n), "name": np.array([f"c{i}" for i in range(n)], dtype=object),
            "pred": p, "target": q, "mse": 2 * (p - q), "emd": np.cumsum(p - q)}
    if emd2:
        cols["emd2"] = 0.1 * np.cumsum(p - q)
    for lam in (1.0, 10.0):
        cols[compare.sd_column(lam)] = np.cumsum(p - q) * (1 - 1 / lam)
    sd = {lam: dict(value=1.0, iterations=10, converged=True, error=0.0) for lam in (1.0, 10.0)}
    return compare.Profile(cols, list(cols), sd, 1.0, 0.5 if emd2 else None, 0, None)


def test_profile_figure_on_a_chain_uses_positions_and_labels_every_axis(tmp_path):
    x = np.array([0.0, 0.5, 2.0, 2.5, 7.0, 9.0])
    prof = _profile(len(x))
    fig = plot.profile_figure(prof, str(tmp_path / "fig5.png"), title="t",
                              space=Chain.from_positions(x), dpi=80)
    main = fig.axes[:4]
    twin = fig.axes[4]
    assert [a.get_ylabel() for a in main] == ["mass", "∂MSE/∂p", "∂EMD/∂p", "∂SD/∂p"]
    assert twin.get_ylabel() == "∂EMD²/∂p"
    assert main[3].get_xlabel() == "bin position"
    for a in main:
        for line in a.get_lines():
            if len(line.get_xdata()) == len(x):
                np.testing.assert_array_equal(line.get_xdata(), x)
    # EMD² on its own axis: not flattened on the EMD's
    np.testing.assert_array_equal(twin.get_lines()[0].get_ydata(), prof.columns["emd2"])
    assert all(len(ln.get_ydata()) != len(x) or not np.array_equal(ln.get_ydata(), prof.columns["emd2"])
               for ln in main[2].get_lines())
    with PIL.open(tmp_path / "fig5.png") as im:
        assert round(im.info["dpi"][0]) == 80


def test_profile_figure_on_a_tree_names_the_bins(tmp_path):
    from emdcli import treefiles

    csv = tmp_path / "t.csv"
    csv.write_text("node,parent\nroot,\nA,root\nB,root\na1,A\na2,A\nb1,B\n")
    tree = treefiles.load_tree(str(csv))
    prof = _profile(tree.n, emd2=False)
    pdf = tmp_path / "fig5.pdf"
    fig = plot.profile_figure(prof, str(pdf), space=tree)
    assert len(fig.axes) == 4  # no EMD² axis
    assert fig.axes[3].get_xlabel() == "bin (node order of the tree)"
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == list(tree.bin_names)
    assert pdf.read_bytes().startswith(b"%PDF")


def test_compare_dpi_option(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "p.npy", rng.random((6, 5)))
    np.save(tmp_path / "q.npy", rng.random((6, 5)))
    png = tmp_path / "f.png"
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "p.npy"), str(tmp_path / "q.npy"),
                                 "--lam", "1,10", "--iters", "10", "--plot", str(png),
                                 "--dpi", "72", "-q", "-f", "csv"])
    assert r.exit_code == 0, (r.output, r.exception)
    with PIL.open(png) as im:
        assert round(im.info["dpi"][0]) == 72
    assert not math.isnan(float(r.stdout.splitlines()[1].split(",")[5]))

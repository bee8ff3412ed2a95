"""Ground distances learned from data (``emdcli.learn``, ``emd ground learn``): class
centroids of features (Hou et al.) and the confusion-matrix alternative."""

import os
import sys
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emdcli import EMDInputError, learn_ground
from emdcli.cli import app
from emdcli.learn import CentroidSums, centroid_ground, class_centroids, from_confusion
from emdcli.spaces import Ground

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import cli_bad, cli_ok, cli_runner, run_cli  # noqa: E402


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(("ground-learn",) + key).encode()))


def features_with_means(rng, means, per_class=20, dtype=np.float64, shuffle=True):
    """(features, labels) whose class centroids are ``means`` (the noise of each class
    has zero mean), rows shuffled."""
    n, f = means.shape
    y = np.repeat(np.arange(n), per_class)
    noise = rng.standard_normal((y.size, f))
    for k in range(n):
        noise[y == k] -= noise[y == k].mean(axis=0)
    x = means[y] + noise
    if shuffle:
        order = rng.permutation(y.size)
        x, y = x[order], y[order]
    return x.astype(dtype), y


def expected(means, metric):
    diff = means[:, None, :] - means[None, :, :]
    if metric == "euclidean":
        return np.sqrt((diff ** 2).sum(-1))
    if metric == "sqeuclidean":
        return (diff ** 2).sum(-1)
    norm = np.linalg.norm(means, axis=1)
    d = 1 - (means @ means.T) / np.outer(norm, norm)
    np.fill_diagonal(d, 0)
    return d


# ----------------------------------------------------------------------------- library


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_known_means_give_their_distances(metric):
    rng = rng_for("means", metric)
    means = rng.standard_normal((7, 16)) * 3 + 1
    x, y = features_with_means(rng, means)
    d = learn_ground(x, y, metric=metric)
    assert d.shape == (7, 7) and d.dtype == np.float64
    np.testing.assert_allclose(d, expected(means, metric), rtol=1e-9, atol=1e-12)
    assert np.array_equal(d, d.T) and not np.diag(d).any()
    Ground.from_matrix(d)  # valid as --ground


def test_float32_features_are_summed_in_float64():
    rng = rng_for("f32")
    means = rng.standard_normal((4, 8))
    x, y = features_with_means(rng, means, per_class=5000, dtype=np.float32)
    c, counts = class_centroids(x, y)
    want = np.stack([x[y == k].astype(np.float64).mean(axis=0) for k in range(4)])
    np.testing.assert_allclose(c, want, rtol=1e-12, atol=1e-14)
    assert counts.tolist() == [5000] * 4


def test_streaming_equals_in_memory():
    rng = rng_for("stream")
    means = rng.standard_normal((9, 5))
    x, y = features_with_means(rng, means, per_class=33)
    whole = learn_ground(x, y)
    cuts = np.sort(rng.choice(np.arange(1, y.size), 12, replace=False))
    batches = list(zip(np.split(x, cuts), np.split(y, cuts)))
    # each class's rows are added in row order whatever the batches: the same bits
    np.testing.assert_array_equal(learn_ground(iter(batches)), whole)
    np.testing.assert_array_equal(learn_ground(x, y, batch_rows=7), whole)
    # the largest class may first appear in a late batch: the sums grow
    order = np.argsort(y, kind="stable")
    late = [(x[order][i:i + 10], y[order][i:i + 10]) for i in range(0, y.size, 10)]
    np.testing.assert_array_equal(learn_ground(late), whole)


def test_n_classes_fixes_the_size():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    d = learn_ground(x, np.array([0, 1]), n_classes=2)
    np.testing.assert_allclose(d, [[0, 5], [5, 0]])
    with pytest.raises(EMDInputError, match="class 2 has no rows"):
        learn_ground(x, np.array([0, 1]), n_classes=3)


def bad(match, features, labels=None, **kw):
    with pytest.raises(EMDInputError, match=match) as info:
        learn_ground(features, labels, **kw)
    return info.value


def test_bad_inputs_are_named():
    x = np.arange(12.0).reshape(6, 2)
    e = bad("label 5 is out of range", x, np.array([0, 1, 2, 5, 1, 0]), n_classes=3)
    assert (e.source, e.row) == ("labels", 3)
    e = bad("label -1 is out of range", x, np.array([0, 1, -1, 1, 1, 0]))
    assert e.row == 2
    e = bad("class 2 has no rows", x, np.array([0, 1, 3, 3, 1, 0]))
    assert e.source == "labels"
    xn = x.copy()
    xn[4, 1] = np.nan
    e = bad("feature is nan", xn, np.array([0, 1, 2, 0, 1, 2]))
    assert (e.source, e.row, e.column) == ("features", 4, 1)
    xi = x.astype(np.float32)
    xi[5, 0] = np.inf
    e = bad("feature is inf", xi, np.array([0, 1, 2, 0, 1, 2]))
    assert (e.row, e.column) == (5, 0)
    bad("6 feature rows but 5 labels", x, np.array([0, 1, 2, 0, 1]))
    e = bad("label 1.5 is not an integer", x, np.array([0, 1, 1.5, 0, 1, 2]))
    assert e.row == 2
    bad("labels must be integers, not true/false", x, np.array([True, False] * 3))
    bad("labels must be integers", x, np.array(list("abcdef")))
    bad("features must be 2-D", np.arange(6.0), np.arange(6))
    bad("features must be real numbers", np.array([["a", "b"]] * 6), np.arange(6))
    bad("no feature rows", np.zeros((0, 3)), np.zeros(0, dtype=int))
    bad("labels are missing", x)
    bad("rows have 3 features but earlier rows have 2",
        [(x[:3], np.arange(3)), (np.zeros((3, 3)), np.arange(3))])
    e = bad("feature is nan", [(x[:3], np.arange(3)), (xn[3:], np.arange(3))])
    assert e.row == 4  # counted over all batches
    with pytest.raises(EMDInputError, match="zero vector"):
        learn_ground(np.array([[0.0, 0], [1, 0], [0, 1]]), np.arange(3), metric="cosine")
    with pytest.raises(EMDInputError, match="unknown metric"):
        centroid_ground(np.eye(3), "manhattan")
    with pytest.raises(EMDInputError, match="n_classes"):
        CentroidSums(0)


def test_integral_float_labels_are_accepted():
    x = np.array([[0.0], [2.0], [4.0]])
    np.testing.assert_allclose(learn_ground(x, np.array([0.0, 1.0, 1.0])), [[0, 3], [3, 0]])


# ----------------------------------------------------------------------------- confusion


def test_confusion_hand_checked():
    c = np.array([[8, 2, 0], [1, 6, 3], [0, 0, 10]])
    # P = [[.8, .2, 0], [.1, .6, .3], [0, 0, 1]]; S_01 = .15, S_02 = 0, S_12 = .15
    want = np.array([[0, 0.85, 1.0], [0.85, 0, 0.85], [1.0, 0.85, 0]])
    d = from_confusion(c)
    np.testing.assert_allclose(d, want, rtol=1e-15)
    assert np.array_equal(d, d.T) and not np.diag(d).any()
    off = d[~np.eye(3, dtype=bool)]
    assert (off > 0).all() and (off <= 1).all()
    Ground.from_matrix(d)
    np.testing.assert_allclose(from_confusion(c / c.sum()), want, rtol=1e-14)  # rates too


def test_confusion_bad_inputs():
    with pytest.raises(EMDInputError, match="class 1 has no predictions") as info:
        from_confusion([[1, 0], [0, 0]])
    assert info.value.row == 1
    with pytest.raises(EMDInputError, match="negative"):
        from_confusion([[1, -1], [0, 1]])
    with pytest.raises(EMDInputError, match="N × N"):
        from_confusion(np.ones((2, 3)))
    with pytest.raises(EMDInputError, match="not finite"):
        from_confusion([[1, np.nan], [0, 1]])
    with pytest.raises(EMDInputError, match="classes 0 and 1 are always predicted as each other"):
        from_confusion([[0, 5, 0], [4, 0, 0], [0, 1, 3]])


# ----------------------------------------------------------------------------- CLI


run, ok, bad_cli = run_cli, cli_ok, cli_bad


@pytest.fixture
def data(tmp_path):
    rng = rng_for("cli")
    means = rng.standard_normal((6, 4)) * 2
    x, y = features_with_means(rng, means, per_class=15, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    pq.write_table(pa.table({"emb": pa.array(list(x), type=pa.list_(pa.float32())), "label": y}),
                   tmp_path / "f.parquet", row_group_size=16)
    cols = {f"f{j}": x[:, j] for j in range(4)}
    pq.write_table(pa.table({**cols, "label": y}), tmp_path / "cols.parquet")
    pq.write_table(pa.table({"label": y}), tmp_path / "labels.parquet")
    return tmp_path, x, y


def test_cli_npy_and_parquet_agree_with_the_library(data):
    tmp, x, y = data
    want = learn_ground(x, y)
    r = ok("ground", "learn", tmp / "x.npy", tmp / "y.npy", "-o", tmp / "a.npy")
    assert "6 × 6 ground matrix" in r.stderr and "over 90 rows" in r.stderr
    np.testing.assert_allclose(np.load(tmp / "a.npy"), want, rtol=1e-12)
    ok("ground", "learn", tmp / "f.parquet", "--label-column", "label", "-o", tmp / "b.npy")
    np.testing.assert_allclose(np.load(tmp / "b.npy"), want, rtol=1e-12)
    ok("ground", "learn", tmp / "cols.parquet", "--label-column", "label", "-o", tmp / "c.npy",
       "--batch-size", "7")
    np.testing.assert_allclose(np.load(tmp / "c.npy"), want, rtol=1e-12)
    ok("ground", "learn", tmp / "x.npy", tmp / "labels.parquet", "-o", tmp / "d.npy")
    np.testing.assert_allclose(np.load(tmp / "d.npy"), want, rtol=1e-12)
    ok("ground", "learn", tmp / "f.parquet", "--label-column", "label", "--feature-column", "emb",
       "--metric", "cosine", "-o", tmp / "e.npy")
    np.testing.assert_allclose(np.load(tmp / "e.npy"), learn_ground(x, y, metric="cosine"),
                               rtol=1e-12, atol=1e-15)
    r = ok("ground", "learn", tmp / "x.npy", tmp / "y.npy", "--metric", "sqeuclidean", "-o", tmp / "f.npy")
    assert "warning: the ground matrix breaks the triangle inequality" in r.stderr


def test_cli_confusion(tmp_path):
    c = np.array([[8, 2, 0], [1, 6, 3], [0, 0, 10]])
    np.save(tmp_path / "c.npy", c)
    ok("ground", "learn", "--from-confusion", tmp_path / "c.npy", "-o", tmp_path / "d.npy")
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), from_confusion(c))
    np.save(tmp_path / "z.npy", np.array([[1, 0], [0, 0]]))
    bad_cli(tmp_path, "ground", "learn", "--from-confusion", tmp_path / "z.npy", "-o", tmp_path / "o.npy",
            needles=["z.npy: row 1: class 1 has no predictions"])


def test_cli_errors_leave_nothing(data):
    tmp, x, y = data
    out = tmp / "out.npy"
    labels = y.copy()
    labels[17] = 99
    np.save(tmp / "y99.npy", labels)
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "y99.npy", "-o", out, "--n-classes", "6",
            needles=["y99.npy: row 17: label 99 is out of range"])
    gap = np.where(y == 3, 2, y)
    np.save(tmp / "gap.npy", gap)
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "gap.npy", "-o", out,
            needles=["gap.npy: class 3 has no rows"])
    xn = x.copy()
    xn[41, 2] = np.nan
    np.save(tmp / "xn.npy", xn)
    bad_cli(tmp, "ground", "learn", tmp / "xn.npy", tmp / "y.npy", "-o", out,
            needles=["xn.npy: row 41, column 2: feature is nan"])
    np.save(tmp / "short.npy", y[:-1])
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "short.npy", "-o", out,
            needles=["90 feature rows", "89 labels"])
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", "-o", out, needles=["no LABELS file"])
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "y.npy", "-o", tmp / "out.csv",
            needles=["written as .npy"])
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "y.npy", "-o", tmp / "nope" / "o.npy",
            needles=["does not exist"])
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "x.npy", "-o", out, needles=["labels must be"])
    bad_cli(tmp, "ground", "learn", "-o", out, needles=["give FEATURES"])
    bad_cli(tmp, "ground", "learn", tmp / "x.npy", tmp / "y.npy", "--from-confusion", tmp / "y.npy",
            "-o", out, needles=["takes no FEATURES"])
    r = run("ground", "learn", tmp / "x.npy", tmp / "y.npy")  # a missing option: usage, then one error
    assert r.exit_code == 2 and "emd: error: missing option '--output'" in r.stderr


def test_help_fits_80_columns():
    for words in (["ground"], ["ground", "learn"]):
        r = cli_runner().invoke(app, [*words, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert r.exit_code == 0
        assert all(len(line) <= 80 for line in r.stdout.splitlines())
        assert "Examples:" in r.stdout


def test_close_centroids_far_from_the_mean_keep_their_distance():
    """The Gram form cancels ~1e-16·‖c‖²: such pairs are taken again directly."""
    D = centroid_ground([[1000.0, 0.0], [1000.0, 1e-6], [-1000.0, 0.0]])
    np.testing.assert_allclose(D[0, 1], 1e-6, rtol=1e-9)
    np.testing.assert_allclose(D[0, 2], 2000.0, rtol=1e-12)
    np.testing.assert_allclose(centroid_ground([[1000.0, 0.0], [1000.0, 1e-6]],
                                               metric="sqeuclidean")[0, 1], 1e-12, rtol=1e-9)

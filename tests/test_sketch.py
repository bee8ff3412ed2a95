"""Bounded-memory statistics: merged moments against numpy, sketch quantiles within
their relative error of numpy's exact order statistics, merging equals adding; the exact
summary's quantiles are numpy's, bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emdcli import report
from emdcli.sketch import Moments, QuantileSketch


def exact_rank(v, q):
    """numpy's order statistic of rank round(q·(n − 1)) (what the sketch estimates)."""
    return np.sort(v)[int(round(q * (v.size - 1)))]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=300),
       st.integers(1, 7), st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
def test_sketch_quantile_within_alpha_of_the_exact_rank(values, parts, q):
    v = np.array(values)
    s = QuantileSketch()
    for chunk in np.array_split(v, parts):
        s.add(chunk)
    assert s.count == v.size
    want = exact_rank(v, q)
    assert abs(s.quantile(q) - want) <= 1e-4 * abs(want) * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=300),
       st.one_of(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]), st.floats(0, 1)))
def test_exact_quantile_is_numpys_bit_for_bit(values, q):
    v = np.array(values)
    got = report.quantile(v.copy(), q)
    assert type(got) is float
    assert got == float(np.quantile(v, q))


def test_sketch_merge_is_adding_everything():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 3, 5000), -rng.lognormal(0, 1, 700)
    one = QuantileSketch()
    one.add(np.concatenate([a, b, np.zeros(10)]))
    left, right = QuantileSketch(), QuantileSketch()
    left.add(a)
    right.add(np.concatenate([b, np.zeros(10)]))
    left.merge(right)
    for store in ("pos", "neg"):
        a, b = getattr(one, store), getattr(left, store)
        assert a.lo == b.lo
        np.testing.assert_array_equal(a.counts, b.counts)
    assert one.zeros == left.zeros == 10


@pytest.mark.parametrize("parts", [1, 2, 13])
def test_moments_match_numpy(parts):
    rng = np.random.default_rng(parts)
    v = rng.normal(3.0, 2.0, 10_000) ** 3
    m = Moments()
    for chunk in np.array_split(v, parts):
        m.add(chunk)
    assert m.count == v.size and m.min == v.min() and m.max == v.max()
    assert m.mean == pytest.approx(v.mean(), rel=1e-12)
    assert m.std == pytest.approx(v.std(), rel=1e-12)


def test_summary_switches_to_the_sketch_past_its_limit(monkeypatch):
    monkeypatch.setattr(report.Summary, "EXACT_LIMIT", 1000)
    rng = np.random.default_rng(1)
    v = rng.lognormal(0, 1, 5000)
    s = report.Summary("emd")
    for chunk in np.array_split(v, 17):
        s.add(np.append(chunk, np.nan))
    st_ = s.stats()
    assert s.sketch is not None and s.parts == []
    assert st_["count"] == 5017 and st_["nonfinite"] == 17
    assert st_["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert st_["std"] == pytest.approx(v.std(), rel=1e-12)
    assert st_["min"] == v.min() and st_["max"] == v.max()
    for q, key in ((0.5, "p50"), (0.95, "p95")):
        assert abs(st_[key] - exact_rank(v, q)) <= 1e-4 * exact_rank(v, q)
    assert s.line().endswith("(p50, p95 within 1e-4)")

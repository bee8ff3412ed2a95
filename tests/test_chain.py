"""Chain-space EMD^rho: values, gradients, Hessian, properties and input validation.

References: POT's exact LP (``ot.emd2``), ``scipy.stats.wasserstein_distance``, and the
slow formulas of ``tests/naive.py`` written straight from SPEC.md section 1.
"""

import os
import sys
import zlib

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import wasserstein_distance

import emdcli
from emdcli.sinkhorn import sinkhorn
from emdcli import Chain, EMDInputError, chain_hessian, emd, emd2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive  # noqa: E402
from common import dists, onehot  # noqa: E402

SIZES = [1, 2, 3, 5, 8, 13, 21, 34, 60]
RHOS = [1.0, 1.5, 2.0, 3.7]
BATCH = 3


# ----------------------------------------------------------------------------- helpers


def rng_for(*key):
    """A reproducible generator per test case."""
    return np.random.default_rng(zlib.crc32(repr(("chain",) + key).encode()))


def positions(rng, n):
    """Random, strictly increasing, non-uniform positions (gaps in [0.05, 3))."""
    return rng.uniform(-5, 5) + np.concatenate([[0.0], np.cumsum(rng.uniform(0.05, 3.0, n - 1))])


def mass_directions(n):
    """e_k = δ_k − 1/N as the rows of an (N, N) array."""
    return np.eye(n) - 1.0 / n


def scale_of(x):
    return max(1.0, float(x[-1] - x[0]))


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("n", SIZES)
def test_rho1_matches_exact_lp_and_scipy(n):
    rng = rng_for("lp", n)
    x = positions(rng, n)
    p, q = dists(rng, BATCH, n), dists(rng, BATCH, n)
    got = emd(p, q, positions=x)
    assert got.shape == (BATCH,) and got.dtype == np.float64
    m = naive.chain_ground(x)
    for b in range(BATCH):
        lp = ot.emd2(p[b], q[b], m)
        sp = wasserstein_distance(x, x, p[b], q[b])
        assert got[b] == pytest.approx(lp, rel=1e-9, abs=1e-12 * scale_of(x))
        assert got[b] == pytest.approx(sp, rel=1e-9, abs=1e-12 * scale_of(x))


@pytest.mark.parametrize("n", SIZES)
def test_rho1_matches_exact_lp_against_class_targets(n):
    rng = rng_for("lp-class", n)
    x = positions(rng, n)
    p = dists(rng, BATCH, n)
    c = rng.integers(0, n, BATCH)
    got = emd(p, c, positions=x)
    m = naive.chain_ground(x)
    for b in range(BATCH):
        assert got[b] == pytest.approx(ot.emd2(p[b], onehot(c, n)[b], m), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", SIZES)
def test_values_match_naive(n, rho):
    rng = rng_for("naive", n, rho)
    x = positions(rng, n)
    p, q = dists(rng, BATCH, n), dists(rng, BATCH, n)
    got = emd(p, q, positions=x, rho=rho)
    want = [naive.emd_rho(p[b], q[b], x, rho) for b in range(BATCH)]
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", SIZES)
def test_class_targets_equal_onehot_rows_and_naive(n, rho):
    rng = rng_for("class", n, rho)
    x = positions(rng, n)
    p = dists(rng, BATCH, n)
    c = rng.integers(0, n, BATCH)
    q = onehot(c, n)
    v_cls, g_cls = emd(p, c, positions=x, rho=rho, gradient=True)
    v_row, g_row = emd(p, q, positions=x, rho=rho, gradient=True)
    np.testing.assert_allclose(v_cls, v_row, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g_cls, g_row, rtol=1e-12, atol=1e-12)
    # Class indices given as integer-valued floats take the same path.
    np.testing.assert_allclose(emd(p, c.astype(float), positions=x, rho=rho), v_cls, rtol=1e-15)
    for b in range(BATCH):
        assert v_cls[b] == pytest.approx(naive.emd_rho(p[b], q[b], x, rho), rel=1e-11, abs=1e-13)
        np.testing.assert_allclose(
            g_cls[b], naive.emd_rho_grad(p[b], q[b], x, rho), rtol=1e-10, atol=1e-11
        )
    if rho == 1.0:
        d = naive.chain_ground(x)
        for b in range(BATCH):
            value, grad = naive.onehot_emd(p[b], c[b], d)
            assert v_cls[b] == pytest.approx(value, rel=1e-11, abs=1e-13)
            np.testing.assert_allclose(g_cls[b], grad, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", [1, 2, 7, 33, 60])
def test_float32_values_and_gradients(n, rho):
    rng = rng_for("f32", n, rho)
    x = positions(rng, n)
    p, q = dists(rng, BATCH, n), dists(rng, BATCH, n)
    c = rng.integers(0, n, BATCH)
    v, g = emd(p, q, positions=x, rho=rho, dtype="float32", gradient=True)
    vc, gc = emd(p, c, positions=x, rho=rho, dtype=np.float32, gradient=True)
    _, gi = emd(p, q, positions=x, rho=rho, dtype="float32", gradient=True, grad_wrt="input")
    for a in (v, g, vc, gc, gi):
        assert a.dtype == np.float32
    assert emd(p, q, positions=x, rho=rho, dtype="float32").dtype == np.float32
    scale = scale_of(x)
    want_v = [naive.emd_rho(p[b], q[b], x, rho) for b in range(BATCH)]
    np.testing.assert_allclose(v, want_v, rtol=1e-4, atol=1e-5 * scale)
    want_vc = [naive.emd_rho(p[b], onehot(c, n)[b], x, rho) for b in range(BATCH)]
    np.testing.assert_allclose(vc, want_vc, rtol=1e-4, atol=1e-5 * scale)
    # Gradients: compare against the naive formula on exactly the float32 inputs the kernel
    # sees (so that a sign of φ near zero cannot differ between the two).
    p32 = p.astype(np.float32)
    p32 = (p32 / p32.sum(axis=1, keepdims=True)).astype(np.float64)
    q32 = q.astype(np.float32)
    q32 = (q32 / q32.sum(axis=1, keepdims=True)).astype(np.float64)
    x32 = x  # positions stay float64
    for b in range(BATCH):
        np.testing.assert_allclose(
            g[b], naive.emd_rho_grad(p32[b], q32[b], x32, rho), rtol=1e-4, atol=1e-5 * scale
        )
        np.testing.assert_allclose(
            gc[b], naive.emd_rho_grad(p32[b], onehot(c, n)[b], x32, rho),
            rtol=1e-4, atol=1e-5 * scale,
        )


def test_default_positions_are_unit_spaced_and_chain_objects_work():
    rng = rng_for("default")
    n = 9
    p, q = dists(rng, BATCH, n), dists(rng, BATCH, n)
    base = emd(p, q, rho=1.5)
    np.testing.assert_allclose(base, emd(p, q, rho=1.5, positions=np.arange(n) + 3.0), rtol=1e-13)
    np.testing.assert_allclose(base, emd(p, q, rho=1.5, positions=Chain.uniform(n)), rtol=1e-13)
    x = positions(rng, n)
    np.testing.assert_allclose(
        emd(p, q, positions=x), emd(p, q, positions=Chain.from_positions(x)), rtol=1e-15
    )


def test_emd2_is_rho_two_and_docstring_example():
    rng = rng_for("emd2")
    p, q = dists(rng, BATCH, 6), dists(rng, BATCH, 6)
    np.testing.assert_allclose(emd2(p, q), emd(p, q, rho=2.0), rtol=1e-15)
    v2, g2 = emd2(p, q, gradient=True)
    v, g = emd(p, q, rho=2.0, gradient=True)
    np.testing.assert_allclose(g2, g, rtol=1e-15)
    np.testing.assert_allclose(emd(np.array([[0.5, 0.5, 0.0]]), np.array([2])), [1.5])


def test_check_false_gives_same_results_on_valid_input():
    rng = rng_for("nocheck")
    x = positions(rng, 12)
    p, q = dists(rng, BATCH, 12), dists(rng, BATCH, 12)
    a = emd(p, q, positions=x, rho=1.5, gradient=True)
    b = emd(p, q, positions=x, rho=1.5, gradient=True, check=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", SIZES)
def test_gradient_matches_naive_double_sum_and_sums_to_zero(n, rho):
    rng = rng_for("grad", n, rho)
    x = positions(rng, n)
    p, q = dists(rng, BATCH, n), dists(rng, BATCH, n)
    v, g = emd(p, q, positions=x, rho=rho, gradient=True)
    assert g.shape == (BATCH, n) and g.dtype == np.float64
    np.testing.assert_allclose(v, emd(p, q, positions=x, rho=rho), rtol=1e-14, atol=1e-15)
    scale = scale_of(x)
    for b in range(BATCH):
        np.testing.assert_allclose(
            g[b], naive.emd_rho_grad(p[b], q[b], x, rho), rtol=1e-10, atol=1e-11 * scale
        )
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-11 * scale * n)


@pytest.mark.parametrize("target", ["rows", "classes"])
@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", [2, 3, 6, 17, 40])
def test_gradient_matches_finite_differences_along_mass_directions(n, rho, target):
    rng = rng_for("fd", n, rho, target)
    x = positions(rng, n)
    p = dists(rng, 1, n)[0]
    if target == "rows":
        q = dists(rng, 1, n)
        phi = np.cumsum(p - q[0])[:-1]
    else:
        q = rng.integers(0, n, 1)
        phi = np.cumsum(p - onehot(q, n)[0])[:-1]
    # Random continuous data: no |φ_i| is anywhere near the step h (no kinks for rho = 1).
    assert n == 1 or np.abs(phi).min() > 1e-4
    _, g = emd(p[None], q, positions=x, rho=rho, normalize="none", gradient=True)
    h = 1e-6
    e = mass_directions(n)
    plus = emd(p + h * e, np.repeat(q, n, axis=0), positions=x, rho=rho, normalize="none")
    minus = emd(p - h * e, np.repeat(q, n, axis=0), positions=x, rho=rho, normalize="none")
    fd = (plus - minus) / (2 * h)
    np.testing.assert_allclose(fd, e @ g[0], rtol=1e-5, atol=1e-6 * scale_of(x))


# ----------------------------------------------------------------------------- Hessian


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 25])
def test_hessian_matches_naive_and_is_a_projected_symmetric_matrix(n):
    rng = rng_for("hess", n)
    x = positions(rng, n)
    h = chain_hessian(x)
    assert h.shape == (n, n)
    np.testing.assert_allclose(h, naive.hessian_emd2(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, h.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h.sum(axis=1), 0.0, atol=1e-11 * scale_of(x))
    np.testing.assert_allclose(chain_hessian(Chain.from_positions(x)), h, rtol=1e-15)
    np.testing.assert_allclose(chain_hessian(list(x)), h, rtol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 4, 11, 30])
def test_hessian_of_int_n_is_unit_spacing(n):
    h = chain_hessian(n)
    assert h.shape == (n, n)
    np.testing.assert_allclose(h, naive.hessian_emd2(np.arange(n, dtype=float)), atol=1e-12)
    np.testing.assert_allclose(chain_hessian(np.int64(n)), h, rtol=1e-15)


@pytest.mark.parametrize("n", [2, 3, 8, 20])
def test_hessian_equals_finite_differences_of_the_rho2_gradient(n):
    rng = rng_for("hess-fd", n)
    x = positions(rng, n)
    p, q = dists(rng, 1, n), dists(rng, 1, n)
    hess = chain_hessian(x)
    e = mass_directions(n)
    h = 1e-4  # the rho = 2 gradient is affine in p: differences are exact up to rounding
    qs = np.repeat(q, n, axis=0)
    _, gp = emd2(p + h * e, qs, positions=x, normalize="none", gradient=True)
    _, gm = emd2(p - h * e, qs, positions=x, normalize="none", gradient=True)
    fd = (gp - gm) / (2 * h)  # row l: d g / d h along e_l
    np.testing.assert_allclose(fd, (hess @ e.T).T, rtol=1e-7, atol=1e-8 * scale_of(x))


# ----------------------------------------------------------------------------- grad_wrt="input"


def _fd_raw(f, z, h):
    """Central differences of f (B rows → B values) w.r.t. each coordinate of the 1-row z."""
    n = z.shape[1]
    eye = np.eye(n)
    return (f(z + h * eye) - f(z - h * eye)) / (2 * h)


@pytest.mark.parametrize("target", ["rows", "classes"])
@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", [2, 3, 9, 30])
def test_input_gradient_l1(n, rho, target):
    rng = rng_for("in-l1", n, rho, target)
    x = positions(rng, n)
    z = rng.uniform(0.5, 3.0, (1, n)) * rng.uniform(0.1, 10)  # raw, unnormalised masses
    q = rng.uniform(0.1, 1.0, (1, n)) if target == "rows" else rng.integers(0, n, 1)
    v, g = emd(z, q, positions=x, rho=rho, gradient=True, grad_wrt="input")
    assert g.shape == (1, n)

    def f(zz):
        return emd(zz, np.repeat(q, len(zz), axis=0), positions=x, rho=rho)

    fd = _fd_raw(f, z, 1e-6 * z.sum())
    np.testing.assert_allclose(fd, g[0], rtol=1e-5, atol=1e-6 * scale_of(x) / z.sum())


@pytest.mark.parametrize("target", ["rows", "classes"])
@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("n", [2, 3, 9, 30])
def test_input_gradient_softmax(n, rho, target):
    rng = rng_for("in-sm", n, rho, target)
    x = positions(rng, n)
    z = rng.normal(0, 1.5, (1, n)) + 4.0  # logits, shifted (softmax is shift invariant)
    q = rng.uniform(0.1, 1.0, (1, n)) if target == "rows" else rng.integers(0, n, 1)
    v, g = emd(z, q, positions=x, rho=rho, normalize="softmax", gradient=True, grad_wrt="input")

    def f(zz):
        return emd(zz, np.repeat(q, len(zz), axis=0), positions=x, rho=rho, normalize="softmax")

    fd = _fd_raw(f, z, 1e-6)
    np.testing.assert_allclose(fd, g[0], rtol=1e-5, atol=1e-6 * scale_of(x))
    # Softmax gradients w.r.t. logits sum to zero (shift invariance).
    assert abs(g.sum()) < 1e-10 * scale_of(x) * n


def test_input_gradient_under_none_is_the_distribution_gradient():
    rng = rng_for("in-none")
    p, q = dists(rng, BATCH, 7), dists(rng, BATCH, 7)
    a = emd(p, q, rho=1.5, normalize="none", gradient=True)[1]
    b = emd(p, q, rho=1.5, normalize="none", gradient=True, grad_wrt="input")[1]
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def chain_rows(draw, n_rows=2, min_n=1, max_n=16):
    """A chain (positions) and ``n_rows`` non-negative rows of width N with positive mass."""
    n = draw(st.integers(min_n, max_n))
    gaps = draw(hnp.arrays(np.float64, n - 1, elements=st.floats(0.01, 10.0)))
    x = np.concatenate([[0.0], np.cumsum(gaps)])
    mass = st.one_of(st.just(0.0), st.floats(1e-6, 1.0))
    out = []
    for _ in range(n_rows):
        row = draw(hnp.arrays(np.float64, n, elements=mass))
        if row.sum() <= 1e-6:
            row = row.copy()
            row[draw(st.integers(0, n - 1))] = 1.0
        out.append(row)
    return x, out


@SETTINGS
@given(chain_rows(), st.sampled_from(RHOS))
def test_property_non_negative_and_matches_naive(data, rho):
    x, (a, b) = data
    v = emd(a[None], b[None], positions=x, rho=rho)
    assert v[0] >= 0.0
    want = naive.emd_rho(a / a.sum(), b / b.sum(), x, rho)
    assert v[0] == pytest.approx(want, rel=1e-9, abs=1e-12 * max(1.0, x[-1]))


@SETTINGS
@given(chain_rows(n_rows=1), st.sampled_from(RHOS), st.sampled_from([1.0, 2.0, 0.25]))
def test_property_zero_on_equal_rows(data, rho, s):
    x, (a,) = data
    v, g = emd(a[None], s * a[None], positions=x, rho=rho, gradient=True)
    assert v[0] == 0.0
    assert np.all(g == 0.0)


@SETTINGS
@given(chain_rows())
def test_property_symmetric_rho1(data):
    x, (a, b) = data
    ab = emd(a[None], b[None], positions=x)[0]
    ba = emd(b[None], a[None], positions=x)[0]
    assert ab == pytest.approx(ba, rel=1e-12, abs=1e-12 * max(1.0, x[-1]))


@SETTINGS
@given(chain_rows(n_rows=3))
def test_property_triangle_inequality_rho1(data):
    x, (a, b, c) = data
    ac = emd(a[None], c[None], positions=x)[0]
    ab = emd(a[None], b[None], positions=x)[0]
    bc = emd(b[None], c[None], positions=x)[0]
    assert ac <= ab + bc + 1e-12 * max(1.0, x[-1])


@SETTINGS
@given(chain_rows(), st.sampled_from(RHOS), st.floats(1e-3, 1e3))
def test_property_l1_invariant_to_scaling_pred(data, rho, s):
    x, (a, b) = data
    v, g = emd(a[None], b[None], positions=x, rho=rho, gradient=True)
    vs, gs = emd(s * a[None], b[None], positions=x, rho=rho, gradient=True)
    tol = 1e-9 * max(1.0, x[-1])
    assert vs[0] == pytest.approx(v[0], rel=1e-9, abs=tol)
    if rho > 1.0:  # for rho = 1 a φ that is exactly zero may flip sign after rescaling
        np.testing.assert_allclose(gs, g, rtol=1e-7, atol=1e-7 * max(1.0, x[-1]))
        _, gi = emd(a[None], b[None], positions=x, rho=rho, gradient=True, grad_wrt="input")
        _, gis = emd(s * a[None], b[None], positions=x, rho=rho, gradient=True, grad_wrt="input")
        np.testing.assert_allclose(gis * s, gi, rtol=1e-7, atol=1e-7 * max(1.0, x[-1]) / a.sum())


# ----------------------------------------------------------------------------- validation


def _raises(*args, source=None, row=None, column=None, **kwargs):
    with pytest.raises(EMDInputError) as info:
        emd(*args, **kwargs)
    err = info.value
    assert err.source == source, str(err)
    assert err.row == row, str(err)
    assert err.column == column, str(err)
    assert str(err)  # one printable line
    return err


P = np.full((4, 5), 0.2)
Q = np.tile([0.1, 0.2, 0.3, 0.2, 0.2], (4, 1))


def _with(a, cells, value):
    a = a.copy()
    for r, c in cells:
        a[r, c] = value
    return a


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pred_and_target(bad):
    _raises(_with(P, [(2, 1), (1, 3), (3, 0)], bad), Q, source="pred", row=1, column=3)
    _raises(P, _with(Q, [(3, 0), (2, 4)], bad), source="target", row=2, column=4)
    # Logits may be negative but must be finite.
    _raises(
        _with(P, [(0, 4)], bad), Q, normalize="softmax", source="pred", row=0, column=4
    )


def test_negative_mass():
    _raises(_with(P, [(1, 2), (0, 4), (3, 0)], -0.1), Q, source="pred", row=0, column=4)
    _raises(P, _with(Q, [(2, 1), (2, 0)], -1e-300), source="target", row=2, column=0)
    # Softmax logits are allowed to be negative.
    assert emd(-P, Q, normalize="softmax").shape == (4,)


def test_zero_sum_rows():
    _raises(_with(P, [(2, c) for c in range(5)] + [(3, c) for c in range(5)], 0.0), Q,
            source="pred", row=2)
    _raises(P, _with(Q, [(1, c) for c in range(5)], 0.0), source="target", row=1)


def test_width_and_row_count_mismatch():
    _raises(P, Q[:, :4], source="target")
    _raises(P, Q[:3], source="target")
    _raises(P, np.array([0, 1, 2]), source="target")  # 3 class indices for 4 rows
    _raises(P[0], Q, source="pred")  # not 2-D
    _raises(P, Q[:, :, None], source="target")  # not 2-D


def test_class_indices_out_of_range_or_not_integer():
    _raises(P, np.array([0, 4, 5, -1]), source="target", row=2)
    _raises(P, np.array([0, -1, 5, 1]), source="target", row=1)
    _raises(P, np.array([1.0, 2.0, 2.5, 0.5]), source="target", row=2)
    _raises(P, np.array([1.0, np.nan, 0.0, 0.0]), source="target", row=1)
    _raises(P, np.array([1.0, 2.0, 3.0, np.inf]), source="target", row=3)


@pytest.mark.parametrize("rho", [0.999, 0.5, 0.0, -1.0, np.nan, np.inf])
def test_bad_rho(rho):
    _raises(P, Q, rho=rho)
    _raises(P, np.array([0, 1, 2, 3]), rho=rho, gradient=True)


@pytest.mark.parametrize("dtype", ["float16", "int64", "complex128", np.float16, np.int32, "double precision"])
def test_bad_dtype_argument(dtype):
    _raises(P, Q, dtype=dtype)


def test_non_numeric_inputs():
    _raises(P.astype(str), Q, source="pred")
    _raises(P, Q.astype(str), source="target")
    _raises(P.astype(complex), Q, source="pred")
    _raises(P.astype(object), Q, source="pred")


@pytest.mark.parametrize("normalize", ["L1", "l2", "", None, "max"])
def test_bad_normalize(normalize):
    _raises(P, Q, normalize=normalize)


def test_bad_grad_wrt():
    _raises(P, Q, gradient=True, grad_wrt="pred")


@pytest.mark.parametrize(
    "pos", [[0, 1, 2, 2, 3], [0, 1, 3, 2, 4], [4, 3, 2, 1, 0], [0, 1, np.nan, 3, 4], [0, 1, 2, 3]]
)
def test_bad_positions(pos):
    _raises(P, Q, positions=pos, source="positions")


def test_wrong_number_of_positions_and_chain_size():
    _raises(P, Q, positions=np.arange(6.0), source="positions")
    _raises(P, Q, positions=Chain.uniform(4), source="positions")
    _raises(P, Q, positions=np.zeros((1, 5)), source="positions")
    with pytest.raises(EMDInputError):
        chain_hessian([0.0, 2.0, 1.0])


def test_unequal_mass_under_none():
    q = Q.copy()
    p = Q.copy()
    p[2] *= 1.01
    p[3] *= 2.0
    _raises(p, q, normalize="none", source="pred", row=2)
    # Equal (non-unit) masses are fine, and agree with the l1 result scaled accordingly.
    np.testing.assert_allclose(
        emd(2 * P, 2 * Q, normalize="none"), 2 * emd(P, Q), rtol=1e-12
    )
    # Class targets carry unit mass.
    _raises(2 * P, np.array([0, 1, 2, 3]), normalize="none", source="pred", row=0)
    _raises(_with(P, [(1, 0)], 0.3), np.array([0, 1, 2, 3]), normalize="none",
            source="pred", row=1)
    # float32 accepts rounding-level mass differences.
    p32 = P.astype(np.float32)
    assert emd(p32, Q, normalize="none", dtype="float32").dtype == np.float32


# ----------------------------------------------------------------------------- edge cases


def test_zero_rows_batch():
    """A batch of 0 rows returns empty results of the right shapes and dtypes."""
    for dtype in ("float64", "float32"):
        v = emd(np.zeros((0, 5)), np.zeros((0, 5)), dtype=dtype)
        assert v.shape == (0,) and v.dtype == np.dtype(dtype)
        v, g = emd(np.zeros((0, 5)), np.zeros(0, dtype=np.int64), dtype=dtype, gradient=True)
        assert v.shape == (0,) and g.shape == (0, 5) and g.dtype == np.dtype(dtype)
        v, g = emd(np.zeros((0, 5)), np.zeros((0, 5)), dtype=dtype, gradient=True,
                   grad_wrt="input", normalize="softmax")
        assert v.shape == (0,) and g.shape == (0, 5)
    # Still validated: the row-count must match.
    _raises(np.zeros((0, 5)), Q, source="target")


def test_single_bin():
    v, g = emd(np.array([[3.0], [0.5]]), np.array([0, 0]), gradient=True, rho=2.0)
    np.testing.assert_array_equal(v, [0.0, 0.0])
    np.testing.assert_array_equal(g, [[0.0], [0.0]])


def test_inputs_are_not_modified_and_lists_are_accepted():
    p = [[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]
    q = [[3.0, 2.0, 1.0], [1.0, 0.0, 0.0]]
    pa, qa = np.array(p), np.array(q)
    v = emd(p, q, positions=[0.0, 1.0, 3.0], gradient=True, grad_wrt="input")
    np.testing.assert_array_equal(pa, p)
    np.testing.assert_array_equal(qa, q)
    want = [naive.emd_rho(pa[b] / pa[b].sum(), qa[b] / qa[b].sum(), [0, 1, 3]) for b in range(2)]
    np.testing.assert_allclose(v[0], want, rtol=1e-13)


class _GradHostTensor:
    """A CPU tensor that requires grad, as numpy sees one (PyTorch's behaviour): it
    refuses to convert until detached."""

    requires_grad = True

    def __init__(self, a):
        self._a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")

    def detach(self):
        return self._a


def test_inputs_that_require_grad_are_detached():
    """A training loop's prediction tensor (requires grad) is taken as its detached value."""
    rng = np.random.default_rng(5)
    p, q = dists(rng, 4, 6), dists(rng, 4, 6)
    with pytest.raises(RuntimeError):
        np.asarray(_GradHostTensor(p))
    want = emd(p, q, rho=2.0, gradient=True)
    got = emd(_GradHostTensor(p), _GradHostTensor(q), rho=2.0, gradient=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(emd(_GradHostTensor(p), np.array([0, 5, 2, 1])),
                                  emd(p, np.array([0, 5, 2, 1])))


def test_public_exports():
    for name in ("emd", "emd2", "chain_hessian", "EMDInputError", "Chain"):
        assert hasattr(emdcli, name)
    assert issubclass(EMDInputError, ValueError)


# ------------------------------------------------------------------ edge cases of validation


def test_scalar_target_is_an_input_error():
    _raises(P, np.float64(1.0), source="target")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype, big", [("float64", 1e308), ("float32", 3e38)])
def test_l1_row_sum_overflow_is_an_input_error(dtype, big):
    pred = np.array([[big, big, 0.0]])
    with pytest.raises(EMDInputError, match="overflows") as e:
        emd(pred, np.array([[1.0, 0.0, 0.0]]), dtype=dtype)
    assert e.value.row == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiny_and_huge_row_masses_normalise_exactly(dtype):
    """l1 normalisation is a row scale (1/Σx, float64) inside the kernels, and a division
    by Σx where rows are materialised (Sinkhorn): rows of subnormal float32 masses (whose
    float32 scale would overflow) and of huge masses give the answers of the unit rows; a
    row whose float64 mass is subnormal is refused (its scale would overflow)."""
    rng = np.random.default_rng(11)
    unit = rng.random((4, 6)) + 0.1
    unit /= unit.sum(axis=1, keepdims=True)
    q = np.array([0, 5, 2, 3])
    want = emd(unit, q, dtype=dtype)
    want_sd = sinkhorn(unit, q, lam=2.0, dtype=dtype).values
    factors = (1e-42, 1e30) if dtype == "float32" else (1e-300, 1e300)
    for factor in factors:
        rtol = 2e-2 if factor == 1e-42 else 1e-6  # subnormal float32 masses lose digits
        np.testing.assert_allclose(emd(unit * factor, q, dtype=dtype), want, rtol=rtol)
        np.testing.assert_allclose(sinkhorn(unit * factor, q, lam=2.0, dtype=dtype).values,
                                   want_sd, rtol=max(rtol, 1e-5))
    if dtype == "float64":
        with pytest.raises(EMDInputError, match="below the smallest normal float64") as e:
            emd(np.vstack([unit, unit[:1] * 1e-310]), np.append(q, 0))
        assert e.value.row == 4


def test_float32_cast_overflow_is_named():
    with pytest.raises(EMDInputError, match="overflows float32") as e:
        emd(np.array([[1e39, 1.0]]), np.array([0]), dtype="float32")
    assert (e.value.row, e.value.column) == (0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{"rho": "a"}, {"rho": None}, {"dtype": [1]}, {"positions": ["a", "b", "c"]}],
)
def test_bad_arguments_are_input_errors(kwargs):
    with pytest.raises(EMDInputError):
        emd(np.array([[0.2, 0.3, 0.5]]), np.array([1]), **kwargs)


def test_boolean_class_targets_are_refused():
    with pytest.raises(EMDInputError, match="booleans"):
        emd(np.array([[0.2, 0.8]]), np.array([True]))


@pytest.mark.parametrize("n", [0, -3])
def test_hessian_of_no_bins_is_refused(n):
    with pytest.raises(EMDInputError):
        chain_hessian(n)

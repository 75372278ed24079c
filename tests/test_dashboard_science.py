"""What the dashboard shows but socmap computes: the symbolic-fit parsimony rule and the
nearest-cell alignment of one run's layer onto another run's grid."""

from __future__ import annotations

import numpy as np
import pytest

from socmap.interpret import _LIBRARY, PARSIMONY_R2_TOLERANCE, suggest_symbolic
from socmap.store import align_layer


def test_a_straight_line_is_linear_not_a_sigmoid_of_equal_fit():
    x = np.linspace(-5.0, 25.0, 81)  # °C
    y = 0.004 * x - 0.02
    exhaustive = suggest_symbolic(x, y, r2_tolerance=0.0)
    assert exhaustive.kind == "linear"  # ties already favour the simpler form
    fit = suggest_symbolic(x, y)
    assert fit.kind == "linear" and fit.r2 > 0.999999
    # the physical formula gives the slope per °C and the intercept
    alpha, beta, c, d = fit.physical()
    assert c * alpha == pytest.approx(0.004, rel=1e-6) and c * beta + d == pytest.approx(-0.02, abs=1e-9)
    assert fit.formula_physical("mat_c") == "0.004·mat_c -0.02"


def test_a_near_linear_curve_within_the_tolerance_is_called_linear():
    x = np.linspace(0.0, 1.0, 81)
    y = 0.3 / (1 + np.exp(-(0.6 * x - 0.3)))  # a sigmoid in its almost straight middle part
    best = suggest_symbolic(x, y, r2_tolerance=0.0)
    fit = suggest_symbolic(x, y)
    assert fit.kind == "linear"
    assert fit.r2 >= best.r2 - PARSIMONY_R2_TOLERANCE


def test_a_clearly_curved_curve_keeps_its_form():
    x = np.linspace(0.0, 40.0, 101)
    y = 0.1 * np.exp(3 * x / 40 - 1)  # linear R² ≈ 0.9
    fit = suggest_symbolic(x, y)
    assert fit.kind != "linear" and fit.r2 > 0.99  # quadratic is within the tolerance of exp
    # the physical formula is the same function as the fit in scaled x'
    a, b, c, d = fit.coefficients
    alpha, beta, c2, d2 = fit.physical()
    f = _LIBRARY[fit.kind]
    np.testing.assert_allclose(c2 * f(alpha * x + beta) + d2, c * f(a * (x / 40.0) + b) + d, rtol=1e-12, atol=1e-12)
    resid = y - (c * f(a * (x / 40.0) + b) + d)
    assert 1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum() == pytest.approx(fit.r2)
    with pytest.raises(ValueError, match="r2_tolerance"):
        suggest_symbolic(x, y, r2_tolerance=-0.1)


@pytest.mark.parametrize("seed", range(4))
def test_parsimony_never_gives_up_more_than_the_tolerance(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, 61)
    kind = list(_LIBRARY)[(seed * 3) % len(_LIBRARY)]
    y = 0.2 * _LIBRARY[kind](rng.uniform(-2, 2) * x + rng.uniform(-1, 1)) + rng.normal(0, 0.01, x.size)
    best = suggest_symbolic(x, y, r2_tolerance=0.0)
    fit = suggest_symbolic(x, y)
    assert fit.r2 >= best.r2 - PARSIMONY_R2_TOLERANCE - 1e-12
    assert list(_LIBRARY).index(fit.kind) <= list(_LIBRARY).index(best.kind)


def test_align_layer_same_grid_is_identity_and_coarse_to_fine_is_nearest():
    x = np.arange(-100.0, -90.0, 1.0) + 0.5
    y = np.arange(45.0, 35.0, -1.0) - 0.5  # descending, as in the store
    v = np.arange(len(y) * len(x), dtype=np.float32).reshape(len(y), len(x))
    np.testing.assert_array_equal(align_layer(v, x, y, x, y), v)
    fx = np.arange(-100.0, -90.0, 0.25) + 0.125
    fy = np.arange(45.0, 35.0, -0.25) - 0.125
    fine = align_layer(v, x, y, fx, fy)
    assert fine.shape == (len(fy), len(fx))
    # each fine cell takes the value of the coarse cell that contains it
    np.testing.assert_array_equal(fine[::4, ::4], v)
    np.testing.assert_array_equal(fine[3::4, 3::4], v)


def test_align_layer_off_the_source_grid_is_nan_and_shape_is_checked():
    x = np.array([0.5, 1.5, 2.5])
    y = np.array([1.5, 0.5])
    v = np.ones((2, 3))
    out = align_layer(v, x, y, np.array([-2.0, 0.2, 2.9, 3.2]), np.array([1.9, 0.1, -1.0]))
    np.testing.assert_array_equal(np.isnan(out), [[True, False, False, True]] * 2 + [[True] * 4])
    with pytest.raises(ValueError, match="source grid"):
        align_layer(v.T, x, y, x, y)

"""Penalties: values and gradients against their closed forms and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from dask_sgd.penalties import PENALTIES, Penalty, get_penalty

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

ALPHA = 0.03
L1_RATIO = 0.4


def coefficients(shape=(3, 5), seed=0):
    """Coefficients of both signs, none closer to 0 than 0.1."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 2.0, size=shape)


def closed_form(name, coef):
    """(value, gradient) written out by hand."""
    l1, l2 = np.abs(coef).sum(), 0.5 * (coef**2).sum()
    if name == "l2":
        return ALPHA * l2, ALPHA * coef
    if name == "l1":
        return ALPHA * l1, ALPHA * np.sign(coef)
    assert name == "elasticnet"
    value = ALPHA * (L1_RATIO * l1 + (1 - L1_RATIO) * l2)
    return value, ALPHA * (L1_RATIO * np.sign(coef) + (1 - L1_RATIO) * coef)


@pytest.mark.parametrize("name", ["l2", "l1", "elasticnet"])
@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_value_and_grad_equal_closed_form(name, shape):
    penalty = get_penalty(name, alpha=ALPHA, l1_ratio=L1_RATIO)
    coef = coefficients(shape)
    value, grad = closed_form(name, coef)

    assert np.ndim(penalty.value(coef)) == 0  # a scalar
    assert float(penalty.value(coef)) == pytest.approx(value, rel=1e-12)
    assert penalty.grad(coef).shape == coef.shape
    np.testing.assert_allclose(penalty.grad(coef), grad, rtol=1e-12)


def test_hand_computed_values():
    coef = np.array([3.0, -4.0])  # |w|_1 = 7, 0.5 |w|_2^2 = 12.5
    assert get_penalty("l2", alpha=0.1).value(coef) == pytest.approx(1.25)
    assert get_penalty("l1", alpha=0.1).value(coef) == pytest.approx(0.7)
    assert get_penalty("elasticnet", alpha=0.1, l1_ratio=0.5).value(coef) == pytest.approx(0.975)
    np.testing.assert_allclose(get_penalty("l1", alpha=0.1).grad(coef), [0.1, -0.1])
    np.testing.assert_allclose(get_penalty("l2", alpha=0.1).grad(coef), [0.3, -0.4])


@pytest.mark.parametrize("name", ["l2", "l1", "elasticnet"])
def test_grad_equals_finite_differences_away_from_zero(name):
    penalty = get_penalty(name, alpha=ALPHA, l1_ratio=L1_RATIO)
    coef = coefficients((12,), seed=1)
    h = 1e-6
    numeric = np.empty_like(coef)
    for i in range(coef.size):
        step = np.zeros_like(coef)
        step[i] = h
        numeric[i] = (penalty.value(coef + step) - penalty.value(coef - step)) / (2 * h)

    np.testing.assert_allclose(penalty.grad(coef), numeric, rtol=1e-6, atol=1e-9)


def test_l1_subgradient_is_zero_at_zero():
    penalty = get_penalty("l1", alpha=ALPHA)
    np.testing.assert_array_equal(penalty.grad(np.array([0.0, 1.0, -2.0])), [0.0, ALPHA, -ALPHA])


def test_no_penalty_is_zero():
    penalty = get_penalty(None, alpha=10.0, l1_ratio=0.5)
    coef = coefficients()
    assert penalty.value(coef) == 0.0
    np.testing.assert_array_equal(penalty.grad(coef), np.zeros_like(coef))
    assert penalty == Penalty(0.0, 0.0)


def test_zero_alpha_is_zero():
    coef = coefficients()
    for name in ("l2", "l1", "elasticnet"):
        penalty = get_penalty(name, alpha=0.0)
        assert penalty.value(coef) == 0.0
        np.testing.assert_array_equal(penalty.grad(coef), 0.0)


def test_names_map_to_l1_ratios():
    assert get_penalty("l2", alpha=0.5, l1_ratio=0.7) == Penalty(0.5, 0.0)
    assert get_penalty("l1", alpha=0.5, l1_ratio=0.7) == Penalty(0.5, 1.0)
    assert get_penalty("elasticnet", alpha=0.5, l1_ratio=0.7) == Penalty(0.5, 0.7)
    assert get_penalty("elasticnet", alpha=0.5).l1_ratio == 0.15  # scikit-learn's default
    assert set(PENALTIES) == {"l2", "l1", "elasticnet", None}


@pytest.mark.parametrize("name", ["l0", "L2", "ridge", ""])
def test_unknown_name_raises(name):
    with pytest.raises(ValueError, match="not supported"):
        get_penalty(name, alpha=0.1)


@pytest.mark.parametrize("name", ["l2", "l1", "elasticnet"])
def test_float32_grad_stays_float32(name):
    coef = coefficients().astype(np.float32)
    grad = get_penalty(name, alpha=ALPHA, l1_ratio=L1_RATIO).grad(coef)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, closed_form(name, coef.astype(np.float64))[1], rtol=1e-6)

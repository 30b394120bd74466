"""Standardizing on the fly: the moments, the standardized model, the intercepts' start."""

from __future__ import annotations

import numpy as np
import pytest

from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective, StandardizedLinearModel
from dask_sgd.penalties import get_penalty
from dask_sgd.standardize import (
    DataMoments,
    Moments,
    scale_of,
    standardized_model,
    start_intercepts,
    total_moments,
)

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = [pytest.mark.timeout(60), pytest.mark.in_process]


def unscaled(rng, n_rows=200, n_features=4):
    scales = np.array([1e-2, 1.0, 1e2, 3.0])[:n_features]
    offsets = np.array([5.0, -300.0, 2e3, 0.0])[:n_features]
    return rng.standard_normal((n_rows, n_features)) * scales + offsets


def test_moments_of_pieces_combine_to_those_of_the_whole():
    rng = np.random.default_rng(0)
    X = unscaled(rng, 1000)
    whole = total_moments([Moments.of(X[:10]), Moments.of(X[10:10]), Moments.of(X[10:])])
    assert whole.n == 1000
    np.testing.assert_allclose(whole.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(whole.std, X.std(axis=0), rtol=1e-9)


def test_a_constant_or_overflowing_column_keeps_its_scale():
    assert scale_of(np.array([0.0, 2.0, np.inf, np.nan])).tolist() == [1.0, 2.0, 1.0, 1.0]


@pytest.mark.parametrize("loss", ["log_loss", "squared_error", "huber"])
@pytest.mark.parametrize("penalty", ["l2", "l1", "elasticnet"])
def test_the_standardized_objective_is_the_original_one_divided_by_the_target_scale_squared(
    loss, penalty
):
    """The change of variables keeps scikit-learn's objective, penalty included: in the
    standardized coordinates it is the original one over ``target_scale²`` (the Huber
    loss's epsilon scaled with the target), and its gradient is exact."""
    rng = np.random.default_rng(1)
    X = unscaled(rng)
    n_outputs = 2 if loss == "log_loss" else 1
    if loss == "log_loss":
        Y = np.sign(rng.standard_normal((len(X), n_outputs)))
    else:
        Y = (X @ (rng.standard_normal(4) / [1e-2, 1, 1e2, 3]) + 300).reshape(-1, 1)
    scaled = loss != "log_loss"
    target = Moments.of(Y) if scaled else None
    plain = LinearModel(4, n_outputs)
    model = standardized_model(plain, DataMoments(Moments.of(X), target), target_scaled=scaled)
    s = model.target_scale
    assert (s != 1) == scaled
    penalty_ = get_penalty(penalty, alpha=0.05)
    original = Objective(plain, get_loss(loss, epsilon=1.0), penalty_)
    standardized = Objective(model, get_loss(loss, epsilon=1.0 / s), penalty_)
    theta = rng.standard_normal(model.layout.size)
    Y_standardized = (Y - model.target_center) / s
    value = standardized.value(theta, X, Y_standardized)
    assert value == pytest.approx(original.value(model.to_original(theta), X, Y) / s**2)

    _, grad = standardized.loss_and_grad(theta, X, Y_standardized)
    step = 1e-6
    numeric = [
        (
            standardized.value(theta + step * e, X, Y_standardized)
            - standardized.value(theta - step * e, X, Y_standardized)
        )
        / (2 * step)
        for e in np.eye(theta.size)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_the_standardized_model_predicts_as_its_original_coefficients_do():
    rng = np.random.default_rng(2)
    X = unscaled(rng)
    model = StandardizedLinearModel(
        4, 3, mean=X.mean(0), std=X.std(0), target_center=7.0, target_scale=2.0
    )
    theta = rng.standard_normal(model.layout.size)
    original = model.to_original(theta)
    expected = 7.0 + 2.0 * model.raw(theta, X)
    np.testing.assert_allclose(LinearModel(4, 3).raw(original, X), expected, rtol=1e-9)
    np.testing.assert_allclose(model.from_original(original), theta, rtol=1e-9, atol=1e-12)


def test_float32_stays_float32():
    rng = np.random.default_rng(3)
    X = unscaled(rng).astype(np.float32)
    model = StandardizedLinearModel(4, 1, mean=X.mean(0), std=X.std(0))
    theta = np.zeros(model.layout.size, dtype=np.float32)
    raw, cache = model.forward(theta, X)
    assert raw.dtype == np.float32
    assert model.backward(theta, cache, np.ones_like(raw)).dtype == np.float32


def test_without_an_intercept_nothing_is_centred():
    rng = np.random.default_rng(4)
    X = unscaled(rng)
    model = standardized_model(
        LinearModel(4, 1, fit_intercept=False),
        DataMoments(Moments.of(X), Moments.of(X[:, :1])),
        target_scaled=True,
    )
    assert not model.mean.any() and model.target_center == 0
    assert model.target_scale != 1


def test_the_intercepts_start_at_the_best_model_without_features():
    log_loss, hinge = get_loss("log_loss"), get_loss("hinge")
    binary = start_intercepts(log_loss, np.array([97.0, 3.0]), multinomial=False)
    np.testing.assert_allclose(binary, [np.log(3 / 97)], rtol=1e-4)
    one_vs_rest = start_intercepts(log_loss, np.array([1.0, 2.0, 7.0]), multinomial=False)
    np.testing.assert_allclose(one_vs_rest, np.log([1 / 9, 2 / 8, 7 / 3]), rtol=1e-4)
    softmax = start_intercepts(log_loss, np.array([1.0, 3.0]), multinomial=True)
    np.testing.assert_allclose(softmax, np.log([0.25, 0.75]))
    # the hinge loss's best constant is the majority's side of the margin
    assert start_intercepts(hinge, np.array([9.0, 1.0]), multinomial=False)[0] == pytest.approx(
        -1.0, abs=1e-3
    )

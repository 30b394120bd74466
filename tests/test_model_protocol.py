"""A model family defined in this file alone trains, saves and loads through the protocol.

``SquaresModel`` is a linear model on the features ``[X, X**2]``: it fits ``y = x**2``,
which no linear model of ``x`` can. ``SquaresRegressor`` is SGDRegressor with that model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import r2_score

import dask_sgd
from dask_sgd import SGDRegressor
from dask_sgd.checkpoint import CheckpointError, load_checkpoint
from dask_sgd.losses import get_loss
from dask_sgd.models import MODEL_FAMILIES, Layout, Model, Objective, model_from_config
from dask_sgd.penalties import get_penalty


@dataclass(frozen=True)
class SquaresModel(Model):
    """``raw = [X, X**2] @ coef.T + intercept``, from a small random start."""

    family = "test-squares"

    n_features: int
    n_outputs: int = 1
    fit_intercept: bool = True

    @cached_property
    def layout(self) -> Layout:
        return Layout.from_shapes(
            {"coef": (self.n_outputs, 2 * self.n_features), "intercept": (self.n_outputs,)}
        )

    @property
    def penalized(self):
        return (self.layout.slice("coef"),)

    def init_params(self, rng=None, *, xp=None, dtype="float64"):
        rng = np.random.default_rng(rng)
        return rng.normal(scale=0.1, size=self.layout.size).astype(dtype)

    def forward(self, theta, X):
        features = np.hstack([X, X * X])
        coef = self.layout.view(theta, "coef")
        return features @ coef.T + self.layout.view(theta, "intercept"), features

    def backward(self, theta, cache, draw):
        coef_grad = draw.T @ cache
        intercept_grad = draw.sum(axis=0) if self.fit_intercept else np.zeros(self.n_outputs)
        flat = np.concatenate([coef_grad.reshape(-1), intercept_grad])
        return flat.astype(theta.dtype, copy=False)

    def config(self):
        return {
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "fit_intercept": self.fit_intercept,
        }


class SquaresRegressor(SGDRegressor):
    """SGDRegressor's parameters, on SquaresModel."""

    def _make_model(self, n_features):
        return SquaresModel(n_features, self._n_outputs(), self.fit_intercept)


PARAMS = dict(max_iter=30, tol=None, random_state=0)


@pytest.fixture(scope="module")
def parabola():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(600, 1))
    y = X[:, 0] ** 2 + rng.normal(scale=0.05, size=600)
    return X, y


def test_the_family_is_registered_and_rebuilt_from_its_config():
    model = SquaresModel(3, 2)
    assert MODEL_FAMILIES["test-squares"] is SquaresModel
    assert model.describe() == {
        "family": "test-squares",
        "config": {"n_features": 3, "n_outputs": 2, "fit_intercept": True},
    }
    assert model_from_config(**json.loads(json.dumps(model.describe()))) == model
    with pytest.raises(ValueError, match="already registered"):

        class Impostor(SquaresModel):
            family = "test-squares"

    with pytest.raises(ValueError, match="Unknown model family 'nowhere'"):
        model_from_config("nowhere", {})


def test_the_objective_trains_the_family_through_the_protocol():
    rng = np.random.default_rng(1)
    model = SquaresModel(3, 2)
    objective = Objective(model, get_loss("squared_error"), get_penalty("l2", alpha=0.5))
    theta = model.init_params(rng)
    X, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))

    _, grad = objective.loss_and_grad(theta, X, y)

    numeric = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        plus, minus = objective.value(theta + step, X, y), objective.value(theta - step, X, y)
        numeric[i] = (plus - minus) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    # the penalty reaches the coefficients and never the intercept
    flat = Objective(model, get_loss("squared_error"), get_penalty(None, alpha=0.0))
    penalty_grad = grad - flat.loss_and_grad(theta, X, y)[1]
    where = model.layout.slice("coef")
    np.testing.assert_allclose(penalty_grad[where], 0.5 * theta[where], rtol=1e-10)
    assert not penalty_grad[model.layout.slice("intercept")].any()


def test_an_estimator_on_the_family_fits_what_the_linear_model_cannot(parabola):
    X, y = parabola
    squares = SquaresRegressor(**PARAMS).fit(X, y)
    linear = SGDRegressor(**PARAMS).fit(X, y)

    assert squares.coef_.shape == (2,)  # x and x**2
    assert r2_score(y, squares.predict(X)) > 0.98
    assert r2_score(y, linear.predict(X)) < 0.1
    expected = X[:, 0] * squares.coef_[0] + X[:, 0] ** 2 * squares.coef_[1] + squares.intercept_
    np.testing.assert_allclose(squares.predict(X), expected, rtol=1e-12)
    # the random start comes from random_state: the same seed, the same fit
    again = SquaresRegressor(**PARAMS).fit(X, y)
    np.testing.assert_array_equal(again.coef_, squares.coef_)
    other = SquaresRegressor(**{**PARAMS, "random_state": 1}).fit(X, y)
    assert not np.array_equal(other.coef_, squares.coef_)


def test_a_saved_estimator_on_the_family_loads_and_goes_on(parabola, tmp_path):
    X, y = parabola
    squares = SquaresRegressor(max_iter=5, tol=None, random_state=0).fit(X, y)
    dask_sgd.save(squares, tmp_path)

    meta = load_checkpoint(tmp_path)[1]
    assert meta["estimator"] == "SquaresRegressor"
    assert meta["model"] == {
        "family": "test-squares",
        "config": {"n_features": 1, "n_outputs": 1, "fit_intercept": True},
    }
    loaded = dask_sgd.load(tmp_path)
    assert type(loaded) is SquaresRegressor
    np.testing.assert_array_equal(loaded.predict(X), squares.predict(X))
    np.testing.assert_array_equal(
        loaded.partial_fit(X, y).predict(X), squares.partial_fit(X, y).predict(X)
    )


def test_a_checkpoint_of_the_family_is_not_resumed_by_another(parabola, tmp_path):
    X, y = parabola
    path = tmp_path / "run"
    SquaresRegressor(max_iter=2, tol=None, random_state=0, checkpoint_path=path).fit(X, y)
    manifest = path / "manifest.json"
    text = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**text, "complete": False}))  # as if it stopped part way

    plain = SGDRegressor(max_iter=2, tol=None, random_state=0, checkpoint_path=path)
    with pytest.raises(ValueError, match="holds a SquaresRegressor; its model is"):
        plain.fit(X, y)

    meta = json.loads(manifest.read_text())
    meta["model"]["family"] = "nowhere"
    manifest.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="Unknown model family 'nowhere'"):
        dask_sgd.load(path)


@pytest.mark.timeout(120)
def test_the_family_trains_on_dask_and_loads_to_predict_the_same(parabola, client, tmp_path):
    X, y = parabola
    dX, dy = da.from_array(X, chunks=150), da.from_array(y, chunks=150)

    squares = SquaresRegressor(**PARAMS).fit(dX, dy)

    assert r2_score(y, squares.predict(X)) > 0.95
    assert r2_score(y, SGDRegressor(**PARAMS).fit(dX, dy).predict(X)) < 0.1
    np.testing.assert_allclose(squares.predict(dX).compute(), squares.predict(X), rtol=1e-12)
    dask_sgd.save(squares, tmp_path)
    loaded = dask_sgd.load(tmp_path)
    assert load_checkpoint(tmp_path)[1]["model"]["family"] == "test-squares"
    np.testing.assert_array_equal(loaded.predict(X), squares.predict(X))

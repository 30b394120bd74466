"""The flat-parameter layout, the linear model and the objective's gradient."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from dask_sgd.losses import get_loss
from dask_sgd.models import Layout, LinearModel, Objective
from dask_sgd.penalties import get_penalty

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

# --- Layout ----------------------------------------------------------------------------------


def test_layout_sizes_slices_and_shapes():
    layout = Layout.from_shapes({"coef": (2, 3), "intercept": (2,), "scale": ()})
    assert layout.size == 9
    assert layout.slice("coef") == slice(0, 6)
    assert layout.slice("intercept") == slice(6, 8)
    assert layout.slice("scale") == slice(8, 9)
    assert layout.shape("coef") == (2, 3)
    assert layout.shape("intercept") == (2,)
    assert layout.shape("scale") == ()
    assert Layout.from_shapes({}).size == 0


def test_layout_views_round_trip():
    layout = Layout.from_shapes({"coef": (2, 3), "intercept": (2,)})
    coef = np.arange(6.0).reshape(2, 3) + 10
    intercept = np.array([-1.0, -2.0])
    theta = np.concatenate([coef.ravel(), intercept])

    np.testing.assert_array_equal(layout.view(theta, "coef"), coef)
    np.testing.assert_array_equal(layout.view(theta, "intercept"), intercept)
    rebuilt = np.concatenate([layout.view(theta, name).ravel() for name, _, _ in layout.entries])
    np.testing.assert_array_equal(rebuilt, theta)


def test_layout_view_is_a_view():
    layout = Layout.from_shapes({"coef": (2, 3), "intercept": (2,)})
    theta = np.zeros(layout.size)
    layout.view(theta, "coef")[1, 2] = 5.0
    layout.view(theta, "intercept")[0] = 7.0
    np.testing.assert_array_equal(theta, [0, 0, 0, 0, 0, 5, 7, 0])
    assert np.shares_memory(layout.view(theta, "coef"), theta)


def test_layout_unknown_name_raises_key_error():
    layout = Layout.from_shapes({"coef": (2, 3)})
    theta = np.zeros(layout.size)
    with pytest.raises(KeyError):
        layout.view(theta, "intercept")
    with pytest.raises(KeyError):
        layout.slice("bias")
    with pytest.raises(KeyError):
        layout.shape("Coef")


# --- LinearModel -----------------------------------------------------------------------------


def random_theta(model, rng, low=0.2, high=1.0):
    """Parameters of both signs, each at least ``low`` away from 0 (for the l1 subgradient)."""
    size = model.layout.size
    return rng.choice([-1.0, 1.0], size=size) * rng.uniform(low, high, size=size)


def test_linear_model_layout_and_init():
    model = LinearModel(n_features=4, n_outputs=3)
    assert model.layout.size == 15
    assert model.layout.shape("coef") == (3, 4)
    assert model.layout.shape("intercept") == (3,)
    theta = model.init_params()
    assert theta.shape == (15,) and theta.dtype == np.float64
    assert not theta.any()
    assert model.init_params(xp=np, dtype="float32").dtype == np.float32


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("sparse", [None, sp.csr_matrix, sp.csr_array])
def test_raw_is_x_coef_t_plus_intercept(n_outputs, sparse):
    rng = np.random.default_rng(0)
    model = LinearModel(n_features=5, n_outputs=n_outputs)
    theta = rng.normal(size=model.layout.size)
    X = rng.normal(size=(8, 5)) * (rng.random((8, 5)) < 0.5)
    coef = theta[: 5 * n_outputs].reshape(n_outputs, 5)
    intercept = theta[5 * n_outputs :]
    expected = X @ coef.T + intercept

    raw = model.raw(theta, X if sparse is None else sparse(X))

    assert isinstance(raw, np.ndarray)
    assert raw.shape == (8, n_outputs)
    np.testing.assert_allclose(raw, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sparse", [sp.csr_matrix, sp.csr_array])
def test_grad_on_sparse_equals_dense(sparse):
    rng = np.random.default_rng(1)
    model = LinearModel(n_features=5, n_outputs=3)
    theta = rng.normal(size=model.layout.size)
    X = rng.normal(size=(8, 5)) * (rng.random((8, 5)) < 0.5)
    draw = rng.normal(size=(8, 3))

    dense = model.grad(theta, X, draw)
    np.testing.assert_allclose(model.grad(theta, sparse(X), draw), dense, rtol=1e-12)
    np.testing.assert_allclose(dense[:15].reshape(3, 5), draw.T @ X, rtol=1e-12)
    np.testing.assert_allclose(dense[15:], draw.sum(axis=0), rtol=1e-12)


# --- Objective: gradient against finite differences -----------------------------------------

N_SAMPLES, N_FEATURES = 13, 4


def problem(kind, rng):
    """(model outputs, loss, targets) for each kind of problem."""
    if kind == "binary":
        y = rng.choice([-1.0, 1.0], size=(N_SAMPLES, 1))
        return 1, y
    if kind == "ovr":
        labels = rng.integers(0, 3, size=N_SAMPLES)
        return 3, np.where(np.eye(3)[labels] == 1, 1.0, -1.0)
    if kind == "multinomial":
        labels = rng.integers(0, 3, size=N_SAMPLES)
        return 3, np.eye(3)[labels]
    assert kind == "regression"
    return 1, rng.normal(scale=2.0, size=(N_SAMPLES, 1))


CASES = [
    ("binary", "log_loss"),
    ("binary", "modified_huber"),
    ("binary", "squared_hinge"),
    ("binary", "hinge"),
    ("ovr", "log_loss"),
    ("ovr", "hinge"),
    ("ovr", "modified_huber"),
    ("multinomial", "log_loss"),
    ("regression", "squared_error"),
    ("regression", "huber"),
    ("regression", "epsilon_insensitive"),
]


def finite_difference_grad(objective, theta, X, y, sample_weight, h=1e-6):
    grad = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        plus = objective.value(theta + step, X, y, sample_weight)
        minus = objective.value(theta - step, X, y, sample_weight)
        grad[i] = (plus - minus) / (2 * h)
    return grad


def make_objective(kind, loss_name, penalty, fit_intercept, seed=0):
    rng = np.random.default_rng(seed)
    n_outputs, y = problem(kind, rng)
    model = LinearModel(N_FEATURES, n_outputs, fit_intercept=fit_intercept)
    loss = get_loss(loss_name, epsilon=0.2, multinomial=kind == "multinomial")
    objective = Objective(model, loss, get_penalty(penalty, alpha=0.05, l1_ratio=0.3))
    X = rng.normal(size=(N_SAMPLES, N_FEATURES))
    theta = random_theta(model, rng)
    if not fit_intercept:
        theta[model.layout.slice("intercept")] = 0.0
    return objective, theta, X, y, rng


@pytest.mark.parametrize(("kind", "loss_name"), CASES)
@pytest.mark.parametrize("penalty", [None, "l2", "l1", "elasticnet"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_equals_finite_differences(kind, loss_name, penalty, weighted):
    objective, theta, X, y, rng = make_objective(kind, loss_name, penalty, fit_intercept=True)
    sample_weight = rng.uniform(0.2, 3.0, size=N_SAMPLES) if weighted else None
    theta_before = theta.copy()

    loss_sum, grad = objective.loss_and_grad(theta, X, y, sample_weight)

    np.testing.assert_array_equal(theta, theta_before)  # theta is not modified
    assert grad.shape == theta.shape and grad.dtype == np.float64
    numeric = finite_difference_grad(objective, theta, X, y, sample_weight)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    # The reported sum is scikit-learn's objective_sum: the unweighted losses plus the
    # penalty once per row, at the parameters before the update.
    coef = objective.model.layout.view(theta, "coef")
    raw = X @ coef.T + theta[-y.shape[1] :]
    expected = objective.loss.loss(y, raw).sum() + N_SAMPLES * objective.penalty.value(coef)
    assert float(loss_sum) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize(("kind", "loss_name"), CASES)
@pytest.mark.parametrize("penalty", [None, "elasticnet"])
def test_gradient_without_intercept(kind, loss_name, penalty):
    objective, theta, X, y, rng = make_objective(kind, loss_name, penalty, fit_intercept=False)
    sample_weight = rng.uniform(0.2, 3.0, size=N_SAMPLES)
    where = objective.model.layout.slice("coef")

    _, grad = objective.loss_and_grad(theta, X, y, sample_weight)

    assert not grad[objective.model.layout.slice("intercept")].any()  # exactly zero
    numeric = finite_difference_grad(objective, theta, X, y, sample_weight)
    np.testing.assert_allclose(grad[where], numeric[where], rtol=1e-5, atol=1e-7)


def test_value_is_weighted_mean_loss_plus_penalty():
    objective, theta, X, y, rng = make_objective("ovr", "log_loss", "l2", fit_intercept=True)
    sample_weight = rng.uniform(0.2, 3.0, size=N_SAMPLES)
    raw = objective.model.raw(theta, X)
    per_row = np.log1p(np.exp(-y * raw)).sum(axis=1)
    coef = theta[objective.model.layout.slice("coef")]
    expected = (sample_weight * per_row).mean() + 0.05 * 0.5 * (coef**2).sum()

    assert objective.value(theta, X, y, sample_weight) == pytest.approx(expected, rel=1e-12)
    assert objective.value(theta, X, y) == pytest.approx(
        per_row.mean() + 0.05 * 0.5 * (coef**2).sum(), rel=1e-12
    )


def test_clip_norm_scales_a_long_gradient_down_and_keeps_a_short_one():
    objective, theta, X, y, _ = make_objective("ovr", "log_loss", "l2", fit_intercept=True)
    loss, grad = objective.loss_and_grad(theta, X, y)
    norm = np.linalg.norm(grad)
    clipped_loss, clipped = replace(objective, clip_norm=norm / 4).loss_and_grad(theta, X, y)
    np.testing.assert_allclose(clipped, grad / 4, rtol=1e-12)  # same direction, norm / 4
    assert clipped_loss == loss  # the loss is not clipped
    _, kept = replace(objective, clip_norm=norm * 2).loss_and_grad(theta, X, y)
    np.testing.assert_array_equal(kept, grad)


def test_penalty_does_not_touch_the_intercept():
    model = LinearModel(2, 1)
    objective = Objective(model, get_loss("squared_error"), get_penalty("l2", alpha=10.0))
    theta = np.array([0.0, 0.0, 3.0])  # only the intercept is non-zero
    X = np.zeros((4, 2))
    y = np.full((4, 1), 3.0)  # the loss is zero and flat
    _, grad = objective.loss_and_grad(theta, X, y)
    np.testing.assert_array_equal(grad, 0.0)
    assert objective.value(theta, X, y) == 0.0


def test_sparse_objective_equals_dense():
    objective, theta, X, y, rng = make_objective("ovr", "hinge", "l2", fit_intercept=True)
    X[rng.random(X.shape) < 0.5] = 0.0
    sample_weight = rng.uniform(0.2, 3.0, size=N_SAMPLES)
    dense_loss, dense_grad = objective.loss_and_grad(theta, X, y, sample_weight)
    sparse_loss, sparse_grad = objective.loss_and_grad(theta, sp.csr_matrix(X), y, sample_weight)
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-12)
    np.testing.assert_allclose(sparse_grad, dense_grad, rtol=1e-12)


def test_huge_loss_derivative_is_clipped():
    model = LinearModel(1, 1)
    objective = Objective(model, get_loss("squared_error"), get_penalty(None, alpha=0.0))
    theta = np.array([1e14, 0.0])
    X = np.ones((2, 1))
    y = np.zeros((2, 1))
    _, grad = objective.loss_and_grad(theta, X, y)
    np.testing.assert_allclose(grad, [1e12, 1e12])  # dloss clipped to 1e12, mean over 2 rows


def test_float32_gradient_stays_float32():
    objective, theta, X, y, _ = make_objective("multinomial", "log_loss", "l1", fit_intercept=True)
    theta32, X32, y32 = theta.astype(np.float32), X.astype(np.float32), y.astype(np.float32)
    _, grad32 = objective.loss_and_grad(theta32, X32, y32)
    _, grad64 = objective.loss_and_grad(theta, X, y)
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-5)

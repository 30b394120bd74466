"""The multilayer perceptron's model: layout, Glorot's start, forward and backward passes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from dask_sgd.losses import get_loss
from dask_sgd.models import Objective, model_from_config
from dask_sgd.models.mlp import ACTIVATIONS, MLPModel
from dask_sgd.penalties import get_penalty

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

#: each output's loss, and the targets it takes (scikit-learn's output activations: the
#: logistic of log-loss, the softmax of the multinomial one, the identity of squared error)
OUTPUTS = {
    "logistic": (1, get_loss("log_loss"), lambda rng, n: rng.choice([-1.0, 1.0], (n, 1))),
    "softmax": (
        3, get_loss("log_loss", multinomial=True), lambda rng, n: np.eye(3)[rng.integers(0, 3, n)]
    ),
    "identity": (2, get_loss("squared_error"), lambda rng, n: rng.normal(size=(n, 2))),
}  # fmt: skip


def numeric_gradient(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        grad[i] = (f(theta + step) - f(theta - step)) / (2 * h)
    return grad


@pytest.mark.timeout(60)
@pytest.mark.parametrize("output", sorted(OUTPUTS))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_gradient_is_the_objectives_by_finite_differences(activation, output):
    """Backpropagation through two hidden layers, with the L2 penalty on the weights alone,
    equals the objective's central differences (float64)."""
    n_outputs, loss, targets = OUTPUTS[output]
    rng = np.random.default_rng(0)
    model = MLPModel(4, (5, 3), n_outputs, activation)
    objective = Objective(model, loss, get_penalty("l2", alpha=0.1))
    X, y = rng.normal(size=(7, 4)), targets(rng, 7)
    theta = model.init_params(1) + rng.normal(0, 0.1, model.layout.size)  # no relu at a kink
    _, grad = objective.loss_and_grad(theta, X, y)
    expected = numeric_gradient(lambda t: objective.value(t, X, y), theta)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)


def by_hand(theta: np.ndarray, X: np.ndarray, draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3-2-2-1 tanh network's raw outputs and gradient, written out layer by layer."""
    W0, b0 = theta[:6].reshape(3, 2), theta[6:8]
    W1, b1 = theta[8:12].reshape(2, 2), theta[12:14]
    W2, b2 = theta[14:16].reshape(2, 1), theta[16:17]
    a1 = np.tanh(X @ W0 + b0)
    a2 = np.tanh(a1 @ W1 + b1)
    raw = a2 @ W2 + b2
    d2 = (draw @ W2.T) * (1 - a2**2)
    d1 = (d2 @ W1.T) * (1 - a1**2)
    grads = [X.T @ d1, d1.sum(0), a1.T @ d2, d2.sum(0), a2.T @ draw, draw.sum(0)]
    return raw, np.concatenate([g.ravel() for g in grads])


@pytest.mark.timeout(10)
def test_the_passes_equal_a_by_hand_computation():
    model = MLPModel(3, (2, 2), 1, "tanh")
    rng = np.random.default_rng(2)
    theta, X, draw = (
        rng.normal(size=model.layout.size),
        rng.normal(size=(5, 3)),
        rng.normal(size=(5, 1)),
    )
    raw, cache = model.forward(theta, X)
    expected_raw, expected_grad = by_hand(theta, X, draw)
    np.testing.assert_allclose(raw, expected_raw, rtol=1e-14)
    np.testing.assert_allclose(model.backward(theta, cache, draw), expected_grad, rtol=1e-14)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_the_start_is_scikit_learns_glorot_start(activation):
    """With the same seed, scikit-learn's own: a fit whose steps cannot move the weights
    (a learning rate of 1e-300) keeps its start, which equals ours array for array."""
    X, y = np.random.default_rng(0).normal(size=(20, 4)), np.arange(20) % 3
    sk = MLPClassifier((5, 3), activation=activation, solver="sgd", learning_rate_init=1e-300,
                       momentum=0, max_iter=1, shuffle=False, random_state=7)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y)
    model = MLPModel(4, (5, 3), 3, activation)
    theta = model.init_params(7)
    for mine, theirs in zip(model.coefs(theta), sk.coefs_, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(model.intercepts(theta), sk.intercepts_, strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.timeout(10)
def test_float32_stays_float32_and_csr_input_equals_dense():
    model = MLPModel(6, (4,), 2, "relu")
    theta = model.init_params(0, dtype="float32")
    X = sp.random(8, 6, density=0.4, format="csr", dtype=np.float32, random_state=0)
    draw = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    raw, cache = model.forward(theta, X)
    grad = model.backward(theta, cache, draw)
    assert raw.dtype == grad.dtype == np.float32
    dense_raw, dense_cache = model.forward(theta, X.toarray())
    np.testing.assert_allclose(raw, dense_raw, rtol=1e-6)
    np.testing.assert_allclose(grad, model.backward(theta, dense_cache, draw), rtol=1e-5)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("clip_norm", [None, 0.1])
def test_the_gradient_comes_a_layer_at_a_time_from_the_output(clip_norm):
    """The objective's gradient by pieces (what a synchronous unit pushes shard by shard):
    each layer's slice from the output down, final when it is handed out and handed out
    before the layers below it are computed; with ``clip_norm``, one piece at the end (the
    whole gradient's norm decides). Together the pieces are ``loss_and_grad``'s gradient."""
    model = MLPModel(5, (4, 3), 2, "tanh")
    objective = Objective(
        model, get_loss("squared_error"), get_penalty("l2", alpha=0.1), clip_norm=clip_norm
    )
    rng = np.random.default_rng(0)
    theta, X, y = model.init_params(0), rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    expected_loss, expected = objective.loss_and_grad(theta, X.copy(), y)
    X_used = X.copy()
    summed, grad, pieces = objective.loss_and_grad_pieces(theta, X_used, y)
    assert summed == expected_loss
    handed_out, final = [], []
    for piece in pieces:
        handed_out.append(piece)
        final.append(np.array_equal(grad[piece], expected[piece]))
        X_used *= 2.0  # the input layer's gradient, if computed after this, changes
    layers = [slice(weights.start, biases.stop) for weights, biases in model.layer_slices]
    if clip_norm is None:
        assert handed_out == layers[::-1]
        assert final == [True, True, False]  # the input layer's computed after the others'
    else:
        assert handed_out == [slice(0, model.layout.size)]
        np.testing.assert_array_equal(grad, expected)


def test_the_layout_is_layer_by_layer_and_only_weights_are_penalized():
    model = MLPModel(3, (4,), 2)
    assert [name for name, _, _ in model.layout.entries] == [
        "coef_0", "intercept_0", "coef_1", "intercept_1"
    ]  # fmt: skip
    assert model.penalized == (slice(0, 12), slice(16, 24))
    assert model.n_layers == 3 and model.layout.size == 12 + 4 + 8 + 2
    assert model_from_config(**model.describe()) == model


@pytest.mark.parametrize(
    "settings, message",
    [(dict(hidden_layer_sizes=(3, 0)), "hidden_layer_sizes must be > 0"),
     (dict(activation="softplus"), "The activation 'softplus' is not supported")],
)  # fmt: skip
def test_a_bad_network_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        MLPModel(3, **settings)

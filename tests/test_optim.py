"""Optimizers: convergence on a quadratic, purity, state shapes, dtypes and hand-computed steps."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from dask_sgd.optim import (
    OPTIMIZERS,
    AdamState,
    GradientTransformation,
    TraceState,
    apply_updates,
    chain,
    get_optimizer,
    identity,
    scale_by_adam,
    trace,
)

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

A = np.array([0.5, 1.0, 2.0, 4.0])  # curvatures of the quadratic
C = np.array([1.0, -2.0, 0.5, -0.25])  # its minimum

#: a constant learning rate that suits each optimizer on the quadratic
LEARNING_RATES = {
    "sgd": 0.3,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.5,
    "rmsprop": 1e-3,
    "adam": 0.05,
}
MAX_STEPS = 3000


def quadratic_grad(theta):
    """The gradient of f(θ) = 0.5 Σ a_i (θ_i − c_i)²."""
    return A * (theta - C)


def leaves(state):
    """The arrays of a (nested) optimizer state, in order."""
    if isinstance(state, tuple):
        return [leaf for part in state for leaf in leaves(part)]
    return [np.asarray(state)]


def test_every_optimizer_has_a_learning_rate_here():
    assert set(LEARNING_RATES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_minimises_a_convex_quadratic(name):
    optimizer = get_optimizer(name)
    theta = np.zeros_like(C)
    state = optimizer.init(theta)
    for _ in range(MAX_STEPS):
        direction, state = optimizer.update(quadratic_grad(theta), state, theta)
        theta = apply_updates(theta, direction, LEARNING_RATES[name])
        if np.abs(theta - C).max() < 1e-3:
            break
    np.testing.assert_allclose(theta, C, atol=1e-3)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_is_pure(name):
    optimizer = get_optimizer(name)
    rng = np.random.default_rng(0)
    params = rng.normal(size=6)
    state = optimizer.init(params)
    for _ in range(2):  # a state with non-zero entries
        _, state = optimizer.update(rng.normal(size=6), state, params)
    grads = rng.normal(size=6)
    saved = [leaf.copy() for leaf in leaves(state)], grads.copy(), params.copy()

    direction, _ = optimizer.update(grads, state, params)
    again, _ = optimizer.update(grads, state, params)

    for leaf, before in zip(leaves(state), saved[0], strict=True):
        np.testing.assert_array_equal(leaf, before)
    np.testing.assert_array_equal(grads, saved[1])
    np.testing.assert_array_equal(params, saved[2])
    np.testing.assert_array_equal(direction, again)  # same inputs, same answer
    updated = apply_updates(params, direction, 0.1)
    np.testing.assert_array_equal(params, saved[2])
    assert updated is not params


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_shapes_are_stable(name):
    optimizer = get_optimizer(name)
    params = np.zeros(5)
    state = optimizer.init(params)
    structure = [(leaf.shape, leaf.dtype) for leaf in leaves(state)]
    for leaf in leaves(state):
        assert leaf.shape in {(), params.shape}
    rng = np.random.default_rng(1)
    for _ in range(4):
        direction, new_state = optimizer.update(rng.normal(size=5), state, params)
        assert type(new_state) is type(state)
        assert [(leaf.shape, leaf.dtype) for leaf in leaves(new_state)] == structure
        assert direction.shape == params.shape
        params, state = apply_updates(params, direction, 0.1), new_state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_stays_float32(name):
    optimizer = get_optimizer(name)
    params = np.zeros(5, dtype=np.float32)
    state = optimizer.init(params)
    rng = np.random.default_rng(2)
    for _ in range(3):
        grads = rng.normal(size=5).astype(np.float32)
        direction, state = optimizer.update(grads, state, params)
        assert direction.dtype == np.float32
        params = apply_updates(params, direction, np.float64(0.01))  # even with a float64 rate
        assert params.dtype == np.float32
        for leaf in leaves(state):
            assert leaf.dtype == np.float32 or leaf.shape == ()  # a counter may be an integer


def test_chain_composes_in_order():
    optimizer = chain(trace(0.9), scale_by_adam())
    params = np.zeros(3)
    state = optimizer.init(params)
    assert isinstance(state, tuple) and len(state) == 2
    assert isinstance(state[0], TraceState)
    assert isinstance(state[1], AdamState)

    momentum, adam = trace(0.9), scale_by_adam()
    m_state, a_state = momentum.init(params), adam.init(params)
    for g in (np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -3.0]), np.array([2.0, 2.0, 2.0])):
        direction, state = optimizer.update(g, state, params)
        by_hand, m_state = momentum.update(g, m_state, params)
        by_hand, a_state = adam.update(by_hand, a_state, params)
        np.testing.assert_allclose(direction, by_hand, rtol=1e-14)

    # The other order is another optimizer.
    reverse = chain(scale_by_adam(), trace(0.9))
    r_state = reverse.init(params)
    for g in (np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -3.0])):
        r_direction, r_state = reverse.update(g, r_state, params)
    assert not np.allclose(r_direction, direction)


def test_chain_of_nothing_and_elementwise_flag():
    params = np.ones(2)
    empty = chain()
    assert empty.init(params) == ()
    g = np.array([1.0, 2.0])
    np.testing.assert_array_equal(empty.update(g, (), params)[0], g)
    assert chain(trace(), scale_by_adam()).elementwise
    assert not chain(trace(), GlobalIdentity()).elementwise
    assert not chain(chain(GlobalIdentity()), scale_by_adam()).elementwise


@dataclass(frozen=True)
class GlobalIdentity(GradientTransformation):
    """A stand-in for a transformation that needs the whole vector (global-norm clipping)."""

    elementwise: ClassVar[bool] = False

    def init(self, params):
        return ()

    def update(self, g, state, params=None):
        return g, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_compare_and_pickle_by_value(name):
    optimizer = get_optimizer(name)
    assert optimizer == get_optimizer(name)
    clone = pickle.loads(pickle.dumps(optimizer))
    assert clone == optimizer
    params = np.array([1.0, -2.0, 3.0])
    g = np.array([0.5, 0.5, -1.0])
    np.testing.assert_array_equal(
        clone.update(g, clone.init(params), params)[0],
        optimizer.update(g, optimizer.init(params), params)[0],
    )
    assert chain(trace(0.5), scale_by_adam()) == chain(trace(0.5), scale_by_adam())
    assert chain(trace(0.5), scale_by_adam()) != chain(trace(0.6), scale_by_adam())


def test_sgd_direction_is_the_gradient():
    optimizer = get_optimizer("sgd")
    g = np.array([1.0, -2.0])
    direction, _ = optimizer.update(g, optimizer.init(np.zeros(2)), None)
    np.testing.assert_array_equal(direction, g)
    np.testing.assert_array_equal(apply_updates(np.array([1.0, 1.0]), direction, 0.5), [0.5, 2.0])


G1 = np.array([1.0, -2.0, 0.5])
G2 = np.array([0.25, 1.0, -3.0])
LR = 0.1


def two_steps(name):
    optimizer = get_optimizer(name)
    theta0 = np.array([1.0, 1.0, 1.0])
    state = optimizer.init(theta0)
    d1, state = optimizer.update(G1, state, theta0)
    theta1 = apply_updates(theta0, d1, LR)
    d2, state = optimizer.update(G2, state, theta1)
    theta2 = apply_updates(theta1, d2, LR)
    return theta0, (d1, d2), (theta1, theta2), state


def test_momentum_first_two_steps():
    theta0, (d1, d2), (theta1, theta2), state = two_steps("momentum")
    # m1 = g1; m2 = 0.9 m1 + g2; the direction is the momentum.
    np.testing.assert_allclose(d1, G1)
    np.testing.assert_allclose(d2, 0.9 * G1 + G2)
    np.testing.assert_allclose(state.momentum, 0.9 * G1 + G2)
    np.testing.assert_allclose(theta1, theta0 - LR * G1)
    np.testing.assert_allclose(theta2, theta0 - LR * G1 - LR * (0.9 * G1 + G2))


def test_nesterov_first_two_steps():
    theta0, (d1, d2), (theta1, theta2), state = two_steps("nesterov")
    # m1 = g1, d1 = g1 + 0.9 m1; m2 = 0.9 m1 + g2, d2 = g2 + 0.9 m2 (PyTorch's Nesterov).
    m2 = 0.9 * G1 + G2
    np.testing.assert_allclose(d1, 1.9 * G1)
    np.testing.assert_allclose(d2, G2 + 0.9 * m2)
    np.testing.assert_allclose(state.momentum, m2)
    np.testing.assert_allclose(theta1, theta0 - LR * 1.9 * G1)
    np.testing.assert_allclose(theta2, theta0 - LR * 1.9 * G1 - LR * (G2 + 0.9 * m2))


def test_adagrad_and_rmsprop_first_steps():
    _, (d1, d2), _, state = two_steps("adagrad")
    np.testing.assert_allclose(d1, np.sign(G1), rtol=1e-9)
    np.testing.assert_allclose(d2, G2 / np.sqrt(G1**2 + G2**2), rtol=1e-9)
    np.testing.assert_allclose(state.sum_of_squares, G1**2 + G2**2)

    _, (d1, d2), _, state = two_steps("rmsprop")
    v1 = 0.1 * G1**2
    v2 = 0.9 * v1 + 0.1 * G2**2
    np.testing.assert_allclose(d1, G1 / np.sqrt(v1), rtol=1e-7)
    np.testing.assert_allclose(d2, G2 / np.sqrt(v2), rtol=1e-7)
    np.testing.assert_allclose(state.mean_square, v2)


def test_adam_first_step_is_sign_of_gradient():
    _, (d1, d2), _, state = two_steps("adam")
    np.testing.assert_allclose(d1, np.sign(G1), rtol=1e-7)
    assert int(state.count) == 2
    # Second step, by hand with bias correction.
    mu = 0.9 * 0.1 * G1 + 0.1 * G2
    nu = 0.999 * 0.001 * G1**2 + 0.001 * G2**2
    expected = (mu / (1 - 0.9**2)) / (np.sqrt(nu / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(d2, expected, rtol=1e-9)
    np.testing.assert_allclose(state.mu, mu)
    np.testing.assert_allclose(state.nu, nu)


def test_adam_first_step_does_not_depend_on_gradient_scale():
    optimizer = get_optimizer("adam")
    params = np.zeros(3)
    for scale in (1e-3, 1.0, 1e3):
        direction, _ = optimizer.update(scale * G1, optimizer.init(params), params)
        np.testing.assert_allclose(direction, np.sign(G1), rtol=1e-4)


def test_get_optimizer():
    for name in OPTIMIZERS:
        assert isinstance(get_optimizer(name), GradientTransformation)
    custom = chain(trace(0.5), identity())
    assert get_optimizer(custom) is custom
    for bad in ("lbfgs", "Adam", ""):
        with pytest.raises(ValueError, match="not supported"):
            get_optimizer(bad)

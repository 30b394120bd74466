"""Learning-rate schedules against their closed forms and scikit-learn's formulas."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from dask_sgd.losses import CLASSIFICATION_LOSSES, get_loss
from dask_sgd.schedules import (
    adaptive,
    constant,
    get_schedule,
    invscaling,
    linear_scaling_factor,
    optimal,
    optimal_t0,
    scaled,
    warmup,
)

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

STEPS = [0, 1, 2, 9, 100, 12345]


def test_constant():
    schedule = constant(0.25)
    assert [schedule(t) for t in STEPS] == [0.25] * len(STEPS)
    assert [adaptive(0.25)(t) for t in STEPS] == [0.25] * len(STEPS)


@pytest.mark.parametrize(("eta0", "power_t"), [(0.01, 0.25), (1.0, 0.5), (0.3, 1.0)])
def test_invscaling(eta0, power_t):
    schedule = invscaling(eta0, power_t)
    for t in STEPS:
        # scikit-learn: eta0 / t_ ** power_t with t_ = t + 1
        assert schedule(t) == pytest.approx(eta0 / (t + 1) ** power_t, rel=1e-12)
    assert schedule(0) == eta0
    assert invscaling(1.0, 0.5)(3) == pytest.approx(0.5)


@pytest.mark.parametrize(("alpha", "t0"), [(1e-4, 100.0), (0.1, 3.5)])
def test_optimal(alpha, t0):
    schedule = optimal(alpha, t0)
    for t in STEPS:
        assert schedule(t) == pytest.approx(1.0 / (alpha * (t0 + t)), rel=1e-12)
    assert schedule(1) < schedule(0)


def sklearn_optimal_init(alpha, dloss):
    """scikit-learn's ``optimal_init`` from ``_plain_sgd``, given ``dloss(y, p)``."""
    typw = np.sqrt(1.0 / np.sqrt(alpha))
    initial_eta0 = typw / max(1.0, dloss(1.0, -typw))
    return 1.0 / (initial_eta0 * alpha)


@pytest.mark.parametrize("alpha", [1e-5, 1e-4, 0.01, 1.0])
@pytest.mark.parametrize("name", CLASSIFICATION_LOSSES)
def test_optimal_t0_equals_sklearn_formula(name, alpha):
    loss = get_loss(name)
    expected = sklearn_optimal_init(alpha, lambda y, p: float(loss.dloss(y, p)))

    t0 = optimal_t0(alpha, loss)

    assert t0 == pytest.approx(expected, rel=1e-12)
    schedule = get_schedule("optimal", eta0=0.0, power_t=0.5, alpha=alpha, loss=loss)
    for t in (1, 2, 10, 1000):  # scikit-learn's t, from 1
        sklearn_eta = 1.0 / (alpha * (expected + t - 1))
        assert schedule(t - 1) == pytest.approx(sklearn_eta, rel=1e-12)
    # The first step is about the size of a typical weight.
    typw = math.sqrt(1.0 / math.sqrt(alpha))
    initial_eta0 = typw / max(1.0, float(loss.dloss(1.0, -typw)))
    assert schedule(0) == pytest.approx(initial_eta0, rel=1e-12)


SGD_FAST_CLASSES = {
    "hinge": ("Hinge", (1.0,)),
    "perceptron": ("Hinge", (0.0,)),
    "squared_hinge": ("SquaredHinge", (1.0,)),
    "modified_huber": ("ModifiedHuber", ()),
    "epsilon_insensitive": ("EpsilonInsensitive", (0.1,)),
    "squared_epsilon_insensitive": ("SquaredEpsilonInsensitive", (0.1,)),
}


@pytest.mark.parametrize("name", sorted(SGD_FAST_CLASSES))
def test_optimal_t0_with_sklearn_loss_gradient(name):
    sgd_fast = pytest.importorskip("sklearn.linear_model._sgd_fast")
    cls, args = SGD_FAST_CLASSES[name]
    if not hasattr(sgd_fast, cls):
        pytest.skip(f"scikit-learn's _sgd_fast has no {cls}")
    reference = getattr(sgd_fast, cls)(*args)
    alpha = 1e-4
    # py_dloss takes (p, y); scikit-learn calls cy_gradient(y=1.0, p=-typw).
    expected = sklearn_optimal_init(alpha, lambda y, p: reference.py_dloss(p, y))
    assert optimal_t0(alpha, get_loss(name, epsilon=0.1)) == pytest.approx(expected, rel=1e-12)


def test_optimal_t0_hand_computed():
    # alpha = 1e-4: typw = 10, hinge's dloss(1, -10) = -1 so initial_eta0 = 10, t0 = 1000.
    assert optimal_t0(1e-4, get_loss("hinge")) == pytest.approx(1000.0)
    schedule = get_schedule("optimal", eta0=0.0, power_t=0.5, alpha=1e-4, loss=get_loss("hinge"))
    assert schedule(0) == pytest.approx(10.0)
    assert schedule(1000) == pytest.approx(5.0)


def test_warmup_ramps_linearly_then_equals_base():
    base = invscaling(2.0, 0.5)
    schedule = warmup(base, warmup_steps=10, start_factor=0.1)
    for t in range(10):
        factor = 0.1 + 0.9 * t / 10
        assert schedule(t) == pytest.approx(factor * base(t), rel=1e-12)
    for t in (10, 11, 50, 1000):
        assert schedule(t) == pytest.approx(base(t), rel=1e-12)
    assert schedule(0) == pytest.approx(0.2)


def test_warmup_of_a_constant_is_a_straight_line():
    schedule = warmup(constant(4.0), warmup_steps=4, start_factor=0.25)
    values = [schedule(t) for t in range(7)]
    assert values == pytest.approx([1.0, 1.75, 2.5, 3.25, 4.0, 4.0, 4.0])
    assert np.allclose(np.diff(values[:5]), 0.75)


def test_warmup_that_does_nothing_returns_the_schedule():
    base = constant(1.0)
    assert warmup(base, warmup_steps=0, start_factor=0.1) is base
    assert warmup(base, warmup_steps=10, start_factor=1.0) is base


def test_scaled():
    base = invscaling(1.0, 0.5)
    schedule = scaled(base, 3.0)
    for t in STEPS:
        assert schedule(t) == pytest.approx(3.0 * base(t), rel=1e-12)
    assert scaled(base, 1) is base
    assert scaled(constant(2.0), 0.2)(7) == pytest.approx(0.4)


def test_linear_scaling_with_warmup_goes_from_one_worker_to_k():
    k = 4
    schedule = warmup(scaled(constant(0.1), k), warmup_steps=8, start_factor=1 / k)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(8) == pytest.approx(0.4)


def test_linear_scaling_factor():
    assert linear_scaling_factor(4 * 256, 256) == 4.0
    assert linear_scaling_factor(128, 256) == 0.5
    assert linear_scaling_factor(256, 256) == 1.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("constant", [0.5, 0.5, 0.5]),
        ("adaptive", [0.5, 0.5, 0.5]),
        ("invscaling", [0.5, 0.5 / 2**0.25, 0.5 / 3**0.25]),
    ],
)
def test_get_schedule(name, expected):
    schedule = get_schedule(name, eta0=0.5, power_t=0.25, alpha=1e-4, loss=get_loss("hinge"))
    assert [schedule(t) for t in range(3)] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["pa1", "Optimal", "cosine", ""])
def test_get_schedule_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="not supported"):
        get_schedule(name, eta0=0.5, power_t=0.25, alpha=1e-4, loss=get_loss("hinge"))


def test_schedules_compare_and_pickle_by_value():
    schedules = [
        constant(0.1),
        invscaling(0.5, 0.25),
        optimal(1e-4, 1000.0),
        scaled(constant(0.1), 4.0),
        warmup(scaled(invscaling(0.5, 0.25), 4.0), warmup_steps=10, start_factor=0.25),
    ]
    for schedule in schedules:
        clone = pickle.loads(pickle.dumps(schedule))
        assert clone == schedule
        assert [clone(t) for t in STEPS] == [schedule(t) for t in STEPS]
    assert constant(0.1) == constant(0.1)
    assert constant(0.1) != constant(0.2)

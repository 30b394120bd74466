"""The hot path on ``array_api_strict`` arrays.

Losses, models, the objective, the penalties, the optimizers and a unit's steps
(:func:`~dask_sgd.engine.steps.run_minibatches`) take their namespace from the arrays they
are given, so that CuPy blocks train on their GPU. ``array_api_strict`` has only what the
array API standard defines (no ``.sum()`` method, no ``.astype``, no bool × float), so a
NumPy-only call put back on that path fails here, on a machine with no GPU. Each test runs
the same computation on NumPy arrays and compares: the values agree, and the results are
still strict arrays of the inputs' dtype.
"""

from __future__ import annotations

import array_api_strict as xp
import numpy as np
import pytest

from dask_sgd._array import get_namespace
from dask_sgd._tree import tree_leaves
from dask_sgd.engine.steps import TrainState, refuse_unusable_gradient, run_minibatches
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.losses import CLASSIFICATION_LOSSES, REGRESSION_LOSSES, get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.models.linear import StandardizedLinearModel
from dask_sgd.models.mlp import ACTIVATIONS, MLPModel
from dask_sgd.optim import OPTIMIZERS, get_optimizer
from dask_sgd.penalties import get_penalty

pytestmark = pytest.mark.in_process

DTYPES = {"float32": (np.float32, xp.float32), "float64": (np.float64, xp.float64)}
#: fewer rows than the compiled kernels take (``products.MIN_ROWS``): both sides use ``@``
N_ROWS, N_FEATURES = 12, 5


def strict(array):
    return None if array is None else xp.asarray(array)


def assert_same(ours, reference, dtype):
    """``ours`` is a strict array of ``dtype`` with ``reference``'s values."""
    assert get_namespace(ours) is xp, type(ours)
    assert ours.dtype == dtype
    tolerance = 1e-5 if dtype == xp.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=tolerance, atol=tolerance)


def targets(loss_name: str, n_outputs: int, rng, multinomial: bool = False) -> np.ndarray:
    """Targets as the losses take them: one-hot (multinomial), ±1 or real values."""
    if multinomial:
        return np.eye(n_outputs)[rng.integers(0, n_outputs, N_ROWS)]
    if loss_name in REGRESSION_LOSSES:
        return rng.normal(size=(N_ROWS, n_outputs))
    return rng.choice([-1.0, 1.0], size=(N_ROWS, n_outputs))


LOSSES = [(name, False) for name in CLASSIFICATION_LOSSES] + [("log_loss", True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "multinomial"), LOSSES)
def test_losses_keep_the_namespace_and_dtype(name, multinomial, dtype):
    np_dtype, strict_dtype = DTYPES[dtype]
    rng = np.random.default_rng(0)
    loss = get_loss(name, multinomial=multinomial)
    y = targets(name, 3, rng, multinomial).astype(np_dtype)
    raw = (3 * rng.normal(size=(N_ROWS, 3))).astype(np_dtype)
    loss_sum, dloss = loss.loss_sum_and_dloss(strict(y), strict(raw))
    expected_sum, expected_dloss = loss.loss_sum_and_dloss(y, raw)
    assert_same(loss_sum, expected_sum, strict_dtype)
    assert_same(dloss, expected_dloss, strict_dtype)
    assert_same(loss.loss(strict(y), strict(raw)), loss.loss(y, raw), strict_dtype)
    assert_same(loss.dloss(strict(y), strict(raw)), loss.dloss(y, raw), strict_dtype)


def models(n_outputs: int = 2) -> dict:
    rng = np.random.default_rng(1)
    standardized = StandardizedLinearModel(
        N_FEATURES, n_outputs, mean=rng.normal(size=N_FEATURES),
        std=rng.uniform(0.5, 2, N_FEATURES), target_center=1.0, target_scale=2.0,
    )  # fmt: skip
    return {
        "linear": LinearModel(N_FEATURES, n_outputs),
        "linear-no-intercept": LinearModel(N_FEATURES, n_outputs, fit_intercept=False),
        "standardized-linear": standardized,
        **{
            f"mlp-{activation}": MLPModel(N_FEATURES, (4, 3), n_outputs, activation)
            for activation in ACTIVATIONS
        },
    }


def start(model, dtype: str):
    """θ in NumPy and in the strict namespace: random, so that every path is exercised."""
    np_dtype, strict_dtype = DTYPES[dtype]
    theta = np.random.default_rng(2).normal(size=model.layout.size).astype(np_dtype)
    if isinstance(model, MLPModel):  # the family's own start, in the namespace asked for
        assert_same(
            model.init_params(0, xp=xp, dtype=strict_dtype), model.init_params(0), strict_dtype
        )
    return theta, strict(theta)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", models())
def test_forward_and_backward_keep_the_namespace_and_dtype(family, dtype):
    model = models()[family]
    np_dtype, strict_dtype = DTYPES[dtype]
    theta, theta_strict = start(model, dtype)
    X = np.random.default_rng(3).normal(size=(N_ROWS, N_FEATURES)).astype(np_dtype)
    raw, cache = model.forward(theta, X)
    raw_strict, cache_strict = model.forward(theta_strict, strict(X))
    assert_same(raw_strict, raw, strict_dtype)
    draw = (raw - 1).astype(np_dtype)
    assert_same(
        model.backward(theta_strict, cache_strict, strict(draw)),
        model.backward(theta, cache, draw),
        strict_dtype,
    )


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_keep_the_namespace_and_dtype(name):
    optimizer = get_optimizer(name)
    rng = np.random.default_rng(4)
    params = rng.normal(size=6).astype(np.float32)
    state, state_strict = optimizer.init(params), optimizer.init(strict(params))
    for _ in range(3):
        g = rng.normal(size=6).astype(np.float32)
        direction, state = optimizer.update(g, state, params)
        direction_strict, state_strict = optimizer.update(strict(g), state_strict, strict(params))
        assert_same(direction_strict, direction, xp.float32)


def minibatches(loss_name: str, dtype, weighted: bool, multinomial: bool):
    """Four minibatches, as NumPy arrays."""
    rng = np.random.default_rng(5)
    for _ in range(4):
        X = rng.normal(size=(N_ROWS, N_FEATURES)).astype(dtype)
        y = targets(loss_name, 2, rng, multinomial).astype(dtype)
        weight = rng.uniform(0.5, 2, N_ROWS).astype(dtype) if weighted else None
        yield X, y, weight


STEPS = [
    # family, optimizer, loss, penalty, more (objective's settings; averaging from a sample)
    ("linear", "sgd", "hinge", "l2", {}),
    ("linear", "adagrad", "log_loss", "elasticnet", {"clip_norm": 0.5}),
    ("linear-no-intercept", "momentum", "modified_huber", "l1", {"average_start": 20}),
    ("standardized-linear", "sgd", "squared_error", "l2", {"weighted": True}),
    ("standardized-linear", "rmsprop", "huber", "elasticnet", {"average_start": 1}),
    ("mlp-relu", "adam", "multinomial", "l2", {"weighted_mean": True, "weighted": True}),
    ("mlp-tanh", "nesterov", "squared_error", "l2", {}),
    ("mlp-logistic", "adam", "log_loss", "l2", {"clip_norm": 0.1}),
    ("mlp-identity", "sgd", "epsilon_insensitive", None, {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("family", "optimizer", "loss", "penalty", "more"), STEPS)
def test_a_units_steps_keep_the_namespace_and_dtype(family, optimizer, loss, penalty, more, dtype):
    """:func:`run_minibatches`, the loop every unit and the in-process fit run: parameters,
    optimizer state, running average and summed loss agree with NumPy's."""
    model = models()[family]
    np_dtype, strict_dtype = DTYPES[dtype]
    more = dict(more)
    average_start, weighted = more.pop("average_start", 0), more.pop("weighted", False)
    multinomial = loss == "multinomial"
    objective = Objective(
        model, get_loss("log_loss" if multinomial else loss, multinomial=multinomial),
        get_penalty(penalty, alpha=0.01), **more,
    )  # fmt: skip
    optimizer = get_optimizer(optimizer)
    theta, theta_strict = start(model, dtype)

    def run(params, convert):
        state = TrainState.create(params, optimizer, averaged=bool(average_start))
        batches = [
            tuple(convert(a) for a in batch)
            for batch in minibatches(loss, np_dtype, weighted, multinomial)
        ]
        return run_minibatches(
            state, batches, objective, optimizer, lambda step: 0.1 / (1 + step), average_start
        )

    state, loss_sum, rows = run(theta, lambda a: a)
    state_strict, loss_sum_strict, rows_strict = run(theta_strict, strict)
    assert rows_strict == rows == 4 * N_ROWS
    assert loss_sum_strict == pytest.approx(loss_sum, rel=1e-5 if dtype == "float32" else 1e-12)
    assert_same(state_strict.params, state.params, strict_dtype)
    assert not np.array_equal(np.asarray(state_strict.params), theta)  # it trained
    if average_start:
        assert state_strict.n_averaged == state.n_averaged > 0
        assert_same(state_strict.average, state.average, strict_dtype)
    leaves = zip(tree_leaves(state.opt_state), tree_leaves(state_strict.opt_state), strict=True)
    for leaf, leaf_strict in leaves:
        if np.ndim(leaf):
            assert_same(leaf_strict, leaf, strict_dtype)


def test_an_unusable_gradient_is_refused_in_its_own_namespace():
    refuse_unusable_gradient(xp.asarray([1.0, 2.0]), step=3)  # usable: nothing raised
    with pytest.raises(NonFiniteParameters) as nan:
        refuse_unusable_gradient(xp.asarray([1.0, float("nan")]), step=3)
    with pytest.raises(NonFiniteParameters) as overflow, np.errstate(over="ignore"):
        refuse_unusable_gradient(xp.asarray([1e200, 1.0]), step=3)  # its square overflows
    assert (nan.value.what, overflow.value.what) == ("gradient", "gradient norm")


def test_get_namespace_knows_numpy_scipy_and_array_api_arrays():
    import scipy.sparse

    assert get_namespace(np.ones(2), None, 1.0) is np
    assert get_namespace(scipy.sparse.eye(2, format="csr"), np.float32(1)) is np
    assert get_namespace(np.ones(2), xp.ones(2)) is xp

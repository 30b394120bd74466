"""The engine: minibatches, the step loop, averaging, divergence and the stopping rule."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_sgd.engine.local import iterate_minibatches
from dask_sgd.engine.loop import ConvergenceMonitor, train_epochs
from dask_sgd.engine.steps import TrainState, run_minibatches
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.optim import apply_updates, get_optimizer
from dask_sgd.penalties import get_penalty
from dask_sgd.schedules import constant

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

# --- iterate_minibatches ---------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [1, 10, 12])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 16])
@pytest.mark.parametrize("shuffle", [False, True])
def test_minibatches_cover_every_row_once(n_samples, batch_size, shuffle):
    X = np.arange(n_samples, dtype=float)[:, None] * np.array([[1.0, -1.0]])
    y = np.arange(n_samples, dtype=float)[:, None] + 100
    sample_weight = np.arange(n_samples, dtype=float) + 1000
    rng = np.random.default_rng(0) if shuffle else None

    batches = list(iterate_minibatches(X, y, sample_weight, batch_size, rng))

    rows = np.concatenate([bx[:, 0] for bx, _, _ in batches]).astype(int)
    assert sorted(rows.tolist()) == list(range(n_samples))
    sizes = [bx.shape[0] for bx, _, _ in batches]
    assert len(batches) == -(-n_samples // batch_size)
    assert all(size == batch_size for size in sizes[:-1])
    assert 1 <= sizes[-1] <= batch_size
    for bx, by, bw in batches:  # X, y and the weights stay aligned
        np.testing.assert_array_equal(bx[:, 1], -bx[:, 0])
        np.testing.assert_array_equal(by[:, 0], bx[:, 0] + 100)
        np.testing.assert_array_equal(bw, bx[:, 0] + 1000)
    if not shuffle:
        np.testing.assert_array_equal(rows, np.arange(n_samples))


def test_minibatches_without_weights_and_shuffled_order():
    X = np.arange(50.0)[:, None]
    y = np.arange(50.0)[:, None]
    batches = list(iterate_minibatches(X, y, None, 7, np.random.default_rng(3)))
    assert all(bw is None for _, _, bw in batches)
    rows = np.concatenate([bx[:, 0] for bx, _, _ in batches])
    assert sorted(rows) == list(range(50))
    assert not np.array_equal(rows, np.arange(50))  # a random order, not the identity
    # A fresh random order every call with the same generator.
    rng = np.random.default_rng(4)
    first = np.concatenate([bx[:, 0] for bx, _, _ in iterate_minibatches(X, y, None, 50, rng)])
    second = np.concatenate([bx[:, 0] for bx, _, _ in iterate_minibatches(X, y, None, 50, rng)])
    assert not np.array_equal(first, second)


def test_minibatches_of_sparse_rows():
    X = sp.csr_matrix(np.arange(10.0)[:, None])
    y = np.arange(10.0)[:, None]
    batches = list(iterate_minibatches(X, y, None, 4, np.random.default_rng(0)))
    for bx, by, _ in batches:
        assert sp.issparse(bx)
        np.testing.assert_array_equal(bx.toarray(), by)
    assert sum(bx.shape[0] for bx, _, _ in batches) == 10


# --- run_minibatches -------------------------------------------------------------------------


def least_squares(n_samples=120, n_features=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    w = np.array([1.5, -2.0, 0.5])[:n_features]
    y = (X @ w + 0.3 + 0.01 * rng.normal(size=n_samples))[:, None]
    model = LinearModel(n_features, 1)
    objective = Objective(model, get_loss("squared_error"), get_penalty(None, alpha=0.0))
    return objective, X, y


def test_run_minibatches_decreases_the_loss_and_counts():
    objective, X, y = least_squares()
    optimizer = get_optimizer("sgd")
    state = TrainState.create(objective.model.init_params(), optimizer, averaged=False)
    start_value = objective.value(state.params, X, y)

    state, loss1, rows1 = run_minibatches(
        state, iterate_minibatches(X, y, None, 10, None), objective, optimizer, constant(0.1)
    )
    assert (state.step, state.samples, rows1) == (12, 120, 120)
    state, loss2, rows2 = run_minibatches(
        state, iterate_minibatches(X, y, None, 32, None), objective, optimizer, constant(0.1)
    )
    assert (state.step, state.samples, rows2) == (16, 240, 120)

    assert isinstance(loss1, float)
    assert loss2 < 0.5 * loss1
    assert objective.value(state.params, X, y) < 0.1 * start_value
    assert state.average is None and state.n_averaged == 0
    assert state.final_params is state.params


def test_run_minibatches_equals_a_hand_written_loop():
    objective, X, y = least_squares()
    optimizer = get_optimizer("momentum")

    def schedule(step):  # depends on the step counter
        return 0.05 / (1 + step)

    state = TrainState.create(objective.model.init_params(), optimizer, averaged=False)

    new_state, loss_sum, rows = run_minibatches(
        state, iterate_minibatches(X, y, None, 25, None), objective, optimizer, schedule
    )

    params, opt_state, losses = state.params, state.opt_state, []
    for step, (bx, by, bw) in enumerate(iterate_minibatches(X, y, None, 25, None)):
        batch_loss, grad = objective.loss_and_grad(params, bx, by, bw)
        losses.append(batch_loss)  # the loss before the update
        direction, opt_state = optimizer.update(grad, opt_state, params)
        params = apply_updates(params, direction, schedule(step))
    np.testing.assert_allclose(new_state.params, params, rtol=1e-14)
    np.testing.assert_allclose(new_state.opt_state.momentum, opt_state.momentum, rtol=1e-14)
    assert loss_sum == pytest.approx(sum(losses), rel=1e-12)
    assert rows == 120
    assert np.array_equal(state.params, objective.model.init_params())  # input state untouched


# Minibatches of 10 rows: step k ends at sample 10 k, and averaging takes the iterates from the
# step that reaches sample number average_start on (scikit-learn's `average <= t`).
@pytest.mark.parametrize(("average_start", "first_averaged"), [(1, 1), (10, 1), (30, 3), (35, 4)])
def test_averaging_is_the_mean_of_the_iterates(average_start, first_averaged):
    objective, X, y = least_squares()
    optimizer = get_optimizer("sgd")
    state = TrainState.create(objective.model.init_params(), optimizer, averaged=True)
    assert state.average is not None and not state.average.any()

    iterates = []
    # Run one step at a time to keep every iterate.
    for batch in iterate_minibatches(X, y, None, 10, None):
        state, _, _ = run_minibatches(
            state, [batch], objective, optimizer, constant(0.02), average_start=average_start
        )
        iterates.append(state.params)

    kept = iterates[first_averaged - 1 :]  # iterates after steps first_averaged, ..., 12
    running = np.zeros_like(kept[0])
    for k, params in enumerate(kept, start=1):
        running += (params - running) / k
    assert state.n_averaged == len(kept)
    np.testing.assert_allclose(state.average, np.mean(kept, axis=0), rtol=1e-12)
    np.testing.assert_allclose(state.average, running, rtol=1e-12)
    assert state.final_params is state.average
    assert not np.allclose(state.average, state.params)


def test_averaging_in_one_call_equals_step_by_step():
    objective, X, y = least_squares()
    optimizer = get_optimizer("sgd")
    state = TrainState.create(objective.model.init_params(), optimizer, averaged=True)
    state, _, _ = run_minibatches(
        state,
        iterate_minibatches(X, y, None, 10, None),
        objective,
        optimizer,
        constant(0.02),
        average_start=1,
    )
    params, iterates = objective.model.init_params(), []
    for bx, by, _ in iterate_minibatches(X, y, None, 10, None):
        _, grad = objective.loss_and_grad(params, bx, by)
        params = apply_updates(params, grad, 0.02)
        iterates.append(params)
    assert state.n_averaged == 12
    np.testing.assert_allclose(state.average, np.mean(iterates, axis=0), rtol=1e-12)


def test_averaging_not_started_keeps_current_params():
    objective, X, y = least_squares()
    optimizer = get_optimizer("sgd")
    state = TrainState.create(objective.model.init_params(), optimizer, averaged=True)
    state, _, _ = run_minibatches(
        state,
        iterate_minibatches(X, y, None, 10, None),
        objective,
        optimizer,
        constant(0.02),
        average_start=10_000,
    )
    assert state.n_averaged == 0
    assert state.final_params is state.params


def test_diverging_learning_rate_raises_non_finite_parameters():
    # The loss derivative is clipped to 1e12 (as in scikit-learn), so a merely large rate
    # only makes the parameters grow linearly; this one overflows on the second step.
    objective, X, y = least_squares()
    optimizer = get_optimizer("sgd")
    state = TrainState.create(objective.model.init_params(), optimizer, averaged=False)
    with pytest.raises(NonFiniteParameters) as info:
        run_minibatches(
            state, iterate_minibatches(X, y, None, 10, None), objective, optimizer, constant(1e300)
        )
    assert isinstance(info.value, FloatingPointError)
    assert info.value.step == 1  # step 0 lands near 1e300, step 1 overflows
    assert "step 1" in str(info.value)


# --- ConvergenceMonitor ----------------------------------------------------------------------


def observe_all(monitor, losses):
    return [monitor.observe(loss) for loss in losses]


def test_monitor_stops_after_n_iter_no_change_epochs_without_improvement():
    monitor = ConvergenceMonitor(tol=1e-3, n_iter_no_change=3)
    # 0.4999 etc. improve by less than tol on the best (0.5).
    stops = observe_all(monitor, [1.0, 0.5, 0.4999, 0.4998, 0.4997])
    assert stops == [False, False, False, False, True]


def test_monitor_improvement_resets_the_count():
    monitor = ConvergenceMonitor(tol=1e-3, n_iter_no_change=3)
    stops = observe_all(monitor, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    assert stops == [False] * 6 + [True]
    assert monitor.best == 0.5


def test_monitor_compares_with_the_best_not_the_last():
    monitor = ConvergenceMonitor(tol=0.01, n_iter_no_change=2)
    # Each epoch improves on the one before by more than tol, but not on the best (0.1).
    stops = observe_all(monitor, [0.1, 0.5, 0.3])
    assert stops == [False, False, True]


def test_monitor_with_negative_tol_needs_a_rise_to_stop():
    monitor = ConvergenceMonitor(tol=-1.0, n_iter_no_change=1)
    assert observe_all(monitor, [1.0, 1.5, 3.0]) == [False, False, True]


def test_monitor_with_tol_none_never_stops():
    monitor = ConvergenceMonitor(tol=None, n_iter_no_change=1)
    assert not any(observe_all(monitor, [1.0] * 50 + [2.0] * 50))
    assert monitor.no_improvement == 0
    assert monitor.lr_factor == 1.0


def test_monitor_uses_the_validation_score():
    monitor = ConvergenceMonitor(tol=0.01, n_iter_no_change=2)
    # The loss keeps falling, but the score (higher is better) stalls.
    stops = [
        monitor.observe(loss, score)
        for loss, score in [(1.0, 0.5), (0.5, 0.8), (0.2, 0.805), (0.1, 0.79)]
    ]
    assert stops == [False, False, False, True]


def test_monitor_adaptive_divides_lr_factor_until_small_enough():
    eta0 = 0.01
    monitor = ConvergenceMonitor(tol=1e-3, n_iter_no_change=2, adaptive_eta0=eta0)
    factors, stopped_at = [], None
    for epoch in range(1, 100):
        if monitor.observe(1.0):
            stopped_at = epoch
            break
        factors.append(monitor.lr_factor)

    # Two epochs without improvement after the first: divide by 5 at epochs 3, 5, ...,
    # while eta0 * lr_factor > 1e-6: 0.01 / 5**5 = 3.2e-6 > 1e-6 >= 0.01 / 5**6.
    expected = [1.0, 1.0] + [5.0**-k for k in range(1, 7) for _ in range(2)]
    assert factors == pytest.approx(expected, rel=1e-12)
    assert stopped_at == 15
    assert eta0 * monitor.lr_factor <= 1e-6 < eta0 * monitor.lr_factor * 5


def test_monitor_adaptive_with_small_eta0_stops_at_once():
    monitor = ConvergenceMonitor(tol=1e-3, n_iter_no_change=1, adaptive_eta0=1e-6)
    assert observe_all(monitor, [1.0, 1.0]) == [False, True]
    assert monitor.lr_factor == 1.0


# --- train_epochs ----------------------------------------------------------------------------


def test_train_epochs_names_the_epoch_of_a_non_finite_step():
    calls = []

    def run_epoch(state, lr_factor):
        calls.append(lr_factor)
        if len(calls) == 3:
            raise NonFiniteParameters(29, "gradient", partition=4)
        return state, 10.0, 5

    state = TrainState(params=np.zeros(2), opt_state=())
    monitor = ConvergenceMonitor(tol=None, n_iter_no_change=5)
    expected = r"epoch #7 \(step 29, partition 4: non-finite gradient, not applied\)"
    with pytest.raises(ValueError, match=expected) as info:
        train_epochs(run_epoch, state, max_iter=10, monitor=monitor, first_epoch=5)
    assert not isinstance(info.value, NonFiniteParameters)
    assert "epoch #" in str(info.value)
    assert len(calls) == 3


def test_train_epochs_real_divergence_is_a_value_error():
    # Hugely unscaled data, as in scikit-learn's test_underflow_or_overlow.
    objective, X, y = least_squares()
    X[:, 0] *= 1e300
    optimizer = get_optimizer("sgd")

    def run_epoch(state, lr_factor):
        batches = iterate_minibatches(X, y, None, 10, None)
        return run_minibatches(state, batches, objective, optimizer, constant(0.01 * lr_factor))

    state = TrainState.create(objective.model.init_params(), optimizer, averaged=False)
    with pytest.raises(ValueError, match=r"epoch #1 .*StandardScaler"):
        train_epochs(run_epoch, state, max_iter=3, monitor=ConvergenceMonitor(1e-3, 5))


def test_train_epochs_history_and_convergence():
    losses = iter([12.0, 6.0, 6.0, 6.0, 6.0, 6.0])
    seen_factors = []

    def run_epoch(state, lr_factor):
        seen_factors.append(lr_factor)
        return state, next(losses), 4

    state = TrainState(params=np.zeros(2), opt_state=())
    monitor = ConvergenceMonitor(tol=1e-3, n_iter_no_change=2, adaptive_eta0=1e-5)
    result = train_epochs(run_epoch, state, max_iter=6, monitor=monitor)

    # Epoch 4 divides by 5 (1e-5 > 1e-6); epoch 6 sees 2e-6 > 1e-6 and divides again.
    assert [record["loss"] for record in result.history] == [3.0, 1.5, 1.5, 1.5, 1.5, 1.5]
    assert [record["epoch"] for record in result.history] == [1, 2, 3, 4, 5, 6]
    assert all(record["samples"] == 4 for record in result.history)
    assert seen_factors == pytest.approx([1, 1, 1, 1, 0.2, 0.2])
    assert monitor.lr_factor == pytest.approx(0.04)
    assert result.n_iter == 6 and not result.converged
    assert result.state is state


def test_train_epochs_stops_when_converged():
    def run_epoch(state, lr_factor):
        return state, 2.0, 2

    state = TrainState(params=np.zeros(2), opt_state=())
    monitor = ConvergenceMonitor(tol=1e-3, n_iter_no_change=3)
    result = train_epochs(run_epoch, state, max_iter=100, monitor=monitor)
    assert result.converged
    assert result.n_iter == 4
    assert len(result.history) == 4

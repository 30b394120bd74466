"""Strategies as plug-ins: a toy strategy from this file alone, the root cause of a failed
segment, and a paused worker that keeps its shards."""

from __future__ import annotations

import time
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pytest
from distributed import get_worker
from sklearn.datasets import make_classification

from dask_sgd import SGDClassifier, optim, schedules
from dask_sgd.blocks import persist_blocks
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.cluster import ClusterTrainer
from dask_sgd.engine.keeper import ShardKeeper
from dask_sgd.engine.steps import TrainState
from dask_sgd.engine.strategies import STRATEGIES, Sync, get_strategy, register
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.models.mlp import MLPModel
from dask_sgd.penalties import get_penalty
from dask_sgd.ps.rules import MeanGradientStep
from dask_sgd.workers import staying_workers, worker_statuses


class SumOfGradientsStep(MeanGradientStep):
    """A shard rule of this file's own: a step applies the sum of the units' gradients."""

    def apply_mean(self, mean, rate: float) -> None:
        self.shard.apply(mean * self.n_contributors, rate)


@dataclass(frozen=True)
class SummingSync(Sync):
    """ "sync" whose shards add the gradients up instead of averaging them, and that counts
    its steps in ``history_``: a strategy written outside the engine."""

    name = "summing-sync"

    def exchange_rule(self, n_units: int, step: int) -> SumOfGradientsStep:
        return SumOfGradientsStep(self.contributors(n_units))

    def history(self, results, dropped: int) -> dict:
        return {"summed_steps": sum(result.rows for result in results) // 16 // len(results)}


@pytest.fixture(scope="module")
def summing_sync():
    register(SummingSync)
    yield SummingSync
    STRATEGIES.pop(SummingSync.name)


def dask_data(n_samples=800, chunk=100, random_state=0):
    X, y = make_classification(n_samples=n_samples, n_features=5, random_state=random_state)
    return da.from_array(X, chunks=(chunk, 5)), da.from_array(y, chunks=chunk)


def test_a_strategy_registered_from_a_test_file_trains_through_the_estimator(client, summing_sync):
    """Adding the units' gradients at rate η is averaging them at rate k·η (k = 2 workers)."""
    params = dict(
        loss="log_loss", optimizer="sgd", learning_rate="constant", batch_size=16, max_iter=2,
        tol=None,
        scale_learning_rate=False, random_state=0,
    )  # fmt: skip
    X, y = dask_data()
    summed = SGDClassifier(strategy="summing-sync", eta0=0.05, **params).fit(X, y)
    averaged = SGDClassifier(strategy="sync", eta0=0.1, **params).fit(X, y)
    np.testing.assert_allclose(summed.coef_, averaged.coef_, rtol=1e-10)
    assert [record["summed_steps"] for record in summed.history_] == [25, 25]
    assert "summed_steps" not in averaged.history_[0]
    with pytest.raises(ValueError, match="strategy"):
        SGDClassifier(strategy="no-such-strategy").fit(X, y)


def test_strategies_take_the_options_they_have_fields_for():
    local = get_strategy("local", local_steps=3, n_backup=5, staleness_bound=2)
    assert (local.local_steps, local.round_steps()) == (3, 3)
    assert get_strategy("backup", n_backup=1).contributors(4) == 3
    assert get_strategy("backup", n_backup=9).contributors(4) == 1  # at least one counts
    assert get_strategy("ssp", staleness_bound=2).staleness_bound == 2
    with pytest.raises(ValueError, match="Unknown strategy 'nope'"):
        get_strategy("nope")


@dataclass(frozen=True)
class FailingObjective(Objective):
    """The real objective, but the 3rd gradient on worker ``victim`` raises."""

    victim: str = ""

    def loss_and_grad_pieces(self, theta, X, y, sample_weight=None):
        worker = get_worker()
        calls = getattr(worker, "_test_gradients", 0) + 1
        worker._test_gradients = calls
        if worker.address == self.victim and calls == 3:
            raise ZeroDivisionError("the real cause")
        return super().loss_and_grad_pieces(theta, X, y, sample_weight)


@pytest.mark.parametrize("strategy", ["sync", "ssp"])
def test_a_failed_segment_reports_its_root_cause_not_the_abort(client, strategy):
    """The unit on the other worker waits at the shard for the failed one, and is aborted;
    the error raised is the failure, whichever unit Dask reports first."""
    X, y = dask_data()
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    model = LinearModel(5, 1)
    try:
        trainer = ClusterTrainer(
            client, data, Objective(model, get_loss("log_loss"), get_penalty(None, alpha=0)),
            optim.sgd(), schedules.constant(0.1), TargetEncoder(np.array([0, 1])),
            batch_size=16, strategy=strategy, staleness_bound=0,
        ).start()  # fmt: skip
        client.run(lambda dask_worker: setattr(dask_worker, "_test_gradients", 0))
        for victim in (trainer.units[-1].worker, trainer.units[0].worker):
            trainer.objective = FailingObjective(
                model, get_loss("log_loss"), get_penalty(None, alpha=0), victim=victim
            )
            state = TrainState.create(model.init_params(), optim.sgd(), averaged=False)
            with pytest.raises(ZeroDivisionError, match="the real cause"):
                trainer.run_epoch(state, 1.0)
            trainer.close()
            client.run(lambda dask_worker: setattr(dask_worker, "_test_gradients", 0))
    finally:
        data.release()


def test_a_paused_worker_keeps_its_shards_and_its_unit(client):
    """Paused for memory is not leaving: nothing moves; closing gracefully is leaving."""
    keeper = ShardKeeper(client, get_strategy("sync"), optim.sgd(), 2, 1, 5.0)
    state = TrainState.create(np.zeros(4), optim.sgd(), averaged=False)
    keeper.start(state, n_units=2)
    holder = keeper.server.shards[0]._address

    def set_status(status: str):
        def change(dask_worker):
            from distributed.core import Status

            # the worker's memory monitor resumes a worker paused with memory to spare:
            # off while this test holds it paused, as it was otherwise
            manager = dask_worker.memory_manager
            if status == "paused":
                manager.test_pause_fraction = manager.memory_pause_fraction
                manager.memory_pause_fraction = False
            elif status == "running" and hasattr(manager, "test_pause_fraction"):
                manager.memory_pause_fraction = manager.test_pause_fraction
            dask_worker.status = Status[status]

        client.run(change, workers=[holder])
        deadline = time.monotonic() + 10
        while worker_statuses(client)[holder] != status:
            assert time.monotonic() < deadline, f"the scheduler never saw {status}"
            time.sleep(0.02)

    try:
        set_status("paused")
        assert keeper.leaving_shards() == []
        assert holder in staying_workers(client)
        set_status("closing_gracefully")
        assert keeper.leaving_shards() == [0]
        assert holder not in staying_workers(client)
    finally:
        set_status("running")
        keeper.close()


def test_the_rate_follows_the_number_of_workers_over_a_short_warmup(client):
    """Sync with plain SGD on k workers: k times the rate (linear rule); when one of two
    leaves at step s, the rate moves from 2η to η over a quarter of warmup_epochs."""
    X, y = dask_data()
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    objective = Objective(LinearModel(5, 1), get_loss("hinge"), get_penalty(None, alpha=0))
    try:
        trainer = ClusterTrainer(
            client, data, objective, optim.sgd(), schedules.constant(0.01), TargetEncoder(),
            batch_size=10, warmup_epochs=4.0,
        ).start()  # fmt: skip
        steps = trainer.steps_per_epoch  # 800 rows / (2 workers × 10)
        assert steps == 40 and trainer.schedule(4 * steps) == pytest.approx(0.02)
        at = 5 * steps
        trainer.units = trainer.units[:1]
        trainer._scale_for_units(step=at)
        assert trainer.steps_per_epoch == 80  # one worker's 10 rows a step
        assert trainer.schedule(at) == pytest.approx(0.02)  # no jump
        assert 0.01 < trainer.schedule(at + 40) < 0.02
        assert trainer.schedule(at + 80) == pytest.approx(0.01)  # 1/4 of 4 epochs of 80
    finally:
        data.release()


def local_results(step_seconds: float, latency_seconds: float, n_units: int = 2):
    from dask_sgd.engine.strategies.local import LocalResult

    return [
        LocalResult(0.0, 0, None, step_seconds=step_seconds, latency_seconds=latency_seconds)
    ] * n_units


@pytest.mark.timeout(10)
def test_auto_rounds_last_several_exchanges_within_their_bounds():
    local = get_strategy("local")  # local_steps="auto"
    assert local.calibration_steps() == 64 and local.round_steps() == 8
    # 0.2 ms steps, 3 ms exchanges: 4 exchanges are 60 steps, a power of two is 64
    assert local.paced(local_results(2e-4, 3e-3), steps_per_epoch=10_000).round_steps() == 64
    # the epoch allows 8 rounds of at most 500 // 8 = 62 steps: 32 is the power of two below
    assert local.paced(local_results(2e-4, 3e-3), steps_per_epoch=500).round_steps() == 32
    # an exchange as cheap as a step: rounds as short as allowed, and never under 8 steps
    assert local.paced(local_results(1e-3, 1e-3), steps_per_epoch=10_000).round_steps() == 8
    assert local.paced(local_results(2e-4, 3e-3), steps_per_epoch=20).round_steps() == 8
    # nothing measured (no round ended), or a fixed number of steps: the rounds stay
    assert local.paced(local_results(2e-4, float("nan")), 10_000) is local
    fixed = get_strategy("local", local_steps=16)
    assert fixed.paced(local_results(2e-4, 3e-3), 10_000) is fixed
    assert fixed.calibration_steps() is None and fixed.round_steps() == 16


@pytest.mark.timeout(60)
def test_auto_rounds_are_measured_in_a_first_segment_and_recorded(client):
    X, y = make_classification(n_samples=4000, n_features=5, random_state=0)
    X, y = da.from_array(X, chunks=1000), da.from_array(y, chunks=1000)
    clf = SGDClassifier(max_iter=2, tol=None, batch_size=8, random_state=0).fit(X, y)
    rounds = [record["local_steps"] for record in clf.history_]
    assert all(steps in (8, 16, 32) for steps in rounds), rounds  # 250 steps: 8 rounds, 31 at most
    assert all(record["exchange_wait_seconds"] >= 0 for record in clf.history_)


def lanes_opened(client, shards) -> int:
    """How many of ``shards`` (actors) have opened their direct lane."""
    keys = {shard.key for shard in shards}

    def count(dask_worker):
        actors = dask_worker.state.actors
        return sum(actors[key].rule.lane is not None for key in keys & set(actors))

    return sum(client.run(count).values())


@pytest.mark.timeout(60)
def test_sync_through_the_direct_lanes_trains_the_model_of_the_actor_calls(client):
    """Two shards on two workers: each unit reaches one shard on its own worker (no socket)
    and one on the other (a TCP stream). The lanes hand the same rule the same gradients as
    Dask's actor calls: the same model, bit for bit, averaged and not."""
    X, y = dask_data()
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    model = LinearModel(5, 1)
    objective = Objective(model, get_loss("log_loss"), get_penalty("l2", alpha=1e-3))
    fits, opened = {}, {}
    try:
        for lanes in (True, False):
            trainer = ClusterTrainer(
                client, data, objective, optim.adam(), schedules.constant(0.05),
                TargetEncoder(np.array([0, 1])), batch_size=16, n_shards=2,
                strategy=Sync(lanes=lanes), snapshot_steps=10, average=200,
            ).start()  # fmt: skip
            state = TrainState.create(model.init_params(), optim.adam(), averaged=True)
            try:
                for _ in range(2):
                    state, *_ = trainer.run_epoch(state, 1.0)
                opened[lanes] = lanes_opened(client, trainer.server.shards)
            finally:
                trainer.close()
            fits[lanes] = state
    finally:
        data.release()
    assert opened == {True: 2, False: 0}
    assert 0 < fits[True].n_averaged == fits[False].n_averaged < fits[True].step
    np.testing.assert_array_equal(fits[True].params, fits[False].params)
    np.testing.assert_array_equal(fits[True].average, fits[False].average)
    np.testing.assert_array_equal(fits[True].opt_state.nu, fits[False].opt_state.nu)


@pytest.mark.timeout(60)
def test_sync_pushing_a_networks_layers_as_they_finish_trains_the_same_network(client):
    """A network on two shards: with the layer-wise exchange a unit pushes the second
    shard's slice (the last layers) before it computes the first layer's gradient; the
    shards apply the same steps as with the whole gradient pushed at once, bit for bit."""
    X, y = dask_data()
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    model = MLPModel(5, (16, 8), 1, "relu")
    objective = Objective(
        model, get_loss("log_loss"), get_penalty("l2", alpha=1e-3), weighted_mean=True
    )
    fits = {}
    try:
        for layerwise in (True, False):
            trainer = ClusterTrainer(
                client, data, objective, optim.adam(), schedules.constant(0.01),
                TargetEncoder(np.array([0, 1])), batch_size=16, n_shards=2,
                strategy=Sync(layerwise=layerwise), snapshot_steps=10,
            ).start()  # fmt: skip
            state = TrainState.create(model.init_params(0), optim.adam(), averaged=False)
            try:
                for _ in range(2):
                    state, loss_sum, *_ = trainer.run_epoch(state, 1.0)
                assert len(trainer.server.shards) == 2
            finally:
                trainer.close()
            fits[layerwise] = state, loss_sum
    finally:
        data.release()
    assert fits[True][0].step == fits[False][0].step == 50
    assert fits[True][1] == fits[False][1]
    np.testing.assert_array_equal(fits[True][0].params, fits[False][0].params)
    np.testing.assert_array_equal(fits[True][0].opt_state.nu, fits[False][0].opt_state.nu)


class SegmentCounting(ClusterTrainer):
    """The trainer, counting its segments (each restarts the units' step counts)."""

    segments = 0

    def _run_segment(self, state, lr_factor, n_steps):
        self.segments += 1
        return super()._run_segment(state, lr_factor, n_steps)


@pytest.mark.parametrize("n_fetch, n_push", [(1, 1), (4, 1), (1, 4), (3, 2)])
def test_downpour_pulls_every_n_fetch_steps_and_pushes_every_n_push(client, n_fetch, n_push):
    """A unit that has done ``d`` steps in a segment has pulled ``ceil(d / n_fetch)`` times
    and pushed ``ceil(d / n_push)`` times: over the units, between S / n and S / n plus one
    per unit and segment, for the epoch's S steps (counted by the one shard)."""
    X, y = dask_data()
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    model = LinearModel(5, 1)
    objective = Objective(model, get_loss("log_loss"), get_penalty(None, alpha=0))
    trainer = SegmentCounting(
        client, data, objective, optim.sgd(), schedules.constant(0.1),
        TargetEncoder(np.array([0, 1])), batch_size=16, n_shards=1, strategy="downpour",
        n_fetch=n_fetch, n_push=n_push,
    )  # fmt: skip
    try:
        state = TrainState.create(model.init_params(), optim.sgd(), averaged=False)
        trainer.run_epoch(state, 1.0)
        (stats,) = trainer.keeper.server.stats()
    finally:
        trainer.close()
        data.release()
    steps = trainer.steps_per_epoch * len(trainer.units)  # the units' minibatches
    slack = len(trainer.units) * trainer.segments
    for count, every in ((stats.pulls, n_fetch), (stats.version, n_push)):
        assert steps / every <= count <= steps / every + slack, (count, every, steps, slack)
    assert stats.pushes == stats.version  # each push applied once, at once


def test_the_estimators_asynchronous_options_reach_the_strategy():
    """The options that the tests of the shards and of Downpour check come from the estimator."""
    for strategy in ("downpour", "ssp"):
        options = dict(n_fetch=3, n_push=2, staleness_aware_lr=True, staleness_bound=5)
        built = SGDClassifier(strategy=strategy, **options)._cluster_settings()["strategy"]
        assert built.staleness_aware is True, built
    built = SGDClassifier(strategy="downpour", n_fetch=3, n_push=2)._cluster_settings()
    assert (built["strategy"].n_fetch, built["strategy"].n_push) == (3, 2)

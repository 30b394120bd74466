"""What a fit keeps on its workers: the profiler stopped while it trains, and restored after;
targets encoded once per fit."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import make_classification

from dask_sgd import optim, schedules
from dask_sgd.blocks import persist_blocks
from dask_sgd.data import TargetEncoder
from dask_sgd.engine import on_worker
from dask_sgd.engine.cluster import ClusterTrainer
from dask_sgd.engine.steps import TrainState
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.penalties import get_penalty


def profiler_running(client) -> dict[str, bool]:
    """Whether each worker's statistical profiler runs (read on the worker's event loop,
    after every callback already queued there)."""

    def running(dask_worker):
        return all(
            dask_worker.periodic_callbacks[name].is_running()
            for name in on_worker.PROFILER_CALLBACKS
        )

    return client.run(running)


@pytest.mark.timeout(60)
def test_the_profiler_stops_while_a_fit_trains_and_restarts_after(client, monkeypatch):
    X, y = make_classification(n_samples=400, n_features=4, random_state=0)
    data = persist_blocks(
        client, da.from_array(X, chunks=100), da.from_array(y, chunks=100), classifier=True, seed=0
    )
    model = LinearModel(4, 1)
    trainer = ClusterTrainer(
        client, data, Objective(model, get_loss("log_loss"), get_penalty("l2", alpha=1e-4)),
        optim.sgd(), schedules.constant(0.1), TargetEncoder(np.array([0, 1])),
        batch_size=10, strategy="local", snapshot_steps=5,
    )  # fmt: skip

    fit_id = trainer.fit_id

    def encoded_targets(dask_worker):  # each partition's encoded targets, as objects
        fit = getattr(dask_worker, on_worker.FITS)[fit_id]
        return {partition: id(targets[0]) for partition, targets in fit.targets.items()}

    assert all(profiler_running(client).values())
    state = TrainState.create(model.init_params(), optim.sgd(), averaged=False)
    try:
        state, *_ = trainer.run_epoch(state, 1.0)  # four segments of 5 steps
        assert not any(profiler_running(client).values())
        first = client.run(encoded_targets)
        state, *_ = trainer.run_epoch(state, 1.0)
        # the targets were encoded once, in the first segment: the same arrays since
        assert client.run(encoded_targets) == first
        assert sorted(p for targets in first.values() for p in targets) == [0, 1, 2, 3]
    finally:
        trainer.close()
        data.release()
    assert all(profiler_running(client).values())
    assert not any(client.run(lambda dask_worker: getattr(dask_worker, on_worker.FITS)).values())

"""Workers that die mid-fit, on a cluster of Nanny-managed worker processes.

A test objective kills its worker process (``os._exit``) at a chosen gradient: on the worker
that holds the parameter-server shard, or on one that does not. A marker file makes it
happen once; the Nanny then starts a fresh worker. Every fit is compared with an undisturbed
fit of the same data and seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_worker
from sklearn.datasets import make_classification

from dask_sgd import optim, schedules
from dask_sgd.blocks import persist_blocks
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.cluster import ClusterTrainer
from dask_sgd.engine.steps import TrainState
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.penalties import get_penalty

N_FEATURES = 5
CALLS: dict[str, int] = {}  # gradients computed in this worker process, per marker


def first_to_create(path: str) -> bool:
    """Create ``path``; False if some process did first (so that only one worker dies)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


@dataclass(frozen=True)
class KillingObjective(Objective):
    """The real objective; the ``at_call``-th gradient on a victim worker kills it (once)."""

    victim: str = ""  # "shard": the worker holding a shard; "no shard": one without
    at_call: int = 0
    marker: str = ""

    def loss_and_grad(self, theta, X, y, sample_weight=None):
        worker = get_worker()
        holds_shard = bool(worker.state.actors)
        if self.victim and (self.victim == "shard") == holds_shard:
            CALLS[self.marker] = CALLS.get(self.marker, 0) + 1
            if CALLS[self.marker] == self.at_call and first_to_create(self.marker):
                os._exit(1)
        return super().loss_and_grad(theta, X, y, sample_weight)


@pytest.fixture(scope="module")
def client():
    """Three worker processes, each under a Nanny that restarts it when it dies."""
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def train(client, *, victim="", at_call=0, marker="", epochs=3, **options):
    """Train logistic regression with plain SGD; return the final training loss and trainer."""
    X, y = make_classification(n_samples=3000, n_features=N_FEATURES, random_state=0)
    model = LinearModel(N_FEATURES, 1)
    loss, penalty = get_loss("log_loss"), get_penalty("l2", alpha=1e-4)
    objective = KillingObjective(model, loss, penalty, victim, at_call, marker)
    data = persist_blocks(
        client, da.from_array(X, chunks=500), da.from_array(y, chunks=500), classifier=True, seed=0
    )
    encoder = TargetEncoder(np.array([0, 1]))
    trainer = ClusterTrainer(
        client,
        data,
        objective,
        optim.sgd(),
        schedules.constant(0.05),
        encoder,
        batch_size=16,
        n_shards=1,
        **options,
    )
    state = TrainState.create(model.init_params(), optim.sgd(), averaged=False)
    records = []
    try:
        for _ in range(epochs):
            state, _, _, extra = trainer.run_epoch(state, 1.0)
            records.append(extra)
    finally:
        trainer.close()
        data.release()
    Y, _ = encoder(y, None, X.dtype)
    total, _ = Objective(model, loss, penalty).loss_and_grad(state.params, X, Y)
    return float(total) / len(X), records


@pytest.fixture(scope="module")
def undisturbed(client):
    return {strategy: train(client, strategy=strategy)[0] for strategy in ("sync", "local", "ssp")}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strategy", ["sync", "local", "ssp"])
def test_a_worker_without_a_shard_dies_and_the_fit_goes_on(client, undisturbed, tmp_path, strategy):
    loss, records = train(
        client, victim="no shard", at_call=40, marker=str(tmp_path / "killed"), strategy=strategy
    )
    assert (tmp_path / "killed").exists()
    assert not any("recoveries" in r for r in records)  # Dask reran the unit; no rollback
    assert abs(loss - undisturbed[strategy]) <= 0.01 * undisturbed[strategy], (loss, undisturbed)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strategy", ["sync", "local", "ssp"])
def test_the_worker_holding_the_shard_dies_and_the_fit_goes_on(
    client, undisturbed, tmp_path, strategy
):
    snapshot_steps = 16
    loss, records = train(
        client,
        victim="shard",
        at_call=40,
        marker=str(tmp_path / "killed"),
        strategy=strategy,
        snapshot_steps=snapshot_steps,
    )
    assert (tmp_path / "killed").exists()
    recoveries = [rec for r in records for rec in r.get("recoveries", [])]
    assert len(recoveries) == 1, records
    assert recoveries[0]["updates_lost"] <= snapshot_steps * (3 if strategy == "ssp" else 1)
    assert abs(loss - undisturbed[strategy]) <= 0.01 * undisturbed[strategy], (loss, undisturbed)

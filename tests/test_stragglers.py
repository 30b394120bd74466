"""Stragglers: one of four workers made five times slower by a test objective.

The objective sleeps in every gradient, so that work is measured in time rather than in a
contended GIL: 20 ms on the fast workers, 100 ms on the slow one, against a few ms of
coordination per step on this in-process cluster (one shard). Throughput is samples
applied per second: with the straggler on four workers, against the same strategy on the
three fast workers alone ("sync" stands in for backup workers, whose three first gradients
per step are what three fast workers give), all measured in this test run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dask.array as da
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

FAST, SLOW = 0.02, 0.1
BATCH = 10


@dataclass(frozen=True)
class TimedObjective(Objective):
    """The real objective, after a sleep: five times longer on worker ``slow_worker``."""

    slow_worker: int | None = None

    def loss_and_grad(self, theta, X, y, sample_weight=None):
        time.sleep(SLOW if get_worker().name == self.slow_worker else FAST)
        return super().loss_and_grad(theta, X, y, sample_weight)


def throughput(
    n_workers: int, slow_worker: int | None, strategy: str, n_samples: int, **options
) -> dict:
    """Applied samples per second over two epochs (after a first one to start up)."""
    X, y = make_classification(n_samples=n_samples, n_features=5, random_state=0)
    model = LinearModel(5, 1)
    objective = TimedObjective(
        model, get_loss("log_loss"), get_penalty("l2", alpha=1e-4), slow_worker
    )
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        data = persist_blocks(
            client,
            da.from_array(X, chunks=(200, 5)),
            da.from_array(y, chunks=200),
            classifier=True,
            seed=0,
        )
        trainer = ClusterTrainer(
            client,
            data,
            objective,
            optim.adagrad(),
            schedules.constant(0.1),
            TargetEncoder(np_classes()),
            batch_size=BATCH,
            n_shards=1,
            strategy=strategy,
            **options,
        )
        state = TrainState.create(model.init_params(), optim.adagrad(), averaged=False)
        try:
            state, *_ = trainer.run_epoch(state, 1.0)
            started, samples, records = time.perf_counter(), 0, []
            for _ in range(2):
                state, _, rows, extra = trainer.run_epoch(state, 1.0)
                samples += rows - extra.get("dropped", 0) * BATCH
                records.append(extra)
            seconds = time.perf_counter() - started
        finally:
            trainer.close()
            data.release()
    return {"rate": samples / seconds, "records": records}


def np_classes():
    import numpy as np

    return np.array([0, 1])


@pytest.fixture(scope="module")
def ideal():
    """The three fast workers alone."""
    return {
        "sync": throughput(3, None, "sync", 3200)["rate"],
        "downpour": throughput(3, None, "downpour", 3200)["rate"],
    }


@pytest.mark.timeout(300)
def test_downpour_and_backup_keep_their_pace_and_sync_does_not(ideal):
    downpour = throughput(4, 3, "downpour", 3200)
    backup = throughput(4, 3, "backup", 3200, n_backup=1)
    sync = throughput(4, 3, "sync", 1200)  # a rate: fewer rows keep the slow run short
    ratios = {
        "downpour": downpour["rate"] / ideal["downpour"],
        "backup": backup["rate"] / ideal["sync"],
        "sync": sync["rate"] / ideal["sync"],
    }
    print("throughput with a 5x straggler / three fast workers alone:", ratios)
    # backup's units all reach the shard through a stream (sync's unit beside the shard
    # skips it), so its steps cost a little more than the fast workers' sync alone
    assert ratios["backup"] >= 0.8, ratios
    assert ratios["downpour"] >= 0.85, ratios
    assert ratios["sync"] < 0.6, ratios
    assert min(ratios["downpour"], ratios["backup"]) > ratios["sync"] + 0.25, ratios
    # the slow worker did less of Downpour's work, and backup dropped its late gradients
    per_worker = sorted(downpour["records"][-1]["samples_per_worker"])
    assert per_worker[0] < 0.5 * per_worker[1]
    assert sum(r["dropped"] for r in backup["records"]) > 0


@pytest.mark.timeout(120)
def test_ssp_runs_ahead_of_the_straggler_as_far_as_its_bound_and_no_further(ideal):
    ssp = throughput(4, 3, "ssp", 1200, staleness_bound=2)
    print(
        "ssp throughput with a 5x straggler / three fast workers alone:",
        ssp["rate"] / ideal["sync"],
    )
    assert max(record["clock_lead_max"] for record in ssp["records"]) == 2
    # the bound paces every worker to the straggler: as many samples from each
    assert len(set(ssp["records"][-1]["samples_per_worker"])) == 1

"""Stragglers: one of four workers made five times slower by a test objective.

The objective sleeps in every gradient, so that work is measured in time rather than in a
contended GIL: 20 ms on the fast workers, 100 ms on the slow one, against a few ms of
coordination per step on this in-process cluster (one shard). Throughput is samples
applied per second, with the straggler against the same four workers all fast: both on
one cluster in one run, their epochs taken in turn, so that a busy machine slows both.
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

    def loss_and_grad_pieces(self, theta, X, y, sample_weight=None):
        time.sleep(SLOW if get_worker().name == self.slow_worker else FAST)
        return super().loss_and_grad_pieces(theta, X, y, sample_weight)


def throughput(strategy: str, n_samples: int, **options) -> dict:
    """Applied samples per second on four workers, with worker 3 five times slower
    ("straggler") and with all four fast ("even"), over two epochs of each taken in turn
    (after a first one to start up); and the straggler's epochs' records."""
    X, y = make_classification(n_samples=n_samples, n_features=5, random_state=0)
    model = LinearModel(5, 1)
    objectives = {
        pace: TimedObjective(
            model, get_loss("log_loss"), get_penalty("l2", alpha=1e-4), slow_worker
        )
        for pace, slow_worker in (("straggler", 3), ("even", None))
    }
    with (
        LocalCluster(
            n_workers=4, threads_per_worker=1, processes=False, dashboard_address=":0"
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
            objectives["even"],
            optim.adagrad(),
            schedules.constant(0.1),
            TargetEncoder(np_classes()),
            batch_size=BATCH,
            n_shards=1,
            strategy=strategy,
            **options,
        )
        state = TrainState.create(model.init_params(), optim.adagrad(), averaged=False)
        samples, seconds = dict.fromkeys(objectives, 0), dict.fromkeys(objectives, 0.0)
        records = []
        try:
            state, *_ = trainer.run_epoch(state, 1.0)
            for pace in ["straggler", "even"] * 2:
                trainer.objective = objectives[pace]
                started = time.perf_counter()
                state, _, rows, extra = trainer.run_epoch(state, 1.0)
                seconds[pace] += time.perf_counter() - started
                samples[pace] += rows - extra.get("dropped", 0) * BATCH
                if pace == "straggler":
                    records.append(extra)
        finally:
            trainer.close()
            data.release()
    return {pace: samples[pace] / seconds[pace] for pace in objectives} | {"records": records}


def np_classes():
    import numpy as np

    return np.array([0, 1])


def slowdown(run: dict) -> float:
    """Throughput with the straggler over throughput with four fast workers."""
    return run["straggler"] / run["even"]


@pytest.mark.timeout(300)
def test_downpour_and_backup_keep_their_pace_and_sync_does_not():
    """Downpour loses the slow worker's share (3.2 of 4 workers' pace: 0.8); backup, which
    counts the first three gradients of every step either way, nothing (1.0); sync waits
    for the straggler at every step (0.2, plus the coordination that does not slow)."""
    downpour = throughput("downpour", 2400)
    backup = throughput("backup", 2400, n_backup=1)
    sync = throughput("sync", 800)  # a rate: fewer rows keep the slow run short
    ratios = {"downpour": slowdown(downpour), "backup": slowdown(backup), "sync": slowdown(sync)}
    print("throughput with a 5x straggler / four fast workers:", ratios)
    assert ratios["backup"] >= 0.75, ratios
    assert ratios["downpour"] >= 0.65, ratios
    assert ratios["sync"] < 0.45, ratios
    assert min(ratios["downpour"], ratios["backup"]) > ratios["sync"] + 0.25, ratios
    # the slow worker did less of Downpour's work, and backup dropped its late gradients
    per_worker = sorted(downpour["records"][-1]["samples_per_worker"])
    assert per_worker[0] < 0.5 * per_worker[1]
    assert sum(r["dropped"] for r in backup["records"]) > 0


@pytest.mark.timeout(120)
def test_ssp_runs_ahead_of_the_straggler_as_far_as_its_bound_and_no_further():
    ssp = throughput("ssp", 800, staleness_bound=2)
    print("ssp throughput with a 5x straggler / four fast workers:", slowdown(ssp))
    assert max(record["clock_lead_max"] for record in ssp["records"]) == 2
    # the bound paces every worker to the straggler: as many samples from each
    assert len(set(ssp["records"][-1]["samples_per_worker"])) == 1

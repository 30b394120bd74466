"""Workers that join or leave during a fit train in it: real worker processes.

A fit on a growing cluster (2, then 4 workers) must end where a fit on 4 workers from the
start ends; a fit on a shrinking one (3, then 2 by retirement) where the undisturbed fit on
3 ends, the retiring worker's shard and blocks handed on at a snapshot.
"""

from __future__ import annotations

import threading
import time

import pytest
from distributed import Client, LocalCluster
from sklearn.metrics import log_loss

from dask_sgd import SGDClassifier
from dask_sgd.datasets import make_linear_classification

PARAMS = dict(loss="log_loss", batch_size=32, max_iter=4, tol=None, random_state=0)


def cluster(n_workers: int) -> LocalCluster:
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0")


def data():
    """80,000 training rows in 16 blocks, and 20,000 held-out rows."""
    X, y = make_linear_classification(100_000, 10, chunk_rows=5_000, random_state=4)
    return X[:80_000], y[:80_000], X[80_000:].compute(), y[80_000:].compute()


def actor_keys(dask_scheduler) -> list:
    return [key for key, ts in dask_scheduler.tasks.items() if ts.actor]


def held_out_loss(clf, X, y) -> float:
    return log_loss(y, clf.predict_proba(X))


def when_training(client, action) -> threading.Thread:
    """Run ``action`` in a thread once the next fit has published its first segment."""
    published = len(client.get_events("dask-sgd"))

    def wait_then_act():
        deadline = time.monotonic() + 60
        while len(client.get_events("dask-sgd")) == published and time.monotonic() < deadline:
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(240)
def test_workers_that_join_during_a_fit_train_in_it():
    X, y, X_test, y_test = data()
    with cluster(4) as four, Client(four):
        from_the_start = SGDClassifier(**PARAMS, snapshot_seconds=0.5).fit(X, y)
    with cluster(2) as growing, Client(growing) as client:

        def grow():
            growing.scale(4)
            client.wait_for_workers(4, timeout=60)

        thread = when_training(client, grow)
        grown = SGDClassifier(**PARAMS, snapshot_seconds=0.5).fit(X, y)
        thread.join(60)
    changes = [change for record in grown.history_ for change in record.get("membership", [])]
    assert changes and changes[-1]["workers"] == 4, grown.history_
    assert sum(len(change["joined"]) for change in changes) == 2
    last = grown.history_[-1]
    assert last["workers"] == 4 and len(last["samples_per_worker"]) == 4
    assert min(last["samples_per_worker"]) > 0.1 * last["samples"]  # all 4 train
    assert grown.history_[0]["workers"] <= 4
    expected = held_out_loss(from_the_start, X_test, y_test)
    assert abs(held_out_loss(grown, X_test, y_test) - expected) <= 0.01 * expected


@pytest.mark.timeout(240)
def test_a_worker_that_retires_during_a_fit_hands_its_work_on():
    X, y, X_test, y_test = data()
    with cluster(3) as three, Client(three) as client:
        undisturbed = SGDClassifier(**PARAMS, snapshot_seconds=0.5).fit(X, y)
        # the fit left no shard alive: one would hold the next retirement back for minutes
        deadline = time.monotonic() + 10  # the releases reach the scheduler in a moment
        while client.run_on_scheduler(actor_keys):
            assert time.monotonic() < deadline, client.run_on_scheduler(actor_keys)
            time.sleep(0.05)
        retired = []

        def retire():
            def shard_holder(dask_scheduler):
                return next(
                    ws.address for ws in dask_scheduler.workers.values()
                    if any(str(ts.key).startswith("dask-sgd-shard-") for ts in ws.actors)
                )  # fmt: skip

            holder = client.run_on_scheduler(shard_holder)
            client.retire_workers([holder])
            retired.append(holder)

        thread = when_training(client, retire)
        shrunk = SGDClassifier(**PARAMS, snapshot_seconds=0.5).fit(X, y)
        thread.join(60)
    assert retired
    changes = [change for record in shrunk.history_ for change in record.get("membership", [])]
    assert [change["left"] for change in changes] == [retired], shrunk.history_
    moves = [move for record in shrunk.history_ for move in record.get("shard_moves", [])]
    assert [move["shards"] for move in moves] == [[0]]
    assert not any("recoveries" in record for record in shrunk.history_)
    last = shrunk.history_[-1]
    assert last["workers"] == 2 and len(last["samples_per_worker"]) == 2
    expected = held_out_loss(undisturbed, X_test, y_test)
    assert abs(held_out_loss(shrunk, X_test, y_test) - expected) <= 0.01 * expected

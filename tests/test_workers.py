"""Reading the workers' statuses: the scheduler's answer, never the client's cache."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from distributed import Client
from distributed.core import Status

from dask_sgd import optim
from dask_sgd.errors import TrainingFailed
from dask_sgd.ps import ParameterServer
from dask_sgd.workers import running_workers, staying_workers, worker_statuses


@pytest.fixture
def refresh_lands_after_each_fetch(client, monkeypatch):
    """Dask's behaviour, made certain: the client's periodic refresh, which asks for no
    worker's details, lands right after a fetch of ``scheduler_info(n_workers=-1)``."""
    fetch = client._update_scheduler_info

    async def fetch_then_refresh(n_workers=0):
        await fetch(n_workers=n_workers)
        await fetch()  # what the periodic callback runs: n_workers=0

    monkeypatch.setattr(client, "_update_scheduler_info", fetch_then_refresh)
    return client


def test_the_client_cache_can_show_no_worker(refresh_lands_after_each_fetch):
    """The race behind fits that saw every shard "lost" or "no running Dask worker"."""
    assert refresh_lands_after_each_fetch.scheduler_info(n_workers=-1)["workers"] == {}


def test_the_statuses_come_from_the_scheduler_itself(refresh_lands_after_each_fetch):
    statuses = worker_statuses(refresh_lands_after_each_fetch)
    assert len(statuses) == 2 and set(statuses.values()) == {"running"}
    assert staying_workers(refresh_lands_after_each_fetch) == sorted(statuses)


def test_a_closed_client_says_it_lost_the_scheduler(client):
    closed = Client(client.scheduler.address, set_as_default=False)
    closed.close()
    with pytest.raises(TrainingFailed, match="Lost the connection to the Dask scheduler"):
        worker_statuses(closed)


def set_status(client, address: str, status: str) -> None:
    """The scheduler's view of one worker's status, as its status messages would set it."""

    def set_on_scheduler(dask_scheduler, address, status):
        dask_scheduler.workers[address].status = Status[status]

    client.run_on_scheduler(set_on_scheduler, address=address, status=status)


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_a_worker_still_registering_is_waited_for(client):
    """A worker registers as "init" and says it runs a moment later: a fit that starts in
    between deals its blocks over every worker, not over those that had said so."""
    first, second = sorted(worker_statuses(client))
    set_status(client, first, "init")
    try:
        thread = later(0.5, lambda: set_status(client, first, "running"))
        assert staying_workers(client) == [first, second]
        thread.join()
    finally:
        set_status(client, first, "running")


@pytest.mark.timeout(60)
def test_the_shards_wait_for_a_paused_worker_and_say_what_they_waited_for(client, monkeypatch):
    workers = sorted(worker_statuses(client))
    for address in workers:
        set_status(client, address, "paused")
    try:
        with pytest.raises(
            RuntimeError, match=r"No running Dask worker after waiting 1 s .*paused"
        ):
            running_workers(client, timeout=1.0)
        thread = later(0.5, lambda: set_status(client, workers[1], "running"))
        server = ParameterServer.start(client, np.zeros(3), optim.sgd(), n_shards=1)
        try:
            assert [shard._address for shard in server.shards] == [workers[1]]
        finally:
            server.close()
        thread.join()
    finally:
        for address in workers:
            set_status(client, address, "running")

"""Reading the workers' statuses: the scheduler's answer, never the client's cache."""

from __future__ import annotations

import pytest
from distributed import Client

from dask_sgd.errors import TrainingFailed
from dask_sgd.workers import staying_workers, worker_statuses


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

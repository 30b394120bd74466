"""The cluster's workers as dask_sgd sees them: who is there, who stays, who is leaving.

Every layer asks the scheduler the same way, through :func:`worker_statuses`: it fetches
the list and reads that answer. ``Client.scheduler_info()`` fetches it too, but returns the
client's cache, which the client's periodic refresh (``distributed.client.
scheduler-info-interval``) overwrites with an identity that has no workers at all: if the
refresh lands between the fetch and the read, every worker seems gone (all shards "lost",
"no running worker"). ``tests/test_workers.py`` reproduces that.
"""

from __future__ import annotations

from typing import Any

from dask_sgd.errors import TrainingFailed

#: Statuses of a worker that stays: a worker paused for memory keeps its shards and its
#: unit (it resumes once it has spilled), and is not a reason to move anything.
STAYING = frozenset({"running", "paused"})


def worker_statuses(client: Any) -> dict[str, str]:
    """Every worker's address and status ("running", "paused", "closing_gracefully", ...).

    A disconnected client would answer with the last list it had (or none): raise
    :class:`TrainingFailed` instead.
    """
    lost = f"Lost the connection to the Dask scheduler (client {client.status})."
    if client.status != "running":
        raise TrainingFailed(lost)
    try:
        identity = client.sync(client.scheduler.identity, n_workers=-1)
    except (RuntimeError, OSError) as error:
        raise TrainingFailed(lost) from error
    return {address: info["status"] for address, info in identity["workers"].items()}


def staying_workers(client: Any) -> list[str]:
    """The workers that train, sorted: those neither leaving nor gone."""
    return sorted(a for a, status in worker_statuses(client).items() if status in STAYING)


def running_workers(client: Any) -> list[str]:
    """The workers that take new work now, sorted (not paused, not leaving)."""
    return sorted(a for a, status in worker_statuses(client).items() if status == "running")

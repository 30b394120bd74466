"""The cluster's workers as dask_sgd sees them: who is there, who stays, who is leaving.

Every layer asks the scheduler the same way, through :func:`worker_statuses`: it fetches
the list and reads that answer. ``Client.scheduler_info()`` fetches it too, but returns the
client's cache, which the client's periodic refresh (``distributed.client.
scheduler-info-interval``) overwrites with an identity that has no workers at all: if the
refresh lands between the fetch and the read, every worker seems gone (all shards "lost",
"no running worker"). ``tests/test_workers.py`` reproduces that.

A worker that the scheduler has just added is "init" until its first status message
arrives (it registers before it runs): :func:`staying_workers` and :func:`running_workers`
wait for it (up to :data:`REGISTERING_WAIT`), so that a fit on a cluster that is still
starting deals its blocks over every worker, as one a moment later would.
"""

from __future__ import annotations

import time
from typing import Any

from dask_sgd.errors import TrainingFailed

#: Statuses of a worker that stays: a worker paused for memory keeps its shards and its
#: unit (it resumes once it has spilled), and is not a reason to move anything.
STAYING = frozenset({"running", "paused"})

#: Seconds to wait for a worker that is still registering ("init") to say it runs.
REGISTERING_WAIT = 10.0


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


def settled_statuses(client: Any, timeout: float = REGISTERING_WAIT) -> dict[str, str]:
    """:func:`worker_statuses`, once no worker is still registering ("init"), or after
    ``timeout`` seconds (such a worker then counts as neither staying nor running)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = worker_statuses(client)
        if "init" not in statuses.values() or time.monotonic() >= deadline:
            return statuses
        time.sleep(0.05)


def staying_workers(client: Any) -> list[str]:
    """The workers that train, sorted: those neither leaving nor gone."""
    return sorted(a for a, status in settled_statuses(client).items() if status in STAYING)


def running_workers(client: Any, timeout: float = 0.0) -> list[str]:
    """The workers that take new work now, sorted (not paused, not leaving); if there are
    none, wait up to ``timeout`` seconds for one (a paused worker that resumes); raise
    :class:`RuntimeError` naming every worker's status if none came."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = settled_statuses(client)
        running = sorted(a for a, status in statuses.items() if status == "running")
        if running or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if not running and timeout:
        seen = ", ".join(f"{a} {status}" for a, status in sorted(statuses.items())) or "none"
        raise RuntimeError(
            f"No running Dask worker after waiting {timeout:.0f} s (workers: {seen})."
        )
    return running

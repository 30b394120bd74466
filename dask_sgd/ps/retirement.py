"""Graceful retirement of a worker that holds parameter-server shards.

Dask cannot move an actor: its scheduler refuses to retire a worker that holds one, and a
worker that closes itself (``--lifetime``) closes anyway, losing the shard. This scheduler
plugin holds such a retirement back: it marks the worker as closing gracefully, as the
scheduler's own retirement does first (nothing new is scheduled there), and waits until the
trainer, which watches the workers' status, has moved the shards at its next snapshot. Then
the scheduler's own retirement runs and moves the data away.

Dask offers no hook before a retirement: ``SchedulerPlugin.valid_workers_downscaling`` only
filters the workers that the scheduler chooses itself (``Adaptive``), not the ones named to
``retire_workers`` or closing at the end of ``--lifetime``, and the Active Memory Manager's
``RetireWorker`` policy gives up at once on a worker holding an actor. So the plugin wraps
the scheduler's ``retire_workers`` handler, which every graceful retirement goes through,
and gives it back when removed. It also steers ``Adaptive`` to workers without shards. The
trainer registers it for the length of a fit (:mod:`dask_sgd.engine.plugins`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from distributed import SchedulerPlugin
from distributed.core import Status

from dask_sgd.ps.server import SHARD_KEY_PREFIX

logger = logging.getLogger(__name__)


class ShardRetirement(SchedulerPlugin):
    """Holds a retirement back until the retiring workers' shards have moved (at most
    ``timeout`` seconds; then the scheduler's retirement runs as it would have)."""

    name = "dask-sgd-retirement"
    idempotent = True

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.fits: set[str] = set()  # the fits that use it (see dask_sgd.engine.plugins)

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.retire = scheduler.handlers["retire_workers"]
        scheduler.handlers["retire_workers"] = self.retire_workers

    async def close(self) -> None:
        if self.scheduler.handlers.get("retire_workers") == self.retire_workers:
            self.scheduler.handlers["retire_workers"] = self.retire

    def valid_workers_downscaling(self, scheduler: Any, workers: list) -> list:
        """Scaling down, prefer workers without shards: theirs would have to move."""
        return [ws for ws in workers if not holds_shard(ws)] or workers

    async def retire_workers(self, workers=None, *, names=None, **options) -> dict:
        """The scheduler's ``retire_workers``, once no retiring worker holds a shard."""
        scheduler = self.scheduler
        retire_options = {
            key: options.pop(key) for key in ("close_workers", "remove", "stimulus_id")
            if key in options
        }  # fmt: skip
        if names is not None:
            wanted = {str(name) for name in names}
            leaving = [ws for ws in scheduler.workers.values() if str(ws.name) in wanted]
        else:  # the workers it would choose itself, if none were named
            addresses = workers if workers is not None else scheduler.workers_to_close(**options)
            leaving = [scheduler.workers[a] for a in addresses if a in scheduler.workers]
            workers, options = [ws.address for ws in leaving], {}
        holders = [ws for ws in leaving if holds_shard(ws)]
        if holders:
            await self._wait_for_shards_to_move(holders)
        return await self.retire(workers=workers, names=names, **retire_options, **options)

    async def _wait_for_shards_to_move(self, holders: list) -> None:
        stimulus_id = f"dask-sgd-retire-{time.time()}"
        before = {ws.address: ws.status for ws in holders}
        for ws in holders:
            self.scheduler.handle_worker_status_change(Status.closing_gracefully, ws, stimulus_id)
        logger.info("Retiring %s: waiting for its dask_sgd shards to move", list(before))
        deadline = time.monotonic() + self.timeout
        workers = self.scheduler.workers
        while time.monotonic() < deadline and any(
            ws.address in workers and holds_shard(ws) for ws in holders
        ):
            await asyncio.sleep(0.1)
        for ws in holders:  # the scheduler's retirement sets it again, and restores it on failure
            self.scheduler.handle_worker_status_change(before[ws.address], ws, stimulus_id)


def holds_shard(ws: Any) -> bool:
    """Whether the scheduler's worker state ``ws`` holds a dask_sgd shard actor."""
    return any(str(ts.key).startswith(SHARD_KEY_PREFIX) for ts in ws.actors)

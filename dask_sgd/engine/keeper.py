"""Keeping the parameter server: its start, its snapshots, its recovery and its moves.

Between segments the shards are consistent, and their state is the snapshot: a small
model's comes to the trainer; a large model's stays on the workers, each shard's on its own
and a replica on another (:meth:`~dask_sgd.ps.ParameterServer.keep_snapshot`), and reaches
the client only for a restart, a checkpoint and the end of a fit. If a shard is lost with its
worker, new shards start on the surviving workers from that snapshot (all of them, so that
every shard is at one version) and the segment runs again: at most one segment's steps are
lost. Shards on a worker that retires
gracefully, or on the wrong number of units, restart elsewhere from the snapshot just
taken, losing nothing.

Once the trainer has started averaging (:meth:`ShardKeeper.start_averaging`), shards that
start from a snapshot go on with its average and the number of updates it holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dask_sgd.engine.steps import TrainState
from dask_sgd.engine.strategies import Strategy
from dask_sgd.errors import ShardLost, TrainingFailed
from dask_sgd.optim import GradientTransformation
from dask_sgd.ps import ParameterServer
from dask_sgd.ps.server import KeptSnapshot, ServerState
from dask_sgd.ps.shard import ShardStats
from dask_sgd.sparse.setup import SparseSetup
from dask_sgd.workers import STAYING, worker_statuses

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """A restart of the shards from the snapshot at ``step``."""

    step: int
    steps_redone: int
    updates_lost: int | None  # updates the surviving shards had applied since (None: unknown)
    reason: str


@dataclass(frozen=True)
class ShardMove:
    """Shards that moved off retiring workers at the snapshot of ``step``."""

    step: int
    shards: list[int]


@dataclass
class ShardKeeper:
    """The current parameter server of a fit, and what happened to its shards."""

    client: Any
    strategy: Strategy
    optimizer: GradientTransformation
    n_shards: int | None
    max_recoveries: int
    no_workers_timeout: float
    server: ParameterServer | None = None
    version: int = 0  # the shards' version at the last snapshot
    n_units: int = 0  # the units the current shards serve
    averaging: bool = False  # whether the shards average their updates (from a snapshot on)
    recoveries: list[Recovery] = field(default_factory=list)
    moves: list[ShardMove] = field(default_factory=list)
    _dropped: int = 0  # contributions the current server had dropped at the last snapshot
    kept: KeptSnapshot | None = None  # the last snapshot
    sparse: SparseSetup | None = None  # a fit on sparse input: its shards' lazy penalty

    def start(self, state: TrainState, n_units: int, version: int | None = None) -> None:
        """Shards holding ``state`` for ``n_units`` units, on the running workers, at
        ``version`` (default: the strategy's for a new server)."""
        if version is None:
            version = self.strategy.first_version(state.step)
        average = _average(state) if self.averaging else None
        self.server = ParameterServer.start(
            self.client,
            state.params,
            self.optimizer,
            self.strategy.exchange_rule(n_units, state.step),
            n_shards=self.n_shards,
            opt_state=state.opt_state if self.strategy.server_keeps_opt_state else None,
            version=version,
            average=average,
            n_averaged=state.n_averaged if self.averaging else 0,
            sparse=self.sparse,
        )
        self.version, self.n_units, self._dropped = version, n_units, 0
        self.kept = None  # the old shards' snapshots went with them: ``state`` is the one now

    def start_averaging(self, state: TrainState) -> None:
        """From the snapshot ``state`` on, the shards average every update they apply, going
        on from its average of ``n_averaged`` updates; shards that start from a later
        snapshot go on with its average. A new average (``n_averaged=0``) needs none of the
        state's arrays: it may be a snapshot kept on the workers."""
        average = _average(state) if state.n_averaged else None
        try:
            self.server.start_averaging(average, state.n_averaged)
        except (OSError, RuntimeError) as error:  # the scheduler or a shard's worker lost?
            self.raise_if_lost(grace=2.0, cause=error)
            raise
        self.averaging = True

    def restart(self, state: TrainState, n_units: int) -> bool:
        """New shards from the snapshot ``state`` (just taken), for ``n_units`` units; the
        old ones close. False (and the old ones stay) if none could start."""
        old = self.server
        try:
            self.start(state, n_units, self.version)
        except (RuntimeError, OSError) as error:  # no other worker
            logger.warning("The parameter-server shards could not restart: %r", error)
            self.server = old
            return False
        old.close()
        return True

    def snapshot(self) -> tuple[ServerState | None, list[ShardStats]]:
        """A consistent snapshot of the shards (θ, optimizer state, version, average), taken
        after a segment, and their statistics; the version becomes the snapshot's. A small
        model's state comes with them; a large model's stays on the workers (None here:
        :meth:`kept_state` brings it, for a restart, a checkpoint or the end of a fit)."""
        kept_version = None if self.kept is None else self.kept.version
        kept, stats = self.server.keep_snapshot(self.client, kept_version)
        self.kept, self.version = kept, kept.version
        return (kept.state(self.client) if kept.in_client else None), stats

    def kept_state(self) -> ServerState:
        """The last snapshot's state, in the client."""
        return self.kept.state(self.client)

    def dropped_since_last_snapshot(self, stats: list[ShardStats]) -> int:
        """Contributions the shards dropped since the last snapshot (late backup pushes)."""
        dropped = max(shard.dropped for shard in stats)
        dropped, self._dropped = dropped - self._dropped, dropped
        return dropped

    # --- lost and leaving workers ----------------------------------------------------------------

    def lost_shards(self) -> list[int]:
        alive = worker_statuses(self.client)
        return [i for i, shard in enumerate(self.server.shards) if shard._address not in alive]

    def raise_if_lost(self, grace: float = 0.0, cause: BaseException | None = None) -> None:
        """Raise :class:`ShardLost` if a shard's worker has left (waiting up to ``grace``
        seconds for the scheduler to notice); the other shards are aborted first."""
        deadline = time.monotonic() + grace
        while True:
            lost = self.lost_shards()
            if lost:
                self.abort(lost)
                raise ShardLost(
                    f"Parameter-server shard(s) {lost} lost with their worker(s)"
                ) from (cause)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def abort(self, lost: list[int] = ()) -> None:
        """Release every unit that waits on a shard still alive."""
        self.server.abort("a training unit failed or a shard was lost", skip=lost)

    def recover(self, state: TrainState, version: int, n_steps: int, reason: str) -> None:
        """New shards on the surviving workers, holding the snapshot ``state`` at ``version``;
        the segment's ``n_steps`` steps will be redone."""
        while True:
            if len(self.recoveries) >= self.max_recoveries:
                raise TrainingFailed(
                    f"{len(self.recoveries)} parameter-server recoveries in this fit, the most "
                    f"allowed; the last: {reason}"
                )
            logger.warning("%s; restarting from the snapshot at step %d", reason, state.step)
            self.recoveries.append(
                Recovery(state.step, n_steps, self._updates_since(version), reason)
            )
            self.server.close()
            self.wait_for_workers()
            try:
                self.start(state, self.n_units, version)
                return
            except (RuntimeError, OSError) as error:  # a worker died as the shards started
                reason = f"starting the shards failed: {error!r}"

    def leaving_shards(self) -> list[int]:
        """The shards on a worker that retires (not one that is only paused)."""
        worker_status = worker_statuses(self.client)
        return [
            i for i, shard in enumerate(self.server.shards)
            if worker_status.get(shard._address, "running") not in STAYING
        ]  # fmt: skip

    def _updates_since(self, version: int) -> int | None:
        if not self.server.shards:
            return None
        try:
            versions = self.server.versions(skip=self.lost_shards())
        except (RuntimeError, OSError):  # another shard was lost meanwhile
            return None
        return max([v - version for v in versions], default=None)

    def wait_for_workers(self) -> None:
        """Wait (up to ``no_workers_timeout``) until some worker is there to take shards."""
        deadline = time.monotonic() + self.no_workers_timeout
        while not worker_statuses(self.client):
            if time.monotonic() >= deadline:
                raise TrainingFailed(
                    f"No Dask worker for {self.no_workers_timeout:.0f} s: all workers were lost."
                )
            time.sleep(0.2)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.kept = None


def _average(state: TrainState) -> Any:
    """The state's running mean of θ (zeros where it keeps none: a new average)."""
    return np.zeros_like(state.params) if state.average is None else state.average

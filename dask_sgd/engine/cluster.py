"""Training on Dask partitions with a sharded parameter server, one strategy at a time.

Each epoch the client runs segments of at most ``snapshot_steps`` steps; for each it submits
one long-running unit per worker (:mod:`dask_sgd.engine.units`) and waits once. Between
segments the parameter server's state is consistent, and the client keeps it: if a shard
is lost with its worker, the shards are recreated on the surviving workers from that
snapshot and the segment runs again, so at most ``snapshot_steps`` steps are lost. A unit
lost with its worker (no shard on it) is rerun by Dask elsewhere and nothing is lost.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import replace
from typing import Any

import dask.config
import numpy as np
from distributed import KilledWorker, wait

from dask_sgd import defaults
from dask_sgd.blocks import DaskTrainingData, worker_statuses
from dask_sgd.dashboard import TOPIC as DASHBOARD_TOPIC
from dask_sgd.dashboard import show_on_dashboard
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.steps import TrainState
from dask_sgd.engine.units import UnitPlan, train_unit
from dask_sgd.errors import NonFiniteParameters, ShardLost, TrainingFailed
from dask_sgd.models import Objective
from dask_sgd.optim import GradientTransformation
from dask_sgd.ps import ParameterServer
from dask_sgd.ps.retirement import watch_retirements
from dask_sgd.ps.server import mean_states
from dask_sgd.schedules import Schedule, batch_scaling_factor, scaled, warmup

logger = logging.getLogger(__name__)


class ClusterTrainer:
    """Runs epochs of a strategy on persisted blocks; one parameter server per fit.

    "sync" and "backup": the learning rate follows the linear scaling rule (``k`` gradients
    of ``batch_size`` rows per step make an effective batch ``k`` times the reference
    ``batch_size``; ``k`` excludes the ``n_backup`` backup workers), or the square-root
    rule for optimizers that normalize the gradient (Adam, RMSProp, Adagrad), reached by a
    gradual warmup from the unscaled rate over ``warmup_epochs``; both can be turned off.
    "local", "downpour" and "ssp": each step uses ``batch_size`` rows, so the rate is
    unscaled. ``batch_size="auto"`` is chosen from the rows per worker
    (:func:`dask_sgd.defaults.batch_size`).

    Every strategy runs one unit per worker for each segment of an epoch. For "downpour" the
    segment's steps are a budget on the parameter server, which the units claim about
    ``claim_seconds`` of work at a time: a slow worker simply does less of the work.
    """

    def __init__(
        self,
        client: Any,
        data: DaskTrainingData,
        objective: Objective,
        optimizer: GradientTransformation,
        schedule: Schedule,
        encoder: TargetEncoder,
        *,
        batch_size: int | str,
        n_shards: int | None = None,
        scale_learning_rate: bool = True,
        warmup_epochs: float = 1.0,
        strategy: str = "sync",
        local_steps: int = 8,
        n_fetch: int = 1,
        n_push: int = 1,
        staleness_aware: bool = False,
        staleness_bound: int = 0,
        claim_seconds: float = 0.05,
        elastic_rate: float | None = None,
        n_backup: int = 1,
        snapshot_steps: int = 1000,
        snapshot_seconds: float = 30.0,
        max_recoveries: int = 10,
        no_workers_timeout: float | None = None,
    ) -> None:
        self.client = client
        self.objective = objective
        self.optimizer = optimizer
        self.encoder = encoder
        self.n_shards = n_shards
        self.strategy = strategy
        self.local_steps = local_steps
        self.n_fetch, self.n_push, self.staleness_aware = n_fetch, n_push, staleness_aware
        self.staleness_bound = staleness_bound
        self.claim_seconds = claim_seconds
        self.elastic_rate = elastic_rate
        if no_workers_timeout is None:  # seconds without a worker before a fit gives up
            no_workers_timeout = dask.config.get("dask-sgd.no-workers-timeout", 60.0)
        self.no_workers_timeout = float(no_workers_timeout)
        self._wait_for_workers()  # the workers that computed the blocks may have left
        self.units = data.units(client)
        self.batch_size = batch_size = defaults.batch_size(
            batch_size, data.n_rows / len(self.units)
        )
        # "backup": each step applies the first k - n_backup gradients to arrive
        k = len(self.units) - (min(n_backup, len(self.units) - 1) if strategy == "backup" else 0)
        self.n_contributors = k
        self.steps_per_epoch = max(1, math.ceil(data.n_rows / (k * batch_size)))
        factor = 1
        if scale_learning_rate and strategy in ("sync", "backup"):
            factor = batch_scaling_factor(
                k * batch_size, batch_size, normalized=optimizer.normalizes
            )
        self.schedule = warmup(
            scaled(schedule, factor), round(warmup_epochs * self.steps_per_epoch), 1 / factor
        )
        # "local" averages at the end of a segment: segments are whole rounds
        self.steps_per_round = local_steps if strategy == "local" else 1
        self.max_segment_steps = max(snapshot_steps // self.steps_per_round, 1) * (
            self.steps_per_round
        )
        self.segment_steps = self.max_segment_steps  # shorter if steps are slow
        self.snapshot_seconds = snapshot_seconds
        self.max_recoveries = max_recoveries
        self.carries: list[dict] | None = None
        self.rounds = 0  # "local": averaging rounds done, the shards' version
        self.version = 0  # the shards' version at the last snapshot
        self.dropped = 0  # "backup": late pushes the current server dropped so far
        self.pushes: list[int] = []  # pushes each shard of the current server has applied
        self.recoveries: list[dict] = []
        self.shard_moves: list[dict] = []
        self.server: ParameterServer | None = None
        watch_retirements(client)
        show_on_dashboard(client)
        self.fit_id = uuid.uuid4().hex[:8]  # the dashboard page shows the latest fit

    def run_epoch(self, state: TrainState, lr_factor: float):
        """One epoch; returns the new state, summed loss, rows, and history fields."""
        if self.server is None:
            sync = self.strategy in ("sync", "backup")  # the shards' version is the step
            self.version = state.step if sync else 0
            self.carries = [
                {"cursor": (0, 0), "opt_state": None if sync else state.opt_state}
                for _ in self.units
            ]
            self._start_server(state)
        results, done, dropped = [], 0, 0
        recoveries, moves = len(self.recoveries), len(self.shard_moves)
        while done < self.steps_per_epoch:
            n_steps = min(self.segment_steps, self.steps_per_epoch - done)
            state, segment, segment_dropped = self._run_segment(state, lr_factor, n_steps)
            results += segment
            dropped += segment_dropped
            done += n_steps
        rows_per_unit = [0] * len(self.units)
        for unit, result in results:
            rows_per_unit[unit] += result["rows"]
        extra = {"samples_per_worker": rows_per_unit}
        if self.strategy == "backup":
            extra["dropped"] = dropped
        staleness = [s for _, r in results for s in r.get("staleness", [])]
        if staleness:
            extra |= {"staleness_mean": float(np.mean(staleness)), "staleness_max": max(staleness)}
        if self.strategy == "ssp":
            extra["clock_lead_max"] = max(r.get("lead", 0) for _, r in results)
        if len(self.recoveries) > recoveries:
            extra["recoveries"] = self.recoveries[recoveries:]
        if len(self.shard_moves) > moves:
            extra["shard_moves"] = self.shard_moves[moves:]
        loss_sum = sum(r["loss_sum"] for _, r in results)
        return state, loss_sum, sum(rows_per_unit), extra

    def _start_server(self, state: TrainState) -> None:
        """Shards holding ``state`` at the last snapshot's version, on the running workers."""
        self.server = ParameterServer.start(
            self.client,
            state.params,
            self.optimizer,
            n_shards=self.n_shards,
            n_contributors=self.n_contributors,
            opt_state=state.opt_state if self.strategy != "local" else None,
            version=self.version,
            clock=state.step,
        )
        self.dropped = 0

    def _run_segment(self, state: TrainState, lr_factor: float, n_steps: int):
        """``n_steps`` steps from the snapshot ``state``; rerun from it if a shard is lost.
        Then, at the new snapshot, shards on retiring workers move."""
        snapshot = (self.carries, self.rounds, self.version)
        while True:
            started = time.perf_counter()
            try:
                outcome = self._try_segment(state, lr_factor, n_steps)
                break
            except ShardLost as lost:
                self._recover(state, snapshot, n_steps, str(lost))
        seconds = time.perf_counter() - started
        self._pace_segments(n_steps, seconds)
        self._publish(outcome[0], outcome[1], seconds)
        self._move_shards_off_retiring_workers(outcome[0])
        return outcome

    def _publish(self, state: TrainState, results: list, seconds: float) -> None:
        """The segment's record for the dashboard page (:mod:`dask_sgd.dashboard`)."""
        rows = sum(result["rows"] for _, result in results)
        rates: dict[str, float] = {}
        for unit, result in results:
            worker = self.units[unit][0]
            rates[worker] = rates.get(worker, 0.0) + result["rows"] / max(seconds, 1e-9)
        record = {
            "fit": self.fit_id,
            "strategy": self.strategy,
            "time": time.time(),
            "step": int(state.step),
            "loss": float(sum(result["loss_sum"] for _, result in results) / max(rows, 1)),
            "rows_per_second": rates,
            "pushes": self.pushes,
        }
        staleness = [s for _, result in results for s in result.get("staleness", [])]
        if staleness:
            record["staleness_mean"] = float(np.mean(staleness))
        self.client.log_event(DASHBOARD_TOPIC, record)

    def _pace_segments(self, n_steps: int, seconds: float) -> None:
        """Segments of about ``snapshot_seconds`` at the last one's pace (whole rounds, at
        most ``snapshot_steps``)."""
        paced = int(n_steps * self.snapshot_seconds / max(seconds, 1e-6))
        rounds = max(paced // self.steps_per_round, 1)
        self.segment_steps = min(rounds * self.steps_per_round, self.max_segment_steps)

    def _move_shards_off_retiring_workers(self, state: TrainState) -> None:
        """Shards on a worker that retires gracefully restart elsewhere from the snapshot
        ``state`` just taken, losing nothing (see :mod:`dask_sgd.ps.retirement`)."""
        statuses = self._worker_statuses()
        leaving = [
            i for i, shard in enumerate(self.server.shards)
            if statuses.get(shard._address, "running") != "running"
        ]  # fmt: skip
        if not leaving:
            return
        old = self.server
        try:
            self._start_server(state)
        except (RuntimeError, OSError) as error:  # no other worker: they stay
            logger.warning("Shards %s cannot leave their retiring worker: %r", leaving, error)
            self.server = old
            return
        old.close()
        self.shard_moves.append({"step": state.step, "shards": leaving})

    def _recover(self, state: TrainState, snapshot: tuple, n_steps: int, reason: str) -> None:
        """New shards on the surviving workers, holding the snapshot ``state``; the segment's
        ``n_steps`` steps will be redone. ``history_`` records the updates the surviving
        shards had applied since the snapshot (None when no shard survived to tell)."""
        while True:
            if len(self.recoveries) >= self.max_recoveries:
                raise TrainingFailed(
                    f"{len(self.recoveries)} parameter-server recoveries in this fit, the most "
                    f"allowed; the last: {reason}"
                )
            logger.warning("%s; restarting from the snapshot at step %d", reason, state.step)
            self.recoveries.append(
                {"step": state.step, "steps_redone": n_steps,
                 "updates_lost": self._updates_since(snapshot[2]), "reason": reason}
            )  # fmt: skip
            self.server.close()
            self.carries, self.rounds, self.version = snapshot
            self._wait_for_workers()
            try:
                self._start_server(state)
                return
            except (RuntimeError, OSError) as error:  # a worker died as the shards started
                reason = f"starting the shards failed: {error!r}"

    def _try_segment(self, state: TrainState, lr_factor: float, n_steps: int):
        plan = UnitPlan(
            self.objective,
            self.encoder,
            scaled(self.schedule, lr_factor),
            self.batch_size,
            first_step=state.step,
            n_steps=n_steps,
            strategy=self.strategy,
            optimizer=self.optimizer,
            local_steps=self.local_steps,
            first_round=self.rounds,
            n_fetch=self.n_fetch,
            n_push=self.n_push,
            staleness_aware=self.staleness_aware,
            staleness_bound=self.staleness_bound,
            claim_seconds=self.claim_seconds,
            elastic_rate=self.elastic_rate,
            n_units=len(self.units),
        )
        steps = n_steps  # per unit; "downpour": in all, claimed by the units
        try:
            if self.strategy == "downpour":
                steps *= len(self.units)
                self.server.open_budget(state.step, steps)
            results = self._run_one_unit_per_worker(plan)
            self._raise_if_shards_lost()
            params, opt_state, version = self.server.state()
            stats = self.server.stats()
            self.pushes = [int(shard["pushes"]) for shard in stats]  # for the dashboard
            dropped = self._dropped_since_last_segment(stats)
        except (ShardLost, TrainingFailed, NonFiniteParameters):
            raise
        except Exception as error:  # a unit or a call failed: was it a lost shard?
            self._raise_if_shards_lost(grace=2.0, cause=error)
            if isinstance(error, KilledWorker):
                raise TrainingFailed(
                    f"Workers kept dying under a training task: {error}"
                ) from error
            raise
        if self.strategy == "local":  # the optimizer states live on the units: keep their mean
            self.rounds = version
            opt_state = mean_states([carry["opt_state"] for carry in self.carries])
        self.version = version
        new_state = replace(
            state,
            params=params,
            opt_state=opt_state,
            step=state.step + steps,
            samples=state.samples + sum(r["rows"] for _, r in results),
        )
        return new_state, results, dropped

    def _dropped_since_last_segment(self, stats: list[dict]) -> int:
        """ "backup": the late pushes the shards dropped in this segment (0 otherwise)."""
        if self.strategy != "backup":
            return 0
        dropped = max(shard["dropped"] for shard in stats)
        dropped, self.dropped = dropped - self.dropped, dropped
        return dropped

    def _submit(self, unit: int, plan: UnitPlan, carry: dict):
        worker, blocks, partitions = self.units[unit]
        return self.client.submit(
            train_unit,
            blocks,
            partitions,
            self.server.shards,
            self.server.ranges,
            plan,
            unit,
            carry,
            key=f"dask-sgd-{self.strategy}-step{plan.first_step}-unit{unit}-{self.server.name}",
            workers=[worker],
            allow_other_workers=True,
            pure=False,
        )

    def _run_one_unit_per_worker(self, plan: UnitPlan) -> list[tuple[int, dict]]:
        """Each worker's unit runs the whole segment; the units wait for each other."""
        futures = [self._submit(unit, plan, self.carries[unit]) for unit in range(len(self.units))]
        try:
            self._wait_for_units(futures)
            errors = [future.exception() for future in futures if future.status == "error"]
            refused = [error for error in errors if isinstance(error, NonFiniteParameters)]
            if refused:  # the cause; the other units failed because they were aborted
                raise min(refused, key=lambda error: error.step)
            results = self.client.gather(futures)
        finally:
            # Release now, not when garbage collected: a reference cycle (through a timed-out
            # wait's traceback) can hold these futures, and Dask reruns a finished unit that
            # is still wanted when the worker holding its result dies.
            for future in futures:
                future.release()
        self.carries = [r["carry"] for r in results]
        return list(enumerate(results))

    def _wait_for_units(self, futures: list) -> None:
        """Wait for the units, watching the shards' workers and the scheduler.

        If a unit fails, the others, which may wait for its pushes, are released by aborting
        the shards. If a shard's worker is gone, raise :class:`ShardLost` at once: calls to a
        dead worker would otherwise wait for a connection timeout.
        """
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            if any(f.status == "error" for f in done):
                self._abort(self._lost_shards())
                return
            self._raise_if_shards_lost()

    def _worker_statuses(self) -> dict[str, str]:
        """Every worker's address and status ("running", "closing_gracefully", ...)."""
        lost = f"Lost the connection to the Dask scheduler (client {self.client.status})."
        try:
            return worker_statuses(self.client)
        except (RuntimeError, OSError) as error:
            raise TrainingFailed(lost) from error

    def _lost_shards(self) -> list[int]:
        alive = self._worker_statuses()
        return [i for i, shard in enumerate(self.server.shards) if shard._address not in alive]

    def _raise_if_shards_lost(self, grace: float = 0.0, cause: BaseException | None = None):
        """Raise :class:`ShardLost` if a shard's worker has left (waiting up to ``grace``
        seconds for the scheduler to notice)."""
        deadline = time.monotonic() + grace
        while True:
            lost = self._lost_shards()
            if lost:
                self._abort(lost)
                raise ShardLost(
                    f"Parameter-server shard(s) {lost} lost with their worker(s)"
                ) from cause
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def _abort(self, lost: list[int]) -> None:
        """Release every unit that waits on a shard still alive."""
        self.server.abort("a training unit failed or a shard was lost", skip=lost)

    def _updates_since(self, version: int) -> int | None:
        """Updates the surviving shards applied since ``version``: what the rollback undoes
        (None if no shard can tell)."""
        if not self.server.shards:
            return None
        try:
            versions = self.server.versions(skip=self._lost_shards())
        except (RuntimeError, OSError):  # another shard was lost meanwhile
            return None
        return max([v - version for v in versions], default=None)

    def _wait_for_workers(self) -> None:
        """Wait (up to ``no_workers_timeout``) until some worker is there to take the shards."""
        deadline = time.monotonic() + self.no_workers_timeout
        while not self._worker_statuses():
            if time.monotonic() >= deadline:
                raise TrainingFailed(
                    f"No Dask worker for {self.no_workers_timeout:.0f} s: all workers were lost."
                )
            time.sleep(0.2)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

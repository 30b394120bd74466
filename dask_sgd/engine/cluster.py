"""Training on Dask partitions with a sharded parameter server, any strategy.

Each epoch the client runs segments of at most ``snapshot_steps`` steps; for each it
submits one long-running unit per worker and waits once (:mod:`.supervisor`). Between
segments the parameter server's state is consistent, and the client keeps it as the
snapshot (:mod:`.keeper`): a lost shard restarts from it, so at most one segment is
redone, and a unit lost with its worker is rerun by Dask elsewhere. Between segments the
trainer also follows the cluster: workers that joined get units and blocks, the units of
workers that left hand their blocks on, and the learning rate's scaling follows the number
of workers. What differs between strategies is the strategy's (:mod:`.strategies`).

Averaged SGD: the trainer ends a segment at the exchange round before the one whose rows
reach the averaging start, and from then on the shards keep the running mean of every update
they apply; the snapshots carry it, and it is the fit's result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections import Counter
from concurrent.futures import CancelledError
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import dask.config
import numpy as np
from distributed import KilledWorker

from dask_sgd import defaults
from dask_sgd.blocks import DaskTrainingData, Unit
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.keeper import ShardKeeper, ShardMove
from dask_sgd.engine.metrics import publish_segment, rows_per_worker
from dask_sgd.engine.on_worker import forget_on_workers
from dask_sgd.engine.plugins import attach_plugins, detach_plugins
from dask_sgd.engine.steps import TrainState
from dask_sgd.engine.strategies import Carry, Strategy, UnitResult, get_strategy
from dask_sgd.engine.supervisor import UnitSupervisor
from dask_sgd.engine.units import (
    SegmentPlan,
    final_penalty_of,
    sample_objective_of,
    sparse_sample_loss_of,
)
from dask_sgd.errors import NonFiniteParameters, ShardLost, TrainingFailed
from dask_sgd.models import Objective
from dask_sgd.optim import GradientTransformation
from dask_sgd.ps.server import ServerState, shipped
from dask_sgd.schedules import Schedule, scaled, warmup
from dask_sgd.sparse.setup import SparseSetup
from dask_sgd.workers import staying_workers

logger = logging.getLogger(__name__)

#: When the number of workers changes mid-fit, the rate moves to the new scaling over this
#: fraction of ``warmup_epochs`` (a short warmup: the model is no longer at its start).
REWARMUP_FRACTION = 0.25
#: rows per unit on which an averaged model's objective is measured after every epoch
SAMPLE_ROWS = 8192


@dataclass(frozen=True)
class MembershipChange:
    """The units changed at the snapshot of ``step``: workers that joined or left."""

    step: int
    workers: int  # training from this step on
    joined: list[str]
    left: list[str]


@dataclass(frozen=True)
class Segment:
    """One segment's units, their results and what the shards dropped."""

    units: list[Unit]
    results: list[UnitResult]
    dropped: int  # contributions the shards dropped (late backup pushes)
    pushes: list[int]  # each shard's pushes so far


class ClusterTrainer:
    """Runs epochs of a strategy on persisted blocks; one parameter server per fit.

    The learning rate follows the strategy's scaling for the ``k`` minibatches a step
    applies (``scale_learning_rate``), reached by a gradual warmup from the unscaled rate
    over ``warmup_epochs``; when ``k`` changes with the workers, the rate moves to the new
    scaling over a quarter of that. ``batch_size="auto"`` is chosen from the rows per
    worker, at most ``largest_auto_batch`` (:func:`dask_sgd.defaults.batch_size`). ``strategy`` is a
    :class:`~dask_sgd.engine.strategies.Strategy`, or a name with its ``options``.
    ``follow_workers=False`` keeps the units that the fit started with.

    ``average`` is scikit-learn's: averaging starts with the update whose rows bring the
    samples seen to ``average`` (``True``: 1, the first update; 0: no averaging), and from
    then on the shards average every update they apply (a step, an averaging round or a
    push, as the strategy's rule applies them). The segment before ends where that update's
    exchange round begins, so that the snapshot where averaging starts is taken there.
    ``average_each_epoch`` restarts the average at the start of every later epoch (tail
    averaging: the model is the mean over its last epoch). With averaging on, each epoch's
    history also gets ``averaged_objective``: the objective at the averaged parameters on
    the first ``SAMPLE_ROWS`` rows of each unit's first block.

    The constructor only configures; :meth:`start` waits for workers, registers the
    scheduler plugins and places the blocks (the first epoch starts it if need be).
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
        largest_auto_batch: int = defaults.DASK_BATCH_SIZE,
        strategy: Strategy | str = "sync",
        n_shards: int | None = None,
        scale_learning_rate: bool = True,
        warmup_epochs: float = 1.0,
        snapshot_steps: int = 1000,
        snapshot_seconds: float = 30.0,
        max_recoveries: int = 10,
        no_workers_timeout: float | None = None,
        follow_workers: bool = True,
        average: int | bool = 0,
        average_each_epoch: bool = False,
        **options: Any,
    ) -> None:
        if isinstance(strategy, str):
            strategy = get_strategy(strategy, **options)
        elif options:
            raise TypeError(f"Options {sorted(options)} go with a strategy's name, not {strategy}.")
        self.sparse = SparseSetup.of(objective) if data.sparse else None
        if self.sparse is not None:
            strategy = strategy.on_sparse_input()
        self.client, self.data = client, data
        self.objective, self.optimizer, self.encoder = objective, optimizer, encoder
        self.base_schedule = schedule
        self.strategy = strategy
        self.batch_setting, self.largest_auto_batch = batch_size, largest_auto_batch
        self.scale_learning_rate, self.warmup_epochs = scale_learning_rate, warmup_epochs
        round_steps = strategy.round_steps()  # a segment is whole exchange rounds
        self.max_segment_steps = max(snapshot_steps // round_steps, 1) * round_steps
        # shorter if steps are slow, or if the strategy measures its pace in a first segment
        self.segment_steps = min(
            self.max_segment_steps, strategy.calibration_steps() or self.max_segment_steps
        )
        self.snapshot_seconds = snapshot_seconds
        self.follow_workers = follow_workers
        self.average_start = int(average)  # samples; True is 1
        self.average_each_epoch = average_each_epoch
        self._averaging_reach: int | None = None  # steps to the first averaged one
        if no_workers_timeout is None:  # seconds without a worker before a fit gives up
            no_workers_timeout = dask.config.get("dask-sgd.no-workers-timeout", 60.0)
        self.keeper = ShardKeeper(
            client, strategy, optimizer, n_shards, max_recoveries, float(no_workers_timeout),
            sparse=self.sparse,
        )  # fmt: skip
        self.supervisor = UnitSupervisor(client, self.keeper, strategy)
        self.fit_id = uuid.uuid4().hex[:8]  # the dashboard page shows the latest fit
        self.units: list[Unit] = []
        self.carries: list[Carry] = []
        self.membership: list[MembershipChange] = []
        self.started = False

    @property
    def server(self):
        """The current parameter server (None before the first epoch and after close)."""
        return self.keeper.server

    def start(self) -> ClusterTrainer:
        """Wait for a worker, register the scheduler plugins, deal the blocks to units, and
        fix the batch size, the steps per epoch and the learning rate for them."""
        if self.started:
            return self
        self.keeper.wait_for_workers()  # the workers that computed the blocks may have left
        attach_plugins(self.client, self.fit_id)
        self.started = True
        self.units = self.data.units(self.client)
        self.strategy.check(len(self.units))
        self.batch_size = defaults.batch_size(
            self.batch_setting, self.data.n_rows / len(self.units), self.largest_auto_batch
        )
        self._scale_for_units(step=0)
        return self

    def _scale_for_units(self, step: int) -> None:
        """Steps per epoch and the learning rate for the current units, from ``step`` on:
        the strategy's scaling, reached over a warmup from the rate before ``step``."""
        k = self.strategy.contributors(len(self.units))
        self.steps_per_epoch = max(1, math.ceil(self.data.n_rows / (k * self.batch_size)))
        factor = 1.0
        if self.scale_learning_rate:
            factor = self.strategy.rate_factor(k, self.batch_size, self.optimizer)
        if step == 0:
            start_factor, epochs = 1.0, self.warmup_epochs
        else:  # from the factor in use now
            start_factor = self.schedule(step) / self.base_schedule(step)
            epochs = REWARMUP_FRACTION * self.warmup_epochs
        self.schedule = warmup(
            scaled(self.base_schedule, factor),
            round(epochs * self.steps_per_epoch),
            start_factor / factor,
            start_step=step,
        )

    def run_epoch(self, state: TrainState, lr_factor: float):
        """One epoch; returns the new state, summed loss, rows, and history fields."""
        self.start()
        recoveries, moves, changes = (
            len(self.keeper.recoveries), len(self.keeper.moves), len(self.membership)
        )  # fmt: skip
        if self.average_each_epoch and state.n_averaged:  # a new average for this epoch
            average = None if state.params is None else np.zeros_like(state.params)
            state = replace(state, average=average, n_averaged=0)
            if self.keeper.averaging:
                state = self._start_averaging(state)
        if self.keeper.server is None:
            self.carries = [self._start_carry(state, unit, len(self.units)) for unit in self.units]
            self.keeper.start(state, len(self.units))
        segments: list[Segment] = []
        done = Fraction(0)  # of the epoch; the steps per epoch change with the workers
        while done < 1:
            n_steps = min(self.segment_steps, math.ceil((1 - done) * self.steps_per_epoch))
            state, n_steps = self._until_averaging(state, n_steps)
            done += Fraction(n_steps, self.steps_per_epoch)
            state, segment = self._run_segment(state, lr_factor, n_steps)
            if self._averaging_reach is not None:
                self._averaging_reach -= n_steps
            segments.append(segment)
            state = self._after_segment(state)
        # a large model's snapshot stays on the workers: it reaches the client when the fit
        # ends or for a checkpoint (:meth:`in_client`), not at every epoch
        trained = Counter()  # rows per worker
        for segment in segments:
            trained.update(rows_per_worker(segment.units, segment.results))
        results = [result for segment in segments for result in segment.results]
        extra = {
            "samples_per_worker": [trained[worker] for worker in sorted(trained)],
            "workers": len(self.units),
            **self.strategy.history(results, sum(segment.dropped for segment in segments)),
        }
        for field, records in (
            ("recoveries", self.keeper.recoveries[recoveries:]),
            ("shard_moves", self.keeper.moves[moves:]),
            ("membership", self.membership[changes:]),
        ):
            if records:
                extra[field] = [dataclasses.asdict(record) for record in records]
        if self.sparse is not None:  # what sparse pushes and pulls cost, per minibatch
            minibatches = max(sum(result.rows for result in results) / self.batch_size, 1)
            for field in ("bytes_pushed", "bytes_pulled"):
                moved = sum(getattr(result, field) for result in results)
                extra[f"{field}_per_step"] = moved / minibatches
        if state.n_averaged:
            objective = self._averaged_objective(state)
            if objective is not None:
                extra["averaged_objective"] = objective
        loss_sum = sum(result.loss_sum for result in results)
        return state, loss_sum, sum(trained.values()), extra

    def _averaged_objective(self, state: TrainState) -> float | None:
        """The objective of the final (averaged) parameters of the snapshot ``state`` on a
        fixed sample of the training rows (the same every epoch): what the stopping rule
        watches when the model is averaged, since the iterates' own losses go on falling
        while their average no longer moves. A large model's parameters stay on the
        workers: joined on one, or, on sparse input, read from the shards at the entries
        the sample touches, with the penalty each shard computes on its slice. None if a
        sample's worker was lost meanwhile: the rule then judges the epoch by its loss."""
        if state.params is not None:  # once, not in every task
            theta = shipped(self.client, (state.final_params,), None)[0]
            return self._sample_objective(sample_objective_of, theta)
        if self.sparse is None:
            return self._sample_objective(
                sample_objective_of, self.keeper.kept.final_params(self.client)
            )
        server, version = self.keeper.server, self.keeper.version
        penalty = self.client.submit(final_penalty_of, server.refs, version, pure=False)
        loss = self._sample_objective(sparse_sample_loss_of, server.refs, server.ranges, version)
        try:
            return None if loss is None else loss + penalty.result()
        except (CancelledError, KilledWorker, OSError) as error:  # a shard's worker lost
            logger.warning("The averaged model's objective was not measured: %r", error)
            return None

    def _sample_objective(self, task, *arguments) -> float | None:
        """``task(*arguments, block, ...)``'s ``(total, rows)`` on each unit's sample, as
        one mean (None if a worker was lost meanwhile)."""
        futures = [
            self.client.submit(
                task,
                *arguments,
                unit.blocks[0].key,
                self.objective,
                self.encoder,
                SAMPLE_ROWS,
                workers=[unit.worker],
                allow_other_workers=True,
                pure=False,
            )
            for unit in self.units
        ]
        try:
            values = self.client.gather(futures)
        except (CancelledError, KilledWorker, OSError) as error:  # a worker lost with its block
            logger.warning("The averaged model's objective was not measured: %r", error)
            return None
        return sum(value for value, _ in values) / max(sum(rows for _, rows in values), 1)

    def _until_averaging(self, state: TrainState, n_steps: int) -> tuple[TrainState, int]:
        """The snapshot ``state`` and the next segment's steps, ending at the exchange round
        before the step whose rows reach the averaging start; once that round is the
        segment's first, the shards start averaging (from ``state``, which comes with its
        arrays if that took a recovery), and segments are no longer cut."""
        if not self.average_start or self.keeper.averaging:
            return state, n_steps
        if self._averaging_reach is None:  # a step's rows: a minibatch per unit
            rows = self.average_start - state.samples
            self._averaging_reach = math.ceil(rows / (len(self.units) * self.batch_size))
        round_steps = self.strategy.round_steps()
        before = (math.ceil(max(self._averaging_reach, 1) / round_steps) - 1) * round_steps
        if before == 0:  # a new average needs no arrays; going on from one needs its own
            state = self._start_averaging(self.in_client(state) if state.n_averaged else state)
            self._averaging_reach = None
            return state, n_steps
        return state, min(n_steps, before)

    def _start_averaging(self, state: TrainState) -> TrainState:
        """The shards average from the snapshot ``state`` on; if a shard's worker was lost,
        new shards start from it, averaging (as a lost segment restarts). Returns ``state``,
        with its arrays if it took a recovery."""
        try:
            self.keeper.start_averaging(state)
            return state
        except ShardLost as lost:
            if state.n_averaged == 0:  # a new average: not the kept snapshot's
                state = replace(self.in_client(state), average=None, n_averaged=0)
            self.keeper.averaging = True
            self.keeper.recover(state, self.keeper.version, 0, str(lost))
            return state

    def _run_segment(self, state: TrainState, lr_factor: float, n_steps: int):
        """``n_steps`` steps from the snapshot ``state``; rerun from it if a shard is lost."""
        carries, version = self.carries, self.keeper.version
        while True:
            started = time.perf_counter()
            try:
                state, segment = self._try_segment(state, lr_factor, n_steps)
                break
            except ShardLost as lost:
                self.carries = carries
                state = self.in_client(state)
                self.keeper.recover(state, version, n_steps, str(lost))
        seconds = time.perf_counter() - started
        self._pace_segments(n_steps, seconds)
        self._use_strategy(self.strategy.paced(segment.results, self.steps_per_epoch))
        publish_segment(
            self.client, self.fit_id, self.strategy, state.step, segment.units, segment.results,
            seconds, segment.pushes,
        )  # fmt: skip
        return state, segment

    def _try_segment(self, state: TrainState, lr_factor: float, n_steps: int):
        """One try of the segment; :class:`ShardLost` if a shard's worker left, also when it
        left between the units' end and the snapshot (a call to it then fails)."""
        try:
            return self._segment(state, lr_factor, n_steps)
        except (ShardLost, TrainingFailed, NonFiniteParameters):
            raise
        except (OSError, RuntimeError) as error:  # a call to a shard: was its worker lost?
            self.keeper.raise_if_lost(grace=2.0, cause=error)
            raise

    def _segment(self, state: TrainState, lr_factor: float, n_steps: int):
        plan = SegmentPlan(
            self.objective,
            self.encoder,
            self.optimizer,
            scaled(self.schedule, lr_factor),
            self.batch_size,
            first_step=state.step,
            n_steps=n_steps,
            first_version=self.keeper.version,
            n_units=len(self.units),
            fit_id=self.fit_id,
            row_order=self.data.row_order,
            sparse=self.sparse,
        )
        steps = self.strategy.open_segment(self.keeper.server, state.step, n_steps, len(self.units))
        results = self.supervisor.run(self.units, plan, self.carries)
        self.keeper.raise_if_lost()
        server, stats = self.keeper.snapshot()
        self.carries = [result.carry for result in results]
        new_state = replace(
            state,
            params=None,  # kept on the workers, unless the snapshot came with its arrays
            opt_state=None,
            step=state.step + steps,
            samples=state.samples + sum(result.rows for result in results),
            n_averaged=stats[0].n_averaged,
        )
        if server is not None:
            new_state = self._with_arrays(new_state, server)
        dropped = self.keeper.dropped_since_last_snapshot(stats)
        pushes = [shard.pushes for shard in stats]
        return new_state, Segment(self.units, results, dropped, pushes)

    def _with_arrays(self, state: TrainState, server: ServerState) -> TrainState:
        """``state`` with the arrays of the snapshot ``server`` taken at it (the optimizer
        state: the units' carries' for a strategy whose units keep it)."""
        opt_state = self.strategy.segment_opt_state(server.opt_state, self.carries)
        state = replace(state, params=server.params, opt_state=opt_state)
        if server.average is not None:
            state = replace(state, average=server.average, n_averaged=server.n_averaged)
        return state

    def in_client(self, state: TrainState) -> TrainState:
        """``state`` with its arrays: a snapshot kept on the workers comes to the client (for
        a restart, a checkpoint, and the end of a fit)."""
        if state.params is not None:
            return state
        return self._with_arrays(state, self.keeper.kept_state())

    def _start_carry(self, state: TrainState, unit: Unit, n_units: int) -> Carry:
        """A new unit's carry at the snapshot ``state``: its cursor where the unit would be
        had it trained from the fit's first step on its share of the samples seen. The
        order of a unit's rows changes with every pass, so a fit resumed from a checkpoint,
        or a unit that moved to another worker, takes the rows that an undisturbed fit
        would (exactly so when the units take equal minibatches, as "sync" and "local")."""
        unit_rows = sum(self.data.summaries[index].n_rows for index in unit.partitions)
        cursor = divmod(state.samples // n_units, unit_rows)
        return replace(self.strategy.start_carry(state), cursor=cursor)

    def _use_strategy(self, strategy: Strategy) -> None:
        """Go on with ``strategy`` (the same one, paced by what its units measured)."""
        if strategy is not self.strategy:
            self.strategy = self.keeper.strategy = self.supervisor.strategy = strategy

    def _pace_segments(self, n_steps: int, seconds: float) -> None:
        """Segments of about ``snapshot_seconds`` at the last one's pace (whole rounds, at
        most ``snapshot_steps``)."""
        round_steps = self.strategy.round_steps()
        paced = int(n_steps * self.snapshot_seconds / max(seconds, 1e-6))
        rounds = max(paced // round_steps, 1)
        self.segment_steps = min(rounds * round_steps, self.max_segment_steps)

    def _after_segment(self, state: TrainState) -> TrainState:
        """At the snapshot ``state``: follow the workers that joined or left, and move the
        shards off retiring workers; the shards restart from the snapshot for either, and
        the state returned then has its arrays (the old shards kept them)."""
        units = self._dealt_units() if self.follow_workers else self.units
        leaving = self.keeper.leaving_shards()
        if units is self.units and not leaving:
            return state
        state = self.in_client(state)
        if not self.keeper.restart(state, len(units)):  # no worker to take the shards
            return state  # the units and the shards stay as they were
        if leaving:
            self.keeper.moves.append(ShardMove(state.step, leaving))
        if units is not self.units:
            self._use_units(units, state)
        return state

    def _dealt_units(self) -> list[Unit]:
        """The units for the workers there now: ``self.units`` if they have not changed."""
        workers = staying_workers(self.client)
        training = {unit.worker for unit in self.units}
        if not workers or (
            training <= set(workers) and len(self.units) == self.data.n_units(len(workers))
        ):
            return self.units
        units = self.data.redeal(self.client, self.units, workers)
        return self.units if units == self.units else units

    def _use_units(self, units: list[Unit], state: TrainState) -> None:
        """Train on ``units`` from the snapshot ``state`` on: a unit that kept its worker
        and blocks keeps its carry, and the rate follows the new number of workers."""
        kept = {
            (unit.worker, tuple(unit.partitions)): carry
            for unit, carry in zip(self.units, self.carries, strict=True)
        }
        self.carries = [
            kept.get((unit.worker, tuple(unit.partitions)))
            or self._start_carry(state, unit, len(units))
            for unit in units
        ]
        before, after = [u.worker for u in self.units], [u.worker for u in units]
        joined = [worker for worker in after if worker not in before]
        left = [worker for worker in before if worker not in after]
        logger.info(
            "Training on %d workers from step %d (joined %s, left %s)",
            len(units), state.step, joined, left,
        )  # fmt: skip
        self.membership.append(MembershipChange(state.step, len(units), joined, left))
        self.units = units
        self._averaging_reach = None  # a step's rows change with the units
        self._scale_for_units(state.step)

    def close(self) -> None:
        self.keeper.close()
        if self.started:
            detach_plugins(self.client, self.fit_id)
            forget_on_workers(self.client, self.fit_id)
            self.started = False

"""Training units: long-running tasks, one per worker, that train on that worker's blocks.

A unit takes minibatches of its own blocks and exchanges with the parameter-server shards;
units synchronise through the shards' versions and clocks, never through the client. A
strategy is the unit's exchange policy:

- "sync": every step, each unit pushes the gradient of its minibatch; each shard applies
  the mean of the ``k`` gradients once with the optimizer,
  ``θ ← θ − η_t · d_t``, ``d_t`` = direction of ``(1/k) Σ_j (1/|B_j|) Σ_{i∈B_j} ∇L_i``,
  and answers every unit with the new parameters.
- "backup" (Chen et al. 2016): "sync" with ``n_backup`` spare units; each step applies the
  first ``k - n_backup`` gradients to arrive, drops the late ones, and a late unit skips
  ahead to the current step.
- "local" (local SGD, periodic model averaging): each unit takes ``local_steps`` steps with
  its own optimizer state, then every shard sets its slice to the mean of the units'
  parameters, ``θ ← (1/k) Σ_j θ_j`` (or, elastic, moves towards it), and the units go on.
- "downpour" (Dean et al. 2012): asynchronous; units pull, compute and push without
  waiting, a shard applies each push as it arrives, and each unit claims the epoch's steps
  from the parameter server a few at a time, so that a slow worker simply does fewer.
- "ssp" (stale synchronous parallel, Ho et al. 2013): "downpour" whose unit clock is its
  step; a unit more than ``staleness_bound`` clocks ahead of the slowest waits.

A unit that Dask reruns (its worker died) starts again from the same carry: its pushes of
steps already applied are dropped (sync, backup, local) or recognised by their tokens (ssp),
so no update applies twice. A non-finite gradient is never pushed: the unit fails with
:class:`NonFiniteParameters` naming the step and the partition, and a shard refuses an update
that would make its parameters non-finite the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from distributed import get_worker, secede
from distributed.utils import sync

from dask_sgd.blocks import Block, aligned_block
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.steps import TrainState, run_minibatches
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.models import Objective
from dask_sgd.optim import GradientTransformation
from dask_sgd.schedules import Schedule


@dataclass(frozen=True)
class UnitPlan:
    """What every unit of one epoch needs besides its blocks."""

    objective: Objective
    encoder: TargetEncoder
    learning_rate: Schedule
    batch_size: int
    first_step: int
    n_steps: int
    strategy: str = "sync"
    optimizer: GradientTransformation | None = None  # "local": each unit's own optimizer
    local_steps: int = 1
    first_round: int = 0
    n_fetch: int = 1  # "downpour": steps between two pulls
    n_push: int = 1  # "downpour": steps whose gradients one push carries
    staleness_aware: bool = False
    staleness_bound: int = 0  # "ssp": clocks a unit may run ahead of the slowest
    claim_seconds: float = 0.05  # "downpour": steps claimed at a time, in seconds of work
    elastic_rate: float | None = None  # "local": β of elastic averaging; None averages
    n_units: int = 1


def take_rows(blocks: list[Block], cursor: tuple[int, int], n_rows: int):
    """The next ``n_rows`` rows of the blocks, cycling; views unless they span two blocks."""
    block_index, offset = cursor
    pieces = []
    while n_rows > 0:
        X, y, weight = blocks[block_index]
        rows = slice(offset, min(offset + n_rows, X.shape[0]))
        pieces.append((X[rows], y[rows], None if weight is None else weight[rows]))
        n_rows -= rows.stop - rows.start
        offset = rows.stop
        if offset >= X.shape[0]:
            block_index, offset = (block_index + 1) % len(blocks), 0
    if len(pieces) == 1:
        return (*pieces[0], (block_index, offset))
    X, y, weight = zip(*pieces, strict=True)
    weight = None if weight[0] is None else np.concatenate(weight)
    return np.concatenate(X), np.concatenate(y), weight, (block_index, offset)


@dataclass
class UnitData:
    """A unit's blocks, the Dask partition each one is, and where the next minibatch starts.

    The blocks' targets are encoded as the losses take them (and class weights folded into
    their sample weights) once per block, not once per minibatch.
    """

    blocks: list[Block]
    partitions: list[int]
    cursor: tuple[int, int]

    @classmethod
    def encoded(cls, blocks: list[Block], partitions, cursor, encoder: TargetEncoder):
        """The blocks as training takes them. A block that Dask had to fetch (its unit was
        rerun on another worker) is copied once if it arrived unaligned."""
        aligned = [aligned_block(block) for block in blocks]
        encoded = [Block(X, *encoder(y, weight, X.dtype)) for X, y, weight in aligned]
        return cls(encoded, partitions, cursor)

    def next_minibatch(self, plan: UnitPlan):
        """``(X, Y, sample_weight, partition)``: encoded targets, the partition it starts in."""
        partition = self.partitions[self.cursor[0]]
        X, Y, weight, self.cursor = take_rows(self.blocks, self.cursor, plan.batch_size)
        return X, Y, weight, partition

    def gradient(self, plan: UnitPlan, params: np.ndarray, step: int):
        """The next minibatch's summed loss, gradient and rows; raise if the gradient is not
        finite (it is never pushed)."""
        X, Y, weight, partition = self.next_minibatch(plan)
        batch_loss, grad = plan.objective.loss_and_grad(params, X, Y, weight)
        if not np.isfinite(grad).all():
            raise NonFiniteParameters(step, "gradient", partition)
        return float(batch_loss), grad, Y.shape[0]


def train_unit(
    blocks: list[Block],
    partitions: list[int],
    shards: list,
    ranges: list[slice],
    plan: UnitPlan,
    unit: int,
    carry: dict,
) -> dict:
    """Run ``plan.n_steps`` steps of ``plan.strategy`` on this worker's blocks (a task).

    ``carry`` is what the unit kept from its previous segment: where it was in its blocks
    and, for "local", its optimizer state. The unit leaves the worker's thread pool first: it
    waits for the other units at every exchange, and two units placed on one worker must not
    wait for each other's thread.
    """
    secede()
    calls = ShardCalls(shards, ranges)
    data = UnitData.encoded(blocks, partitions, carry["cursor"], plan.encoder)
    run = {
        "sync": _run_sync_steps,
        "backup": _run_backup_steps,
        "local": _run_local_rounds,
        "downpour": _run_downpour_steps,
        "ssp": _run_ssp_steps,
    }[plan.strategy]
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported, not warned
        return run(data, calls, plan, unit, carry)


class ShardCalls:
    """Calls the shards from a unit: directly when a shard lives on the unit's own worker.

    An actor call through Dask costs a round trip through the worker's comm layer even when
    the actor is local (about 3 ms here, ten times the compute of a 1024-row step). A shard
    on this worker is an object in this process, whose async methods can run on the
    worker's event loop with no serialisation at all. Remote calls go out first, so that no
    unit waits on a local shard before its remote pushes are on their way.
    """

    def __init__(self, shards: list, ranges: list[slice]) -> None:
        worker = get_worker()
        self.loop = worker.loop
        self.remote, self.local = [], []
        for shard, where in zip(shards, ranges, strict=True):
            obj = worker.state.actors.get(shard.key) if shard._address == worker.address else None
            (self.remote if obj is None else self.local).append((obj or shard, where))
        self.first = min(self.remote + self.local, key=lambda pair: pair[1].start)

    def claim(self, n_steps: int) -> tuple[int, int]:
        """Up to ``n_steps`` of the epoch's unclaimed steps, from the first shard."""
        shard, _ = self.first
        if shard in (obj for obj, _ in self.local):
            return sync(self.loop, shard.claim, n_steps)
        return shard.claim(n_steps).result()

    def pull(self, min_version: int) -> np.ndarray:
        return self._call("pull", lambda where: (min_version,))

    def push_sync(self, step: int, grad: np.ndarray, lr: float, token) -> np.ndarray:
        return self._call("push_sync", lambda where: (step, grad[where], lr, token))

    def push_average(self, step: int, params: np.ndarray, token, moving_rate=1.0) -> np.ndarray:
        return self._call("push_average", lambda where: (step, params[where], token, moving_rate))

    def pull_versioned(self, min_clock: int | None = None) -> tuple[np.ndarray, dict[int, int]]:
        """θ and each shard's version (keyed by where its slice starts): at once, or once
        every unit has pushed ``min_clock`` times (bounded staleness)."""
        if min_clock is None:
            answers = self._fan_out("pull", lambda where: (0,))
        else:
            answers = self._fan_out("pull_bounded", lambda where: (min_clock,))
        params = np.concatenate([params for _, (params, _) in answers])
        return params, {where.start: version for where, (_, version) in answers}

    def push(self, grad, lr: float, token, fetched: dict[int, int], aware: bool) -> int:
        """Apply ``grad`` on every shard at once; return the largest staleness."""
        answers = self._fan_out(
            "push", lambda where: (grad[where], lr, token, fetched[where.start], aware)
        )
        return max(staleness for _, (_, staleness) in answers)

    def push_clocked(self, unit: int, grad, lr: float, token, fetched, aware) -> tuple[int, int]:
        """:meth:`push` that ticks the unit's clock; returns the largest staleness and lead."""
        answers = self._fan_out(
            "push_clocked",
            lambda where: (unit, grad[where], lr, token, fetched[where.start], aware),
        )
        return (
            max(staleness for _, (_, staleness, _) in answers),
            max(lead for _, (_, _, lead) in answers),
        )

    def push_sync_versioned(self, step, grad, lr: float, token) -> tuple[np.ndarray, int]:
        """Like :meth:`push_sync`, with the lowest version among the shards' answers."""
        answers = self._fan_out("push_sync", lambda where: (step, grad[where], lr, token))
        params = np.concatenate([params for _, (params, _) in answers])
        return params, min(version for _, (_, version) in answers)

    def _call(self, method: str, arguments) -> np.ndarray:
        """Call ``method`` on every shard; join the parameters that they answer."""
        return np.concatenate([params for _, (params, _) in self._fan_out(method, arguments)])

    def _fan_out(self, method: str, arguments) -> list[tuple[slice, Any]]:
        pending = [
            (where, getattr(shard, method)(*arguments(where))) for shard, where in self.remote
        ]

        async def local_calls():
            return await asyncio.gather(
                *(getattr(obj, method)(*arguments(where)) for obj, where in self.local)
            )

        parts = []
        if self.local:
            answers = sync(self.loop, local_calls)
            parts = list(zip((where for _, where in self.local), answers, strict=True))
        parts += [(where, call.result()) for where, call in pending]
        parts.sort(key=lambda part: part[0].start)
        return parts


def _run_sync_steps(data: UnitData, calls: ShardCalls, plan: UnitPlan, unit: int, carry) -> dict:
    params = calls.pull(plan.first_step)
    loss_sum, rows = 0.0, 0
    for step in range(plan.first_step, plan.first_step + plan.n_steps):
        batch_loss, grad, batch_rows = data.gradient(plan, params, step)
        params = calls.push_sync(step, grad, plan.learning_rate(step), (step, unit))
        loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
    return {"loss_sum": loss_sum, "rows": rows, "carry": {"cursor": data.cursor}}


def _run_backup_steps(data: UnitData, calls: ShardCalls, plan: UnitPlan, unit: int, carry):
    """Sync steps where a shard applies the first gradients to arrive; a late unit's push is
    dropped and the unit skips ahead to the step the shards are at."""
    step, end = plan.first_step, plan.first_step + plan.n_steps
    params = calls.pull(step)
    loss_sum, rows = 0.0, 0
    while step < end:
        batch_loss, grad, batch_rows = data.gradient(plan, params, step)
        lr = plan.learning_rate(step)
        params, version = calls.push_sync_versioned(step, grad, lr, (step, unit))
        loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
        step = max(step + 1, version)
    return {"loss_sum": loss_sum, "rows": rows, "carry": {"cursor": data.cursor}}


def _run_local_rounds(data: UnitData, calls: ShardCalls, plan: UnitPlan, unit: int, carry):
    """Rounds of ``local_steps`` steps on the unit's own copy, then an averaging round.

    Plain averaging: every copy becomes the mean. Elastic averaging (Zhang et al. 2015) with
    β = ``elastic_rate`` and α = β / k: the center moves ``θ ← θ + β (mean − θ)`` and each
    copy is pulled towards the center it started the round from,
    ``θ_j ← θ_j − α (θ_j − θ)``, keeping its own course between rounds.
    """
    center = calls.pull(plan.first_round)
    elastic = plan.elastic_rate is not None
    own = carry.get("params") if elastic else None
    state = TrainState(center if own is None else own, carry["opt_state"], plan.first_step)
    loss_sum, rows, done, round_ = 0.0, 0, 0, plan.first_round
    partition = None  # of the minibatch being trained on

    def minibatches(n_steps: int):
        nonlocal partition
        for _ in range(n_steps):
            *minibatch, partition = data.next_minibatch(plan)
            yield minibatch

    while done < plan.n_steps:
        n_steps = min(plan.local_steps, plan.n_steps - done)
        try:
            state, batch_loss, batch_rows = run_minibatches(
                state, minibatches(n_steps), plan.objective, plan.optimizer, plan.learning_rate
            )
        except NonFiniteParameters as error:
            raise NonFiniteParameters(error.step, error.what, partition) from None
        new_center = calls.push_average(
            round_, state.params, (round_, unit), 1.0 if not elastic else plan.elastic_rate
        )
        if elastic:
            pulled = state.params - plan.elastic_rate / plan.n_units * (state.params - center)
            state = replace(state, params=pulled)
        else:
            state = replace(state, params=new_center)
        center = new_center
        loss_sum, rows, done, round_ = (
            loss_sum + batch_loss,
            rows + batch_rows,
            done + n_steps,
            round_ + 1,
        )
    carry = {"cursor": data.cursor, "opt_state": state.opt_state}
    if elastic:
        carry["params"] = state.params
    return {"loss_sum": loss_sum, "rows": rows, "carry": carry}


def _run_downpour_steps(data: UnitData, calls: ShardCalls, plan: UnitPlan, unit: int, carry):
    """Asynchronous steps claimed from the epoch's budget, about ``claim_seconds`` of work at a
    time at this unit's pace, until none is left: a slow unit claims fewer."""
    pace = carry.get("pace")
    loss_sum, rows, staleness, done = 0.0, 0, [], 0
    accumulated, n_accumulated = 0, 0

    def push(step: int) -> None:
        nonlocal accumulated, n_accumulated
        lr = plan.learning_rate(step)
        mean_grad = accumulated / n_accumulated
        staleness.append(calls.push(mean_grad, lr, step, fetched, plan.staleness_aware))
        accumulated, n_accumulated = 0, 0

    started = time.perf_counter()
    while True:
        first, granted = calls.claim(1 if pace is None else round(plan.claim_seconds / pace) or 1)
        if granted == 0:
            break
        for step in range(first, first + granted):
            if done % plan.n_fetch == 0:
                params, fetched = calls.pull_versioned()
            batch_loss, grad, batch_rows = data.gradient(plan, params, step)
            accumulated, n_accumulated = accumulated + grad, n_accumulated + 1
            loss_sum, rows, done = loss_sum + batch_loss, rows + batch_rows, done + 1
            if n_accumulated == plan.n_push:
                push(step)
        pace = (time.perf_counter() - started) / done
    if n_accumulated:  # the gradients of the last steps
        push(step)
    return {
        "loss_sum": loss_sum,
        "rows": rows,
        "carry": {"cursor": data.cursor, "pace": pace},
        "staleness": staleness,
    }


def _run_ssp_steps(data: UnitData, calls: ShardCalls, plan: UnitPlan, unit: int, carry) -> dict:
    """Bounded staleness: the unit's clock is its step. Before step ``t`` it pulls parameters
    that hold every unit's updates of the steps before ``t - τ`` (waiting for them), then
    pushes its gradient, which a shard applies at once."""
    loss_sum, rows, staleness, lead = 0.0, 0, [], 0
    for step in range(plan.first_step, plan.first_step + plan.n_steps):
        params, fetched = calls.pull_versioned(min_clock=step - plan.staleness_bound)
        batch_loss, grad, batch_rows = data.gradient(plan, params, step)
        loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
        lr = plan.learning_rate(step)
        push_staleness, push_lead = calls.push_clocked(
            unit, grad, lr, (step, unit), fetched, plan.staleness_aware
        )
        staleness.append(push_staleness)
        lead = max(lead, push_lead)
    return {
        "loss_sum": loss_sum,
        "rows": rows,
        "carry": {"cursor": data.cursor},
        "staleness": staleness,
        "lead": lead,
    }

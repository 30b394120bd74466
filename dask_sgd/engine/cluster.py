"""Training on Dask partitions with a sharded parameter server, one strategy at a time.

Each epoch the client submits one long-running *unit* per worker. A unit trains on its own
blocks and exchanges with the parameter-server shards; the units synchronise through the
shards' versions, never through the client, which waits once per epoch. A strategy is the
unit's exchange policy:

- "sync": every step, each unit pushes the gradient of its minibatch; each shard applies
  the mean of the ``k`` gradients once with the optimizer,
  ``θ ← θ − η_t · d_t``, ``d_t`` = direction of ``(1/k) Σ_j (1/|B_j|) Σ_{i∈B_j} ∇L_i``,
  and answers every unit with the new parameters.
- "local" (local SGD, periodic model averaging): each unit takes ``local_steps`` steps with
  its own optimizer state, then every shard sets its slice to the mean of the units'
  parameters, ``θ ← (1/k) Σ_j θ_j``, and the units go on from there.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from distributed import get_worker, secede, wait
from distributed.utils import sync

from dask_sgd.blocks import Block, DaskTrainingData
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.steps import NonFiniteParameters, TrainState, run_minibatches
from dask_sgd.models import Objective
from dask_sgd.optim import GradientTransformation
from dask_sgd.ps import ParameterServer
from dask_sgd.ps.server import mean_states
from dask_sgd.schedules import Schedule, linear_scaling_factor, scaled, warmup


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


def train_unit(
    blocks: list[Block], shards: list, ranges: list[slice], plan: UnitPlan, unit: int, carry
) -> dict:
    """Run ``plan.n_steps`` steps of ``plan.strategy`` on this worker's blocks (a task).

    ``carry`` is what the unit kept from its previous epoch: where it was in its blocks and,
    for "local", its optimizer state. The unit leaves the worker's thread pool first: it
    waits for the other units at every exchange, and two units placed on one worker must not
    wait for each other's thread.
    """
    secede()
    calls = ShardCalls(shards, ranges)
    run = _run_sync_steps if plan.strategy == "sync" else _run_local_rounds
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported, not warned
        return run(blocks, calls, plan, unit, carry)


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

    def pull(self, min_version: int) -> np.ndarray:
        return self._call("pull", lambda where: (min_version,))

    def push_sync(self, step: int, grad: np.ndarray, lr: float, token) -> np.ndarray:
        return self._call("push_sync", lambda where: (step, grad[where], lr, token))

    def push_average(self, step: int, params: np.ndarray, token) -> np.ndarray:
        return self._call("push_average", lambda where: (step, params[where], token))

    def _call(self, method: str, arguments) -> np.ndarray:
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
        return np.concatenate([params for _, (params, _) in parts])


def _run_sync_steps(blocks, calls: ShardCalls, plan: UnitPlan, unit: int, carry) -> dict:
    cursor = carry["cursor"]
    params = calls.pull(plan.first_step)
    loss_sum, rows = 0.0, 0
    for step in range(plan.first_step, plan.first_step + plan.n_steps):
        X, y, weight, cursor = take_rows(blocks, cursor, plan.batch_size)
        Y, weight = plan.encoder(y, weight, X.dtype)
        batch_loss, grad = plan.objective.loss_and_grad(params, X, Y, weight)
        params = calls.push_sync(step, grad, plan.learning_rate(step), (step, unit))
        loss_sum += float(batch_loss)
        rows += Y.shape[0]
        if not np.isfinite(params).all():  # every unit sees the same parameters: all stop
            return {"loss_sum": loss_sum, "rows": rows, "diverged_at": step + 1}
    return {"loss_sum": loss_sum, "rows": rows, "carry": {"cursor": cursor}}


def _run_local_rounds(blocks, calls: ShardCalls, plan: UnitPlan, unit: int, carry) -> dict:
    cursor = carry["cursor"]
    state = TrainState(calls.pull(plan.first_round), carry["opt_state"], plan.first_step)
    loss_sum, rows, done, round_ = 0.0, 0, 0, plan.first_round

    def minibatches(n_steps: int):
        nonlocal cursor
        for _ in range(n_steps):
            X, y, weight, cursor = take_rows(blocks, cursor, plan.batch_size)
            yield (X, *plan.encoder(y, weight, X.dtype))

    while done < plan.n_steps:
        n_steps = min(plan.local_steps, plan.n_steps - done)
        try:
            state, batch_loss, batch_rows = run_minibatches(
                state, minibatches(n_steps), plan.objective, plan.optimizer, plan.learning_rate
            )
        except NonFiniteParameters:  # the others still wait for this round: send NaN
            state = replace(state, params=np.full_like(state.params, np.nan))
            batch_loss, batch_rows = 0.0, 0
        params = calls.push_average(round_, state.params, (round_, unit))
        state = replace(state, params=params)
        loss_sum, rows, done, round_ = (
            loss_sum + batch_loss,
            rows + batch_rows,
            done + n_steps,
            round_ + 1,
        )
        if not np.isfinite(params).all():  # every unit sees the same average: all stop
            return {"loss_sum": loss_sum, "rows": rows, "diverged_at": state.step}
    carry = {"cursor": cursor, "opt_state": state.opt_state}
    return {"loss_sum": loss_sum, "rows": rows, "carry": carry}


class ClusterTrainer:
    """Runs epochs of a strategy on persisted blocks; one parameter server per fit.

    "sync": the learning rate follows the linear scaling rule (``k`` units, each with
    ``batch_size`` rows, make an effective batch ``k`` times the reference ``batch_size``),
    reached by a gradual warmup from the unscaled rate over ``warmup_epochs``; both can be
    turned off. "local": each unit's steps use ``batch_size`` rows, so the rate is unscaled.
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
        batch_size: int,
        n_shards: int | None = None,
        scale_learning_rate: bool = True,
        warmup_epochs: float = 1.0,
        strategy: str = "sync",
        local_steps: int = 8,
    ) -> None:
        self.client = client
        self.data = data
        self.objective = objective
        self.optimizer = optimizer
        self.encoder = encoder
        self.batch_size = batch_size
        self.n_shards = n_shards
        self.strategy = strategy
        self.local_steps = local_steps
        self.units = data.units(client)
        k = len(self.units)
        self.steps_per_epoch = max(1, math.ceil(data.n_rows / (k * batch_size)))
        factor = 1
        if scale_learning_rate and strategy == "sync":
            factor = linear_scaling_factor(k * batch_size, batch_size)
        self.schedule = warmup(
            scaled(schedule, factor), round(warmup_epochs * self.steps_per_epoch), 1 / factor
        )
        self.carries: list[dict] | None = None
        self.rounds = 0  # "local": averaging rounds done, the shards' version
        self.server: ParameterServer | None = None
        self.name = uuid.uuid4().hex[:8]

    def run_epoch(self, state: TrainState, lr_factor: float) -> tuple[TrainState, float, int]:
        """One epoch: ``steps_per_epoch`` steps on every unit; the client waits once."""
        sync = self.strategy == "sync"
        if self.server is None:
            self.server = ParameterServer.start(
                self.client,
                state.params,
                self.optimizer,
                n_shards=self.n_shards,
                n_contributors=len(self.units),
                opt_state=state.opt_state if sync else None,
                version=state.step if sync else 0,
            )
            self.carries = [
                {"cursor": (0, 0), "opt_state": None if sync else state.opt_state}
                for _ in self.units
            ]
        plan = UnitPlan(
            self.objective,
            self.encoder,
            scaled(self.schedule, lr_factor),
            self.batch_size,
            state.step,
            self.steps_per_epoch,
            self.strategy,
            self.optimizer,
            self.local_steps,
            self.rounds,
        )
        futures = [
            self.client.submit(
                train_unit,
                blocks,
                self.server.shards,
                self.server.ranges,
                plan,
                unit,
                self.carries[unit],
                key=f"dask-sgd-{self.strategy}-step{state.step}-unit{unit}-{self.name}",
                workers=[worker],
                allow_other_workers=True,
                pure=False,
            )
            for unit, (worker, blocks) in enumerate(self.units)
        ]
        self._abort_on_first_error(futures)
        results = self.client.gather(futures)
        diverged = [r["diverged_at"] for r in results if "diverged_at" in r]
        if diverged:
            raise NonFiniteParameters(diverged[0])
        self.carries = [r["carry"] for r in results]
        rows = sum(r["rows"] for r in results)
        params, opt_state, version = self.server.state()
        if not sync:  # the optimizer states live on the units; keep their mean
            self.rounds = version
            opt_state = mean_states([carry["opt_state"] for carry in self.carries])
        new_state = replace(
            state,
            params=params,
            opt_state=opt_state,
            step=state.step + self.steps_per_epoch,
            samples=state.samples + rows,
        )
        return new_state, sum(r["loss_sum"] for r in results), rows

    def _abort_on_first_error(self, futures: list) -> None:
        """Wait for the units; if one fails, release the others, which wait for its pushes."""
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when="FIRST_COMPLETED")
            if any(f.status == "error" for f in done):
                self.server.abort("a training unit failed")
                return

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

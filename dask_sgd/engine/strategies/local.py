"""Local SGD (periodic model averaging), plain or elastic.

Each unit takes ``local_steps`` steps with its own optimizer state, then every shard sets
its slice to the mean of the units' parameters, ``θ ← (1/k) Σ_j θ_j``, and the units go on
from it. Elastic averaging (Zhang et al. 2015) with β = ``elastic_rate`` and α = β / k: the
center moves ``θ ← θ + β (mean − θ)`` and each copy is pulled towards the center it started
the round from, ``θ_j ← θ_j − α (θ_j − θ)``, keeping its own course between rounds. The
shards' version is the averaging round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from dask_sgd.engine.steps import TrainState, run_minibatches
from dask_sgd.engine.strategies.base import Carry, Strategy, UnitResult, register
from dask_sgd.engine.units import PendingAnswers, joined
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.ps.rules import Averaging
from dask_sgd.ps.server import mean_states

Array = Any


@dataclass(frozen=True)
class LocalResult(UnitResult):
    waited_seconds: float = 0.0  # for the answers of the averaging rounds


@dataclass(frozen=True)
class LocalCarry(Carry):
    opt_state: Any = None  # the unit's own optimizer state
    params: Array | None = None  # elastic: the unit's own copy of θ


@register
@dataclass(frozen=True)
class Local(Strategy):
    name = "local"
    server_keeps_opt_state = False
    local_steps: int = 8
    elastic_rate: float | None = None
    overlap: bool = True

    def round_steps(self) -> int:
        return self.local_steps

    def exchange_rule(self, n_units: int, step: int) -> Averaging:
        return Averaging(n_units)

    def start_carry(self, state: TrainState) -> LocalCarry:
        return LocalCarry(opt_state=state.opt_state)

    def segment_opt_state(self, server_opt_state, carries: list[LocalCarry]) -> Any:
        return mean_states([carry.opt_state for carry in carries])

    def run_unit(self, data, calls, plan, unit, carry: LocalCarry) -> LocalResult:
        center, _ = calls.pull(plan.first_version)
        elastic = self.elastic_rate is not None
        own = carry.params if elastic else None
        state = TrainState(center if own is None else own, carry.opt_state, plan.first_step)
        loss_sum, rows, done, round_ = 0.0, 0, 0, plan.first_version
        partition = None  # of the minibatch being trained on
        pending: Pending | None = None  # the last round's push, while its answer is on its way
        waited = 0.0  # seconds spent waiting for answers

        def minibatches(n_steps: int):
            nonlocal partition
            for _ in range(n_steps):
                *minibatch, partition = data.next_minibatch(plan)
                yield minibatch

        def answer(pending: Pending) -> Array:
            nonlocal waited
            started = time.perf_counter()
            new_center, _ = joined(pending.answers.result())
            waited += time.perf_counter() - started
            return new_center

        rate = 1.0 if not elastic else self.elastic_rate
        while done < plan.n_steps:
            n_steps = min(self.local_steps, plan.n_steps - done)
            try:
                state, batch_loss, batch_rows = run_minibatches(
                    state, minibatches(n_steps), plan.objective, plan.optimizer, plan.learning_rate
                )
            except NonFiniteParameters as error:
                raise NonFiniteParameters(error.step, error.what, partition) from None
            params = state.params
            if pending is not None:  # the round before's answer, one round late
                new_center = answer(pending)
                if not elastic:  # this round's progress, moved to the mean it missed
                    params = params + (new_center - pending.pushed)
                center = new_center
            pending = Pending(push_params(calls, round_, params, (round_, unit), rate), params)
            if elastic:  # towards the center this round started from, as without overlap
                params = params - self.elastic_rate / plan.n_units * (params - center)
            if not self.overlap:
                center = answer(pending)
                params = params if elastic else center
                pending = None
            state = replace(state, params=params)
            loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
            done, round_ = done + n_steps, round_ + 1
        if pending is not None:  # the segment ends with its last round applied
            answer(pending)
        own = state.params if elastic else None
        return LocalResult(
            loss_sum, rows, LocalCarry(data.cursor, state.opt_state, own), waited_seconds=waited
        )

    def history(self, results: list[LocalResult], dropped: int) -> dict:
        return {"exchange_wait_seconds": max(result.waited_seconds for result in results)}


@dataclass(frozen=True)
class Pending:
    """A round's push on its way, and the parameters it pushed."""

    answers: PendingAnswers
    pushed: Array


def push_params(calls, round_: int, params, token, rate: float) -> PendingAnswers:
    """Contribute ``params`` to averaging round ``round_`` on every shard; the shards answer
    with the new center once every unit has contributed."""
    return calls.fan_out_later("push", lambda where: (round_, params[where], token, rate))

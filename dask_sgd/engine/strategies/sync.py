"""Synchronous data parallelism: every step applies the mean of every worker's gradient.

Each step, each unit pushes the gradient of its minibatch; each shard applies the mean of
the ``k`` gradients once with the optimizer,
``θ ← θ − η_t · d_t``, ``d_t`` = direction of ``(1/k) Σ_j (1/|B_j|) Σ_{i∈B_j} ∇L_i``,
and answers every unit with the new parameters. The shards' version is the step, so a
rerun unit's pushes of steps already applied are dropped.

A step's pushes and answers go through the shards' direct lanes (:mod:`dask_sgd.ps.lane`:
one message each way on a plain TCP stream, or none for a shard on the unit's own worker),
not through Dask's actor calls, which cost milliseconds per step; ``lanes=False`` takes the
actor calls, the reference path (the same rule on the shards, the same model), and so does
a cluster whose comms use TLS (a lane is plain TCP, authenticated by a secret that reaches
the units through Dask's comms, but not encrypted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Self

from distributed import get_worker

from dask_sgd.engine.strategies.base import Carry, ScaledStrategy, UnitResult, register
from dask_sgd.engine.units import joined, within
from dask_sgd.ps.lane import Lanes
from dask_sgd.ps.rules import MeanGradientStep


@register
@dataclass(frozen=True)
class Sync(ScaledStrategy):
    name = "sync"
    #: whether units reach the shards through their direct lanes (False: actor calls)
    lanes: bool = True
    #: whether a unit pushes each shard's slice of a dense gradient as soon as the backward
    #: pass has finished it, while it computes the rest (through the lanes)
    layerwise: bool = True

    def first_version(self, step: int) -> int:
        return step

    def exchange_rule(self, n_units: int, step: int) -> MeanGradientStep:
        return MeanGradientStep(self.contributors(n_units))

    def on_sparse_input(self) -> Sync:
        """Sparse pushes and pulls go through the actor calls: a lane carries dense arrays."""
        return replace(self, lanes=False)

    def run_unit(self, data, calls, plan, unit, carry) -> UnitResult:
        end = plan.first_step + plan.n_steps
        with self.rounds(calls) as rounds:
            params, _ = joined(rounds.pull(plan.first_step, data.keys_ahead(plan, 1)))
            loss_sum, rows = 0.0, 0
            for step in range(plan.first_step, end):
                batch_loss, batch_rows, (params, _) = self.step(
                    rounds, data, plan, params, step, unit
                )
                loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
        return UnitResult(loss_sum, rows, Carry(data.cursor))

    def step(self, rounds, data, plan, params, step: int, unit: int) -> tuple[float, int, tuple]:
        """One step of a unit: its minibatch's gradient pushed to every shard for round
        ``step`` (unit ``unit``); ``(batch_loss, rows, joined answers)``. On dense blocks with
        ``layerwise``, each shard's slice goes out as soon as the backward pass finishes
        it; otherwise the whole gradient, then (sparse blocks) the keys of the next step."""
        token, lr = (step, unit), plan.learning_rate(step)
        if self.layerwise and plan.sparse is None:
            batch_loss, grad, pieces, batch_rows = data.gradient_pieces(plan, params, step)
            answers = rounds.push_pieces(step, grad, pieces, token, lr)
        else:
            batch_loss, grad, batch_rows = data.gradient(plan, params, step)
            keys = data.keys_ahead(plan, int(step + 1 < plan.first_step + plan.n_steps))
            answers = rounds.push(step, grad, token, lr, keys)
        return batch_loss, batch_rows, joined(answers)

    def rounds(self, calls) -> Lanes | ActorRounds:
        """How a unit reaches the shards' barriers: their lanes, or actor calls (also on a
        cluster whose comms use TLS: a lane is plain TCP)."""
        here = get_worker().address
        if self.lanes and not here.startswith("tls://"):
            return self.open_lanes(calls, here)
        return self.actor_rounds(calls)

    def actor_rounds(self, calls) -> ActorRounds:
        """The unit's actor calls, direct to a shard on its own worker."""
        return ActorRounds(calls)

    def open_lanes(self, calls, here: str) -> Lanes:
        """The unit's lanes: a stream to each shard on another worker, none to a shard on
        its own worker ``here``."""
        return Lanes.open(calls.remote, calls.local, here)


class ActorRounds:
    """Synchronous rounds through Dask's actor calls (:class:`ShardCalls`), the reference
    path: the interface of :class:`~dask_sgd.ps.lane.Lanes`."""

    def __init__(self, calls) -> None:
        self.calls = calls

    def pull(self, min_version: int, keys=None) -> list[tuple[slice, Any]]:
        return self.calls.fan_out("pull", lambda where: (min_version, within(keys, where)))

    def push(self, round_: int, value, token, rate, keys=None) -> list[tuple[slice, Any]]:
        """Contribute ``value`` to synchronous round ``round_`` on every shard; the answers
        are θ (at ``keys`` only, if given) once the round is applied."""
        return self.calls.fan_out(
            "push", lambda where: (round_, value[where], token, rate, within(keys, where))
        )

    def push_pieces(self, round_: int, value, pieces, token, rate) -> list[tuple[slice, Any]]:
        """:meth:`push` once the pieces have filled ``value``: the actor calls push the
        whole gradient (the reference path)."""
        for _ in pieces:
            pass
        return self.push(round_, value, token, rate)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

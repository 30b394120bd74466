"""Downpour SGD (Dean et al. 2012): asynchronous pushes and pulls.

Units pull, compute and push without waiting for each other; a shard applies each push as
it arrives. Each unit claims the segment's steps from the parameter server a few at a
time (about ``claim_seconds`` of work at its own pace), so a slow worker simply does fewer.
``n_fetch``: steps between two pulls; ``n_push``: steps whose mean gradient one push
carries; ``staleness_aware``: each push's rate divided by its staleness. On sparse input a
pull brings θ at the entries of the minibatches until the next one, and a unit also pulls
as it starts a new claim (the minibatches of the next claim are not known before).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dask_sgd.engine.strategies.base import Carry, Strategy, UnitResult, register
from dask_sgd.ps.rules import Immediate


@dataclass(frozen=True)
class PacedCarry(Carry):
    pace: float | None = None  # seconds per step, measured on this unit


@dataclass(frozen=True)
class AsyncResult(UnitResult):
    staleness: tuple[int, ...] = ()  # of each push: updates applied since its pull


@dataclass(frozen=True)
class Asynchronous(Strategy):
    """What the asynchronous strategies share: the staleness they report."""

    staleness_aware: bool = False

    def history(self, results: list[AsyncResult], dropped: int) -> dict:
        staleness = [s for result in results for s in result.staleness]
        if not staleness:
            return {}
        return {"staleness_mean": float(np.mean(staleness)), "staleness_max": max(staleness)}

    def dashboard(self, results: list[AsyncResult]) -> dict:
        fields = Asynchronous.history(self, results, dropped=0)
        return {"staleness_mean": fields["staleness_mean"]} if fields else {}


@register
@dataclass(frozen=True)
class Downpour(Asynchronous):
    name = "downpour"
    n_fetch: int = 1
    n_push: int = 1
    claim_seconds: float = 0.05

    def exchange_rule(self, n_units: int, step: int) -> Immediate:
        return Immediate()

    def open_segment(self, server, first_step: int, n_steps: int, n_units: int) -> int:
        """The segment's steps are a budget on the first shard, claimed by the units."""
        server.call_first("open_budget", first_step, n_steps * n_units)
        return n_steps * n_units

    def run_unit(self, data, calls, plan, unit, carry: PacedCarry) -> AsyncResult:
        pace = carry.pace if isinstance(carry, PacedCarry) else None
        loss_sum, rows, staleness, done = 0.0, 0, [], 0
        accumulated, n_accumulated = 0, 0

        def push(step: int) -> None:
            nonlocal accumulated, n_accumulated
            lr = plan.learning_rate(step)
            mean_grad = accumulated / n_accumulated
            answers = calls.fan_out(
                "push",
                lambda where: (
                    mean_grad[where],
                    lr,
                    step,
                    fetched[where.start],
                    self.staleness_aware,
                ),
            )
            staleness.append(max(answer[1] for _, answer in answers))
            accumulated, n_accumulated = 0, 0

        started = time.perf_counter()
        while True:
            claim = 1 if pace is None else round(self.claim_seconds / pace) or 1
            first, granted = calls.call_first("claim", claim)
            if granted == 0:
                break
            for step in range(first, first + granted):
                if done % self.n_fetch == 0 or (plan.sparse is not None and not data.ahead):
                    # sparse: θ at the entries of the minibatches until the next pull, or
                    # to the end of the claim (a new claim pulls its own)
                    ahead = min(self.n_fetch - done % self.n_fetch, first + granted - step)
                    params, fetched = calls.pull(0, data.keys_ahead(plan, ahead))
                batch_loss, grad, batch_rows = data.gradient(plan, params, step)
                accumulated, n_accumulated = accumulated + grad, n_accumulated + 1
                loss_sum, rows, done = loss_sum + batch_loss, rows + batch_rows, done + 1
                if n_accumulated == self.n_push:
                    push(step)
            pace = (time.perf_counter() - started) / done
        if n_accumulated:  # the gradients of the last steps
            push(step)
        return AsyncResult(loss_sum, rows, PacedCarry(data.cursor, pace), tuple(staleness))

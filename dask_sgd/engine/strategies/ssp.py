"""Stale synchronous parallel (Ho et al. 2013): Downpour with a bound on the lead.

The unit's clock is its step. Before step ``t`` a unit pulls parameters that hold every
unit's updates of the steps before ``t - τ`` (waiting for them; τ = ``staleness_bound``),
then pushes its gradient, which a shard applies at once. Pushes carry tokens, so a rerun
unit's pushes are recognised.
"""

from __future__ import annotations

from dataclasses import dataclass

from dask_sgd.engine.strategies.base import Carry, register
from dask_sgd.engine.strategies.downpour import Asynchronous, AsyncResult
from dask_sgd.engine.units import joined, within
from dask_sgd.ps.rules import Clocked


@dataclass(frozen=True)
class ClockedResult(AsyncResult):
    lead: int = 0  # the most clocks the unit was ahead of the slowest when it pushed


@register
@dataclass(frozen=True)
class SSP(Asynchronous):
    name = "ssp"
    staleness_bound: int = 3

    def exchange_rule(self, n_units: int, step: int) -> Clocked:
        return Clocked(n_units, clock=step)

    def run_unit(self, data, calls, plan, unit, carry) -> ClockedResult:
        loss_sum, rows, staleness, lead = 0.0, 0, [], 0
        for step in range(plan.first_step, plan.first_step + plan.n_steps):
            keys = data.keys_ahead(plan, 1)  # sparse: the minibatch's entries only
            params, fetched = joined(pull_bounded(calls, step - self.staleness_bound, keys))
            batch_loss, grad, batch_rows = data.gradient(plan, params, step)
            loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
            lr = plan.learning_rate(step)
            answers = push_clocked(
                calls, unit, grad, lr, (step, unit), fetched, self.staleness_aware
            )
            staleness.append(max(answer[1] for _, answer in answers))
            lead = max(lead, *(answer[2] for _, answer in answers))
        return ClockedResult(loss_sum, rows, Carry(data.cursor), tuple(staleness), lead)

    def history(self, results: list[ClockedResult], dropped: int) -> dict:
        return super().history(results, dropped) | {
            "clock_lead_max": max(result.lead for result in results)
        }


def pull_bounded(calls, min_clock: int, keys=None):
    """θ (at ``keys`` only, if given) from every shard once every unit has pushed
    ``min_clock`` times."""
    return calls.fan_out("call", lambda where: ("pull_bounded", min_clock, within(keys, where)))


def push_clocked(calls, unit: int, grad, lr: float, token, fetched: dict[int, int], aware: bool):
    """Push ``grad`` to every shard, ticking the unit's clock."""
    return calls.fan_out(
        "push", lambda where: (unit, grad[where], lr, token, fetched[where.start], aware)
    )

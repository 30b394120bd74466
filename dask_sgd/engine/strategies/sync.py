"""Synchronous data parallelism: every step applies the mean of every worker's gradient.

Each step, each unit pushes the gradient of its minibatch; each shard applies the mean of
the ``k`` gradients once with the optimizer,
``θ ← θ − η_t · d_t``, ``d_t`` = direction of ``(1/k) Σ_j (1/|B_j|) Σ_{i∈B_j} ∇L_i``,
and answers every unit with the new parameters. The shards' version is the step, so a
rerun unit's pushes of steps already applied are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from dask_sgd.engine.strategies.base import Carry, ScaledStrategy, UnitResult, register
from dask_sgd.engine.units import joined
from dask_sgd.ps.rules import MeanGradientStep


@register
@dataclass(frozen=True)
class Sync(ScaledStrategy):
    name = "sync"

    def first_version(self, step: int) -> int:
        return step

    def exchange_rule(self, n_units: int, step: int) -> MeanGradientStep:
        return MeanGradientStep(self.contributors(n_units))

    def run_unit(self, data, calls, plan, unit, carry) -> UnitResult:
        params, _ = calls.pull(plan.first_step)
        loss_sum, rows = 0.0, 0
        for step in range(plan.first_step, plan.first_step + plan.n_steps):
            batch_loss, grad, batch_rows = data.gradient(plan, params, step)
            lr = plan.learning_rate(step)
            params, _ = joined(push_step(calls, step, grad, lr, (step, unit)))
            loss_sum, rows = loss_sum + batch_loss, rows + batch_rows
        return UnitResult(loss_sum, rows, Carry(data.cursor))


def push_step(calls, step: int, grad, lr: float, token):
    """Contribute ``grad`` to synchronous step ``step`` on every shard."""
    return calls.fan_out("push", lambda where: (step, grad[where], token, lr))

"""Local SGD (periodic model averaging), plain or elastic.

Each unit takes ``local_steps`` steps with its own optimizer state, then every shard sets
its slice to the mean of the units' parameters, ``θ ← (1/k) Σ_j θ_j``, and the units go on
from it. Elastic averaging (Zhang et al. 2015) with β = ``elastic_rate`` and α = β / k: the
center moves ``θ ← θ + β (mean − θ)`` and each copy is pulled towards the center it started
the round from, ``θ_j ← θ_j − α (θ_j − θ)``, keeping its own course between rounds. The
shards' version is the averaging round.

The rate is scaled as "sync"'s (Lin et al. 2020): a round's mean moves θ as steps with the
units' mean gradient do, and an epoch has ``k`` times fewer of them.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from dask_sgd._array import is_host, to_host
from dask_sgd._tree import map_tree, tree_leaves
from dask_sgd.engine.steps import TrainState, refuse_unusable_gradient, run_minibatches
from dask_sgd.engine.strategies.base import Carry, ScaledStrategy, UnitResult, register
from dask_sgd.engine.units import PendingAnswers, joined, within
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.ps.rules import Averaging, MeanDeltaStep
from dask_sgd.ps.server import join_states, mean_states
from dask_sgd.sparse import SparseVector
from dask_sgd.sparse.gradient import sparse_loss_and_grad
from dask_sgd.sparse.lazy import shrink_factors, zero_gradient_decays

Array = Any


#: ``local_steps="auto"``: a round lasts at least this many times the measured latency of an
#: exchange (its mean: the rounds' total wait is what it costs), so that with overlapped
#: rounds the mean has arrived when a unit needs it and the exchange's own work is a small
#: part of the round
ROUND_LATENCIES = 4
#: ... within these bounds, in powers of two. On W1 (2 workers, the defaults) one epoch's
#: held-out log-loss was 0.39306 at 8 steps a round, 0.39311 at 32 and 0.39367 at 128
#: (``docs/benchmarks.md``, "Local SGD: overlapped rounds sized by time"; raw output in
#: ``docs/results/round-length.json``): longer rounds cost accuracy.
AUTO_STEPS = (8, 64)
#: ... and short enough for this many rounds an epoch: on 331 rows (diabetes, 2 workers, about
#: 20 steps an epoch) a round of 64 steps, one an epoch, scored R² 0.30, rounds of 8 0.34
MIN_ROUNDS_PER_EPOCH = 8
#: the steps of the first segment of an "auto" fit, which measures the rounds to come
CALIBRATION_STEPS = 64


@dataclass(frozen=True)
class LocalResult(UnitResult):
    waited_seconds: float = 0.0  # for the answers of the averaging rounds
    step_seconds: float = float("nan")  # a step's compute, on average
    latency_seconds: float = float("nan")  # push to answer, the mean over the rounds
    round_steps: int = 0  # the steps of the segment's rounds


@dataclass(frozen=True)
class LocalCarry(Carry):
    opt_state: Any = None  # the unit's own optimizer state
    params: Array | None = None  # elastic: the unit's own copy of θ


@register
@dataclass(frozen=True)
class Local(ScaledStrategy):
    name = "local"
    local_steps: int | str = "auto"
    elastic_rate: float | None = None
    overlap: bool = False  # off by default: the estimators' docstring says why
    paced_steps: int = AUTO_STEPS[0]  # "auto": the steps of a round, as last measured

    sparse: bool = False  # sparse input: units exchange their rounds' changes, not θ

    @property
    def server_keeps_opt_state(self) -> bool:
        """On sparse input the shards keep the optimizer state; each unit pulls and trains
        the part its round touches."""
        return self.sparse

    def on_sparse_input(self) -> Local:
        if self.elastic_rate is not None:
            raise ValueError(
                "elastic_rate is not supported on sparse input: elastic averaging keeps a "
                "whole copy of θ on every unit. Use elastic_rate=None."
            )
        return replace(self, sparse=True)

    def round_steps(self) -> int:
        return self.paced_steps if self.local_steps == "auto" else self.local_steps

    def calibration_steps(self) -> int | None:
        return CALIBRATION_STEPS if self.local_steps == "auto" else None

    def paced(self, results: list[LocalResult], steps_per_epoch: int) -> Local:
        """ "auto": rounds of at least ``ROUND_LATENCIES`` exchange latencies, at the pace of
        the slowest unit's steps, as measured in the segment of ``results``; at least
        ``MIN_ROUNDS_PER_EPOCH`` rounds an epoch."""
        step = max(result.step_seconds for result in results)
        latency = max(result.latency_seconds for result in results)
        if self.local_steps != "auto" or not (step > 0 and latency >= 0):  # nothing measured
            return self
        wanted = max(ROUND_LATENCIES * latency / step, 1.0)
        per_epoch = max(steps_per_epoch // MIN_ROUNDS_PER_EPOCH, 1)
        longest = max(AUTO_STEPS[0], min(AUTO_STEPS[1], 2 ** int(math.log2(per_epoch))))
        steps = min(max(2 ** math.ceil(math.log2(wanted)), AUTO_STEPS[0]), longest)
        return self if steps == self.paced_steps else replace(self, paced_steps=steps)

    def exchange_rule(self, n_units: int, step: int) -> Averaging | MeanDeltaStep:
        return MeanDeltaStep(n_units) if self.sparse else Averaging(n_units)

    def start_carry(self, state: TrainState) -> LocalCarry:
        return LocalCarry(opt_state=None if self.sparse else state.opt_state)

    def segment_opt_state(self, server_opt_state, carries: list[LocalCarry]) -> Any:
        if self.sparse:
            return server_opt_state
        return mean_states([carry.opt_state for carry in carries])

    def run_unit(self, data, calls, plan, unit, carry: LocalCarry) -> LocalResult:
        if self.sparse:
            return self.run_sparse_unit(data, calls, plan, unit, carry)
        # on device blocks the unit trains its own θ and state there; what it exchanges
        # and carries is on host
        on_unit = partial(map_tree, lambda leaf: None if leaf is None else data.to_unit(leaf))
        center = data.to_unit(calls.pull(plan.first_version)[0])
        elastic = self.elastic_rate is not None
        own = on_unit(carry.params) if elastic else None
        state = TrainState(
            center if own is None else own, on_unit(carry.opt_state), plan.first_step
        )
        loss_sum, rows, done, round_ = 0.0, 0, 0, plan.first_version
        partition = None  # of the minibatch being trained on
        pending: Pending | None = None  # the last round's push, while its answer is on its way
        waited = computing = 0.0  # seconds waiting for answers, and training
        latencies = []  # of the rounds' exchanges, as seen between steps

        def minibatches(n_steps: int):
            nonlocal partition
            for _ in range(n_steps):
                if pending is not None and pending.arrived is None and pending.answers.done():
                    pending.arrived = time.perf_counter()
                *minibatch, partition = data.next_minibatch(plan)
                yield minibatch

        def answer(pending: Pending) -> Array:
            nonlocal waited
            started = time.perf_counter()
            new_center = data.to_unit(joined(pending.answers.result())[0])
            waited += time.perf_counter() - started
            latencies.append((pending.arrived or time.perf_counter()) - pending.sent)
            return new_center

        rate = 1.0 if not elastic else self.elastic_rate
        while done < plan.n_steps:
            n_steps = min(self.round_steps(), plan.n_steps - done)
            started = time.perf_counter()
            try:
                state, batch_loss, batch_rows = run_minibatches(
                    state, minibatches(n_steps), plan.objective, plan.optimizer, plan.learning_rate
                )
            except NonFiniteParameters as error:
                raise NonFiniteParameters(error.step, error.what, partition) from None
            computing += time.perf_counter() - started
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
        on_host = partial(map_tree, lambda leaf: leaf if is_host(leaf) else to_host(leaf))
        own = on_host(state.params) if elastic else None
        return LocalResult(
            loss_sum,
            rows,
            LocalCarry(data.cursor, on_host(state.opt_state), own),
            waited_seconds=waited,
            step_seconds=computing / max(done, 1),
            latency_seconds=statistics.fmean(latencies) if latencies else float("nan"),
            round_steps=self.round_steps(),
        )

    def run_sparse_unit(self, data, calls, plan, unit, carry: LocalCarry) -> LocalResult:
        """Rounds on sparse input: pull θ and the optimizer state at the entries that the
        round's minibatches touch, train them (the penalty applied lazily, as the shards
        do), and push their change beyond the round's shrink; the shards add the units'
        mean change (:class:`~dask_sgd.ps.rules.MeanDeltaStep`).

        With ``overlap`` a unit does not wait for a round's mean: the next round pulls what
        the shards hold once the round before the last is applied, and where the last one
        is not applied yet, starts the entries it touched from its own values. Its change
        is counted from where it started, so no round counts twice."""
        setup = plan.sparse
        ranges = sorted((where for _, where in calls.actors), key=lambda where: where.start)
        loss_sum, rows, done, round_ = 0.0, 0, 0, plan.first_version
        waited = computing = 0.0
        latencies = []
        pending: Pending | None = None  # the last round's push, while it is on its way
        trained = None  # the last round's entries as this unit left them
        while done < plan.n_steps:
            n_steps = min(self.round_steps(), plan.n_steps - done)
            keys = data.keys_ahead(plan, n_steps)
            started = time.perf_counter()
            behind = int(pending is not None)  # rounds that may not be applied yet
            start, state, versions = pull_working_set(calls, round_ - behind, keys)
            if trained is not None and behind:
                unapplied = [where for where in ranges if versions[where.start] < round_]
                start, state = with_own_progress(start, state, trained, unapplied)
            if pending is not None and pending.answers.done():
                latencies.append(time.perf_counter() - pending.sent)
                pending = None
            waited += time.perf_counter() - started
            started = time.perf_counter()
            params = setup.at(keys, start.values.copy(), plan.optimizer, opt_state=state)
            shrink = 1.0
            for step in range(plan.first_step + done, plan.first_step + done + n_steps):
                (X, Y, weight, partition), indices, touched = data.next_sparse_minibatch(plan)
                at = np.searchsorted(keys, indices)
                batch_loss, grad = sparse_loss_and_grad(
                    plan.objective, params.values(at), indices, X, Y, weight, touched
                )
                refuse_unusable_gradient(grad.values, step, partition)
                lr = plan.learning_rate(step)
                params.apply(at, grad.values, lr)
                shrink *= setup.decay(lr)
                loss_sum, rows = loss_sum + float(batch_loss), rows + Y.shape[0]
            everywhere = np.arange(keys.size)
            trained = SparseVector(keys, params.values(everywhere), start.size)
            if not np.isfinite(trained.values).all():
                raise NonFiniteParameters(step, "parameters", partition)
            trained_state = params.state(everywhere)
            change = round_change(
                trained, trained_state, start, state, setup, plan, shrink, n_steps
            )
            trained = (trained, trained_state)
            computing += time.perf_counter() - started
            started = time.perf_counter()
            if pending is not None:  # at most one push on its way
                pending.answers.result()
                latencies.append(time.perf_counter() - pending.sent)
            pending = Pending(
                push_change(calls, round_, change, (round_, unit), (shrink, n_steps)), None
            )
            if not self.overlap:
                pending.answers.result()
                latencies.append(time.perf_counter() - pending.sent)
                pending = None
            waited += time.perf_counter() - started
            done, round_ = done + n_steps, round_ + 1
        if pending is not None:  # the segment ends with its last round applied
            started = time.perf_counter()
            pending.answers.result()
            latencies.append(time.perf_counter() - pending.sent)
            waited += time.perf_counter() - started
        return LocalResult(
            loss_sum,
            rows,
            LocalCarry(data.cursor),
            waited_seconds=waited,
            step_seconds=computing / max(done, 1),
            latency_seconds=statistics.fmean(latencies) if latencies else float("nan"),
            round_steps=self.round_steps(),
        )

    def history(self, results: list[LocalResult], dropped: int) -> dict:
        return {
            "local_steps": results[-1].round_steps,
            "exchange_wait_seconds": max(result.waited_seconds for result in results),
        }


class Pending:
    """A round's push on its way: the answers to come, the parameters it pushed, when it
    was sent and when a unit first saw the answers there."""

    def __init__(self, answers: PendingAnswers, pushed: Array) -> None:
        self.answers, self.pushed = answers, pushed
        self.sent, self.arrived = time.perf_counter(), None


def pull_working_set(calls, min_version: int, keys: np.ndarray):
    """θ and the optimizer state at ``keys`` once every shard has reached ``min_version``,
    and each shard's version (keyed by where its slice starts)."""
    answers = calls.fan_out("pull_state", lambda where: (min_version, within(keys, where)))
    pulled, versions = joined([(where, (values, v)) for where, (values, _, v) in answers])
    return pulled, join_states([state for _, (_, state, _) in answers]), versions


def with_own_progress(start: SparseVector, state, trained, unapplied: list[slice]):
    """``start`` and ``state`` with the entries of the unit's last round (``trained``: its
    values and state as it left them) in the shards' slices ``unapplied``, where that
    round's mean is not applied yet: the unit goes on from its own progress there."""
    (last, last_state) = trained
    _, here, there = np.intersect1d(start.indices, last.indices, return_indices=True)
    inside = np.zeros(here.size, bool)
    for where in unapplied:
        inside |= (start.indices[here] >= where.start) & (start.indices[here] < where.stop)
    here, there = here[inside], there[inside]
    if not here.size:
        return start, state
    values = start.values.copy()
    values[here] = last.values[there]

    def overlay(leaf, last_leaf):
        if not np.ndim(leaf):
            return leaf
        leaf = leaf.copy()
        leaf[here] = last_leaf[there]
        return leaf

    return SparseVector(start.indices, values, start.size), map_tree(overlay, state, last_state)


def push_change(calls, round_: int, change: SparseVector, token, rate) -> PendingAnswers:
    """Contribute a unit's change to round ``round_``; the answers come once the round is
    applied (they hold no parameters: the next round pulls its own)."""
    nothing = np.empty(0, np.int64)
    return calls.fan_out_later("push", lambda where: (round_, change[where], token, rate, nothing))


def round_change(trained, trained_state, start, state, setup, plan, shrink: float, n_steps: int):
    """A unit's change over its round, from ``start`` and ``state`` to ``trained`` and
    ``trained_state``, beyond what the shards do by themselves in ``n_steps`` steps (θ's
    shrink; the optimizer state's decay with a zero gradient), as one
    :class:`SparseVector` whose columns are θ's change, then each state vector's."""
    expected = start.values.copy()
    penalized = setup.penalized_count(start.indices)
    factors = shrink_factors(plan.optimizer, state, shrink)
    expected[:penalized] *= factors if np.isscalar(factors) else factors[:penalized]
    columns = [trained.values - expected]
    decays = zero_gradient_decays(plan.optimizer, n_steps)
    for leaf, before, decay in zip(
        tree_leaves(trained_state), tree_leaves(state), decays, strict=True
    ):
        if np.ndim(leaf):  # scalars (Adam's count) follow the steps on the shards
            columns.append(leaf - (before if decay is None else decay * before))
    values = np.column_stack(columns).astype(start.dtype)
    return SparseVector(start.indices, values, start.size)


def push_params(calls, round_: int, params, token, rate: float) -> PendingAnswers:
    """Contribute ``params`` to averaging round ``round_`` on every shard; the shards answer
    with the new center once every unit has contributed."""
    params = to_host(params)
    return calls.fan_out_later("push", lambda where: (round_, params[where], token, rate))

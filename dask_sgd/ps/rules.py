"""Exchange rules: what a parameter-server shard does with a push.

A training strategy chooses one (:mod:`dask_sgd.engine.strategies`); each shard works on its
own copy, bound to the shard, whose state (pending steps, clocks, a step budget) lives with
the shard's parameters. A rule builds on the shard's primitives (``apply``, ``keep``,
``until``, ``seen``) and answers a unit's ``push``; ``requests`` names the other calls a
unit or the client may make of it through ``ParameterShard.call``. A new strategy that needs
another behaviour writes another rule; nothing here knows a strategy by name.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dask_sgd.ps.lane import lane_of

Array = Any


class ExchangeRule:
    """The base: a rule is bound to one shard before its first push."""

    requests: ClassVar[tuple[str, ...]] = ()
    #: contributions that arrived too late to count (only synchronous rounds drop any)
    dropped: int = 0

    def bind(self, shard: Any) -> None:
        self.shard = shard

    async def push(self, *args: Any) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        """The shard was aborted (it has released its own waiters): release the rule's."""


class Immediate(ExchangeRule):
    """Asynchronous training (Downpour): every push is one optimizer step, applied at once.

    A push answers the new version and its *staleness*: the updates applied since the
    pusher fetched the parameters at ``fetched_version``. ``staleness_aware`` divides the
    learning rate by the staleness (Zhang et al. 2016). A token applies once. The epoch's
    steps are a budget that units claim a few at a time, so a slow worker does fewer.
    """

    requests = ("open_budget", "claim")

    def __init__(self) -> None:
        self._next_step = self._budget_end = 0

    async def push(
        self,
        grad: Array,
        learning_rate: float,
        token: Any = None,
        fetched_version: int | None = None,
        staleness_aware: bool = False,
    ) -> tuple[int, int]:
        shard = self.shard
        staleness = 0 if fetched_version is None else max(shard.version - fetched_version, 0)
        if shard.seen(token):
            return shard.version, staleness
        version = await shard.update_off_loop(
            grad, self._apply, grad, learning_rate, staleness, staleness_aware
        )
        return version, staleness

    def _apply(self, grad, learning_rate: float, staleness: int, staleness_aware: bool) -> int:
        self.shard.pushes += 1
        if staleness_aware and staleness > 1:
            learning_rate = learning_rate / staleness
        return self.shard.apply(grad, learning_rate)

    async def open_budget(self, first_step: int, n_steps: int) -> None:
        """The segment's steps, ``first_step`` on, which units claim a few at a time."""
        self._next_step, self._budget_end = first_step, first_step + n_steps

    async def claim(self, n_steps: int) -> tuple[int, int]:
        """Up to ``n_steps`` unclaimed steps: the first one and how many."""
        first = self._next_step
        granted = max(0, min(n_steps, self._budget_end - first))
        self._next_step += granted
        return first, granted


class Clocked(Immediate):
    """Stale synchronous parallel (Ho et al. 2013): :class:`Immediate` pushes that tick
    their unit's clock, and pulls that wait for the slowest unit's clock.

    A unit about to compute its step ``t`` pulls with ``min_clock = t - τ``: it waits while
    it is more than ``τ`` clocks ahead of the slowest unit, and its parameters hold every
    update of the steps before ``t - τ``.
    """

    requests = ("pull_bounded",)

    def __init__(self, n_units: int, clock: int = 0) -> None:
        super().__init__()
        self.clocks = [clock] * n_units  # pushes each unit has made

    async def pull_bounded(self, min_clock: int, indices: Array | None = None) -> tuple[Any, int]:
        """The parameters (at ``indices``, if given) and their version, once every unit has
        pushed ``min_clock`` times."""
        shard = self.shard
        await shard.until(lambda: min(self.clocks) >= min_clock)
        return shard.current(indices)

    async def push(
        self,
        unit: int,
        grad: Array,
        learning_rate: float,
        token: Any,
        fetched_version: int,
        staleness_aware: bool = False,
    ) -> tuple[int, int, int]:
        """Returns the new version, the staleness, and the unit's *lead*: how many clocks it
        was ahead of the slowest unit when it pushed (never more than the bound it pulled
        with)."""
        shard = self.shard
        lead = self.clocks[unit] - min(self.clocks)
        staleness = max(shard.version - fetched_version, 0)
        if shard.seen(token):
            return shard.version, staleness, lead
        self.clocks[unit] += 1  # before the update wakes the waiting units
        version = await shard.update_off_loop(
            grad, self._apply, grad, learning_rate, staleness, staleness_aware
        )
        return version, staleness, lead


class Barrier(ExchangeRule):
    """Synchronous rounds: round ``r`` applies the mean of its first ``n_contributors``
    contributions once they have arrived, and only when the shard's version is ``r``, so
    rounds apply in order; every contributor then receives the new parameters.

    A contribution to a round already applied (a backup worker's late push) is dropped and
    counted. A token applies once.

    Units reach a barrier either through Dask's actor calls (``push``) or through the
    shard's direct lane (:mod:`dask_sgd.ps.lane`, opened by the ``open_lane`` request), a
    plain TCP stream whose threads call :meth:`contribute` under the lane's lock: the
    same rule either way.
    """

    requests = ("open_lane",)

    def __init__(self, n_contributors: int) -> None:
        self.n_contributors = n_contributors
        self.dropped = 0
        self._pending: dict[int, tuple[Array, int, Any]] = {}
        self.lane = None  # the shard's direct lane, once opened

    async def push(
        self, round_: int, value: Array, token: Any, rate: Any, indices: Array | None = None
    ) -> tuple[Any, int]:
        """Contribute ``value`` to ``round_``; answer the parameters once it is applied (at
        ``indices`` if given: those the unit's next minibatches touch)."""
        if self.lane is None:
            await self.shard.update_off_loop(value, self.contribute, round_, value, token, rate)
        else:  # under the lane's lock, answering the units that wait there
            self.lane.push(round_, value, token, rate)
        return await self.shard.pull(round_ + 1, indices)

    def contribute(self, round_: int, value: Array, token: Any, rate: Any) -> None:
        """Count ``value`` towards ``round_`` (or drop it, late), and apply every round that
        is complete, in order; does not wait."""
        shard = self.shard
        if round_ < shard.version:  # late: the round was applied without it
            self.dropped += 1
        elif not shard.seen(token):
            shard.pushes += 1
            total, count, first_rate = self._pending.get(round_, (0, 0, rate))
            with np.errstate(over="ignore", invalid="ignore"):  # refused, not warned
                self._pending[round_] = (total + value, count + 1, first_rate)
                self._apply_ready_rounds()

    async def open_lane(self, host: str) -> tuple[str, int]:
        """The address of this shard's direct lane, listening on ``host`` (its worker's)."""
        return lane_of(self, host).open()

    def abort(self) -> None:
        if self.lane is not None:
            self.lane.abort()

    def _apply_ready_rounds(self) -> None:
        shard = self.shard
        while shard.version in self._pending:
            total, count, rate = self._pending[shard.version]
            if count < self.n_contributors:
                return
            del self._pending[shard.version]
            self.apply_mean(total / count, rate)

    def apply_mean(self, mean: Array, rate: Any) -> None:
        """Update the shard with the round's mean and advance its version."""
        raise NotImplementedError


class MeanGradientStep(Barrier):
    """Synchronous SGD: a round is a step; its contributions are gradients, and the shard
    applies one optimizer step with their mean at the learning rate ``rate``."""

    def apply_mean(self, mean: Array, rate: float) -> None:
        self.shard.apply(mean, rate)


class Averaging(Barrier):
    """Model averaging (local SGD): contributions are parameters, and the shard's become
    their mean, no optimizer step; elastic averaging (``rate`` β < 1) moves them only that
    far towards the mean, ``θ ← θ + β (mean − θ)``."""

    def apply_mean(self, mean: Array, rate: float) -> None:
        shard = self.shard
        moved = mean if rate == 1 else shard.params + rate * (mean - shard.params)
        shard.keep(moved.astype(shard.params.dtype, copy=False), shard.opt_state)
        shard.advance()


class MeanDeltaStep(Barrier):
    """Local SGD on sparse input (a :class:`~dask_sgd.ps.shard.SparseParameterShard`): a
    contribution is a unit's change over its round at the entries it touched, of θ (beyond
    the round's shrink) and of the optimizer state; ``rate`` is ``(shrink, steps)``, the
    round's L2 shrink and its steps. The shard applies the shrink to every entry and adds
    the units' mean change, which is the mean of the units' parameters, as
    :class:`Averaging` makes it: a unit's entry that its round did not touch changed only
    by the shrink."""

    def apply_mean(self, mean: Array, rate: Any) -> None:
        decay, n_steps = rate
        self.shard.add_round(mean, decay, n_steps)

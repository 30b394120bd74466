"""One shard of the parameter server: a slice of θ and its optimizer state, in a Dask actor.

Every method is ``async``: Dask runs them on the worker's event loop, one at a time between
awaits, so a shard needs no lock, and a caller can wait for a version without holding a
thread. Updates never modify arrays in place, so a returned array stays valid, and an
update that would make the parameters NaN or infinite is refused (:class:`NonFiniteParameters`,
naming the shard's version: the step for "sync" and "backup", the round for "local", the
shard's update count for the asynchronous strategies).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from dask_sgd.errors import NonFiniteParameters
from dask_sgd.optim import GradientTransformation, apply_updates

Array = Any

#: How many recent push tokens a shard remembers to drop duplicates (Dask may run a task
#: twice, and a rerun task pushes again).
TOKEN_MEMORY = 100_000


class ParameterShard:
    """A contiguous slice of the flat parameter vector and that slice's optimizer state.

    ``version`` counts the updates applied. ``n_contributors`` is the number of pushes a
    synchronous step waits for before it applies their mean, and the number of units whose
    clocks bounded-staleness training keeps, all starting at ``clock``.
    """

    def __init__(
        self,
        params: Array,
        optimizer: GradientTransformation,
        n_contributors: int = 1,
        opt_state: Any = None,
        version: int = 0,
        clock: int = 0,
    ) -> None:
        self.params = params
        self.optimizer = optimizer
        self.opt_state = optimizer.init(params) if opt_state is None else opt_state
        self.n_contributors = n_contributors
        self.version = version
        self.aborted: str | None = None
        self.pushes = 0
        self.dropped = 0
        self._tokens: OrderedDict[Any, None] = OrderedDict()
        self.clocks = [clock] * n_contributors  # "ssp": pushes each unit has made
        self._next_step = self._budget_end = 0  # "downpour": the epoch's unclaimed steps
        self._pending: dict[int, tuple[Array, int, Callable[[Array], None]]] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []

    # --- the seed's interface ------------------------------------------------------------------

    async def get(self) -> Array:
        return self.params

    async def put(self, values: Array) -> int:
        self.params = values.astype(self.params.dtype, copy=False)
        return self._advance()

    async def add(self, delta: Array, token: Any = None) -> int:
        if self._seen(token):
            return self.version
        self.params = self.params + delta.astype(self.params.dtype, copy=False)
        return self._advance()

    # --- training ------------------------------------------------------------------------------

    async def pull(self, min_version: int = 0) -> tuple[Array, int]:
        """The parameters and their version, once the version has reached ``min_version``."""
        await self._until(lambda: self.version >= min_version)
        return self.params, self.version

    async def pull_bounded(self, min_clock: int) -> tuple[Array, int]:
        """The parameters and their version, once every unit has pushed ``min_clock`` times.

        Stale synchronous parallel (Ho et al. 2013): a unit about to compute its step ``t``
        asks for ``min_clock = t - τ``, so it waits while it is more than ``τ`` clocks ahead of
        the slowest unit, and its parameters hold every update of the steps before ``t - τ``.
        """
        await self._until(lambda: min(self.clocks) >= min_clock)
        return self.params, self.version

    async def push(
        self,
        grad: Array,
        learning_rate: float,
        token: Any = None,
        fetched_version: int | None = None,
        staleness_aware: bool = False,
    ) -> tuple[int, int]:
        """Apply one optimizer step with ``grad`` at once (asynchronous training).

        Returns the new version and the push's staleness: the updates applied since the
        pusher fetched the parameters at ``fetched_version``. ``staleness_aware`` divides
        the learning rate by the staleness (Zhang et al. 2016). A token applies once.
        """
        staleness = 0 if fetched_version is None else max(self.version - fetched_version, 0)
        if self._seen(token):
            return self.version, staleness
        return self._apply_push(grad, learning_rate, staleness, staleness_aware), staleness

    async def push_clocked(
        self,
        unit: int,
        grad: Array,
        learning_rate: float,
        token: Any,
        fetched_version: int,
        staleness_aware: bool = False,
    ) -> tuple[int, int, int]:
        """:meth:`push` for unit ``unit`` of bounded-staleness training, which ticks its clock.

        Returns the new version, the staleness, and the unit's *lead*: how many clocks it was
        ahead of the slowest unit when it pushed (never more than the bound it pulled with).
        """
        lead = self.clocks[unit] - min(self.clocks)
        staleness = max(self.version - fetched_version, 0)
        if self._seen(token):
            return self.version, staleness, lead
        self.clocks[unit] += 1  # before the update wakes the waiting units
        version = self._apply_push(grad, learning_rate, staleness, staleness_aware)
        return version, staleness, lead

    async def open_budget(self, first_step: int, n_steps: int) -> None:
        """Downpour: the epoch's steps, ``first_step`` on, which units claim a few at a time."""
        self._next_step, self._budget_end = first_step, first_step + n_steps

    async def claim(self, n_steps: int) -> tuple[int, int]:
        """Up to ``n_steps`` unclaimed steps of the epoch: the first one and how many."""
        first = self._next_step
        granted = max(0, min(n_steps, self._budget_end - first))
        self._next_step += granted
        return first, granted

    async def push_sync(
        self, step: int, grad: Array, learning_rate: float, token: Any = None
    ) -> tuple[Array, int]:
        """Contribute to synchronous step ``step``; return the parameters after that step.

        The shard applies the mean of the first ``n_contributors`` gradients of a step once
        they have arrived, and only when its version equals ``step`` (so steps apply in
        order); every caller then receives the new parameters. A gradient for a step that
        was already applied (a backup worker's late push) is dropped and counted.
        """
        return await self._contribute(
            step, grad, token, lambda mean: self._apply(mean, learning_rate)
        )

    async def push_average(
        self, step: int, params: Array, token: Any = None, moving_rate: float = 1.0
    ) -> tuple[Array, int]:
        """Contribute parameters to averaging round ``step``; return the new parameters.

        Local SGD: the shard's parameters become the mean of the ``n_contributors`` vectors
        (no optimizer step), with the same ordering and once-per-token rules as
        :meth:`push_sync`. Elastic averaging (``moving_rate`` β < 1) moves them only that
        far towards the mean: ``θ ← θ + β (mean − θ)``.
        """

        def average(mean: Array) -> None:
            moved = mean if moving_rate == 1 else self.params + moving_rate * (mean - self.params)
            self._keep(moved.astype(self.params.dtype, copy=False), self.opt_state)

        return await self._contribute(step, params, token, average)

    async def _contribute(self, step: int, value: Array, token, apply) -> tuple[Array, int]:
        """Add ``value`` to step ``step``; once it has every contribution, ``apply`` their mean."""
        if step < self.version:  # late: the step was applied without it (backup workers)
            self.dropped += 1
        elif not self._seen(token):
            self.pushes += 1
            total, count, first_apply = self._pending.get(step, (0, 0, apply))
            with np.errstate(over="ignore", invalid="ignore"):  # refused, not warned
                self._pending[step] = (total + value, count + 1, first_apply)
                self._apply_ready_steps()
        return await self.pull(step + 1)

    def _apply_ready_steps(self) -> None:
        while self.version in self._pending:
            total, count, apply = self._pending[self.version]
            if count < self.n_contributors:
                return
            del self._pending[self.version]
            apply(total / count)
            self._advance()

    # --- consistency ---------------------------------------------------------------------------

    async def snapshot(self) -> dict:
        """Parameters, optimizer state and version, as plain arrays."""
        return {"params": self.params, "opt_state": self.opt_state, "version": self.version}

    async def restore(self, snapshot: dict) -> int:
        """Return to a snapshot: parameters, optimizer state and version; pending steps drop."""
        self.params = snapshot["params"]
        self.opt_state = snapshot["opt_state"]
        self.version = snapshot["version"]
        self._pending.clear()
        self._wake()
        return self.version

    async def abort(self, reason: str) -> None:
        """Fail every waiting and future pull, so that no unit waits for a step for ever."""
        self.aborted = reason
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = []

    async def stats(self) -> dict:
        return {
            "version": self.version,
            "pushes": self.pushes,
            "dropped": self.dropped,
            "size": int(self.params.size),
        }

    # --- internals -----------------------------------------------------------------------------

    def _apply_push(
        self, grad: Array, learning_rate: float, staleness: int, staleness_aware: bool
    ) -> int:
        self.pushes += 1
        if staleness_aware and staleness > 1:
            learning_rate = learning_rate / staleness
        self._apply(grad, learning_rate)
        return self._advance()

    def _apply(self, grad: Array, learning_rate: float) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned
            direction, opt_state = self.optimizer.update(grad, self.opt_state, self.params)
            params = apply_updates(self.params, direction, learning_rate)
        self._keep(params, opt_state)

    def _keep(self, params: Array, opt_state: Any) -> None:
        """The update's result, unless it is not finite: then the shard stays as it was."""
        if not np.isfinite(params).all():
            raise NonFiniteParameters(self.version)
        self.params, self.opt_state = params, opt_state

    def _advance(self) -> int:
        self.version += 1
        self._wake()
        return self.version

    async def _until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds; raise if training was aborted meanwhile."""
        if not condition() and self.aborted is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((condition, waiter))
            await waiter
        if self.aborted is not None:
            raise RuntimeError(f"Training was aborted: {self.aborted}")

    def _wake(self) -> None:
        still_waiting = []
        for condition, waiter in self._waiters:
            if condition() and not waiter.done():
                waiter.set_result(None)
            elif not waiter.done():
                still_waiting.append((condition, waiter))
        self._waiters = still_waiting

    def _seen(self, token: Any) -> bool:
        """Whether ``token`` was applied before; remember it if not."""
        if token is None:
            return False
        if token in self._tokens:
            return True
        self._tokens[token] = None
        if len(self._tokens) > TOKEN_MEMORY:
            self._tokens.popitem(last=False)
        return False

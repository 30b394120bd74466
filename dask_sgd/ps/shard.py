"""One shard of the parameter server: a slice of θ and its optimizer state, in a Dask actor.

Every method is ``async``: Dask runs them on the worker's event loop, one at a time between
awaits, so a shard needs no lock, and a caller can wait for a version without holding a
thread. What a shard does with a push is its *exchange rule* (:mod:`dask_sgd.ps.rules`),
chosen by the training strategy; the shard itself keeps the parameters, their version,
the push tokens it has applied and the units waiting on it. Updates never modify arrays in
place, so a returned array stays valid, and an update that would make the parameters NaN or
infinite is refused (:class:`NonFiniteParameters`, naming the shard's version).

Once told to (:meth:`ParameterShard.start_averaging`), a shard also keeps the running mean of
its slice over every update it applies from then on (averaged SGD, Polyak and Juditsky
1992), whatever its rule: each update (``keep``) is one more term of the mean.
"""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dask_sgd.errors import NonFiniteParameters, TrainingAborted
from dask_sgd.optim import GradientTransformation, apply_updates
from dask_sgd.ps.rules import ExchangeRule, Immediate
from dask_sgd.sparse import SparseVector
from dask_sgd.sparse.setup import SparseSetup

Array = Any


@dataclass(frozen=True)
class ShardSnapshot:
    """A shard's parameters, optimizer state and version, as plain arrays, and the running
    mean of its parameters with the updates it counts (None and 0 before averaging starts)."""

    params: Array
    opt_state: Any
    version: int
    average: Array | None = None
    n_averaged: int = 0


@dataclass(frozen=True)
class ShardStats:
    """A shard's version, the pushes it applied and those its rule dropped (late ones), its
    size, and the updates its running mean holds (0 before averaging starts)."""

    version: int
    pushes: int
    dropped: int
    size: int
    n_averaged: int = 0
    pulls: int = 0  # the units' reads of the parameters (a synchronous round's answer is not one)


#: How many recent push tokens a shard remembers to drop duplicates (Dask may run a task
#: twice, and a rerun task pushes again).
TOKEN_MEMORY = 100_000


class ParameterShard:
    """A contiguous slice of the flat parameter vector and that slice's optimizer state.

    ``version`` counts the updates applied. ``rule`` says what a push does (each shard
    works on its own copy of it); the default applies every push at once. ``average`` (the
    running mean of the slice) and ``n_averaged`` (the updates it holds) resume averaging
    from a snapshot; None: no averaging until :meth:`start_averaging`.
    """

    def __init__(
        self,
        params: Array,
        optimizer: GradientTransformation,
        rule: ExchangeRule | None = None,
        opt_state: Any = None,
        version: int = 0,
        average: Array | None = None,
        n_averaged: int = 0,
    ) -> None:
        self.params = params
        self.optimizer = optimizer
        self.opt_state = optimizer.init(params) if opt_state is None else opt_state
        self.version = version
        self.average: Array | None = None
        self.n_averaged = 0
        if average is not None:
            self._average_from(average, n_averaged)
        self.aborted: str | None = None
        self.pushes = self.pulls = 0
        self._tokens: OrderedDict[Any, None] = OrderedDict()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the waiters' loop
        self.rule = copy.deepcopy(rule if rule is not None else Immediate())
        self.rule.bind(self)
        self.kept: ShardSnapshot | None = None  # the snapshot a recovery restarts from
        self.pending: ShardSnapshot | None = None  # the next one, until its replica is made

    # --- what units and the client call ---------------------------------------------------------

    async def pull(self, min_version: int = 0, indices: Array | None = None) -> tuple[Any, int]:
        """The parameters and their version, once the version has reached ``min_version``
        (only those at ``indices``, as a :class:`~dask_sgd.sparse.SparseVector`, if given)."""
        await self.until(lambda: self.version >= min_version)
        return self.current(indices)

    def current(self, indices: Array | None = None) -> tuple[Any, int]:
        """The parameters (at ``indices`` if given) and their version, now: a pull."""
        self.pulls += 1
        if indices is None:
            return self.params, self.version
        return SparseVector.gather(self.params, indices), self.version

    async def push(self, *args: Any, **kwargs: Any) -> Any:
        """A unit's contribution, handled by the exchange rule (its answer is the rule's)."""
        return await self.rule.push(*args, **kwargs)

    async def call(self, request: str, *args: Any) -> Any:
        """One of the rule's own requests (``rule.requests``), such as claiming steps."""
        if request not in self.rule.requests:
            raise ValueError(f"{type(self.rule).__name__} has no request {request!r}.")
        return await getattr(self.rule, request)(*args)

    async def snapshot(self) -> ShardSnapshot:
        return ShardSnapshot(
            self.params, self.opt_state, self.version, self.average, self.n_averaged
        )

    async def take_snapshot(self, keep: bool) -> tuple[ShardStats, ShardSnapshot | None]:
        """The shard's statistics and its state now: the state in the answer, or, if
        ``keep``, kept on this worker as the pending snapshot (for a replica to copy, see
        :meth:`commit_snapshot`) and not sent."""
        snapshot = await self.snapshot()
        if not keep:
            return await self.stats(), snapshot
        self.pending = snapshot
        return await self.stats(), None

    async def kept_snapshot(self, version: int) -> ShardSnapshot:
        """The snapshot of ``version`` that this shard keeps (pending or committed)."""
        for snapshot in (self.pending, self.kept):
            if snapshot is not None and snapshot.version == version:
                return snapshot
        raise RuntimeError(f"This shard keeps no snapshot of version {version}.")

    async def commit_snapshot(self, version: int) -> None:
        """The pending snapshot of ``version`` (whose replica is made) becomes the one kept;
        the one before goes. Until then a recovery restarts from the one before."""
        if self.pending is not None and self.pending.version == version:
            self.kept, self.pending = self.pending, None

    async def start_averaging(self, average: Array | None = None, n_averaged: int = 0) -> None:
        """Average every update from now on, going on from the mean ``average`` of
        ``n_averaged`` earlier updates (a snapshot's). A new mean needs no ``average``: the
        shard starts it from its own slice's zeros."""
        self._average_from(average, n_averaged)

    def _average_from(self, average: Array | None, n_averaged: int) -> None:
        if average is None or not n_averaged:  # a new mean: what it starts from is unused
            self.average, self.n_averaged = np.zeros_like(self.params), 0
            return
        if np.shape(average) != self.params.shape:
            raise ValueError(
                f"An average of shape {np.shape(average)} for a shard of {self.params.shape}."
            )
        self.average = np.asarray(average, dtype=self.params.dtype).copy()
        self.n_averaged = int(n_averaged)

    async def abort(self, reason: str) -> None:
        """Fail every waiting and future pull, so that no unit waits for a step for ever."""
        self.aborted = reason
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters = []
        self.rule.abort()  # and the units waiting on the rule's own (a direct lane's)

    async def stats(self) -> ShardStats:
        return ShardStats(
            self.version, self.pushes, self.rule.dropped, int(self.params.size), self.n_averaged,
            self.pulls,
        )  # fmt: skip

    # --- what exchange rules build on -----------------------------------------------------------

    def apply(self, grad: Array, learning_rate: float) -> int:
        """One optimizer step with ``grad``; return the new version."""
        with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned
            direction, opt_state = self.optimizer.update(grad, self.opt_state, self.params)
            params = apply_updates(self.params, direction, learning_rate)
        self.keep(params, opt_state)
        return self.advance()

    def keep(self, params: Array, opt_state: Any) -> None:
        """The update's result, unless it is not finite: then the shard stays as it was.
        Once averaging has started, the update is one more term of the running mean."""
        if not np.isfinite(params).all():
            raise NonFiniteParameters(self.version)
        self.params, self.opt_state = params, opt_state
        if self.average is not None:
            self.n_averaged += 1
            self.average = self.average + (params - self.average) / self.n_averaged

    def advance(self) -> int:
        self.version += 1
        self.wake()
        return self.version

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds; raise if training was aborted meanwhile."""
        if not condition() and self.aborted is None:
            self._loop = asyncio.get_running_loop()
            waiter = self._loop.create_future()
            self._waiters.append((condition, waiter))
            await waiter
        if self.aborted is not None:
            raise TrainingAborted(f"Training was aborted: {self.aborted}")

    def wake(self) -> None:
        """Release the waiters whose condition now holds. An update applied by a thread of
        a direct lane (:mod:`dask_sgd.ps.lane`) wakes them through their event loop."""
        if self._waiters and self._loop is not None and _running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self.wake)
            return
        still_waiting = []
        for condition, waiter in self._waiters:
            if condition() and not waiter.done():
                waiter.set_result(None)
            elif not waiter.done():
                still_waiting.append((condition, waiter))
        self._waiters = still_waiting

    def seen(self, token: Any) -> bool:
        """Whether ``token`` was applied before; remember it if not."""
        if token is None:
            return False
        if token in self._tokens:
            return True
        self._tokens[token] = None
        if len(self._tokens) > TOKEN_MEMORY:
            self._tokens.popitem(last=False)
        return False


class SparseParameterShard(ParameterShard):
    """A shard of a model trained on sparse input: its slice of θ, with the optimizer state,
    held as :class:`~dask_sgd.sparse.lazy.LazyParams`, so that a push costs the entries it
    touches, not the slice: the penalty's shrink is one number, and an entry's optimizer
    state catches up when it is next touched. Units pull it by indices.

    ``where`` is the slice of θ it holds; ``setup`` the penalty, applied lazily.
    """

    def __init__(
        self,
        params: Array,
        optimizer: GradientTransformation,
        rule: ExchangeRule | None = None,
        opt_state: Any = None,
        version: int = 0,
        average: Array | None = None,
        n_averaged: int = 0,
        *,
        setup: SparseSetup,
        where: slice,
    ) -> None:
        self.lazy = setup.for_slice(params, optimizer, where, opt_state=opt_state)
        super().__init__(params[:0], optimizer, rule, None, version)
        self.size = int(params.size)
        if average is not None:
            self._average_from(average, n_averaged)

    @property
    def params(self) -> Array:
        """The whole slice, materialized (O(size): snapshots only)."""
        return self.lazy.dense()[0]

    @params.setter
    def params(self, value: Array) -> None:  # the base class's start; the lazy one holds θ
        pass

    def current(self, indices: Array | None = None) -> tuple[Any, int]:
        self.pulls += 1
        if indices is None:
            return self.params, self.version
        return SparseVector(indices, self.lazy.values(indices), self.size), self.version

    async def pull_state(self, min_version: int, indices: Array) -> tuple[Any, Any, int]:
        """θ and the optimizer state at ``indices`` (caught up), and the version, once it
        has reached ``min_version``: a local-SGD unit's working set for a round."""
        await self.until(lambda: self.version >= min_version)
        values, version = self.current(indices)
        return values, self.lazy.state(indices), version

    async def snapshot(self) -> ShardSnapshot:
        params, opt_state, average, n_averaged = self.lazy.dense()
        return ShardSnapshot(params, opt_state, self.version, average, n_averaged)

    async def stats(self) -> ShardStats:
        return ShardStats(
            self.version, self.pushes, self.rule.dropped, self.size, self.lazy.n_averaged,
            self.pulls,
        )  # fmt: skip

    def _average_from(self, average: Array | None, n_averaged: int) -> None:
        if average is None or not n_averaged:  # a new mean: nothing to go on from
            self.lazy.start_averaging()
            return
        if np.shape(average) != (self.size,):
            raise ValueError(f"An average of shape {np.shape(average)} for a shard of {self.size}.")
        self.lazy.start_averaging(np.asarray(average).copy(), int(n_averaged))

    def apply(self, grad: SparseVector, learning_rate: float) -> int:
        """One step with the sparse gradient ``grad``: the lazy shrink and the optimizer on
        the entries it touches; return the new version."""
        with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned
            self.lazy.apply(grad.indices, grad.values, learning_rate)
        self._refuse_non_finite(grad.indices)
        return self.advance()

    def add_round(self, mean: SparseVector, decay: float, n_steps: int) -> int:
        """Local SGD's averaging round on sparse input: ``n_steps`` steps' shrink (``decay``)
        on every entry, then the units' mean change of θ and of the optimizer state at the
        entries they touched (``mean.values``' columns: θ, then each state vector)."""
        values = mean.values.reshape(mean.indices.size, -1)
        with np.errstate(over="ignore", invalid="ignore"):
            self.lazy.add(
                mean.indices, values[:, 0], tuple(values[:, 1:].T), decay=decay, steps=n_steps
            )
        self._refuse_non_finite(mean.indices)
        return self.advance()

    def _refuse_non_finite(self, indices: Array) -> None:
        if not np.isfinite(self.lazy.values(indices)).all():
            raise NonFiniteParameters(self.version)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

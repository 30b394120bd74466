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
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from distributed import get_worker
from distributed.protocol import dask_deserialize, dask_serialize, deserialize, serialize

from dask_sgd._tree import map_tree, tree_leaves, tree_unflatten
from dask_sgd.errors import NonFiniteParameters, TrainingAborted
from dask_sgd.optim import GradientTransformation, apply_updates
from dask_sgd.ps.remote import RemoteShard, ShardRef
from dask_sgd.ps.rules import ExchangeRule, Immediate
from dask_sgd.sparse import SparseVector
from dask_sgd.sparse.lazy import LazyChanges, LazyParams
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


# A snapshot crosses the scheduler's comms (a client's gather), which pickle with protocol 4:
# in band, a copy of every array in the sender's memory (a large model's, O(model) on each
# worker at the end of a fit). As Dask's own frames, its arrays go without a copy.


@dask_serialize.register(ShardSnapshot)
def _dump_snapshot(snapshot: ShardSnapshot) -> tuple[dict, list]:
    shape = map_tree(lambda _: None, snapshot.opt_state)  # the state's structure alone
    arrays = [snapshot.params, snapshot.average, *tree_leaves(snapshot.opt_state)]
    header, frames = serialize(arrays, serializers=("dask", "pickle"))
    small = pickle.dumps((shape, snapshot.version, snapshot.n_averaged))
    return {"arrays": header}, [small, *frames]


@dask_deserialize.register(ShardSnapshot)
def _load_snapshot(header: dict, frames: list) -> ShardSnapshot:
    shape, version, n_averaged = pickle.loads(frames[0])
    params, average, *leaves = deserialize(header["arrays"], frames[1:])
    return ShardSnapshot(params, tree_unflatten(shape, leaves), version, average, n_averaged)


@dataclass(frozen=True)
class SnapshotUpdate:
    """What brings a kept copy of a shard's snapshot at version ``base`` to ``version``:
    ``state``, what changed (a :class:`~dask_sgd.sparse.lazy.LazyChanges`), or, if ``base``
    is None, the whole state (a :class:`ShardSnapshot`, or a sparse shard's
    :class:`~dask_sgd.sparse.lazy.LazyParams`)."""

    version: int
    base: int | None
    state: Any

    @property
    def nbytes(self) -> int:
        if isinstance(self.state, LazyChanges):
            return self.state.nbytes
        if isinstance(self.state, ShardSnapshot):
            leaves = tree_leaves((self.state.params, self.state.opt_state, self.state.average))
        else:  # a sparse shard's whole lazy state
            leaves = self.state.arrays()
        return sum(np.asarray(leaf).nbytes for leaf in leaves if leaf is not None)


@dataclass(frozen=True)
class KeptCopy:
    """A copy of a shard's snapshot at ``version``, kept for a recovery (by the shard, or as
    a replica by a shard on another worker): a dense shard's :class:`ShardSnapshot`, or a
    sparse shard's :class:`~dask_sgd.sparse.lazy.LazyParams`, which what changed updates
    in place."""

    version: int
    state: Any

    def snapshot(self) -> ShardSnapshot:
        """The snapshot's arrays (a sparse shard's materialized: O(size))."""
        if isinstance(self.state, ShardSnapshot):
            return self.state
        params, opt_state, average, n_averaged = self.state.dense()
        return ShardSnapshot(params, opt_state, self.version, average, n_averaged)


def updated(kept: KeptCopy | None, update: SnapshotUpdate) -> KeptCopy:
    """``kept`` brought to ``update.version`` (what changed is applied in place)."""
    if update.base is None:
        return KeptCopy(update.version, update.state)
    if kept is None or kept.version != update.base:
        raise RuntimeError(
            f"A snapshot update from version {update.base} for a copy at "
            f"{None if kept is None else kept.version}."
        )
    kept.state.apply_changes(update.state)
    return KeptCopy(update.version, kept.state)


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
#: A dense update of this many entries or more runs off the worker's event loop (1 MiB of
#: float32: an Adam step of about a millisecond here; a thread's hand-off costs about 0.1 ms)
OFF_LOOP_ENTRIES = 2**18


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
        self._updating = asyncio.Lock()  # updates that run off the loop, one at a time
        self.rule = copy.deepcopy(rule if rule is not None else Immediate())
        self.rule.bind(self)
        self.kept: KeptCopy | None = None  # the snapshot a recovery restarts from
        self.pending: SnapshotUpdate | None = None  # the next one, until the client keeps it
        self.replicas: dict[str, KeptCopy] = {}  # other shards' snapshots, by their keys
        self.staged: dict[str, SnapshotUpdate] = {}  # their next ones

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

    async def update_off_loop(self, value: Any, update: Callable[..., Any], *args: Any) -> Any:
        """``update(*args)``, a change of the shard's state made with the pushed ``value``:
        in a thread if ``value`` is a dense array of ``OFF_LOOP_ENTRIES`` entries or more, so
        that the worker's event loop (its heartbeats, the other calls) runs meanwhile; here
        otherwise (a sparse push's update costs the entries it touches, and changes the
        lazy state in place). The threaded updates run one at a time, in the order they
        came; a pull meanwhile sees θ before or after one (an update replaces the arrays,
        it does not write into them)."""
        if not (isinstance(value, np.ndarray) and value.size >= OFF_LOOP_ENTRIES):
            return update(*args)
        async with self._updating:
            result = await asyncio.to_thread(update, *args)
        self.wake()  # on the loop: a unit may have begun to wait as the thread advanced
        return result

    # --- snapshots kept on the workers ----------------------------------------------------------

    async def take_snapshot(
        self, keep: bool, kept_version: int | None = None
    ) -> tuple[ShardStats, ShardSnapshot | None]:
        """The shard's statistics and its state now: the state in the answer, or, if
        ``keep``, kept on this worker as the pending snapshot (for a replica to copy, see
        :meth:`replica_update`) and not sent. ``kept_version``: the snapshot the client
        keeps now (its every replica was made), which becomes this shard's kept one."""
        self._settle(kept_version)
        if not keep:
            return await self.stats(), await self.snapshot()
        self.pending = await self._pending_snapshot()
        return await self.stats(), None

    async def _pending_snapshot(self) -> SnapshotUpdate:
        """A dense shard's whole state (its arrays are never changed in place: no copy)."""
        return SnapshotUpdate(self.version, None, await self.snapshot())

    def _settle(self, version: int | None) -> None:
        """The pending snapshot of ``version`` becomes the kept one (the client keeps it:
        every replica of it was made); a pending one of another version was never kept by
        the client, and goes."""
        pending, self.pending = self.pending, None
        if pending is not None and pending.version == version:
            self._keep(pending)

    def _keep(self, pending: SnapshotUpdate) -> None:
        self.kept = updated(self.kept, pending)

    async def settle(self, version: int) -> None:
        """The client keeps the snapshot of ``version`` (its every replica was made): this
        shard and the replicas of it that it holds settle on it now, so that what they kept
        for the snapshot before (a sparse shard's undo logs) goes a segment sooner than at
        the next snapshot. Sent without waiting for the answer, it may come late: it changes
        only a pending snapshot or a staged replica of ``version``."""
        if self.pending is not None and self.pending.version == version:
            self._settle(version)
        for key, staged in list(self.staged.items()):
            if staged.version == version:
                self._settle_replica(key, version)

    async def kept_snapshot(self, version: int) -> ShardSnapshot:
        """The snapshot of ``version`` that this shard keeps (that the client keeps)."""
        if self.pending is not None and self.pending.version == version:
            self._settle(version)
        return self._kept_snapshot(version)

    def _kept_snapshot(self, version: int) -> ShardSnapshot:
        if self.kept is None or self.kept.version != version:
            raise RuntimeError(f"This shard keeps no snapshot of version {version}.")
        return self.kept.snapshot()

    async def replica_update(self, version: int, have: int | None) -> SnapshotUpdate:
        """What brings a replica of this shard's snapshots from ``have`` (None: no replica)
        to the pending ``version``: what changed, or, for a replica at another version, the
        whole state."""
        pending = self.pending
        if pending is None or pending.version != version:
            raise RuntimeError(f"This shard has no pending snapshot of version {version}.")
        if pending.state is not None and (pending.base is None or pending.base == have):
            return pending
        return SnapshotUpdate(version, None, self._whole(version, owned=True))

    def _whole(self, version: int, owned: bool) -> Any:
        """The whole state at the pending snapshot's ``version`` (a sparse shard's); if
        ``owned``, sharing no array with the shard (a message between workers of one
        process is not copied)."""
        raise NotImplementedError  # a dense shard's pending snapshot is whole

    # the replicas of other shards' snapshots that this shard holds (on another worker)

    async def stage_replica(self, source: ShardRef, version: int, kept_version: int | None) -> int:
        """Copy the pending snapshot of ``version`` of the shard ``source`` (on another worker):
        only what changed since the replica held here, once the one of ``kept_version``
        (which the client keeps) is settled. Returns the bytes copied."""
        self._settle_replica(source.key, kept_version)
        have = self.replicas.get(source.key)
        update = await RemoteShard(source, get_worker()).request(
            "replica_update", version, None if have is None else have.version
        )
        self.staged[source.key] = update
        return update.nbytes

    def _settle_replica(self, key: str, version: int | None) -> None:
        staged = self.staged.pop(key, None)
        if staged is None:
            return
        if staged.version == version:
            self.replicas[key] = updated(self.replicas.get(key), staged)
        else:  # never kept by the client: the replica goes too (the next copy is whole)
            self.replicas.pop(key, None)

    async def replica(self, key: str, version: int) -> ShardSnapshot:
        """The replica of ``version`` of the snapshots of the shard ``key``, held here."""
        staged = self.staged.get(key)
        if staged is not None and staged.version == version:
            self._settle_replica(key, version)
        kept = self.replicas.get(key)
        if kept is None or kept.version != version:
            raise RuntimeError(f"This shard holds no replica of {key} at version {version}.")
        return kept.snapshot()

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
        self.kept_version: int | None = None  # the snapshot the client keeps
        self._last_taken: int | None = None  # the version of the last snapshot taken
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

    async def final_values(self, indices: Array, version: int) -> Array:
        """The final parameters (the running mean once averaging has begun) at ``indices``,
        at ``version`` (between segments: the snapshot's)."""
        self._check_version(version)
        return self.lazy.final_values(indices)

    async def final_penalty(self, version: int) -> float:
        """The penalty of the final parameters of this slice, at ``version``: one pass over
        the slice, in a thread, so that the reads of the sample's entries go on meanwhile
        (between segments nothing changes the state)."""
        self._check_version(version)
        return await asyncio.to_thread(self.lazy.final_penalty)

    def _check_version(self, version: int) -> None:
        if self.version != version:
            raise RuntimeError(f"This shard is at version {self.version}, not {version}.")

    # A sparse shard keeps no copy of its snapshot: its lazy state keeps, from each snapshot
    # on, what the entries held before they changed (undo logs), and rolls back with them.

    async def _pending_snapshot(self) -> SnapshotUpdate:
        """What changed since the last snapshot (O(touched)); after an O(size) change, and
        at the first, the whole state, made when a replica asks for it (None here)."""
        changes = self.lazy.changes(tag=self.version)
        base, self._last_taken = self._last_taken, self.version
        return SnapshotUpdate(self.version, None if changes is None else base, changes)

    async def replica_update(self, version: int, have: int | None) -> SnapshotUpdate:
        """As a dense shard's; what changed is sent once: it goes from here when sent (the
        shard rolls back by its undo logs), and a replica that asks again gets the whole
        state."""
        update = await super().replica_update(version, have)
        self.pending = replace(self.pending, state=None)
        return update

    def _keep(self, pending: SnapshotUpdate) -> None:
        self.kept_version = pending.version
        self.lazy.forget_undo(before=pending.version)

    def _kept_snapshot(self, version: int) -> ShardSnapshot:
        if self.kept_version != version:
            raise RuntimeError(f"This shard keeps no snapshot of version {version}.")
        return KeptCopy(version, self._whole(version, owned=False)).snapshot()

    def _whole(self, version: int, owned: bool) -> LazyParams:
        """The lazy state at the snapshot of ``version``: itself, if nothing changed since
        (a view, materialized at once, unless ``owned``), else a copy rolled back to it."""
        if not self.lazy.unchanged_since(version):
            return self.lazy.rolled_back(version)
        return self.lazy.copy() if owned else self.lazy.view()

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
        if not self.lazy.finite(indices):
            raise NonFiniteParameters(self.version)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

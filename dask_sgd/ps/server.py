"""The parameter server as the client sees it: shard actors spread over the workers."""

from __future__ import annotations

import functools
import itertools
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import dask.config
import numpy as np
from distributed import get_worker, wait
from distributed.utils import sync

from dask_sgd import defaults
from dask_sgd._tree import map_tree, tree_leaves
from dask_sgd.optim import GradientTransformation
from dask_sgd.ps.remote import RemoteShard, ShardRef, ShardUnreachable
from dask_sgd.ps.rules import ExchangeRule
from dask_sgd.ps.shard import ParameterShard, ShardSnapshot, ShardStats, SparseParameterShard
from dask_sgd.sparse.setup import SparseSetup
from dask_sgd.workers import running_workers, worker_statuses

#: Seconds the shards' start waits for a running worker when every worker is paused (for
#: memory, until it has spilled) or still registering; then it raises, naming their statuses.
RUNNING_WAIT = 10.0

#: The key of every shard's actor starts with this (the retirement plugin looks for it).
SHARD_KEY_PREFIX = "dask-sgd-shard-"

logger = logging.getLogger(__name__)

Array = Any


def shard_ranges(size: int, n_shards: int) -> list[slice]:
    """Split ``range(size)`` into ``n_shards`` contiguous, non-empty, near-equal slices.

    Examples
    --------
    >>> shard_ranges(10, 3)
    [slice(0, 3, None), slice(3, 7, None), slice(7, 10, None)]
    """
    if not 1 <= n_shards <= size:
        raise ValueError(f"n_shards must be between 1 and {size}, got {n_shards}.")
    bounds = np.linspace(0, size, n_shards + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


#: a shard's arrays above this many bytes reach its worker ahead of its task (scattered), not
#: inside the task graph: Dask sends a graph through the scheduler, and warns above 10 MB
SCATTER_BYTES = 1 << 20


def shipped(client: Any, arguments: tuple, worker: str | None) -> tuple:
    """``arguments``, each array (or optimizer state) of more than ``SCATTER_BYTES`` replaced
    by a future of it, scattered to ``worker`` (None: to one Dask chooses)."""
    return tuple(
        client.scatter([value], workers=None if worker is None else [worker])[0]
        if sum(np.asarray(leaf).nbytes for leaf in tree_leaves(value)) > SCATTER_BYTES
        else value
        for value in arguments
    )


def split_state(state: Any, ranges: list[slice]) -> list[Any]:
    """Each shard's part of an optimizer state: vectors are sliced, scalars are copied."""
    return [map_tree(lambda leaf, r=r: leaf[r] if np.ndim(leaf) else leaf, state) for r in ranges]


def join_states(states: list[Any]) -> Any:
    """The inverse of :func:`split_state`."""

    def join(*leaves):
        return np.concatenate(leaves) if np.ndim(leaves[0]) else leaves[0]

    return map_tree(join, *states)


def mean_states(states: list[Any]) -> Any:
    """The elementwise mean of several whole-vector optimizer states (local SGD)."""

    def mean(*leaves):
        return np.mean(leaves, axis=0).astype(leaves[0].dtype) if np.ndim(leaves[0]) else leaves[0]

    return map_tree(mean, *states)


@dataclass(frozen=True)
class ServerState:
    """θ, the whole optimizer state and the version, from a consistent snapshot of every
    shard; with the running mean of θ and the updates it holds once averaging has started
    (None and 0 before)."""

    params: Array
    opt_state: Any
    version: int
    average: Array | None = None
    n_averaged: int = 0

    @classmethod
    def join(cls, snapshots: list[ShardSnapshot]) -> ServerState:
        """The whole vector's state from its shards' snapshots, which must be at one version
        and average as many updates (every update reaches every shard)."""
        versions = {s.version for s in snapshots}
        if len(versions) != 1:
            raise RuntimeError(f"Shards are at different versions {sorted(versions)}.")
        params = np.concatenate([s.params for s in snapshots])
        opt_state, version = join_states([s.opt_state for s in snapshots]), versions.pop()
        counts = {s.n_averaged for s in snapshots}
        started = {s.average is not None for s in snapshots}
        if len(counts) != 1 or len(started) != 1:
            raise RuntimeError(f"Shards average different numbers of updates {sorted(counts)}.")
        if not started.pop():
            return cls(params, opt_state, version)
        average = np.concatenate([s.average for s in snapshots])
        return cls(params, opt_state, version, average, counts.pop())


#: A model of more parameters than this (Dask configuration ``dask-sgd.kept-snapshot-params``)
#: keeps its snapshots on the workers (each shard's on its own worker and a replica on
#: another); a smaller one's come to the client, at no more cost than the shards' statistics.
KEPT_SNAPSHOT_PARAMS = SCATTER_BYTES // 8


@dataclass(frozen=True)
class KeptSnapshot:
    """A consistent snapshot of every shard at ``version``: each shard's
    :class:`ShardSnapshot` in the client (``pieces``, a small model's), or kept on the
    workers: by each shard and by its replica's holder, a shard on another worker
    (``shards`` and ``holders``). :meth:`state` brings it to the client."""

    version: int
    pieces: list[ShardSnapshot] | None = None
    shards: list[ShardRef] = field(default_factory=list)
    holders: list[ShardRef] = field(default_factory=list)
    copied: int = 0  # the bytes the holders copied for it (what changed, or whole states)

    @property
    def in_client(self) -> bool:
        return self.pieces is not None

    def state(self, client: Any) -> ServerState:
        """The whole vector's state (a shard lost with its worker: from its replica)."""
        if self.in_client:
            return ServerState.join(self.pieces)
        return ServerState.join(client.gather(self._snapshots(client)))

    def final_params(self, client: Any) -> Any:
        """The final parameters (the average once averaging has begun): an array for a
        snapshot in the client, else a future of them joined on a worker, so that a large
        model's parameters do not pass through the client."""
        if self.in_client:
            return final_params_of(*self.pieces)
        return client.submit(final_params_of, *self._snapshots(client), pure=False)

    def _snapshots(self, client: Any) -> list[Any]:
        """Futures of every shard's snapshot, each read where it lives: by a task on the
        shard's worker or, if that worker is gone, on its replica's holder's."""
        alive = worker_statuses(client)
        return [
            client.submit(
                read_kept_snapshot, shard, holder, self.version, shard.address in alive,
                workers=[shard.address if shard.address in alive else holder.address],
                allow_other_workers=True, pure=False,
            )
            for shard, holder in zip(self.shards, self.holders, strict=True)
        ]  # fmt: skip


def read_kept_snapshot(
    shard: ShardRef, holder: ShardRef, version: int, alive: bool
) -> ShardSnapshot:
    """The kept snapshot of ``version`` of ``shard`` (a task): from the shard, or, if its
    worker is not ``alive`` or cannot be reached, from the replica its holder keeps."""
    own = functools.partial(_call, shard, "kept_snapshot", version)
    replica = functools.partial(_call, holder, "replica", shard.key, version)
    first, then = (own, replica) if alive else (replica, own)
    try:
        return first()
    except ShardUnreachable:
        return then()


def _call(ref: ShardRef, method: str, *args: Any) -> Any:
    """A shard's method, from a task: in this process if the shard lives here (its answer
    is not copied), else through the comm layer."""
    worker = get_worker()
    actor = worker.state.actors.get(ref.key) if ref.address == worker.address else None
    if actor is None:
        return getattr(RemoteShard(ref, worker), method)(*args).result()
    return sync(worker.loop, getattr(actor, method), *args)


def final_params_of(*snapshots: ShardSnapshot) -> Array:
    """The whole vector's final parameters from every shard's snapshot: the average once
    averaging has begun (every shard holds as many updates), else θ."""
    if snapshots[0].n_averaged:
        return np.concatenate([snapshot.average for snapshot in snapshots])
    return np.concatenate([snapshot.params for snapshot in snapshots])


@dataclass
class ParameterServer:
    """Shard actors, the slice of θ each one holds, and the futures that keep them alive.

    Methods fan a call out to every shard, then join the answers; they block, so call them
    from the client or from a task, not from inside an actor.
    """

    shards: list[Any]
    ranges: list[slice]
    futures: list[Any]
    name: str = ""

    @classmethod
    def start(
        cls,
        client: Any,
        params: Array,
        optimizer: GradientTransformation,
        rule: ExchangeRule | None = None,
        *,
        n_shards: int | None = None,
        opt_state: Any = None,
        version: int = 0,
        average: Array | None = None,
        n_averaged: int = 0,
        sparse: SparseSetup | None = None,
    ) -> ParameterServer:
        """Create ``n_shards`` shards, spread over the running workers (default: one per
        :data:`dask_sgd.defaults.MIN_SHARD_SIZE` parameters, at most one per worker), each
        handling pushes by its own copy of ``rule`` (default: apply each one at once).

        ``opt_state`` (the whole vector's optimizer state) and ``version`` resume training;
        ``average`` (the whole vector's running mean of θ) with ``n_averaged`` resumes
        averaging, which every shard then does (None: not yet). ``sparse`` (a fit on sparse
        input) makes them :class:`SparseParameterShard`, which apply its penalty lazily.
        """
        if not optimizer.elementwise:
            raise ValueError(
                f"{optimizer!r} is not elementwise: shards cannot apply it to their own slices."
            )
        # not one that is paused or retiring: wait a while for one that resumes
        workers = running_workers(client, timeout=RUNNING_WAIT)
        n_shards = defaults.n_shards(n_shards, params.size, len(workers))
        ranges = shard_ranges(params.size, n_shards)
        states = split_state(opt_state, ranges) if opt_state is not None else [None] * n_shards
        name = uuid.uuid4().hex[:8]
        kind = ParameterShard if sparse is None else SparseParameterShard
        sent = [
            shipped(
                client,
                (
                    params[where].copy(),
                    states[index],
                    None if average is None else average[where].copy(),
                ),
                workers[index % len(workers)],
            )
            for index, where in enumerate(ranges)
        ]
        futures = [
            client.submit(
                kind,
                sent[index][0],
                optimizer,
                rule,
                sent[index][1],
                version,
                sent[index][2],
                n_averaged,
                **({} if sparse is None else {"setup": sparse, "where": where}),
                actor=True,
                key=f"{SHARD_KEY_PREFIX}{index}-{name}",
                workers=[workers[index % len(workers)]],
                allow_other_workers=True,
            )
            for index, where in enumerate(ranges)
        ]
        timeout = dask.config.get("dask-sgd.shard-start-timeout", 30.0)
        try:
            try:  # bounded: a shard whose task Dask never runs must not hang the fit
                wait(futures, timeout=timeout)
            except TimeoutError:
                message = f"The parameter-server shards did not start in {timeout} s."
                raise RuntimeError(message) from None
            return cls(client.gather(futures), ranges, futures, name)
        except BaseException:
            for future in futures:  # release the shards that did start
                future.release()
            raise
        finally:
            del sent  # the shards hold their arrays now; the scattered copies may go

    @property
    def refs(self) -> list[ShardRef]:
        """Where the shards live, as plain data: what a task takes to call them (a task
        that took the actors would depend on their keys: :mod:`dask_sgd.ps.remote`)."""
        return [ShardRef.of(shard) for shard in self.shards]

    def _each(self, method: str, *args_per_shard: list) -> list:
        calls = [
            getattr(shard, method)(*(args[i] for args in args_per_shard))
            for i, shard in enumerate(self.shards)
        ]
        return [call.result() for call in calls]

    def call_first(self, request: str, *args: Any) -> Any:
        """One of the exchange rule's requests, of the first shard (a step budget, say)."""
        return self.shards[0].call(request, *args).result()

    def state(self) -> ServerState:
        """θ, the whole optimizer state, the version and the average, now, through the
        client; raises if the shards are not at one version."""
        return ServerState.join(self._each("snapshot"))

    def keep_snapshot(
        self, client: Any, kept_version: int | None = None
    ) -> tuple[KeptSnapshot, list[ShardStats]]:
        """A consistent snapshot (taken between segments) and the shards' statistics.

        A large model's stays on the workers: each shard keeps its own, and the next shard
        on another worker copies it there (worker to worker: a sparse shard's, only what
        changed since the last one), so that the loss of any one worker leaves every
        shard's snapshot somewhere. ``kept_version`` is the snapshot the caller keeps until
        this one is returned: the shards settle on it (a snapshot whose replicas were not
        all made is never used). Once every replica is made, the shards are told to
        settle on this one, without waiting for them. A small model's comes to the client
        with the statistics, and so does a large one's whose shards are all on one worker."""
        limit = dask.config.get("dask-sgd.kept-snapshot-params", KEPT_SNAPSHOT_PARAMS)
        holders = self._holders()
        size = sum(where.stop - where.start for where in self.ranges)
        keep = size > int(limit) and holders is not None
        n = len(self.shards)
        answers = self._each("take_snapshot", [keep] * n, [kept_version] * n)
        stats = [stat for stat, _ in answers]
        versions = {stat.version for stat in stats}
        if len(versions) != 1:
            raise RuntimeError(f"Shards are at different versions {sorted(versions)}.")
        version = versions.pop()
        if not keep:
            return KeptSnapshot(version, pieces=[snapshot for _, snapshot in answers]), stats
        shards = self.refs
        copies = [
            holder.stage_replica(shard, version, kept_version)
            for shard, holder in zip(shards, holders, strict=True)
        ]
        copied = sum(copy.result() for copy in copies)
        for shard in self.shards:  # not waited for: the next snapshot settles them anyway
            shard.settle(version)
        holders = [ShardRef.of(holder) for holder in holders]
        return KeptSnapshot(version, shards=shards, holders=holders, copied=copied), stats

    def _holders(self) -> list[Any] | None:
        """For each shard, the shard that holds its snapshot's replica: the next one on
        another worker. None if every shard is on one worker."""
        holders = []
        for index, shard in enumerate(self.shards):
            others = [
                other for other in self.shards[index + 1 :] + self.shards[:index]
                if other._address != shard._address
            ]  # fmt: skip
            if not others:
                return None
            holders.append(others[0])
        return holders

    def start_averaging(self, average: Array | None = None, n_averaged: int = 0) -> None:
        """Every shard averages its slice over the updates from now on, going on from the
        mean ``average`` (the whole vector's) of ``n_averaged`` earlier updates; a new mean
        (``n_averaged=0``) sends no array: each shard starts it from its own zeros."""
        if average is None or not n_averaged:
            slices, n_averaged = [None] * len(self.ranges), 0
        else:
            slices = [average[where] for where in self.ranges]
        self._each("start_averaging", slices, [n_averaged] * len(slices))

    def abort(self, reason: str, skip: list[int] = ()) -> None:
        """Fail every waiting and future pull on the shards, except those in ``skip`` (lost)."""
        calls = [s.abort(reason) for i, s in enumerate(self.shards) if i not in skip]
        for call in calls:
            try:
                call.result()
            except (OSError, ValueError) as error:  # lost meanwhile: nobody waits on it
                logger.debug("Could not abort a shard: %r", error)

    def versions(self, skip: list[int] = ()) -> list[int]:
        """Each shard's version, except those in ``skip`` (lost)."""
        calls = [s.stats() for i, s in enumerate(self.shards) if i not in skip]
        return [call.result().version for call in calls]

    def stats(self) -> list[ShardStats]:
        return self._each("stats")

    def close(self) -> None:
        """Release the actors (their workers drop them once no future refers to them).

        Each actor proxy holds a future of its own (``Actor._future``), and Dask's calls
        through a proxy leave reference cycles that keep it alive until the garbage
        collector runs: released here, the actor goes now, not at some later collection
        (a shard kept alive holds its worker's graceful retirement back).
        """
        for future in self.futures:
            future.release()
        for shard in self.shards:
            own = getattr(shard, "_future", None)
            if own is not None:
                own.release()
        self.shards, self.futures = [], []

"""Training units: long-running tasks, one per worker, that train on that worker's blocks.

A unit takes minibatches of its own blocks and exchanges with the parameter-server shards;
units synchronise through the shards' versions and clocks, never through the client. How a
unit exchanges is its strategy's (:mod:`dask_sgd.engine.strategies`); this module holds
what every strategy's unit shares: the task itself, the unit's blocks and its position in
them, and the calls to the shards.

A unit that Dask reruns (its worker died) starts again from the same carry, and its pushes
carry tokens, so no update applies twice. A non-finite gradient is never pushed: the unit
fails with :class:`NonFiniteParameters` naming the step and the partition.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from distributed import get_worker, secede
from distributed.utils import sync

from dask_sgd._array import host_dtype, is_host, like, to_host
from dask_sgd.blocks import Block, MinibatchBuffers, RowOrder, aligned_block, blocks_by_key
from dask_sgd.data import TargetEncoder
from dask_sgd.engine.allocator import steady_allocations
from dask_sgd.engine.on_worker import fit_on_worker
from dask_sgd.engine.steps import refuse_unusable_gradient
from dask_sgd.models import Objective
from dask_sgd.optim import GradientTransformation
from dask_sgd.ps.remote import RemoteShard, ShardRef
from dask_sgd.schedules import Schedule
from dask_sgd.sparse import SparseVector
from dask_sgd.sparse.gradient import (
    param_indices,
    sparse_loss_and_grad,
    sparse_loss_sum,
    touched_and_inverse,
)
from dask_sgd.sparse.setup import SparseSetup

if TYPE_CHECKING:
    from dask_sgd.engine.strategies.base import Carry, Strategy, UnitResult


@dataclass(frozen=True)
class SegmentPlan:
    """What every unit of one segment needs besides its blocks and its carry."""

    objective: Objective
    encoder: TargetEncoder
    optimizer: GradientTransformation
    learning_rate: Schedule
    batch_size: int
    first_step: int
    n_steps: int  # per unit; for strategies that claim steps, the segment's in all
    first_version: int  # the shards' version as the segment starts
    n_units: int
    fit_id: str = ""  # the state the fit keeps on each worker (:mod:`.on_worker`)
    row_order: RowOrder = field(default_factory=RowOrder)  # how units take their rows
    sparse: SparseSetup | None = None  # a linear model on sparse input: its lazy penalty


@dataclass
class UnitData:
    """A unit's blocks, the Dask partition each one is, and where the next minibatch starts:
    a cursor ``(pass, rows of it taken)`` into the unit's :class:`~dask_sgd.blocks.RowOrder`
    (the segment plan's ``row_order``), which a carry keeps from segment to segment.

    The blocks' targets are encoded as the losses take them (and class weights folded into
    their sample weights) once per block, not once per minibatch.

    Blocks of device arrays (CuPy's) train on their device: their encoded targets go there
    once, θ goes there at each exchange (:meth:`to_unit`), and gradients come back to host
    (:meth:`gradient`), so that what the shards and the strategies exchange is host memory.

    On sparse blocks a unit pulls only the parameters that its next minibatches touch: it
    takes them ahead (:meth:`keys_ahead`), and :attr:`cursor` stays before the ones taken
    ahead and not trained on, so that a segment that ends first leaves them to the next.
    """

    blocks: list[Block]
    partitions: list[int]
    position: tuple[int, int]  # after the minibatches taken, ahead ones included
    #: what minibatches are gathered into: one stays as it is while the next is taken
    buffers: MinibatchBuffers = field(default_factory=MinibatchBuffers)
    #: sparse: minibatches taken ahead, with the cursor before each and its θ indices
    ahead: deque = field(default_factory=deque)

    @classmethod
    def encoded(
        cls,
        blocks: list[Block],
        partitions,
        cursor,
        encoder: TargetEncoder,
        targets: dict[int, tuple] | None = None,
    ):
        """The blocks as training takes them. A block that Dask had to fetch (its unit was
        rerun on another worker) is copied once if it arrived unaligned. ``targets`` keeps
        each partition's encoded targets for the fit's later segments."""
        targets = {} if targets is None else targets
        encoded = []
        for partition, (X, y, weight) in zip(partitions, map(aligned_block, blocks), strict=True):
            if partition not in targets:
                targets[partition] = encoded_targets(encoder, X, y, weight)
            encoded.append(Block(X, *targets[partition]))
        return cls(encoded, partitions, tuple(cursor))

    def to_unit(self, values: Any) -> Any:
        """Host ``values`` (θ, a leaf of the optimizer's state) where the blocks are: as
        they are for NumPy blocks, else on the blocks' device."""
        X = self.blocks[0].X
        return values if is_host(X) else like(values, X)

    @property
    def cursor(self) -> tuple[int, int]:
        """Where the next minibatch to train on starts."""
        return self.ahead[0][0] if self.ahead else self.position

    def _take(self, plan: SegmentPlan):
        X, Y, weight, self.position, block = plan.row_order.take(
            self.blocks, self.partitions, self.position, plan.batch_size, self.buffers
        )
        return X, Y, weight, self.partitions[block]

    def next_minibatch(self, plan: SegmentPlan):
        """``(X, Y, sample_weight, partition)``: encoded targets, the partition it starts in.
        Dense arrays are views of the blocks or of :attr:`buffers`: the next call but one
        overwrites them."""
        if self.ahead:
            return self.ahead.popleft()[1]
        return self._take(plan)

    def keys_ahead(self, plan: SegmentPlan, n_minibatches: int) -> np.ndarray | None:
        """The θ indices (sorted) that the next ``n_minibatches`` minibatches touch, taking
        them ahead; None but for a sparse exchange (``plan.sparse``: a linear model on
        sparse blocks), whose units exchange all of θ."""
        if plan.sparse is None:
            return None
        while len(self.ahead) < n_minibatches:
            before = self.position
            minibatch = self._take(plan)
            touched = touched_and_inverse(minibatch[0])
            indices = param_indices(plan.objective.model, touched[0])
            self.ahead.append((before, minibatch, indices, touched))
        parts = [ahead[2] for ahead in list(self.ahead)[:n_minibatches]]
        if len(parts) <= 1:
            return parts[0] if parts else np.empty(0, np.int64)
        # a stable sort merges the sorted parts as presorted runs (np.unique sorts anew)
        merged = np.sort(np.concatenate(parts), kind="stable")
        return merged[np.r_[True, merged[1:] != merged[:-1]]]

    def next_sparse_minibatch(self, plan: SegmentPlan):
        """:meth:`next_minibatch` on sparse blocks, with its θ indices and its
        :func:`~dask_sgd.sparse.gradient.touched_and_inverse` (taken ahead if need be)."""
        self.keys_ahead(plan, 1)
        _, minibatch, indices, touched = self.ahead.popleft()
        return minibatch, indices, touched

    def gradient(self, plan: SegmentPlan, params, step: int):
        """The next minibatch's summed loss, gradient and rows; raise if the gradient is not
        usable (:func:`~dask_sgd.engine.steps.refuse_unusable_gradient`: it is never pushed).
        On sparse blocks ``params`` is θ at (at least) the indices the minibatch touches, a
        :class:`~dask_sgd.sparse.SparseVector`, and so is the gradient. ``params`` and the
        gradient are host arrays, whatever the blocks' device."""
        if isinstance(params, SparseVector):
            (X, Y, weight, partition), _, touched = self.next_sparse_minibatch(plan)
            batch_loss, grad = sparse_loss_and_grad(
                plan.objective, params.values, params.indices, X, Y, weight, touched
            )
            refuse_unusable_gradient(grad.values, step, partition)
        else:
            X, Y, weight, partition = self.next_minibatch(plan)
            batch_loss, grad = plan.objective.loss_and_grad(self.to_unit(params), X, Y, weight)
            refuse_unusable_gradient(grad, step, partition)
            grad = to_host(grad)
        return float(batch_loss), grad, Y.shape[0]

    def gradient_pieces(self, plan: SegmentPlan, params, step: int):
        """:meth:`gradient` on dense blocks, in the order the backward pass finishes θ's
        entries (:meth:`~dask_sgd.models.Objective.loss_and_grad_pieces`): ``(batch_loss,
        grad, pieces, rows)``. Iterating ``pieces`` fills ``grad`` and yields each slice of
        θ once it is final and checked (:func:`~dask_sgd.engine.steps.refuse_unusable_gradient`),
        from θ's end backward. ``grad`` is a host array: of device blocks, each slice comes
        to host as it is yielded."""
        X, Y, weight, partition = self.next_minibatch(plan)
        batch_loss, grad, pieces = plan.objective.loss_and_grad_pieces(
            self.to_unit(params), X, Y, weight
        )
        host = grad if is_host(grad) else np.empty(grad.shape, host_dtype(grad.dtype))

        def checked():
            for piece in pieces:
                refuse_unusable_gradient(grad[piece], step, partition)
                if host is not grad:
                    host[piece] = to_host(grad[piece])
                yield piece

        return float(batch_loss), host, checked(), Y.shape[0]


def train_unit(
    block_keys: list,
    partitions: list[int],
    shards: list[ShardRef],
    ranges: list[slice],
    strategy: Strategy,
    plan: SegmentPlan,
    unit: int,
    carry: Carry,
) -> UnitResult:
    """Run one segment of ``strategy`` on this worker's blocks (a task).

    ``carry`` is what the unit kept from its previous segment: where it was in its blocks,
    and what its strategy keeps. The unit leaves the worker's thread pool first: it waits
    for the other units at every exchange, and two units placed on one worker must not
    wait for each other's thread. It takes its blocks by key and its shards by address
    (:func:`~dask_sgd.blocks.blocks_by_key`, :mod:`dask_sgd.ps.remote`): a unit depends on
    no task.
    """
    secede()
    blocks = blocks_by_key(block_keys)
    calls = ShardCalls(shards, ranges)
    on_worker = fit_on_worker(get_worker(), plan.fit_id)
    data = UnitData.encoded(blocks, partitions, carry.cursor, plan.encoder, on_worker.targets)
    # divergence is reported, not warned; freed arrays are reused, not mapped again
    with np.errstate(over="ignore", invalid="ignore"), steady_allocations():
        result = strategy.run_unit(data, calls, plan, unit, carry)
    return replace(result, bytes_pushed=calls.bytes_pushed, bytes_pulled=calls.bytes_pulled)


def sample_objective(
    theta: Any, block: Block, objective: Objective, encoder: TargetEncoder, n_rows: int
) -> tuple[float, int]:
    """``(objective × rows, rows)`` at ``theta`` on ``n_rows`` rows of a block, evenly spaced
    through it (a task; a block is its partition's rows in their order, which may be
    sorted): the same rows every epoch, so that two epochs' values differ by what the
    parameters changed, not by which rows were drawn."""
    X, Y, weight = _sample(block, encoder, n_rows)
    with np.errstate(over="ignore", invalid="ignore"):
        value = objective.value(like(theta, X, X.dtype), X, Y, weight)
    return float(value) * X.shape[0], X.shape[0]


def _sample(block: Block, encoder: TargetEncoder, n_rows: int) -> tuple:
    """``n_rows`` rows of ``block`` evenly spaced through it, encoded."""
    X, y, weight = block
    step = max(1, X.shape[0] // max(n_rows, 1))
    rows = slice(0, min(X.shape[0], n_rows * step), step)  # within the block: the standard's
    X, y = X[rows, ...], y[rows]
    return X, *encoded_targets(encoder, X, y, None if weight is None else weight[rows])


def encoded_targets(encoder: TargetEncoder, X: Any, y: np.ndarray, weight) -> tuple:
    """``(Y, sample_weight)``: a block's host targets and weights encoded as the losses take
    them, in the dtype of its rows ``X``, on ``X``'s device."""
    Y, weight = encoder(y, weight, host_dtype(X.dtype))
    if is_host(X):
        return Y, weight
    return like(Y, X), None if weight is None else like(weight, X)


def sparse_sample_loss_of(
    shards: list[ShardRef],
    ranges: list[slice],
    version: int,
    block_key: Any,
    objective: Objective,
    encoder: TargetEncoder,
    n_rows: int,
) -> tuple[float, int]:
    """``(loss summed over the rows, rows)`` of :func:`sample_objective`'s rows of a sparse
    block at the final parameters of the shards at ``version`` (a task), without the
    penalty: only the entries the rows touch come from the shards."""
    X, Y, weight = _sample(blocks_by_key([block_key])[0], encoder, n_rows)
    touched = touched_and_inverse(X)
    indices = param_indices(objective.model, touched[0])
    worker = get_worker()
    calls = [
        RemoteShard(shard, worker).final_values(within(indices, where), version)
        for shard, where in zip(shards, ranges, strict=True)
    ]
    values = np.concatenate([call.result() for call in calls])
    with np.errstate(over="ignore", invalid="ignore"):
        loss = sparse_loss_sum(objective, values, indices, X, Y, weight, touched)
    return loss, X.shape[0]


def final_penalty_of(shards: list[ShardRef], version: int) -> float:
    """The penalty of the shards' final parameters at ``version`` (a task)."""
    worker = get_worker()
    calls = [RemoteShard(shard, worker).final_penalty(version) for shard in shards]
    return sum(call.result() for call in calls)


def sample_objective_of(theta: Any, block_key: Any, *args: Any) -> tuple[float, int]:
    """:func:`sample_objective` as a task that takes its block by key, as a unit does
    (:func:`~dask_sgd.blocks.blocks_by_key`)."""
    return sample_objective(theta, blocks_by_key([block_key])[0], *args)


class ShardCalls:
    """Calls the shards from a unit: directly when a shard lives on the unit's own worker.

    An actor call through Dask costs a round trip through the worker's comm layer even when
    the actor is local (about 3 ms here, ten times the compute of a 1024-row step). A shard
    on this worker is an object in this process, whose async methods can run on the
    worker's event loop with no serialisation at all. Remote calls go out first, so that no
    unit waits on a local shard before its remote pushes are on their way.

    The calls count the bytes of the arrays they send to shards on other workers and of
    those that come back (:attr:`bytes_pushed`, :attr:`bytes_pulled`).
    """

    def __init__(self, shards: list[ShardRef], ranges: list[slice]) -> None:
        worker = get_worker()
        self.loop = worker.loop
        # every shard reached through the comm layer, its own worker's too
        self.actors = [
            (RemoteShard(ref, worker), where) for ref, where in zip(shards, ranges, strict=True)
        ]
        self.remote, self.local = [], []
        for (remote, where), ref in zip(self.actors, shards, strict=True):
            obj = worker.state.actors.get(ref.key) if ref.address == worker.address else None
            (self.remote if obj is None else self.local).append((obj or remote, where))
        self.first = min(self.remote + self.local, key=lambda pair: pair[1].start)
        self.bytes_pushed = self.bytes_pulled = 0

    def through_actors(self) -> ShardCalls:
        """Reach every shard through its actor from now on, its own worker's too: where the
        first contributions to arrive count, a unit must not skip the network that the
        others take (:class:`~dask_sgd.engine.strategies.Backup`)."""
        self.remote, self.local = list(self.actors), []
        return self

    def call_first(self, request: str, *args: Any) -> Any:
        """A request of the exchange rule of the first shard (the one holding θ's start)."""
        shard, _ = self.first
        if isinstance(shard, RemoteShard):
            return shard.call(request, *args).result()
        return sync(self.loop, shard.call, request, *args)

    def pull(
        self, min_version: int = 0, indices: np.ndarray | None = None
    ) -> tuple[Any, dict[int, int]]:
        """θ once every shard has reached ``min_version`` (only at ``indices``, as a
        :class:`~dask_sgd.sparse.SparseVector`, if given), and each shard's version (keyed
        by where its slice starts)."""
        answers = self.fan_out("pull", lambda where: (min_version, within(indices, where)))
        return joined(answers)

    def fan_out_later(self, method: str, arguments) -> PendingAnswers:
        """Call ``method`` on every shard with ``arguments(slice)`` and return at once: the
        answers come with :meth:`PendingAnswers.result` (the calls go on meanwhile, on the
        worker's event loop and the shards' workers)."""
        calls = [
            (where, getattr(shard, method)(*self._sent(arguments(where))), True)
            for shard, where in self.remote
        ]
        for obj, where in self.local:
            call = getattr(obj, method)(*arguments(where))
            local = asyncio.run_coroutine_threadsafe(call, self.loop.asyncio_loop)
            calls.append((where, local, False))
        return PendingAnswers(calls, self)

    def fan_out(self, method: str, arguments) -> list[tuple[slice, Any]]:
        """Call ``method`` on every shard with ``arguments(slice)``; the answers by slice."""
        pending = [
            (where, getattr(shard, method)(*self._sent(arguments(where))))
            for shard, where in self.remote
        ]

        async def local_calls():
            return await asyncio.gather(
                *(getattr(obj, method)(*arguments(where)) for obj, where in self.local)
            )

        parts = []
        if self.local:
            answers = sync(self.loop, local_calls)
            parts = list(zip((where for _, where in self.local), answers, strict=True))
        parts += [(where, self.received(call.result())) for where, call in pending]
        parts.sort(key=lambda part: part[0].start)
        return parts

    def _sent(self, arguments: tuple) -> tuple:
        self.bytes_pushed += payload_bytes(arguments)
        return arguments

    def received(self, answer: Any) -> Any:
        """``answer`` from a shard on another worker, its bytes counted."""
        self.bytes_pulled += payload_bytes(answer)
        return answer


def within(indices: np.ndarray | None, where: slice) -> np.ndarray | None:
    """The ``indices`` (sorted) in the slice ``where``, from its start; None for None."""
    if indices is None:
        return None
    lo, hi = np.searchsorted(indices, [where.start, where.stop])
    return indices[lo:hi] - where.start


def payload_bytes(value: Any) -> int:
    """The bytes of the arrays in ``value`` (nested in tuples, lists and dataclasses)."""
    if isinstance(value, np.ndarray | SparseVector):
        return value.nbytes
    if isinstance(value, tuple | list):
        return sum(payload_bytes(item) for item in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(payload_bytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


class PendingAnswers:
    """The shards' answers to calls on their way (:meth:`ShardCalls.fan_out_later`)."""

    def __init__(
        self,
        calls: list[tuple[slice, concurrent.futures.Future, bool]],
        counter: ShardCalls | None = None,
    ) -> None:
        self.calls, self.counter = calls, counter  # (slice, call, whether remote)

    def done(self) -> bool:
        return all(call.done() for _, call, _ in self.calls)

    def result(self) -> list[tuple[slice, Any]]:
        """The answers by slice, once every one has come (raises what a call raised)."""
        answers = []
        for where, call, remote in self.calls:
            answer = call.result()
            if remote and self.counter is not None:
                answer = self.counter.received(answer)
            answers.append((where, answer))
        return sorted(answers, key=lambda part: part[0].start)


def joined(answers: list[tuple[slice, Any]]) -> tuple[Any, dict[int, int]]:
    """θ joined from answers ``(params, version, ...)`` of every shard, and the versions.
    Answers of :class:`~dask_sgd.sparse.SparseVector` (θ at some indices) join into one."""
    versions = {where.start: answer[1] for where, answer in answers}
    if isinstance(answers[0][1][0], SparseVector):
        size = answers[-1][0].stop
        return SparseVector.joined([(where.start, a[0]) for where, a in answers], size), versions
    return np.concatenate([answer[0] for _, answer in answers]), versions

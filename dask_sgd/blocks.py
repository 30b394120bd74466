"""Dask input: check it and train on it where it is, as blocks.

A block is one partition of ``X`` with its rows of ``y`` and ``sample_weight``, as NumPy
arrays: the partition itself when its rows are contiguous and of the training dtype (a view
of it, no copy), else one row-major copy (a data frame, a column-major array, another
dtype). A partition that is a SciPy sparse matrix or array becomes a canonical
``scipy.sparse.csr_matrix`` (:func:`sparse_rows`), never a dense copy: hashed features have
millions of columns. Rows are never shuffled into a copy: a unit takes each minibatch as *runs* of
``run_rows`` consecutive rows of its blocks, the runs in an order drawn anew every pass
over the unit's rows (:class:`RowOrder`), gathered into buffers it reuses. Making the
blocks and checking them is one read of the data on the workers; only a small summary of
each block (rows, labels, column moments, where a NaN is) comes back to the client.

Blocks are dealt to units by where they are: each worker's unit trains on the blocks it
holds, and blocks move only to even out the units' rows, or a classifier's labels when
each unit would see one class (``docs/distributed.md``, "Blocks and minibatches").
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp
from dask.sizeof import sizeof
from distributed import Future, get_client, get_worker, wait
from sklearn.exceptions import DataConversionWarning

from dask_sgd._array import astype, empty, get_namespace, host_dtype, is_host, to_host
from dask_sgd.standardize import DataMoments, Moments, total_moments
from dask_sgd.workers import staying_workers

logger = logging.getLogger(__name__)

Array = Any

#: consecutive rows in a run: a minibatch is runs of this many rows of a unit's blocks, in
#: an order drawn anew every pass (``docs/benchmarks.md``, "Minibatches without a shuffled
#: copy"); the Dask config ``dask-sgd.run-rows`` changes it (1: rows in random order)
RUN_ROWS = 64


#: a unit may have this fraction more rows than the mean before blocks move to even the
#: units out (a unit with fewer rows visits its rows more often in an epoch)
BALANCE_TOLERANCE = 0.05


#: a classifier's unit whose mix of labels is further than this from the whole data's (total
#: variation distance) swaps blocks with other units (:meth:`DaskTrainingData.units`)
LABEL_SKEW_LIMIT = 0.25


class Block(NamedTuple):
    X: np.ndarray  # or a canonical scipy.sparse.csr_matrix (sparse input)
    y: np.ndarray
    sample_weight: np.ndarray | None


class SharedBlock(Block):
    """A block whose ``X`` is a view of a persisted partition (another key holds its memory).

    Dask's size of it leaves out that view, so that a worker's managed memory counts the
    rows once, and does not spill for a copy that does not exist. An ``X`` that arrived
    from another worker (its base is the message, not an array) counts in full. A sparse
    ``X`` counts each of its arrays so.
    """

    __slots__ = ()


@sizeof.register(SharedBlock)
def _sizeof_shared_block(block: SharedBlock) -> int:
    X, y, weight = block
    arrays = (X.data, X.indices, X.indptr) if sp.issparse(X) else (X,)
    own = sum(0 if isinstance(a.base, np.ndarray) else a.nbytes for a in arrays)
    return 200 + own + y.nbytes + (0 if weight is None else weight.nbytes)


class Unit(NamedTuple):
    """A training unit: its worker, its blocks (futures) and their partition indices."""

    worker: str
    blocks: list[Any]
    partitions: list[int]


class Runs(NamedTuple):
    """A pass's runs in order: each run's block, first row and end row (Python lists), and
    where each run ends in the pass (``ends``, rows from the pass's start)."""

    block: list[int]
    start: list[int]
    stop: list[int]
    ends: list[int]


@dataclass(frozen=True)
class RowOrder:
    """The order in which a unit takes its rows: runs of ``run_rows`` consecutive rows of its
    blocks (a block's last run may be shorter), every run once per pass, in an order drawn
    anew for every pass from ``seed``, the pass's number and the unit's partitions.

    A unit's position is a cursor ``(pass, row)``: which pass, and how many rows of it were
    taken. The order is a function of the cursor and the unit's blocks, so a unit that
    starts again from a cursor (a rerun, a resumed fit) takes the same rows.

    Examples
    --------
    >>> blocks = [Block(np.arange(16.0).reshape(8, 2), np.arange(8), None)]
    >>> order = RowOrder(seed=0, run_rows=2)
    >>> X, y, weight, cursor, block = order.take(blocks, [0], (0, 0), 8)  # a whole pass
    >>> y.tolist(), cursor
    ([4, 5, 0, 1, 2, 3, 6, 7], (1, 0))
    >>> order.take(blocks, [0], (1, 0), 8)[1].tolist()  # the next pass: another order
    [6, 7, 0, 1, 4, 5, 2, 3]
    >>> X, y, weight, cursor, block = order.take(blocks, [0], (1, 2), 2)  # one run: views
    >>> y.tolist(), cursor, np.shares_memory(X, blocks[0].X)
    ([0, 1], (1, 4), True)
    """

    seed: int = 0
    run_rows: int = RUN_ROWS

    def runs(self, sizes: tuple[int, ...], partitions: tuple[int, ...], pass_: int) -> Runs:
        """The runs of pass ``pass_`` over blocks of ``sizes`` rows (partitions
        ``partitions``)."""
        return _shuffled_runs(sizes, self.run_rows, self.seed, partitions, pass_)

    def take(
        self,
        blocks: list[Block],
        partitions,
        cursor: tuple[int, int],
        n_rows: int,
        buffers: MinibatchBuffers | None = None,
    ):
        """``(X, y, sample_weight, cursor, block)``: the next ``n_rows`` rows from ``cursor``
        on (into the next pass, or passes, where this one ends), the cursor after them, and
        the index of the block of their first row. Views when the rows are one run's, else
        row-major arrays: new ones, or ``buffers``'. Of CSR blocks, a CSR matrix of the rows
        (:func:`gather_sparse_pieces`)."""
        pass_, offset = cursor
        sizes = tuple(int(block[0].shape[0]) for block in blocks)
        total, partitions = sum(sizes), tuple(partitions)
        if total == 0 and n_rows > 0:
            raise ValueError("No rows to take: every block is empty.")
        pieces = []  # (block, first row, end row)
        while n_rows > 0:
            runs = self.runs(sizes, partitions, pass_)
            i = bisect.bisect_right(runs.ends, offset)
            while n_rows > 0 and i < len(runs.ends):
                first = runs.stop[i] - (runs.ends[i] - offset)
                stop = min(runs.stop[i], first + n_rows)
                pieces.append((runs.block[i], first, stop))
                n_rows -= stop - first
                offset += stop - first
                i += 1
            if offset >= total:
                pass_, offset = pass_ + 1, 0
        return (*gather_pieces(blocks, pieces, buffers), (pass_, offset), pieces[0][0])


@functools.lru_cache(maxsize=64)
def _shuffled_runs(
    sizes: tuple[int, ...], run_rows: int, seed: int, partitions: tuple[int, ...], pass_: int
) -> Runs:
    run_rows = max(int(run_rows), 1)
    block = np.concatenate([np.full(-(-n // run_rows), b) for b, n in enumerate(sizes)])
    start = np.concatenate([np.arange(0, n, run_rows) for n in sizes])
    stop = np.minimum(start + run_rows, np.asarray(sizes)[block])
    entropy = [int(seed), int(pass_), *(int(p) for p in partitions)]
    order = np.random.default_rng(np.random.SeedSequence(entropy)).permutation(len(start))
    block, start, stop = block[order], start[order], stop[order]
    return Runs(block.tolist(), start.tolist(), stop.tolist(), np.cumsum(stop - start).tolist())


class MinibatchBuffers:
    """Arrays that a unit's minibatches are gathered into, ``depth`` sets used in turn: a
    minibatch stays as it is while the next ``depth - 1`` are taken.

    In a Dask worker every large new array is fresh memory from the kernel (Dask sets
    ``MALLOC_TRIM_THRESHOLD_``, so freed memory goes back at once), and its page faults
    cost more than the copy into it: 540 µs against 80 µs for W1's 1024-row minibatches.
    """

    def __init__(self, depth: int = 2) -> None:
        self.sets: list[tuple | None] = [None] * depth
        self.turn = 0

    def arrays(self, n: int, X: np.ndarray, y: np.ndarray, weight: np.ndarray | None):
        """``(X, y, sample_weight)`` arrays of ``n`` rows shaped and typed as the block's."""
        turn, self.turn = self.turn, (self.turn + 1) % len(self.sets)
        kept = self.sets[turn]
        if kept is None or not all(map(_holds, kept, (X, y, weight), (n, n, n))):
            kept = self.sets[turn] = _new_arrays(n, X, y, weight)
        return tuple(None if a is None else a[:n, ...] for a in kept)


def _holds(buffer: np.ndarray | None, like: np.ndarray | None, n: int) -> bool:
    """Whether ``buffer`` has room for ``n`` rows shaped and typed as ``like``'s."""
    if buffer is None or like is None:
        return buffer is None and like is None
    return (
        buffer.shape[0] >= n and buffer.shape[1:] == like.shape[1:] and buffer.dtype == like.dtype
    )


def _new_arrays(n: int, X: np.ndarray, y: np.ndarray, weight: np.ndarray | None) -> tuple:
    """Arrays for ``n`` rows shaped and typed as each given one's, aligned (NumPy's) or on
    its device (a device array's)."""
    return tuple(None if a is None else _new_rows(n, a) for a in (X, y, weight))


def _new_rows(n: int, like_rows: Any) -> Any:
    if type(like_rows) is np.ndarray:
        return aligned_empty((n, *like_rows.shape[1:]), like_rows.dtype)
    return empty((n, *like_rows.shape[1:]), like_rows)


def aligned_empty(shape: tuple, dtype, alignment: int = 64) -> np.ndarray:
    """A new row-major array whose data starts at a multiple of ``alignment`` bytes.

    A vectorized kernel may sum in another order depending on where its data starts (the
    compiled kernels of :mod:`dask_sgd.models.products` reassociate their sums), so a
    minibatch gathered into memory at another offset could give another rounding, and two
    runs of a fit (or a unit and its rerun) could drift apart.

    Examples
    --------
    >>> a = aligned_empty((3, 5), np.float32)
    >>> a.shape, a.dtype, a.ctypes.data % 64, a.flags.c_contiguous
    ((3, 5), dtype('float32'), 0, True)
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def gather_pieces(
    blocks: list[Block],
    pieces: list[tuple[int, int, int]],
    buffers: MinibatchBuffers | None = None,
):
    """``(X, y, sample_weight)`` of the rows ``pieces`` (``(block, first, end)``), in that
    order: views of one piece, or row-major arrays (new, or ``buffers``') filled piece by
    piece (one copy of consecutive rows per piece: faster than taking the rows one by one,
    see ``docs/benchmarks.md``). Sparse blocks give a CSR minibatch
    (:func:`gather_sparse_pieces`)."""
    if sp.issparse(blocks[pieces[0][0]].X):
        return gather_sparse_pieces(blocks, pieces)
    if len(pieces) == 1:
        b, first, stop = pieces[0]
        X, y, weight = blocks[b]
        # ``...``: the standard's arrays (CuPy's too) take no index of fewer axes than theirs
        return (
            X[first:stop, ...],
            y[first:stop, ...],
            None if weight is None else weight[first:stop],
        )
    n = sum(stop - first for _, first, stop in pieces)
    first_block = blocks[pieces[0][0]]
    X, y, weight = (
        _new_arrays(n, *first_block) if buffers is None else buffers.arrays(n, *first_block)
    )
    at = 0
    for b, first, stop in pieces:
        block, end = blocks[b], at + stop - first
        X[at:end, ...] = block[0][first:stop, ...]
        y[at:end, ...] = block[1][first:stop, ...]
        if weight is not None:
            weight[at:end] = block[2][first:stop]
        at = end
    return X, y, weight


#: above this many pieces, a sparse minibatch is gathered row by row in a few vectorized
#: operations, below it piece by piece: 1024 rows of 40 entries from 4 blocks took 60 µs
#: in 16 pieces piece by piece (450 µs vectorized), 170 µs in 64 (420), 3.1 ms in 1024
#: (1.6 ms: ``dask-sgd.run-rows`` 1)
SPARSE_PIECES_VECTORIZED = 128


def gather_sparse_pieces(blocks: list[Block], pieces: list[tuple[int, int, int]]):
    """``(X, y, sample_weight)`` of the rows ``pieces`` of CSR blocks, ``X`` a canonical
    ``csr_matrix`` of those rows only, never a dense copy: a piece's stored entries are one
    slice of its block's ``data`` and ``indices``, so a piece costs two slices and its
    ``indptr`` shifted, whatever the number of columns. One piece's arrays are views of the
    block's; several pieces' are new arrays, never :class:`MinibatchBuffers`' (a unit keeps
    sparse minibatches taken ahead, which a buffer in turn would overwrite)."""
    if len(pieces) > SPARSE_PIECES_VECTORIZED:
        return _gather_sparse_rows(blocks, np.array(pieces, dtype=np.int64))
    data, indices, indptr, ys, weights = [], [], [], [], []
    at = 0  # stored entries before the piece, in the minibatch
    for b, first, stop in pieces:
        X, y, weight = blocks[b]
        start, end = int(X.indptr[first]), int(X.indptr[stop])
        data.append(X.data[start:end])
        indices.append(X.indices[start:end])
        indptr.append(X.indptr[first + 1 : stop + 1] - (start - at))
        ys.append(y[first:stop])
        weights.append(None if weight is None else weight[first:stop])
        at += end - start
    n_columns = blocks[pieces[0][0]].X.shape[1]
    indptr = np.concatenate([np.zeros(1, dtype=indptr[0].dtype), *indptr])
    if len(pieces) == 1:
        return _csr(data[0], indices[0], indptr, n_columns), ys[0], weights[0]
    weight = None if weights[0] is None else np.concatenate(weights)
    X = _csr(np.concatenate(data), np.concatenate(indices), indptr, n_columns)
    return X, np.concatenate(ys), weight


def _gather_sparse_rows(blocks: list[Block], pieces: np.ndarray):
    """:func:`gather_sparse_pieces` for many short pieces (rows ``[:, 1]`` to ``[:, 2]`` of
    block ``[:, 0]``): every row's and every stored entry's source found at once."""
    which, first, stop = pieces.T
    rows = _ranges(first, stop - first)  # each row's index in its block
    row_block = np.repeat(which, stop - first)
    kept = [int(b) for b in np.unique(which)]
    # the rows of each block (all of them, as a slice, when there is one block)
    masks = {b: slice(None) if len(kept) == 1 else row_block == b for b in kept}
    starts, lengths = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
    for b, mask in masks.items():
        indptr, where = blocks[b].X.indptr, rows[mask]
        starts[mask], lengths[mask] = indptr[where], indptr[where + 1] - indptr[where]
    entries = _ranges(starts, lengths)  # each stored entry's index in its block
    entry_block = np.repeat(row_block, lengths) if len(kept) > 1 else None
    X0, y0, w0 = blocks[kept[0]]
    data, indices = np.empty(len(entries), X0.dtype), np.empty(len(entries), X0.indices.dtype)
    y = np.empty(len(rows), y0.dtype)
    weight = None if w0 is None else np.empty(len(rows), w0.dtype)
    for b, mask in masks.items():
        X, yb, wb = blocks[b]
        at = slice(None) if entry_block is None else entry_block == b
        data[at], indices[at] = X.data[entries[at]], X.indices[entries[at]]
        y[mask] = yb[rows[mask]]
        if weight is not None:
            weight[mask] = wb[rows[mask]]
    indptr = np.zeros(len(rows) + 1, indices.dtype)
    np.cumsum(lengths, out=indptr[1:])
    return _csr(data, indices, indptr, X0.shape[1]), y, weight


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``starts[j] + arange(lengths[j])`` for each ``j``, one after the other."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(
        starts - ends + lengths, lengths
    )


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_columns: int):
    """A ``csr_matrix`` of these arrays (views, no copy, when the indices are int32), marked
    canonical: the rows of canonical blocks, as they are."""
    shape = (len(indptr) - 1, n_columns)
    X = sp.csr_matrix((data, indices, indptr.astype(indices.dtype, copy=False)), shape=shape)
    X.has_canonical_format = True
    return X


def gather_runs(X: np.ndarray, starts, run_rows: int, out: np.ndarray) -> np.ndarray:
    """Rows ``start:start + run_rows`` of ``X`` for each start, one after the other, into
    ``out`` (what :func:`gather_pieces` does for ``X``; the gather benchmark times it)."""
    at = 0
    for start in starts:
        out[at : at + run_rows] = X[start : start + run_rows]
        at += run_rows
    return out[:at]


@dataclass(frozen=True)
class BlockSummary:
    """What the client learns about a block: its size, its labels, its first bad value."""

    index: int
    n_rows: int
    labels: np.ndarray
    counts: np.ndarray
    problem: str | None = None  # a message; "{column}" stands for the column's name
    column: int | None = None
    features: Moments | None = None  # the columns' moments, for standardizing on the fly
    target: Moments | None = None  # a regression target's
    sparse: bool = False  # X is a CSR matrix (whose columns' moments are not taken)


@dataclass
class DaskTrainingData:
    """Persisted blocks (futures on the workers) and what the client knows about them;
    ``row_order`` is how units take their rows. ``sparse``: every block's ``X`` is a
    canonical ``scipy.sparse.csr_matrix`` (and its minibatches are)."""

    futures: list[Any]
    summaries: list[BlockSummary]
    n_features: int
    dtype: np.dtype
    feature_names: np.ndarray | None = None
    row_order: RowOrder = RowOrder()
    sparse: bool = False
    #: for each block, the worker it was dealt to (:func:`dealt_workers`; None: where the
    #: scheduler put it). Units deal a block by it, not by where it landed: a block task that
    #: Dask's work stealing ran elsewhere (on a busy cluster) goes back, and the fit is the
    #: one an idle cluster gives.
    homes: list[str | None] | None = None

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.summaries)

    def label_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Every label in ``y`` and how often it occurs."""
        labels = np.concatenate([s.labels for s in self.summaries])
        counts = np.concatenate([s.counts for s in self.summaries])
        unique, inverse = np.unique(labels, return_inverse=True)
        return unique, np.bincount(inverse, weights=counts).astype(int)

    def moments(self) -> DataMoments | None:
        """The columns' moments over every block, and the target's (None for classes).

        None for sparse data: its model is not standardized (centring would make the
        columns dense, and a scale per column is a vector of millions of entries in every
        task), so its columns' moments are not even taken."""
        if self.sparse:
            return None
        features = total_moments([s.features for s in self.summaries if s.n_rows])
        targets = [s.target for s in self.summaries if s.n_rows and s.target is not None]
        return DataMoments(features, total_moments(targets) if targets else None)

    def target_moments(self) -> Moments | None:
        """A regression target's moments over every block (None for classes): scalars, taken
        on sparse data too, for a model that standardizes the target only."""
        targets = [s.target for s in self.summaries if s.n_rows and s.target is not None]
        return total_moments(targets) if targets else None

    def units(self, client: Any) -> list[Unit]:
        """The non-empty blocks dealt to one training unit per worker, by where they are.

        Each worker's unit trains on the blocks that worker holds (a block made for the
        fit: the worker it was dealt to, ``homes``), so that an undisturbed fit moves no
        data. Blocks move only to even out the units' rows (as
        :meth:`redeal` does): when a worker holds no block (there is a unit for every
        worker while there are blocks enough), when a worker holds more than
        ``BALANCE_TOLERANCE`` (5 %) above the mean rows, or when a block is on a worker
        that is leaving. A block
        moves once, as an aligned copy (:func:`aligned_block`), and the block it was
        copied from is released. The units come in the order of their workers.

        Which rows a unit trains on, and so the fit, depends on where Dask put the
        partitions: two fits of the same data placed alike give the same model.
        """
        blocks = [i for i, s in enumerate(self.summaries) if s.n_rows]
        workers = staying_workers(client)
        if not workers:
            raise RuntimeError("No Dask worker to train on.")
        holder = holders(client, [self.futures[i].key for i in blocks])
        homes = self.homes or [None] * len(self.futures)
        held: dict[str, list[int]] = {}
        for i in blocks:
            home = homes[i] if homes[i] in workers else holder[self.futures[i].key]
            held.setdefault(home, []).append(i)
        kept = {worker: held[worker] for worker in workers if worker in held}
        orphans = sorted(
            i for worker, indices in held.items() if worker not in kept for i in indices
        )
        dealt = self._mixed(self._deal(kept, orphans, workers))
        return self._placed(client, dealt, holder)

    def n_units(self, n_workers: int) -> int:
        """How many units ``n_workers`` workers train: one each, if there are blocks enough."""
        return min(n_workers, sum(1 for s in self.summaries if s.n_rows))

    def redeal(self, client: Any, units: list[Unit], workers: list[str]) -> list[Unit]:
        """The units for the workers ``workers`` (sorted), changing as little as it can.

        A unit whose worker is still there keeps its blocks; a new worker gets a unit (while
        there are more blocks than units); the blocks of units whose worker has left go to
        the units with the fewest rows, and then, while a unit has more than
        ``BALANCE_TOLERANCE`` (5 %) above the mean rows, blocks move from the busiest unit
        to the idlest for as long as that evens them out. A block moves to its new unit's
        worker once, as an aligned copy. The units come in the order of their workers.
        """
        kept = {unit.worker: list(unit.partitions) for unit in units if unit.worker in workers}
        orphans = sorted(i for unit in units if unit.worker not in kept for i in unit.partitions)
        dealt = self._deal(kept, orphans, workers)
        holder = holders(client, [self.futures[i].key for _, blocks in dealt for i in blocks])
        return self._placed(client, dealt, holder)

    def _deal(
        self, kept: dict[str, list[int]], orphans: list[int], workers: list[str]
    ) -> list[tuple[str, list[int]]]:
        """``(worker, block indices)`` for each unit: the blocks ``kept`` by their workers,
        a unit for more workers while there are blocks enough, the ``orphans`` to the units
        with the fewest rows, and then, while a unit has more than ``BALANCE_TOLERANCE``
        above the mean rows, the busiest unit's smallest block to the idlest unit for as
        long as that lowers the most rows a unit has."""
        rows = {s.index: s.n_rows for s in self.summaries}
        kept = {worker: list(blocks) for worker, blocks in kept.items()}
        n_units = self.n_units(len(workers))
        for worker in workers:
            if len(kept) < n_units and worker not in kept:
                kept[worker] = []
        load = lambda worker: sum(rows[i] for i in kept[worker])
        for index in orphans:
            kept[min(kept, key=lambda worker: (load(worker), worker))].append(index)
        most = (1 + BALANCE_TOLERANCE) * sum(map(load, kept)) / max(len(kept), 1)
        while True:  # even out: the busiest unit's smallest block goes to the idlest unit
            busiest = max(kept, key=lambda worker: (load(worker), worker))
            idlest = min(kept, key=lambda worker: (load(worker), worker))
            if len(kept[busiest]) < 2 or load(busiest) <= most:
                break
            block = min(kept[busiest], key=lambda index: (rows[index], index))
            if load(idlest) + rows[block] >= load(busiest):
                break
            kept[busiest].remove(block)
            kept[idlest].append(block)
        return [(worker, sorted(kept[worker])) for worker in sorted(kept)]

    def _mixed(self, dealt: list[tuple[str, list[int]]]) -> list[tuple[str, list[int]]]:
        """``dealt`` with blocks of about as many rows swapped between units when a unit's
        mix of labels is more than ``LABEL_SKEW_LIMIT`` from the whole data's (total
        variation distance): the swap that brings the furthest unit closest, until every
        unit is within half that; as it is for a regressor.

        Local SGD trains on a unit's own rows between exchanges: data sorted by label and
        placed by class would have each unit learn one class (``docs/benchmarks.md``)."""
        labels = {s.index: dict(zip(s.labels.tolist(), s.counts.tolist(), strict=True))
                  for s in self.summaries}  # fmt: skip
        classes = sorted({c for counts in labels.values() for c in counts}, key=repr)
        if len(dealt) < 2 or len(classes) < 2:
            return dealt
        count = {i: np.array([labels[i].get(c, 0) for c in classes], float) for i in labels}
        whole = sum(count.values())
        whole = whole / whole.sum()
        units = [list(blocks) for _, blocks in dealt]
        totals = [sum((count[i] for i in blocks), np.zeros(len(classes))) for blocks in units]

        def skew(total: np.ndarray) -> float:
            return 0.5 * float(np.abs(total / max(total.sum(), 1) - whole).sum())

        limit = LABEL_SKEW_LIMIT
        for _ in range(sum(map(len, units))):  # each swap lowers a skew: a bounded search
            skews = [skew(total) for total in totals]
            a = int(np.argmax(skews))
            if skews[a] <= limit:
                break
            limit = LABEL_SKEW_LIMIT / 2  # once mixing, mix well
            best, gain = None, 1e-12
            for b, others in enumerate(units):
                for i in units[a] if b != a else ():
                    for j in others:
                        rows_i, rows_j = count[i].sum(), count[j].sum()
                        if abs(rows_i - rows_j) > 0.1 * max(rows_i, rows_j):
                            continue  # the units keep their rows
                        moved = count[j] - count[i]
                        better = (
                            skews[a] + skews[b] - skew(totals[a] + moved) - skew(totals[b] - moved)
                        )
                        if better > gain:
                            best, gain = (b, i, j), better
            if best is None:
                break
            b, i, j = best
            units[a] = [k for k in units[a] if k != i] + [j]
            units[b] = [k for k in units[b] if k != j] + [i]
            totals[a], totals[b] = totals[a] + count[j] - count[i], totals[b] + count[i] - count[j]
        return [(worker, sorted(blocks)) for (worker, _), blocks in zip(dealt, units, strict=True)]

    def _placed(self, client: Any, dealt: list[tuple[str, list[int]]], holder: dict) -> list[Unit]:
        """A unit for each ``(worker, block indices)``: a block that ``holder`` (key ->
        worker) says is elsewhere moves to the unit's worker first."""
        units, moved = [], []
        for worker, indices in dealt:
            futures = []
            for index in indices:
                future = self.futures[index]
                if holder[future.key] != worker:
                    future = self._move(client, index, worker)
                    moved.append(future)
                futures.append(future)
            units.append(Unit(worker, futures, indices))
        wait(moved)
        return units

    def _move(self, client: Any, index: int, worker: str) -> Any:
        """An aligned copy of block ``index`` on ``worker``, in its place (the block is
        released)."""
        block = self.futures[index]
        moved = client.submit(
            aligned_block,
            block,
            key=f"{block.key}-on-{worker}",
            workers=[worker],
            allow_other_workers=True,  # a lost worker must not leave it unschedulable
            pure=False,
        )
        self.futures[index] = moved
        return moved

    def release(self) -> None:
        for future in self.futures:
            future.release()


def holders(client: Any, keys: list) -> dict:
    """A worker holding each key (None for one in no worker's memory)."""
    held = client.sync(client.scheduler.who_has, keys=keys)
    return {key: (held.get(key) or [None])[0] for key in keys}


def dealt_workers(client: Any, x_parts: list, held: dict) -> list[str | None]:
    """For each partition, the worker to make its block on: None (where the scheduler puts
    it, next to the partition) for a partition in a worker's memory (persisted), and for a
    partition that is computed for the fit, the worker that dealing by index gives it
    (partition ``i`` to the ``i mod k``-th of ``k`` workers), so that the units, and so the
    fit, are the same from run to run. None for all if the caller restricts the workers
    with ``dask.annotate``, or if there is no worker."""
    workers = sorted(staying_workers(client))
    if not workers or "workers" in dask.get_annotations():
        return [None] * len(x_parts)
    k = min(len(workers), len(x_parts))
    return [None if held[x.key] else workers[i % k] for i, x in enumerate(x_parts)]


def is_dask_collection(X: Any) -> bool:
    return dask.is_dask_collection(X)


def persist_blocks(
    client: Any,
    X: Any,
    y: Any,
    sample_weight: Any = None,
    *,
    classifier: bool,
    seed: int,
) -> DaskTrainingData:
    """Make, check and persist the training blocks; raise on bad input, holding nothing.

    A block of a persisted partition is made where the partition is, as a view of it when
    it already has the training dtype (:func:`load_block`); a partition that the fit
    computes is made on the worker that :func:`dealt_workers` deals it to. ``seed`` seeds
    the units' :class:`RowOrder`.

    A Dask array whose chunks are SciPy sparse (its ``_meta`` says so, or its partitions
    turn out to be) gives sparse data: CSR blocks (:func:`sparse_rows`), ``data.sparse``.
    """
    x_parts, y_parts, w_parts, n_features, names, dtype, sparse = _partitions(X, y, sample_weight)
    name = uuid.uuid4().hex[:8]
    load = dask.delayed(load_block, pure=True)
    held = holders(client, [x.key for x in x_parts])
    homes = dealt_workers(client, x_parts, held)
    blocks = []
    for i, (x, yp, w, worker) in enumerate(zip(x_parts, y_parts, w_parts, homes, strict=True)):
        where = {} if worker is None else {"workers": [worker], "allow_other_workers": True}
        with dask.annotate(**where):
            blocks.append(
                load(
                    x,
                    yp,
                    w,
                    dtype,
                    held[x.key] is not None,
                    sparse,
                    dask_key_name=f"dask-sgd-block-{i}-{name}",
                )
            )
    futures = client.compute(blocks)
    width = None if np.isnan(n_features) else int(n_features)
    summaries = client.gather(
        [
            client.submit(
                summarize_block, f, i, classifier, width, key=f"dask-sgd-check-{i}-{name}"
            )
            for i, f in enumerate(futures)
        ]
    )
    run_rows = int(dask.config.get("dask-sgd.run-rows", RUN_ROWS))
    order = RowOrder(int(seed), run_rows)
    kinds = [s.sparse for s in summaries]
    data = DaskTrainingData(
        futures, summaries, n_features, np.dtype(dtype), names, order, any(kinds), homes
    )
    bad = [s for s in summaries if s.problem]
    if bad or data.n_rows == 0 or len(set(kinds)) > 1:
        data.release()
        if len(set(kinds)) > 1 and not bad:
            raise ValueError(
                f"X has sparse partitions ({kinds.index(True)}) and dense ones "
                f"({kinds.index(False)}): say that X is sparse with a sparse meta, e.g. "
                "X.map_blocks(scipy.sparse.csr_matrix, meta=scipy.sparse.csr_matrix((0, 0)))."
            )
        if bad:
            column = bad[0].column
            if names is not None and column is not None:
                column = repr(names[column])
            raise ValueError(bad[0].problem.format(column=column))
        raise ValueError(f"Found array with 0 sample(s) (shape=(0, {n_features})).")
    return data


def load_block(X, y, sample_weight, dtype, persisted: bool = False, sparse: bool = False) -> Block:
    """One partition as a training block, its rows in their order (runs on a worker).

    A SciPy sparse partition, or any partition of ``sparse`` data, becomes a canonical CSR
    matrix (:func:`sparse_rows`); a ``persisted`` one that it shares arrays with makes a
    :class:`SharedBlock`. A partition of device arrays (CuPy's) stays on its device
    (:func:`_device_block`); CuPy's sparse matrices are refused.

    ``X`` becomes a row-major array of ``dtype`` (:func:`rows_are_contiguous`): the partition
    itself (a view of it) when it already is one, else one copy (a data frame, whose
    ``to_numpy`` is column-major; a column-major array; another dtype). Runs of rows from a column-major array train at
    about half the speed (``docs/benchmarks.md``, "Minibatches without a shuffled copy").
    A view of a ``persisted`` partition is a :class:`SharedBlock`: another key holds its
    memory.
    """
    if type(X).__module__.startswith("cupyx"):
        raise TypeError(
            f"X has partitions of {type(X).__name__}: dask_sgd trains sparse partitions "
            "as SciPy CSR matrices on host; move them there first, e.g. "
            "X.map_blocks(lambda b: b.get(), meta=scipy.sparse.csr_matrix((0, 0)))."
        )
    if sparse or sp.issparse(X):
        return _sparse_block(X, y, sample_weight, dtype, persisted)
    if not is_host(X):
        return _device_block(X, y, sample_weight, dtype)
    source = X  # what a view of the partition would share memory with
    if isinstance(X, pd.DataFrame):
        source = X.iloc[:, 0].to_numpy() if X.shape[1] else None
        X = X.to_numpy(dtype=dtype)  # a column-major view, if the frame is one pandas block
    X = np.asarray(X)
    if not rows_are_contiguous(X, dtype):
        X = np.ascontiguousarray(X, dtype=dtype)
    y = np.asarray(y).reshape(-1)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=dtype).ravel()
    if persisted and isinstance(source, np.ndarray) and np.may_share_memory(X, source):
        return SharedBlock(X if isinstance(X.base, np.ndarray) else X.view(), y, weight)
    return Block(X, y, weight)


def _device_block(X, y, sample_weight, dtype) -> Block:
    """A partition whose ``X`` is a device array (CuPy's, or another array-API library's):
    ``X`` stays on its device, in ``dtype`` (a row-major copy only where it is not one). Its
    labels and weights come to host: small, they are checked, counted and encoded there
    once, and go back to the device encoded, once per block (:class:`UnitData`)."""
    xp = get_namespace(X)
    X = astype(X, getattr(xp, np.dtype(dtype).name))
    if hasattr(xp, "ascontiguousarray"):  # CuPy: rows in one piece each, as on host
        X = xp.ascontiguousarray(X)
    y = to_host(y).reshape(-1)
    weight = None if sample_weight is None else to_host(sample_weight).astype(dtype).ravel()
    return Block(X, y, weight)


def _sparse_block(X, y, sample_weight, dtype, persisted: bool) -> Block:
    source = X if sp.issparse(X) else None
    X = sparse_rows(X, dtype)
    y = np.asarray(y).reshape(-1)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=dtype).ravel()
    if persisted and source is not None and _shares_arrays(X, source):
        # views, so that SharedBlock's size tells them from arrays of their own
        shared = _csr(X.data.view(), X.indices.view(), X.indptr.view(), X.shape[1])
        shared.has_canonical_format = X.has_canonical_format
        return SharedBlock(shared, y, weight)
    return Block(X, y, weight)


def _shares_arrays(X: sp.csr_matrix, source) -> bool:
    """Whether ``X`` holds ``source``'s values (a conversion would have copied them)."""
    values = getattr(source, "data", None)
    return isinstance(values, np.ndarray) and np.may_share_memory(X.data, values)


def sparse_rows(X, dtype) -> sp.csr_matrix:
    """``X`` (a SciPy sparse matrix or array, or a dense one) as a canonical
    ``csr_matrix`` (indices sorted in each row, no duplicates) whose values are of
    ``dtype``: ``X``'s own arrays when it is one (a ``csr_array``'s too: minibatches must
    be matrices, whose ``@`` and ``X[rows]`` keep their meaning), else one conversion.

    A matrix whose ``indptr`` is not a valid one is left as it is, for
    :func:`summarize_block` to name (sorting its rows could read past its arrays).

    Examples
    --------
    >>> X = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 0, 1], [2, 2, 0])), shape=(2, 3))
    >>> rows = sparse_rows(X, np.float32)  # duplicates summed
    >>> type(rows).__name__, rows.dtype, rows.toarray().tolist()
    ('csr_matrix', dtype('float32'), [[0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    """
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X, dtype=dtype))
    elif X.format != "csr":
        X = X.tocsr()  # COO sums its duplicates; CSC sorts its indices
    if not isinstance(X, sp.csr_matrix):
        X = sp.csr_matrix(X)  # a csr_array: the same arrays, as a matrix
    if X.dtype != dtype:
        X = X.astype(dtype)
    if _csr_structure_problem(X) is not None:
        return X
    if X.indices.dtype != np.int32 and max(*X.shape, X.nnz) < 2**31:
        # int32 indices, as scipy's own constructor makes them: minibatches are then built
        # without reading their indices, and every block's have one dtype
        X = sp.csr_matrix(
            (X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)), shape=X.shape
        )
    if not X.has_canonical_format:
        X = X.copy()  # not the partition's arrays: another key holds them
        X.sum_duplicates()  # sorts the indices, too
    return X


def _csr_structure_problem(X: sp.csr_matrix) -> str | None:
    """What is wrong with ``X``'s ``indptr`` (read in O(rows)), or None."""
    indptr = X.indptr
    if indptr.ndim != 1 or len(indptr) != X.shape[0] + 1:
        return f"its indptr has {indptr.size} entries for {X.shape[0]} rows"
    if indptr[0] != 0 or indptr[-1] > min(len(X.indices), len(X.data)):
        return "its indptr does not start at 0 or ends past its stored entries"
    if (np.diff(indptr) < 0).any():
        return "its indptr decreases"
    return None


def rows_are_contiguous(X: np.ndarray, dtype) -> bool:
    """Whether ``X`` is an aligned 2-D array of ``dtype`` whose rows each lie in one piece
    of memory, in order: C-contiguous, or columns sliced from a C-contiguous array. A run of
    its rows is then one read of nearby memory, and a minibatch that is one run is a view
    that BLAS takes as it is.

    Examples
    --------
    >>> wide = np.zeros((4, 3))
    >>> [rows_are_contiguous(a, np.float64) for a in (wide, wide[:, :2], wide.T, wide[::2])]
    [True, True, False, True]
    >>> rows_are_contiguous(wide, np.float32)
    False
    """
    return (
        X.ndim == 2
        and X.dtype == dtype
        and X.flags.aligned
        and (X.shape[1] <= 1 or X.strides[1] == X.itemsize)
        and (X.shape[0] <= 1 or X.strides[0] >= X.shape[1] * X.itemsize)
    )


def blocks_by_key(keys: list) -> list[Block]:
    """The blocks of ``keys``, in a task: from this worker's memory, else fetched from the
    workers that hold them (a unit rerun elsewhere; Dask recomputes a lost one, which the
    client still holds).

    Long-running tasks take their blocks by key, not as arguments: a task's arguments are
    dependencies, whose replica on its worker the scheduler may tell the worker to drop
    while the task runs (the Active Memory Manager, or a key released and reported again),
    and the worker then closes itself on "Cannot remove replica of … while … long-running"
    (issue 19). A task that depends on nothing leaves the scheduler nothing to drop from
    under it; the client holds the blocks' futures for the whole fit.
    """
    worker = get_worker()
    found = {}
    for key in keys:
        with contextlib.suppress(KeyError):
            found[key] = worker.data[key]
    missing = [key for key in keys if key not in found]
    if missing:
        client = get_client()
        futures = [Future(key, client) for key in missing]
        # a new Future does not tell the scheduler that this client wants its key (Dask's
        # ``fire_and_forget`` sends the same message): else no news of it ever comes
        client._send_to_scheduler({"op": "client-desires-keys", "keys": missing})
        try:
            found |= dict(zip(missing, client.gather(futures), strict=True))
        finally:
            for future in futures:
                future.release()
    return [found[key] for key in keys]


def aligned_block(block: Block) -> Block:
    """``block`` with every array aligned for its dtype, copied where it is not.

    Dask gives a task the arrays it received from another worker as views into the
    message, at whatever offset they arrived: float64 rows 58 bytes past a 64-byte boundary,
    say, not even 8-byte aligned. NumPy's matrix products then leave BLAS for a generic
    loop, about 7 times slower on W1's minibatches (``docs/benchmarks.md``). A CSR ``X``
    stays the same matrix when its arrays are aligned, else one with aligned copies.
    """
    X, y, weight = block
    if sp.issparse(X):
        if not all(a.flags.aligned for a in (X.data, X.indices, X.indptr)):
            canonical = X.has_canonical_format
            X = _csr(*map(_aligned, (X.data, X.indices, X.indptr)), X.shape[1])
            X.has_canonical_format = canonical
    else:
        X = _aligned(X)
    return Block(X, _aligned(y), _aligned(weight))


def _aligned(a: np.ndarray | None) -> np.ndarray | None:
    if a is None or not isinstance(a, np.ndarray) or a.flags.aligned:  # (device arrays too)
        return a
    return np.require(a, requirements="A")


def summarize_block(
    block: Block, index: int, classifier: bool, n_features: int | None = None
) -> BlockSummary:
    """Rows, labels, column moments and the first non-finite value of a block (runs on a
    worker). The moments are read in one pass, which also finds non-finite columns: a NaN
    or an infinity makes its column's sums non-finite (and so does overflow, which the
    second look, only then, tells apart). A CSR block's columns have no moments taken
    (:meth:`DaskTrainingData.moments`); its stored values are checked instead, and its
    structure. A block that is not ``n_features`` wide is a problem too."""
    X, y, weight = block
    problem = target = None
    sparse = sp.issparse(X)
    features, problem, column = (_check_sparse if sparse else _check_dense)(X, index)
    if problem is None and n_features is not None and X.shape[1] != n_features:
        problem = f"Partition {index} of X has {X.shape[1]} columns, but X has {n_features}."
    if problem is None:
        problem = _rows_problem(X, y, weight, index, classifier)
    if classifier and problem is None:
        labels, counts = np.unique(y, return_counts=True)
    else:
        labels, counts = np.empty(0, dtype=y.dtype), np.empty(0, dtype=int)
        if problem is None:
            target = Moments.of(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    return BlockSummary(
        index, int(X.shape[0]), labels, counts, problem, column, features, target, sparse
    )


def _rows_problem(X, y, weight, index: int, classifier: bool) -> str | None:
    """What is wrong with a block's rows of ``y`` and ``sample_weight``, or None."""
    if X.shape[0] != y.shape[0]:
        return (
            f"Found input variables with inconsistent numbers of samples in partition "
            f"{index}: X has {X.shape[0]} rows, y has {y.shape[0]}."
        )
    if not classifier and not np.isfinite(y.astype(float)).all():
        return f"Input y contains NaN or infinity (partition {index})."
    if classifier and pd.isna(y).any():
        return f"Input y contains NaN (partition {index})."
    if weight is not None and not np.isfinite(weight).all():
        return f"Input sample_weight contains NaN or infinity (partition {index})."
    return None


def _check_dense(X: np.ndarray, index: int) -> tuple[Moments, str | None, int | None]:
    """The columns' moments, and the first column with a non-finite value (a message)."""
    features = Moments.of(X)
    finite_columns = np.isfinite(features.mean) & np.isfinite(features.m2)
    xp = get_namespace(X)  # a device block's second look runs on its device
    if not finite_columns.all():
        finite_columns = to_host(xp.all(xp.isfinite(X), axis=0))
    if finite_columns.all():
        return features, None, None
    column = int(np.argmin(finite_columns))
    kind = "NaN" if bool(xp.any(xp.isnan(X[:, column]))) else "infinity"
    return features, f"Input X contains {kind} (partition {index}, column {{column}}).", column


def _check_sparse(X: sp.csr_matrix, index: int) -> tuple[None, str | None, int | None]:
    """No moments; a CSR block's first problem: a broken structure, a column index out of
    range, or the first column (lowest index, as on dense blocks) with a non-finite
    stored value. One read of the stored entries."""
    structure = _csr_structure_problem(X)
    if structure is not None:
        return None, f"Partition {index} of X is not a valid CSR matrix: {structure}.", None
    end = int(X.indptr[-1])
    indices, values = X.indices[:end], X.data[:end]
    if end and (int(indices.min()) < 0 or int(indices.max()) >= X.shape[1]):
        return (
            None,
            (
                f"Partition {index} of X is not a valid CSR matrix: a column index is outside "
                f"[0, {X.shape[1]})."
            ),
            None,
        )
    finite = np.isfinite(values)
    if finite.all():
        return None, None, None
    column = int(indices[~finite].min())
    kind = "NaN" if np.isnan(values[~finite][indices[~finite] == column]).any() else "infinity"
    return None, f"Input X contains {kind} (partition {index}, column {{column}}).", column


def _partitions(X, y, sample_weight):
    """Aligned per-partition pieces of X, y and sample_weight, plus what X is (its number
    of features, column names, training dtype, and whether its meta is SciPy sparse)."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    y = _one_column(y)
    if hasattr(X, "columns"):  # a Dask data frame
        bad = [c for c, t in X.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
        if bad:
            raise ValueError(
                f"Columns {bad} of X are not numeric (dtypes {[str(X.dtypes[c]) for c in bad]});"
                " encode them as numbers before training."
            )
        names = np.asarray(X.columns, dtype=object)
        dtype = np.float32 if all(t == np.float32 for t in X.dtypes) else np.float64
        x_parts = X.to_delayed()
        sparse = False
        row_chunks = None
        n_features = len(X.columns)
    else:
        if X.ndim != 2:
            raise ValueError(
                f"Expected 2D array, got {X.ndim}D array instead. Reshape your data using "
                "array.reshape(-1, 1) if your data has a single feature."
            )
        x_dtype = host_dtype(X.dtype)  # a device array's (CuPy's chunks, say) as NumPy's
        if x_dtype.kind not in "biuf":
            kind = "Complex data not supported" if x_dtype.kind == "c" else "dtype object"
            raise ValueError(f"{kind}: X has dtype {x_dtype}; dask_sgd needs numbers.")
        if len(X.chunks[1]) > 1:
            logger.info(
                "Rechunking X to one chunk along the columns (it had %d).", len(X.chunks[1])
            )
            X = X.rechunk({1: -1})
        names = None
        dtype = np.float32 if x_dtype == np.float32 else np.float64
        sparse = sp.issparse(getattr(X, "_meta", None))
        x_parts = list(X.to_delayed().ravel())
        row_chunks = X.chunks[0]
        n_features = X.shape[1]
    y_parts = _aligned_parts(y, len(x_parts), row_chunks, "y")
    w_parts = (
        [None] * len(x_parts)
        if sample_weight is None
        else _aligned_parts(sample_weight, len(x_parts), row_chunks, "sample_weight")
    )
    return x_parts, y_parts, w_parts, n_features, names, dtype, sparse


def _one_column(y: Any) -> Any:
    """``y`` as one column: a column vector (or a one-column frame) is raveled with
    scikit-learn's warning; more columns are an error."""
    if getattr(y, "ndim", 1) != 2:  # a Dask series answers .columns too
        return y
    if hasattr(y, "columns"):  # a Dask data frame
        columns = len(y.columns)
        shape = f"a data frame of {columns} columns"
    else:
        columns = y.shape[1]
        shape = f"an array of shape {y.shape}"
    if columns != 1:
        raise ValueError(f"y should be a 1d array, got {shape} instead.")
    warnings.warn(
        "A column-vector y was passed when a 1d array was expected. Please change the shape "
        "of y to (n_samples, ), for example using ravel().",
        DataConversionWarning,
        stacklevel=5,
    )
    return y[y.columns[0]] if hasattr(y, "columns") else y[:, 0]


def _aligned_parts(values, n_parts: int, row_chunks: tuple | None, what: str) -> list:
    """Partitions of ``values`` row-aligned with the ``n_parts`` partitions of ``X``.

    A Dask array is rechunked to X's row chunks when both are known.
    """
    if not is_dask_collection(values):
        raise TypeError(
            f"X is a Dask collection, so {what} must be one too (a Dask array or series)."
        )
    if hasattr(values, "npartitions"):  # a Dask series or data frame
        parts = values.to_delayed()
    else:
        own = values.chunks[0]
        if row_chunks is not None and not np.isnan(row_chunks + own).any() and own != row_chunks:
            values = values.rechunk({0: row_chunks})
        parts = list(values.to_delayed().ravel())
    if len(parts) != n_parts:
        raise ValueError(
            f"X and {what} must have the same partitions ({n_parts} and {len(parts)}); "
            "rechunk or repartition one of them."
        )
    return parts

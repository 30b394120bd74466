"""Dask input: check it, convert it and persist it on the workers as training blocks.

A block is one partition of ``X`` with its rows of ``y`` and ``sample_weight``, as NumPy
arrays, shuffled once when it is made (minibatches are then slices, not copies). Making the
blocks and checking them is one pass over the data on the workers; only a small summary of
each block (rows, labels, where a NaN is) comes back to the client.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import dask
import numpy as np
import pandas as pd
from distributed import wait
from sklearn.exceptions import DataConversionWarning

from dask_sgd.standardize import DataMoments, Moments, total_moments
from dask_sgd.workers import staying_workers

logger = logging.getLogger(__name__)

Array = Any


class Block(NamedTuple):
    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None


class Unit(NamedTuple):
    """A training unit: its worker, its blocks (futures) and their partition indices."""

    worker: str
    blocks: list[Any]
    partitions: list[int]


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


@dataclass
class DaskTrainingData:
    """Persisted blocks (futures on the workers) and what the client knows about them."""

    futures: list[Any]
    summaries: list[BlockSummary]
    n_features: int
    dtype: np.dtype
    feature_names: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.summaries)

    def label_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Every label in ``y`` and how often it occurs."""
        labels = np.concatenate([s.labels for s in self.summaries])
        counts = np.concatenate([s.counts for s in self.summaries])
        unique, inverse = np.unique(labels, return_inverse=True)
        return unique, np.bincount(inverse, weights=counts).astype(int)

    def moments(self) -> DataMoments:
        """The columns' moments over every block, and the target's (None for classes)."""
        features = total_moments([s.features for s in self.summaries if s.n_rows])
        targets = [s.target for s in self.summaries if s.n_rows and s.target is not None]
        return DataMoments(features, total_moments(targets) if targets else None)

    def units(self, client: Any) -> list[Unit]:
        """The non-empty blocks dealt to one training unit per worker, by block index.

        Dealing by index, not by where the scheduler happened to put the blocks, keeps the
        minibatches (and so the fit) the same from run to run. Every unit gets a worker of
        its own, preferring one that holds many of its rows (:func:`persist_blocks` makes
        each block on the worker this chooses, when it can tell). Blocks held elsewhere
        move to their unit's worker now, once, as aligned copies (:func:`aligned_block`),
        and the blocks they were copied from are released.
        """
        blocks = [
            (f, s.n_rows, s.index)
            for f, s in zip(self.futures, self.summaries, strict=True)
            if s.n_rows
        ]
        workers = staying_workers(client)
        if not workers:
            raise RuntimeError("No Dask worker to train on.")
        n_units = self.n_units(len(workers))
        dealt = [blocks[j::n_units] for j in range(n_units)]
        holder = holders(client, [f.key for f, _, _ in blocks])
        held = Counter()  # (unit, worker) -> rows of the unit's blocks on that worker
        for unit, unit_blocks in enumerate(dealt):
            for future, n_rows, _ in unit_blocks:
                held[unit, holder[future.key]] += n_rows
        chosen = unit_workers(held, n_units, workers)
        return self._placed(
            client, [(w, [i for _, _, i in b]) for w, b in zip(chosen, dealt, strict=True)], holder
        )

    def n_units(self, n_workers: int) -> int:
        """How many units ``n_workers`` workers train: one each, if there are blocks enough."""
        return min(n_workers, sum(1 for s in self.summaries if s.n_rows))

    def redeal(self, client: Any, units: list[Unit], workers: list[str]) -> list[Unit]:
        """The units for the workers ``workers`` (sorted), changing as little as it can.

        A unit whose worker is still there keeps its blocks; a new worker gets a unit (while
        there are more blocks than units); the blocks of units whose worker has left go to
        the units with the fewest rows, and then blocks move from the busiest unit to the
        idlest for as long as that evens them out. A block moves to its new unit's worker
        once, as an aligned copy. The units come in the order of their workers.
        """
        rows = {s.index: s.n_rows for s in self.summaries}
        kept = {unit.worker: list(unit.partitions) for unit in units if unit.worker in workers}
        orphans = sorted(i for unit in units if unit.worker not in kept for i in unit.partitions)
        n_units = self.n_units(len(workers))
        for worker in workers:
            if len(kept) < n_units and worker not in kept:
                kept[worker] = []
        load = lambda worker: sum(rows[i] for i in kept[worker])
        for index in orphans:
            kept[min(kept, key=lambda worker: (load(worker), worker))].append(index)
        while True:  # even out: the busiest unit's smallest block goes to the idlest unit
            busiest = max(kept, key=lambda worker: (load(worker), worker))
            idlest = min(kept, key=lambda worker: (load(worker), worker))
            if len(kept[busiest]) < 2:
                break
            block = min(kept[busiest], key=lambda index: rows[index])
            if load(idlest) + rows[block] >= load(busiest):
                break
            kept[busiest].remove(block)
            kept[idlest].append(block)
        holder = holders(client, [self.futures[i].key for blocks in kept.values() for i in blocks])
        return self._placed(client, [(w, sorted(kept[w])) for w in sorted(kept)], holder)

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


def unit_workers(held: Counter, n_units: int, workers: list[str]) -> list[str]:
    """A worker of its own for each of ``n_units`` units, preferring, greedily, the one
    holding most of the unit's data (``held[unit, worker]``: how much); the others in order."""
    chosen: dict[int, str] = {}
    for (unit, worker), _ in held.most_common():
        if worker in workers and unit not in chosen and worker not in chosen.values():
            chosen[unit] = worker
    free = iter(w for w in workers if w not in chosen.values())
    return [chosen.get(unit) or next(free) for unit in range(n_units)]


def dealt_workers(client: Any, x_parts: list) -> list[str | None]:
    """For each partition, the worker :meth:`DaskTrainingData.units` will train its block on
    if no partition is empty (None for all if there is no worker, or if the caller
    restricts the workers with ``dask.annotate``).

    Making each block there moves the partition to it while the blocks are being made,
    instead of moving the block afterwards.
    """
    workers = staying_workers(client)
    if not workers or "workers" in dask.get_annotations():
        return [None] * len(x_parts)
    n_units = min(len(workers), len(x_parts))
    holder = holders(client, [x.key for x in x_parts])
    held = Counter((i % n_units, holder[x.key]) for i, x in enumerate(x_parts))
    chosen = unit_workers(held, n_units, workers)
    return [chosen[i % n_units] for i in range(len(x_parts))]


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
    """Make, check and persist the training blocks; raise on bad input, holding nothing."""
    x_parts, y_parts, w_parts, n_features, names, dtype = _partitions(X, y, sample_weight)
    name = uuid.uuid4().hex[:8]
    load = dask.delayed(load_block, pure=True)
    blocks = []
    for i, (x, yp, w, worker) in enumerate(
        zip(x_parts, y_parts, w_parts, dealt_workers(client, x_parts), strict=True)
    ):
        where = {} if worker is None else {"workers": [worker], "allow_other_workers": True}
        with dask.annotate(**where):
            blocks.append(
                load(x, yp, w, dtype, seed + i, dask_key_name=f"dask-sgd-block-{i}-{name}")
            )
    futures = client.compute(blocks)
    summaries = client.gather(
        [
            client.submit(summarize_block, f, i, classifier, key=f"dask-sgd-check-{i}-{name}")
            for i, f in enumerate(futures)
        ]
    )
    data = DaskTrainingData(futures, summaries, n_features, np.dtype(dtype), names)
    bad = [s for s in summaries if s.problem]
    if bad or data.n_rows == 0:
        data.release()
        if bad:
            column = bad[0].column
            if names is not None and column is not None:
                column = repr(names[column])
            raise ValueError(bad[0].problem.format(column=column))
        raise ValueError(f"Found array with 0 sample(s) (shape=(0, {n_features})).")
    return data


def load_block(X, y, sample_weight, dtype, seed: int) -> Block:
    """One partition as NumPy arrays, rows shuffled once (runs on a worker)."""
    X = X.to_numpy(dtype=dtype) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=dtype)
    y = np.asarray(y).reshape(-1)
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=dtype).ravel()
    order = np.random.default_rng(seed).permutation(X.shape[0])
    return Block(shuffled_rows(X, order), y[order], None if weight is None else weight[order])


def shuffled_rows(X: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The rows of ``X`` in ``order``, as a new row-major array.

    Indexing rows of a column-major array (what pandas' ``to_numpy`` gives, and a slice of
    columns of one) reads memory far apart for every value: 2 to 3 times slower than
    ``np.take`` into a row-major result, which reads each column once in turn.
    """
    if X.strides[0] < X.strides[1]:  # column-major
        return np.take(X, order, axis=0, out=np.empty(X.shape, X.dtype))
    return np.ascontiguousarray(X[order])


def aligned_block(block: Block) -> Block:
    """``block`` with every array aligned for its dtype, copied where it is not.

    Dask gives a task the arrays it received from another worker as views into the
    message, at whatever offset they arrived: float64 rows 58 bytes past a 64-byte boundary,
    say, not even 8-byte aligned. NumPy's matrix products then leave BLAS for a generic
    loop, about 7 times slower on W1's minibatches (``docs/benchmarks.md``).
    """
    return Block(
        *(a if a is None or a.flags.aligned else np.require(a, requirements="A") for a in block)
    )


def summarize_block(block: Block, index: int, classifier: bool) -> BlockSummary:
    """Rows, labels, column moments and the first non-finite value of a block (runs on a
    worker). The moments are read in one pass, which also finds non-finite columns: a NaN
    or an infinity makes its column's sums non-finite (and so does overflow, which the
    second look, only then, tells apart)."""
    X, y, weight = block
    problem = target = None
    features = Moments.of(X)
    finite_columns = np.isfinite(features.mean) & np.isfinite(features.m2)
    if not finite_columns.all():
        finite_columns = np.isfinite(X).all(axis=0)
    if not finite_columns.all():
        column = int(np.argmin(finite_columns))
        kind = "NaN" if np.isnan(X[:, column]).any() else "infinity"
        problem = f"Input X contains {kind} (partition {index}, column {{column}})."
    elif X.shape[0] != y.shape[0]:
        problem = (
            f"Found input variables with inconsistent numbers of samples in partition "
            f"{index}: X has {X.shape[0]} rows, y has {y.shape[0]}."
        )
    elif not classifier and not np.isfinite(y.astype(float)).all():
        problem = f"Input y contains NaN or infinity (partition {index})."
    elif classifier and pd.isna(y).any():
        problem = f"Input y contains NaN (partition {index})."
    elif weight is not None and not np.isfinite(weight).all():
        problem = f"Input sample_weight contains NaN or infinity (partition {index})."
    if classifier and problem is None:
        labels, counts = np.unique(y, return_counts=True)
    else:
        labels, counts = np.empty(0, dtype=y.dtype), np.empty(0, dtype=int)
        if problem is None:
            target = Moments.of(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    column = int(np.argmin(finite_columns)) if not finite_columns.all() else None
    return BlockSummary(
        index, int(X.shape[0]), labels, counts, problem, column, features, target
    )


def _partitions(X, y, sample_weight):
    """Aligned per-partition pieces of X, y and sample_weight, plus what X is."""
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
        row_chunks = None
        n_features = len(X.columns)
    else:
        if X.ndim != 2:
            raise ValueError(
                f"Expected 2D array, got {X.ndim}D array instead. Reshape your data using "
                "array.reshape(-1, 1) if your data has a single feature."
            )
        if X.dtype.kind not in "biuf":
            kind = "Complex data not supported" if X.dtype.kind == "c" else "dtype object"
            raise ValueError(f"{kind}: X has dtype {X.dtype}; dask_sgd needs numbers.")
        if len(X.chunks[1]) > 1:
            logger.info(
                "Rechunking X to one chunk along the columns (it had %d).", len(X.chunks[1])
            )
            X = X.rechunk({1: -1})
        names = None
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        x_parts = list(X.to_delayed().ravel())
        row_chunks = X.chunks[0]
        n_features = X.shape[1]
    y_parts = _aligned_parts(y, len(x_parts), row_chunks, "y")
    w_parts = (
        [None] * len(x_parts)
        if sample_weight is None
        else _aligned_parts(sample_weight, len(x_parts), row_chunks, "sample_weight")
    )
    return x_parts, y_parts, w_parts, n_features, names, dtype


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

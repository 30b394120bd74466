"""Blocks: the partitions trained on as they are, taken in shuffled runs of rows, dealt to
units by where they are; the copies of the data that a fit makes (none for a row-major
array of the training dtype: ``docs/distributed.md``)."""

from __future__ import annotations

import tracemalloc

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.sizeof import sizeof
from distributed import wait
from sklearn.metrics import log_loss

import dask_sgd
from dask_sgd import optim, schedules
from dask_sgd.blocks import (
    Block,
    MinibatchBuffers,
    RowOrder,
    SharedBlock,
    blocks_by_key,
    load_block,
    persist_blocks,
)
from dask_sgd.data import TargetEncoder
from dask_sgd.datasets import make_classification_blocks, make_linear_classification
from dask_sgd.engine.units import SegmentPlan, UnitData
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.penalties import get_penalty
from dask_sgd.workers import worker_statuses


def persisted(client, n_samples=4_000, n_features=6, chunk_rows=500, seed=0, **placement):
    """A persisted Dask array of rows and labels (8 partitions by default), waited for."""
    X, y = make_linear_classification(
        n_samples, n_features, chunk_rows=chunk_rows, random_state=seed
    )
    with dask.annotate(**placement):
        X, y = client.persist([X, y])
    wait([X, y])
    return X, y


def placed(client, X, y, workers: list[str]) -> list:
    """Persist partition ``i`` of ``X`` and ``y`` (their own keys) on ``workers[i]``; the
    futures that hold them."""
    held = []
    for i, worker in enumerate(workers):
        held += client.persist([X.to_delayed()[i, 0], y.to_delayed()[i]], workers=[worker])
    wait(held)
    return held


def views_of_partitions(client, data, X) -> dict:
    """For each block: whether it is a view of its X partition, on the worker holding it."""
    keys = [(f.key, x.key) for f, x in zip(data.futures, X.to_delayed().ravel(), strict=True)]

    def check(pairs, dask_worker):
        held = dask_worker.data
        return {
            block: np.shares_memory(held[block].X, held[part])
            for block, part in pairs
            if block in held and part in held
        }

    found = {}
    for answer in client.run(check, keys).values():
        found.update(answer)
    return found


# --- the copies of the data ---------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_block_is_a_view_of_its_persisted_partition_and_counts_once(client):
    X, y = persisted(client)
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    try:
        # each block is made on the worker of its partition, as a view of it
        assert views_of_partitions(client, data, X) == {f.key: True for f in data.futures}
        # and Dask counts its rows once: the partition holds them
        sizes = client.nbytes([f.key for f in data.futures], summary=False)
        assert all(size < 0.2 * X.nbytes / X.numblocks[0] for size in sizes.values())
    finally:
        data.release()


@pytest.mark.timeout(30)
def test_a_fit_allocates_no_copy_of_the_rows(client):
    """What ``docs/distributed.md`` states: a row-major array of the training dtype is
    trained on where it is, with no copy (the old engine shuffled every partition into
    one). NumPy reports its allocations to tracemalloc."""
    X, y = persisted(client, n_samples=200_000, n_features=20, chunk_rows=25_000)
    dask_sgd.SGDClassifier(max_iter=1, tol=None).fit(X[:2000], y[:2000])  # warm up
    tracemalloc.start()
    try:
        dask_sgd.SGDClassifier(max_iter=2, tol=None, random_state=0).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * X.nbytes  # no whole copy, nor a partition's copy per worker


@pytest.mark.parametrize(
    ("make", "copied"),
    [
        (lambda X: X, False),
        (lambda X: np.hstack([X, X])[:, :4], False),  # columns of a wider row-major array
        (lambda X: np.asfortranarray(X), True),
        (lambda X: X.astype(np.float32), True),  # trains in float64
        (lambda X: pd.DataFrame(X), True),  # a data frame's columns are column-major
    ],
    ids=["row-major", "columns of a wider array", "column-major", "another dtype", "frame"],
)
def test_a_block_is_the_partition_unless_it_must_be_converted_once(make, copied):
    X = np.random.default_rng(0).standard_normal((100, 4))
    partition = make(X)
    y = np.arange(100)

    block = load_block(partition, y, None, np.float64, persisted=True)

    np.testing.assert_array_equal(block.X, np.asarray(partition, dtype=np.float64))
    source = partition.to_numpy() if isinstance(partition, pd.DataFrame) else partition
    assert np.shares_memory(block.X, source) is not copied
    assert isinstance(block, SharedBlock) is not copied
    assert block.X.strides[1] == block.X.itemsize  # rows are contiguous
    if copied:
        assert block.X.flags.c_contiguous and sizeof(block) >= X.nbytes
    else:
        assert sizeof(block) < X.nbytes  # the partition counts the rows
    # a block that is not a view of a persisted partition counts its rows
    assert sizeof(load_block(partition, y, None, np.float64, persisted=False)) >= X.nbytes


# --- the order of the rows ------------------------------------------------------------------


def blocks_of(*sizes: int) -> list[Block]:
    """Blocks whose row ``i`` of block ``b`` holds ``(b, i)`` and label ``b * 10**6 + i``."""
    return [
        Block(
            np.column_stack([np.full(n, b), np.arange(n)]).astype(np.float64),
            b * 10**6 + np.arange(n),
            np.ones(n),
        )
        for b, n in enumerate(sizes)
    ]


@pytest.mark.timeout(10)
def test_runs_visit_every_row_once_per_pass_and_differ_between_passes():
    blocks, order = blocks_of(1000, 777, 64), RowOrder(seed=3, run_rows=64)
    total = 1000 + 777 + 64
    cursor, passes = (0, 0), []
    while len(passes) < 3 * total:
        X, y, weight, cursor, _ = order.take(blocks, [5, 2, 9], cursor, 100)
        assert X.shape == (100, 2) and weight.shape == (100,)
        np.testing.assert_array_equal(X[:, 0] * 10**6 + X[:, 1], y)  # rows stay whole
        passes.extend(y.tolist())
    labels = np.concatenate([block.y for block in blocks])
    first, second = passes[:total], passes[total : 2 * total]
    for one in (first, second):
        np.testing.assert_array_equal(np.sort(one), labels)  # every row once
    assert first != second  # another order
    # runs of 64 consecutive rows of one block (a block's last run shorter), shuffled
    block, row = np.divmod(np.array(first), 10**6)
    inside = row % 64 != 0  # not where a run starts: the row after the one before
    assert (block[1:][inside[1:]] == block[:-1][inside[1:]]).all()
    assert (row[1:][inside[1:]] == row[:-1][inside[1:]] + 1).all()
    assert not inside[0]
    starts = list(zip(block[~inside], row[~inside], strict=True))
    assert len(starts) == 16 + 13 + 1 and starts != sorted(starts)
    # the same seed, cursor and partitions give the same rows; other seeds, others
    again = order.take(blocks, [5, 2, 9], (1, 250), 300)[1]
    assert again.tolist() == passes[total + 250 : total + 550]
    other = RowOrder(seed=4, run_rows=64).take(blocks, [5, 2, 9], (1, 250), 300)[1]
    assert other.tolist() != again.tolist()


@pytest.mark.timeout(10)
def test_a_unit_resumes_exactly_from_its_cursor():
    """A unit rerun (or a segment after a snapshot) starts from its carry's cursor: the
    rows it takes from there are the ones the first run took."""
    blocks, order = blocks_of(300, 200), RowOrder(seed=1, run_rows=16)
    objective = Objective(LinearModel(2, 1), get_loss("log_loss"), get_penalty(None, alpha=0))
    plan = SegmentPlan(
        objective, TargetEncoder(), optim.sgd(), schedules.constant(0.1), batch_size=48,
        first_step=0, n_steps=25, first_version=0, n_units=1, row_order=order,
    )  # fmt: skip
    whole = UnitData(blocks, [0, 1], (0, 0))
    taken = [whole.next_minibatch(plan)[1].copy() for _ in range(25)]  # 2.4 passes
    for stop in (3, 10, 11, 20):
        resumed = UnitData(blocks, [0, 1], (0, 0))
        for _ in range(stop):
            resumed.next_minibatch(plan)
        again = UnitData(blocks, [0, 1], resumed.cursor)  # a new task, the carry's cursor
        for expected in taken[stop:]:
            np.testing.assert_array_equal(again.next_minibatch(plan)[1], expected)


def test_minibatch_buffers_are_reused_and_keep_the_previous_minibatch():
    blocks, order = blocks_of(500), RowOrder(seed=0, run_rows=8)
    buffers = MinibatchBuffers(depth=2)
    X1, *_, cursor, _ = order.take(blocks, [0], (0, 0), 64, buffers)
    kept = X1.copy()
    X2, *_, cursor, _ = order.take(blocks, [0], cursor, 64, buffers)
    np.testing.assert_array_equal(X1, kept)  # not overwritten by the next one
    X3, *_ = order.take(blocks, [0], cursor, 64, buffers)
    assert np.shares_memory(X3, X1) and not np.shares_memory(X2, X1)
    one_run = order.take(blocks, [0], (0, 0), 8, buffers)[0]  # one run: a view
    assert np.shares_memory(one_run, blocks[0].X)


# --- dealing by placement -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_units_train_where_the_partitions_are(client):
    """Half the partitions on each worker: each unit gets its worker's blocks, none moves;
    all of them on one worker: half move, so that the units have as many rows."""
    a, b = sorted(worker_statuses(client))
    X, y = make_linear_classification(4_000, 6, chunk_rows=500, random_state=1)
    held = placed(client, X, y, [a] * 4 + [b] * 4)  # noqa: F841 (holds the partitions)
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    try:
        keys = [f.key for f in data.futures]
        units = data.units(client)
        assert [f.key for f in data.futures] == keys  # nothing moved
        assert [(worker, indices) for worker, _, indices in units] == [
            (a, [0, 1, 2, 3]),
            (b, [4, 5, 6, 7]),
        ]
        assert all(views_of_partitions(client, data, X).values())
    finally:
        data.release()


@pytest.mark.timeout(30)
def test_a_computed_block_that_ran_elsewhere_goes_back_to_the_worker_it_was_dealt(client):
    """Partitions computed for the fit are dealt by index (0, 2 to one worker; 1, 3 to the
    other); a block task that work stealing ran on the other worker still trains there."""
    a, b = sorted(worker_statuses(client))
    X, y = make_linear_classification(2_000, 6, chunk_rows=500, random_state=1)
    data = persist_blocks(client, X, y, classifier=True, seed=0)
    try:
        assert data.homes == [a, b, a, b]
        stolen = client.submit(lambda block: block, data.futures[0], workers=[b], pure=False)
        wait(stolen)
        data.futures[0].release()
        data.futures[0] = stolen  # as if block 0 had been made on b
        units = data.units(client)
        assert [(worker, indices) for worker, _, indices in units] == [(a, [0, 2]), (b, [1, 3])]
        assert client.who_has(units[0].blocks)[units[0].blocks[0].key] == [a]
    finally:
        data.release()


@pytest.mark.timeout(30)
def test_units_that_would_each_train_on_one_class_swap_blocks(client):
    """Rows sorted by label and placed by class (a, the 0s; b, the 1s): blocks of as many
    rows are swapped until each unit's labels are mixed; a regressor keeps the placement."""
    a, b = sorted(worker_statuses(client))
    X, _ = make_linear_classification(4_000, 6, chunk_rows=500, random_state=3)
    y = da.concatenate([da.zeros(2_000, int, chunks=500), da.ones(2_000, int, chunks=500)])
    held = placed(client, X, y, [a] * 4 + [b] * 4)  # noqa: F841 (holds the partitions)
    for classifier in (True, False):
        data = persist_blocks(client, X, y, classifier=classifier, seed=0)
        try:
            units = data.units(client)
            dealt = [(worker, indices) for worker, _, indices in units]
            if classifier:
                assert [worker for worker, _ in dealt] == [a, b]
                for _, indices in dealt:  # half of each class
                    assert len(indices) == 4 and sum(i < 4 for i in indices) == 2
            else:
                assert dealt == [(a, [0, 1, 2, 3]), (b, [4, 5, 6, 7])]
        finally:
            data.release()


# --- what the order costs in convergence ----------------------------------------------------


@pytest.mark.timeout(60)
def test_runs_converge_as_well_as_rows_in_random_order(client):
    """Held-out log loss after one epoch, the same seeds, on rows sorted by label within
    each partition (the worst case for runs): the default runs of 64 rows are within 2 % of
    rows in random order (``dask-sgd.run-rows`` 1, at least as random as the shuffled copy
    the engine made before). Adam at a high constant rate follows the order closely: runs
    of 512 rows were 8 % worse here, a partition at a time 27 %."""
    X, y = make_classification_blocks(
        24_000, 20, n_informative=10, chunk_rows=6_000, random_state=0
    )
    X_test, y_test = make_classification_blocks(
        5_000, 20, n_informative=10, chunk_rows=5_000, random_state=0, first_block=100
    )
    X_test, y_test = dask.compute(X_test, y_test)

    def sorted_by_label(Xp, yp):
        return Xp[np.argsort(yp[:, 0], kind="stable")]

    X = da.map_blocks(sorted_by_label, X, y[:, None], dtype=X.dtype)
    y = y.map_blocks(np.sort)
    X, y = client.persist([X, y])
    wait([X, y])
    assert (np.diff(y.blocks[0].compute()) >= 0).all()

    def held_out(run_rows: int) -> float:
        losses = []
        for seed in (0, 1):
            clf = dask_sgd.SGDClassifier(
                loss="log_loss", optimizer="adam", learning_rate="constant", eta0=0.05,
                max_iter=1, tol=None, random_state=seed, local_steps=16,
            )  # fmt: skip
            with dask.config.set({"dask-sgd.run-rows": run_rows}):
                clf.fit(X, y)
            losses.append(log_loss(y_test, clf.predict_proba(X_test)))
        return float(np.mean(losses))

    runs, rows = held_out(64), held_out(1)
    assert runs <= rows * 1.02, (runs, rows)


@pytest.mark.timeout(30)
def test_a_data_frame_trains_on_its_one_conversion(client):
    frame = pd.DataFrame(np.random.default_rng(0).standard_normal((2_000, 3)), columns=list("abc"))
    frame["label"] = (frame["a"] > 0).astype(int)
    ddf = client.persist(dd.from_pandas(frame, npartitions=4))
    wait(ddf)
    data = persist_blocks(client, ddf[list("abc")], ddf["label"], classifier=True, seed=0)
    try:
        blocks = client.gather(data.futures)
        assert all(type(block) is Block and block.X.flags.c_contiguous for block in blocks)
        np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), frame[list("abc")])
    finally:
        data.release()


@pytest.mark.timeout(60)
def test_a_task_takes_its_blocks_by_key_from_its_worker_or_another(client):
    """A unit's blocks by key: from its own worker's memory, else fetched from the worker
    that holds them (a unit rerun elsewhere); the task depends on no key."""
    block = Block(np.arange(6.0).reshape(3, 2), np.array([0, 1, 0]), None)
    here, there = sorted(worker_statuses(client))
    (held,) = client.scatter([block], workers=[here])
    for worker in (here, there):
        future = client.submit(blocks_by_key, [held.key], workers=[worker], pure=False)
        (got,) = future.result()
        np.testing.assert_array_equal(got.X, block.X)
        np.testing.assert_array_equal(got.y, block.y)
        dependencies = client.run_on_scheduler(
            lambda dask_scheduler, key=future.key: list(dask_scheduler.tasks[key].dependencies)
        )
        assert dependencies == []
    assert list(client.who_has([held])[held.key]) == [here]  # fetched into the task only

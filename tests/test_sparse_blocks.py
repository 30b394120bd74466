"""Sparse blocks: Dask arrays of SciPy sparse chunks become canonical CSR blocks on the
workers (never dense), checked before training, taken as CSR minibatches, dealt like dense
blocks, and predicted on block by block (issue 16)."""

from __future__ import annotations

import time
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from dask.sizeof import sizeof
from distributed import wait

import dask_sgd
import dask_sgd.blocks as blocks_module
from dask_sgd.blocks import (
    Block,
    RowOrder,
    SharedBlock,
    aligned_block,
    load_block,
    persist_blocks,
    sparse_rows,
)
from dask_sgd.data import TargetEncoder
from dask_sgd.datasets import make_ctr_blocks
from dask_sgd.engine.units import sample_objective
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.penalties import get_penalty
from dask_sgd.workers import worker_statuses


def sparse_rows_and_labels(n_rows=400, n_features=5_000, nnz=8, seed=0, dtype=np.float64):
    """A canonical CSR matrix of ``nnz`` entries a row and labels from a linear rule."""
    rng = np.random.default_rng(seed)
    columns = np.sort(rng.choice(n_features, size=(n_rows, nnz)), axis=1)
    X = sp.csr_matrix(
        (rng.normal(size=n_rows * nnz).astype(dtype), columns.ravel(), np.arange(n_rows + 1) * nnz),
        shape=(n_rows, n_features),
    )
    X.sum_duplicates()
    y = (X @ rng.normal(size=n_features) > 0).astype(np.int64)
    return X, y


def dask_sparse(X, y, chunk_rows=100, kind=sp.csr_matrix):
    """``X`` as a Dask array of ``kind`` chunks (made in the chunks' tasks) and ``y``."""
    dense_chunks = da.from_array(X, chunks=(chunk_rows, X.shape[1]), asarray=False)
    meta = kind(sp.csr_matrix((0, 0), dtype=X.dtype))
    return dense_chunks.map_blocks(kind, dtype=X.dtype, meta=meta), da.from_array(
        y, chunks=chunk_rows
    )


def unsorted_with_duplicates(X: sp.csr_matrix) -> sp.csr_matrix:
    """``X`` with every row's entries reversed and its first entry stored last, twice,
    half each time: not canonical, the same matrix."""
    rows = [X[i] for i in range(X.shape[0])]
    messy = sp.csr_matrix(
        (
            np.concatenate([np.r_[r.data[:0:-1], r.data[:1] / 2, r.data[:1] / 2] for r in rows]),
            np.concatenate([np.r_[r.indices[:0:-1], r.indices[:1], r.indices[:1]] for r in rows]),
            np.r_[0, np.cumsum(np.diff(X.indptr) + 1)],
        ),
        shape=X.shape,
    )
    assert not messy.has_canonical_format
    return messy


def blocks_of(client, data) -> list[Block]:
    return client.gather(data.futures)


# --- persisting and checking ---------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", [sp.csr_matrix, sp.csr_array, sp.coo_matrix, sp.csc_matrix])
def test_sparse_chunks_become_canonical_csr_matrix_blocks(client, kind):
    X, y = sparse_rows_and_labels()
    dX, dy = dask_sparse(X, y, kind=kind)
    data = persist_blocks(client, dX, dy, classifier=True, seed=0)
    try:
        assert data.sparse and data.n_rows == 400 and data.n_features == 5_000
        assert data.moments() is None  # no column moments: the model is not standardized
        labels, counts = data.label_counts()
        assert labels.tolist() == [0, 1] and counts.tolist() == np.bincount(y).tolist()
        blocks = blocks_of(client, data)
        assert all(type(b.X) is sp.csr_matrix and b.X.has_canonical_format for b in blocks)
        assert all(b.X.dtype == np.float64 and b.X.indices.dtype == np.int32 for b in blocks)
        assert (sp.vstack([b.X for b in blocks]) != X).nnz == 0
        np.testing.assert_array_equal(np.concatenate([b.y for b in blocks]), y)
    finally:
        data.release()


@pytest.mark.timeout(30)
def test_unknown_chunk_sizes_duplicates_and_dtypes(client):
    """Rows of unknown number per chunk; duplicate and unsorted entries summed into a
    canonical copy (the persisted partition untouched); integer values become float64,
    float32 stays float32."""
    X, y = sparse_rows_and_labels(n_rows=300)
    for dtype in [np.float64, np.float32]:
        rows = X.astype(dtype)  # before the mess: astype sums duplicates
        parts = [dask.delayed(unsorted_with_duplicates(rows[i : i + 100])) for i in (0, 100, 200)]
        unknown = da.concatenate(  # row chunks of unknown sizes
            [
                da.from_delayed(part, (np.nan, X.shape[1]), dtype=dtype, meta=sp.csr_matrix((0, 0)))
                for part in parts
            ]
        )
        assert np.isnan(unknown.shape[0]) and not parts[0].compute().has_canonical_format
        (held,) = client.persist([unknown])
        wait(held)
        data = persist_blocks(client, held, da.from_array(y, chunks=100), classifier=True, seed=0)
        try:
            blocks = blocks_of(client, data)
            assert data.sparse and data.dtype == dtype
            together = sp.vstack([b.X for b in blocks])
            assert together.dtype == dtype and together.has_canonical_format
            assert all(b.X.has_canonical_format for b in blocks)
            np.testing.assert_allclose(together.toarray(), X.toarray(), rtol=1e-6)
            assert not held.blocks[0].compute().has_canonical_format  # not sorted in place
        finally:
            data.release()
    counts = X.astype(np.int64)
    data = persist_blocks(client, *dask_sparse(counts, y), classifier=True, seed=0)
    try:
        assert data.dtype == np.float64
        assert all(b.X.dtype == np.float64 for b in blocks_of(client, data))
    finally:
        data.release()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("bad", "kind"), [(np.nan, "NaN"), (-np.inf, "infinity")])
def test_non_finite_named_by_partition_and_column_before_training(client, bad, kind):
    X, y = sparse_rows_and_labels(n_features=2**20)
    X = X.tolil()
    X[250, 12345] = bad  # partition 2 of 100-row chunks
    X[260, 99999] = bad  # a later column of the same partition is not the one named
    dX, dy = dask_sparse(X.tocsr(), y)
    clf = dask_sgd.SGDClassifier(random_state=0)
    message = f"Input X contains {kind} \\(partition 2, column 12345\\)"
    with pytest.raises(ValueError, match=message):
        clf.fit(dX, dy)
    assert not hasattr(clf, "coef_")
    for _ in range(100):  # releasing is asynchronous
        held = [key for key in client.cluster.scheduler.tasks if "dask-sgd" in str(key)]
        if not held:
            break
        time.sleep(0.05)
    assert not held  # no block left on the workers


@pytest.mark.timeout(30)
def test_invalid_sparse_partitions_are_refused(client):
    X, y = sparse_rows_and_labels()
    # a partition narrower than X says
    narrow = da.from_array(X, chunks=(100, X.shape[1]), asarray=False).map_blocks(
        lambda block, block_info=None: (
            block[:, :10] if block_info[None]["chunk-location"][0] == 1 else block
        ),
        dtype=X.dtype,
        meta=sp.csr_matrix((0, 0)),
    )
    with pytest.raises(ValueError, match="Partition 1 of X has 10 columns, but X has 5000"):
        persist_blocks(client, narrow, da.from_array(y, chunks=100), classifier=True, seed=0)

    def broken(block, block_info=None):
        if block_info[None]["chunk-location"][0] == 3:
            block = block.copy()
            block.indices[5] = 10**6  # past the last column
        return block

    dX = da.from_array(X, chunks=(100, X.shape[1]), asarray=False)
    out_of_range = dX.map_blocks(broken, dtype=X.dtype, meta=sp.csr_matrix((0, 0)))
    with pytest.raises(ValueError, match="Partition 3 of X is not a valid CSR matrix"):
        persist_blocks(client, out_of_range, da.from_array(y, chunks=100), classifier=True, seed=0)
    # a partition of sparse rows among dense ones, with a dense meta
    mixed = da.from_array(X[:, :50].toarray(), chunks=(100, 50)).map_blocks(
        lambda block, block_info=None: (
            sp.csr_matrix(block) if block_info[None]["chunk-location"][0] == 2 else block
        ),
        dtype=X.dtype,
    )
    with pytest.raises(ValueError, match=r"sparse partitions \(2\) and dense ones \(0\)"):
        persist_blocks(client, mixed, da.from_array(y, chunks=100), classifier=True, seed=0)


@pytest.mark.timeout(30)
def test_a_regression_target_and_weights_are_checked_on_sparse_blocks(client):
    X, y = sparse_rows_and_labels()
    target = y * 10.0 + 300.0
    data = persist_blocks(client, *dask_sparse(X, target), classifier=False, seed=0)
    try:  # no column moments, but the target's (scalars)
        assert data.moments() is None and data.target_moments().n == 400
        assert data.target_moments().mean[0] == pytest.approx(target.mean())
        assert data.target_moments().std[0] == pytest.approx(target.std())
    finally:
        data.release()
    target[130] = np.nan
    target[130] = np.nan
    dX, dy = dask_sparse(X, target)
    with pytest.raises(ValueError, match=r"Input y contains NaN or infinity \(partition 1\)"):
        persist_blocks(client, dX, dy, classifier=False, seed=0)
    weight = np.ones(400)
    weight[399] = np.inf
    with pytest.raises(ValueError, match=r"sample_weight contains NaN or infinity \(partition 3"):
        persist_blocks(
            client, dX, da.from_array(y, chunks=100), da.from_array(weight, chunks=100),
            classifier=True, seed=0,
        )  # fmt: skip


# --- minibatches -----------------------------------------------------------------------------


def csr_and_dense_blocks(sizes=(150, 90, 200), n_features=3_000, weights=True):
    """CSR blocks and the same rows dense."""
    sparse, dense = [], []
    for seed, n in enumerate(sizes):
        X, y = sparse_rows_and_labels(n, n_features, seed=seed)
        w = np.random.default_rng(seed).random(n) if weights else None
        sparse.append(Block(X, y, w))
        dense.append(Block(X.toarray(), y, w))
    return sparse, dense


@pytest.mark.timeout(20)
@pytest.mark.parametrize("run_rows", [64, 7, 1])
@pytest.mark.parametrize("vectorized", [0, 10**9], ids=["row-by-row", "piece-by-piece"])
def test_minibatches_of_csr_blocks_are_csr_rows_of_the_dense_ones(
    run_rows, vectorized, monkeypatch
):
    """Whole passes (runs across blocks, a pass's end) of CSR blocks give the rows that
    dense blocks give, as canonical CSR matrices, gathered piece by piece (few long runs)
    or row by row (many short ones)."""
    monkeypatch.setattr(blocks_module, "SPARSE_PIECES_VECTORIZED", vectorized)
    sparse, dense = csr_and_dense_blocks()
    order = RowOrder(seed=3, run_rows=run_rows)
    sparse_at = dense_at = (0, 0)
    for n in [100, 100, 37, 300, 1, 64]:
        Xs, ys, ws, sparse_at, bs = order.take(sparse, [4, 5, 6], sparse_at, n)
        Xd, yd, wd, dense_at, bd = order.take(dense, [4, 5, 6], dense_at, n)
        assert type(Xs) is sp.csr_matrix and Xs.has_canonical_format
        assert Xs.shape == Xd.shape and Xs.dtype == Xd.dtype
        assert len(Xs.indices) == Xs.nnz  # the rows' entries only
        again = sp.csr_matrix((Xs.data, Xs.indices, Xs.indptr), shape=Xs.shape)
        assert again.has_canonical_format  # checked, not taken from the flag
        np.testing.assert_array_equal(Xs.toarray(), Xd)
        np.testing.assert_array_equal(ys, yd)
        np.testing.assert_array_equal(ws, wd)
        assert (sparse_at, bs) == (dense_at, bd)


@pytest.mark.timeout(20)
def test_one_run_is_its_rows_and_leaves_the_block_as_it_was():
    sparse, dense = csr_and_dense_blocks(sizes=(256,), weights=False)  # 64-row runs only
    before = sparse[0].X.copy()
    X, y, weight, _, _ = RowOrder(seed=0, run_rows=64).take(sparse, [0], (0, 0), 64)
    first = np.flatnonzero((dense[0].X == X[0].toarray()).all(axis=1))[0]
    assert first % 64 == 0 and weight is None
    np.testing.assert_array_equal(X.toarray(), dense[0].X[first : first + 64])
    np.testing.assert_array_equal(y, dense[0].y[first : first + 64])
    assert X.indptr[0] == 0 and len(X.data) == X.nnz  # the run's entries, numbered from 0
    assert (sparse[0].X != before).nnz == 0 and sparse[0].X.has_canonical_format


@pytest.mark.timeout(20)
def test_minibatches_of_a_2_24_column_block_are_never_dense():
    """A block whose dense form would take 4 GiB: a pass of minibatches allocates about
    what their stored entries take."""
    X, y = make_ctr_blocks(256, 2**24, chunk_size=256, random_state=0)
    X, y = dask.compute(X, y, scheduler="sync")
    blocks = [Block(sparse_rows(X, np.float32), y, None)]
    assert X.shape[1] * 256 * 4 >= 2**32
    tracemalloc.start()
    try:
        cursor = (0, 0)
        for _ in range(4):
            Xb, _, _, cursor, _ = RowOrder(seed=0, run_rows=16).take(blocks, [0], cursor, 100)
            assert type(Xb) is sp.csr_matrix and Xb.shape == (100, 2**24)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # 100 rows of ~40 entries: kilobytes, not gigabytes


@pytest.mark.timeout(20)
def test_aligned_block_copies_only_unaligned_csr_arrays():
    sparse, _ = csr_and_dense_blocks(sizes=(50,), weights=False)
    block = sparse[0]
    assert aligned_block(block).X is block.X
    X = block.X
    raw = np.empty(X.data.nbytes + 1, np.uint8)[1:]  # float64 one byte off
    unaligned = raw.view(np.float64)
    unaligned[:] = X.data
    assert not unaligned.flags.aligned
    moved = X.copy()
    moved.data = unaligned  # as Dask gives a task arrays from another worker's message
    assert not moved.data.flags.aligned
    fixed = aligned_block(Block(moved, block.y, None)).X
    assert type(fixed) is sp.csr_matrix and fixed.data.flags.aligned
    assert fixed.has_canonical_format and (fixed != X).nnz == 0


@pytest.mark.timeout(20)
def test_sample_objective_takes_csr_rows():
    sparse, dense = csr_and_dense_blocks(sizes=(300,))
    model = LinearModel(3_000, 1)
    objective = Objective(model, get_loss("log_loss"), get_penalty("l2", alpha=1e-3))
    theta = np.random.default_rng(0).normal(size=model.layout.size)
    encoder = TargetEncoder(classes=np.array([0, 1]))
    on_sparse = sample_objective(theta, sparse[0], objective, encoder, 64)
    on_dense = sample_objective(theta, dense[0], objective, encoder, 64)
    assert on_sparse[1] == on_dense[1] == 64
    np.testing.assert_allclose(on_sparse[0], on_dense[0], rtol=1e-12)


# --- on the workers: memory, dealing ------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_persisted_csr_partition_is_shared_and_counted_once(client):
    X, y = sparse_rows_and_labels()
    entries = X.data.nbytes + X.indices.nbytes
    shared = load_block(X, y, None, np.float64, persisted=True)
    assert isinstance(shared, SharedBlock) and np.shares_memory(shared.X.data, X.data)
    assert sizeof(shared) < entries / 2  # the partition's key holds the entries
    own = load_block(X, y, None, np.float64, persisted=False)
    assert sizeof(own) >= entries
    converted = load_block(X, y, None, np.float32, persisted=True)  # a copy of its own
    assert not isinstance(converted, SharedBlock) and sizeof(converted) >= X.data.nbytes / 2


@pytest.mark.timeout(30)
def test_sparse_blocks_are_dealt_and_moved_like_dense_ones(client):
    """Every partition on one worker: the units even out, the moved blocks are CSR."""
    X, y = sparse_rows_and_labels(n_rows=800)
    dX, dy = dask_sparse(X, y)
    first = min(worker_statuses(client))
    with dask.annotate(workers=[first]):
        dX, dy = client.persist([dX, dy])
    wait([dX, dy])
    data = persist_blocks(client, dX, dy, classifier=True, seed=0)
    try:
        units = data.units(client)
        assert len(units) == 2 and sorted(len(u.partitions) for u in units) == [4, 4]
        moved = next(u for u in units if u.worker != first)
        blocks = client.gather(moved.blocks)
        assert all(type(b.X) is sp.csr_matrix for b in blocks)
        assert (sp.vstack([b.X for b in blocks]) != X[sorted(
            r for p in moved.partitions for r in range(100 * p, 100 * p + 100)
        )]).nnz == 0  # fmt: skip
    finally:
        data.release()


# --- the model and prediction ------------------------------------------------------------


@pytest.mark.timeout(20)
def test_the_model_of_sparse_data_is_a_plain_linear_model():
    """No moments: Dask's "auto" settings train without centring or scaling columns."""
    classifier = dask_sgd.SGDClassifier()
    classifier.classes_ = np.array([0, 1])
    for estimator in (classifier, dask_sgd.SGDRegressor()):
        estimator._auto_for_dask = True  # as fit sets it for Dask input
        assert estimator._schedule().standardized
        assert type(estimator._components(2**20, None).model) is LinearModel


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", [sp.csr_matrix, sp.csr_array])
def test_prediction_on_sparse_dask_arrays_is_in_process_prediction(client, kind):
    X, y = sparse_rows_and_labels()
    # a few epochs: what is compared is prediction, not the fit
    clf = dask_sgd.SGDClassifier(loss="log_loss", max_iter=3, tol=None, random_state=0)
    clf.fit(X, y)
    dX, dy = dask_sparse(X, y, kind=kind)
    unknown = dX[da.from_array(np.ones(400, bool), chunks=100)]
    split = dX.rechunk({1: 1_000})  # several column chunks: one per row of blocks again
    for lazy in (dX, unknown, split):
        predicted = clf.predict(lazy)
        assert isinstance(predicted, da.Array)
        np.testing.assert_array_equal(predicted.compute(), clf.predict(X))
        np.testing.assert_allclose(
            clf.decision_function(lazy).compute(), clf.decision_function(X), rtol=1e-12
        )
        proba = clf.predict_proba(lazy).compute()
        assert proba.shape == (400, 2)
        np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-12)
    assert clf.score(dX, dy) == clf.score(X, y)
    reg = dask_sgd.SGDRegressor(max_iter=3, tol=None, random_state=0).fit(X, y.astype(float))
    np.testing.assert_allclose(reg.predict(dX).compute(), reg.predict(X), rtol=1e-12)
    assert reg.score(dX, dy.astype(float)) == pytest.approx(reg.score(X, y.astype(float)))


def held_models(lazy) -> set:
    """The keys of scattered models that a lazy array's tasks read."""
    tasks = dict(lazy.__dask_graph__()).values()
    return {key for task in tasks for key in getattr(task, "dependencies", ()) if "SGD" in str(key)}


@pytest.mark.timeout(30)
def test_a_wide_model_goes_to_the_workers_once_not_in_the_graph(client):
    """2^21 columns: 16 MiB of coefficients (and as much training state) would make Dask
    warn of a large graph (an error here); the model is scattered, the array holds it."""
    X, y = sparse_rows_and_labels(n_features=2**21)
    clf = dask_sgd.SGDClassifier(max_iter=1, tol=None, random_state=0).fit(X, y)
    dX, _ = dask_sparse(X, y)
    lazy = clf.decision_function(dX)
    (model,) = held_models(lazy)
    assert model in client.cluster.scheduler.tasks  # held while the array is
    np.testing.assert_allclose(lazy.compute(), clf.decision_function(X), rtol=1e-12)
    small = dask_sgd.SGDClassifier(max_iter=1, tol=None, random_state=0).fit(X[:, :1000], y)
    assert not held_models(small.predict(dX[:, :1000]))  # small models stay in the graph

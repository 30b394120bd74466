"""Blocks of device arrays: they stay on their device, and train there.

``array_api_strict`` stands in for CuPy on a machine with no GPU: its arrays on
``Device("device1")`` cannot become NumPy arrays implicitly and cannot meet arrays of another
device, as a GPU's cannot. A Dask array whose chunks are such arrays (as
``X.map_blocks(cupy.asarray)`` makes) must be checked, gathered and trained on where it is,
and give the model that the same rows as NumPy chunks give.
"""

from __future__ import annotations

import array_api_strict as xp
import dask.array as da
import numpy as np
import pytest
from sklearn.base import clone

import dask_sgd
from dask_sgd._array import empty, get_namespace, host_dtype, like, to_host
from dask_sgd.blocks import Block, MinibatchBuffers, RowOrder, load_block, summarize_block

DEVICE = xp.Device("device1")


def on_device(block):
    return xp.asarray(block, device=DEVICE)


def assert_on_device(array, dtype):
    assert get_namespace(array) is xp and array.device == DEVICE, type(array)
    assert array.dtype == dtype


@pytest.mark.in_process
def test_values_move_between_host_and_a_device_in_the_dtype_asked():
    device_array = on_device(np.zeros(2))
    moved = like(np.arange(3.0), device_array, np.float32)
    assert_on_device(moved, xp.float32)
    np.testing.assert_array_equal(to_host(moved), [0.0, 1.0, 2.0])
    assert_on_device(empty((4, 2), device_array), xp.float64)
    assert host_dtype(xp.float32) == np.float32
    host = np.ones(3)
    assert to_host(host) is host and like(host, np.ones(1)) is host


@pytest.mark.in_process
def test_a_device_partition_stays_on_its_device_and_its_labels_come_to_host():
    rng = np.random.default_rng(0)
    X, y, weight = rng.normal(size=(6, 3)), np.arange(6), rng.uniform(size=6)
    block = load_block(on_device(X), on_device(y), on_device(weight), np.float32)
    assert_on_device(block.X, xp.float32)
    np.testing.assert_array_equal(to_host(block.X), X.astype(np.float32))
    assert type(block.y) is np.ndarray and block.y.tolist() == y.tolist()
    assert type(block.sample_weight) is np.ndarray and block.sample_weight.dtype == np.float32


@pytest.mark.in_process
def test_minibatches_of_device_blocks_are_gathered_on_the_device():
    rng = np.random.default_rng(1)
    host = [Block(rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), None) for n in (7, 5)]
    device = [Block(on_device(b.X), on_device(b.y), None) for b in host]
    order, buffers = RowOrder(seed=3, run_rows=2), MinibatchBuffers()
    cursor = (0, 0)
    for n_rows in (5, 1, 8):  # several runs, one run (views), across a pass's end
        X, Y, weight, next_cursor, _ = order.take(device, [0, 1], cursor, n_rows, buffers)
        reference = order.take(host, [0, 1], cursor, n_rows)
        assert_on_device(X, xp.float64)
        assert_on_device(Y, xp.float64)
        np.testing.assert_array_equal(to_host(X), reference[0])
        np.testing.assert_array_equal(to_host(Y), reference[1])
        assert weight is None and next_cursor == reference[3]
        cursor = next_cursor


@pytest.mark.in_process
@pytest.mark.parametrize("rows", [40, 0])
def test_a_device_blocks_summary_equals_the_host_blocks(rows):
    X = np.random.default_rng(2).normal(loc=100.0, size=(rows, 4))
    y = np.arange(rows) % 3
    ours = summarize_block(load_block(on_device(X), y, None, np.float64), 0, True)
    reference = summarize_block(load_block(X, y, None, np.float64), 0, True)
    assert (ours.n_rows, ours.problem) == (reference.n_rows, None)
    assert ours.labels.tolist() == reference.labels.tolist()
    np.testing.assert_allclose(ours.features.mean, reference.features.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.features.m2, reference.features.m2, rtol=1e-9)


@pytest.mark.in_process
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_of_a_device_block_is_named_as_on_host(bad):
    X = np.ones((10, 4))
    X[7, 2] = bad
    ours = summarize_block(load_block(on_device(X), np.zeros(10), None, np.float64), 3, True)
    reference = summarize_block(load_block(X, np.zeros(10), None, np.float64), 3, True)
    assert ours.problem == reference.problem and ours.column == reference.column == 2
    assert ("NaN" if np.isnan(bad) else "infinity") in ours.problem


class CupyxMatrix:
    """What a partition of ``cupyx.scipy.sparse`` looks like to the type checks."""

    __module__ = "cupyx.scipy.sparse._csr"


@pytest.mark.in_process
def test_a_cupyx_sparse_partition_is_refused_with_a_way_out():
    with pytest.raises(TypeError, match="SciPy CSR matrices on host"):
        load_block(CupyxMatrix(), np.zeros(2), None, np.float64)


@pytest.mark.in_process
def test_an_in_process_fit_refuses_a_device_array_and_keeps_the_fitted_model():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(60, 3)), np.arange(60) % 2
    model = dask_sgd.SGDClassifier(max_iter=2, tol=None, random_state=0).fit(X, y)
    coef = model.coef_.copy()
    with pytest.raises(TypeError, match="chunks of a Dask array"):
        model.fit(on_device(X), y)
    np.testing.assert_array_equal(model.coef_, coef)


def rows(n_rows=2400, n_features=8, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    target = X @ rng.normal(size=n_features) + 0.1 * rng.normal(size=n_rows)
    return X, target, rng.uniform(0.5, 2.0, size=n_rows)


#: name: (an estimator, whether its target is labels, whether X is float32 with weights)
FITS = {
    "classifier-sync": (dask_sgd.SGDClassifier(strategy="sync"), True, False),
    "classifier-local": (dask_sgd.SGDClassifier(strategy="local"), True, False),
    "regressor-float32-weighted": (dask_sgd.SGDRegressor(), False, True),
    "network-local": (
        dask_sgd.MLPClassifier(hidden_layer_sizes=(8,), strategy="local", tol=0.0),
        True,
        False,
    ),
    "network-sync-two-shards": (  # layer-wise pushes: each shard's slice as it is ready
        dask_sgd.MLPClassifier(hidden_layer_sizes=(8,), strategy="sync", n_shards=2, tol=0.0),
        True,
        False,
    ),
}


def parameters(model) -> list[np.ndarray]:
    return [model.coef_] if hasattr(model, "coef_") else model.coefs_ + model.intercepts_


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", FITS)
def test_a_fit_on_device_blocks_equals_the_fit_on_numpy_blocks(client, name):
    estimator, labels, float32_weighted = FITS[name]
    X, values, weight = rows()
    y = (values > 0).astype(int) + (values > 1) if labels else values
    # not persisted: each fit makes its partitions and deals them to the workers in order,
    # so both fits' units train on the same rows
    dX = da.from_array(X.astype(np.float32) if float32_weighted else X, chunks=600)
    dy, dw, device_X = da.from_array(y, 600), da.from_array(weight, 600), dX.map_blocks(on_device)
    fit = {"sample_weight": dw} if float32_weighted else {}
    host, device = (
        clone(estimator).set_params(max_iter=2, random_state=0).fit(data, dy, **fit)
        for data in (dX, device_X)
    )
    for ours, reference in zip(parameters(device), parameters(host), strict=True):
        assert ours.dtype == (np.float32 if float32_weighted else np.float64)
        np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)
    predicted = device.predict(device_X).compute()
    assert type(predicted) is np.ndarray
    np.testing.assert_array_equal(predicted, host.predict(dX).compute())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["downpour", "ssp", "backup"])
def test_the_asynchronous_strategies_train_on_device_blocks(client, strategy):
    """Their steps follow the order in which gradients arrive: the fits are as good as the
    NumPy fit, not equal to it."""
    X, values, _ = rows(seed=5)
    y = (values > 0).astype(int)
    dX, dy = da.from_array(X, chunks=600), da.from_array(y, chunks=600)
    device_X = dX.map_blocks(on_device)
    host, device = (
        dask_sgd.SGDClassifier(strategy=strategy, max_iter=2, tol=None, random_state=0).fit(
            data, dy
        )
        for data in (dX, device_X)
    )
    accuracy = device.score(device_X, dy)
    assert accuracy > 0.9 and abs(accuracy - host.score(dX, dy)) < 0.02

"""Bad input gets a clear error (or scikit-learn's warning) before training, on Dask as in
process, and a failed fit leaves a fitted estimator as it was."""

from __future__ import annotations

import itertools

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_classification
from sklearn.exceptions import DataConversionWarning

from dask_sgd import SGDClassifier
from dask_sgd.workers import worker_statuses

PARAMS = dict(max_iter=2, tol=None, batch_size=16, random_state=0)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=400, n_features=5, random_state=0)
    return X, y


def dask_pair(X, y, chunk=100):
    return da.from_array(X, chunks=(chunk, X.shape[1])), da.from_array(y, chunks=chunk)


def test_a_column_vector_y_on_dask_is_raveled_with_scikit_learns_warning(client, data):
    X, y = data
    dX, dy = dask_pair(X, y)
    column = da.from_array(y.reshape(-1, 1), chunks=(100, 1))
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        raveled = SGDClassifier(**PARAMS).fit(dX, column)
    np.testing.assert_array_equal(raveled.coef_, SGDClassifier(**PARAMS).fit(dX, dy).coef_)
    frame = dd.from_pandas(pd.DataFrame({"label": y}), npartitions=4)
    with pytest.warns(DataConversionWarning):
        SGDClassifier(**PARAMS).fit(dd.from_pandas(pd.DataFrame(X), npartitions=4), frame)
    with pytest.raises(ValueError, match=r"y should be a 1d array, got an array of shape"):
        SGDClassifier(**PARAMS).fit(dX, da.from_array(np.column_stack([y, y]), chunks=100))


@pytest.mark.parametrize("on_dask", [False, True])
def test_rows_whose_gradient_overflows_raise_instead_of_training_a_zero_model(
    client, data, on_dask
):
    """Adam squares the gradient: from rows of size 1e200 its state becomes infinite and its
    steps zero, so the model would stay all zeros without an error."""
    X, y = data
    X = X * 1e200
    clf = SGDClassifier(loss="log_loss", optimizer="adam", **PARAMS)
    fitted = SGDClassifier(loss="log_loss", optimizer="adam", **PARAMS).fit(X[:40] / 1e200, y[:40])
    coef = fitted.coef_.copy()
    where = r", partition \d+" if on_dask else ""
    expected = rf"overflow occurred at epoch #1 \(step \d+{where}: non-finite gradient norm"
    with pytest.raises(ValueError, match=expected):
        clf.fit(*dask_pair(X, y)) if on_dask else clf.fit(X, y)
    assert not hasattr(clf, "coef_")
    with pytest.raises(ValueError, match="non-finite gradient norm"):
        fitted.fit(*dask_pair(X, y)) if on_dask else fitted.fit(X, y)
    np.testing.assert_array_equal(fitted.coef_, coef)  # a failed fit changes nothing


def test_strategy_settings_the_cluster_cannot_meet_fail_before_training(client, data):
    X, y = data
    n_workers = len(worker_statuses(client))
    actors_before = actor_keys(client)
    with pytest.raises(ValueError, match=rf"n_backup={n_workers} .* on {n_workers} worker"):
        SGDClassifier(strategy="backup", n_backup=n_workers, **PARAMS).fit(*dask_pair(X, y))
    with pytest.raises(ValueError, match=r"n_shards=7 is more than the model's 6 parameters"):
        SGDClassifier(strategy="sync", n_shards=7, **PARAMS).fit(*dask_pair(X, y))
    assert actor_keys(client) <= actors_before  # no shard was started


def actor_keys(client) -> set:
    return client.run_on_scheduler(
        lambda dask_scheduler: {key for key, ts in dask_scheduler.tasks.items() if ts.actor}
    )


# --- any input: it trains, or a clear error before any shard starts ------------------------


@st.composite
def dask_inputs(draw):
    """A Dask array or data frame of a drawn shape, chunking, dtype and planted problem:
    empty partitions, NaN or infinity in ``X``, NaN in ``y``, a column of strings, a single
    class, no rows at all."""
    n_features = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(0, 25), min_size=1, max_size=4))
    n_rows = sum(sizes)
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    X = rng.normal(size=(n_rows, n_features)).astype(dtype)
    y = rng.integers(0, 2, size=n_rows)
    problem = draw(st.sampled_from([None, "NaN", "infinity", "one class", "y NaN", "text"]))
    as_array = draw(st.booleans())
    if n_rows == 0:
        problem = "no rows"
    elif problem == "y NaN":
        y = y.astype(float)
        y[draw(st.integers(0, n_rows - 1))] = np.nan
    elif problem == "text" and not as_array:
        pass  # a column of strings, below
    elif problem in ("NaN", "infinity") and dtype != np.int64:
        X[draw(st.integers(0, n_rows - 1)), draw(st.integers(0, n_features - 1))] = (
            np.nan if problem == "NaN" else np.inf
        )
    elif problem == "one class" or len(np.unique(y)) < 2:
        y[:] = 1
        problem = "one class"
    else:
        problem = None
    chunks = (tuple(sizes), (n_features,))
    if as_array:
        return da.from_array(X, chunks=chunks), da.from_array(y, chunks=(tuple(sizes),)), problem
    starts = np.cumsum([0, *sizes])
    frames = [
        pd.DataFrame(X[a:b], columns=[f"x{j}" for j in range(n_features)], index=range(a, b))
        for a, b in itertools.pairwise(starts)
    ]
    if problem == "text":
        for frame in frames:
            frame["x0"] = frame["x0"].astype(str)
    dX = dd.concat([dd.from_pandas(frame, npartitions=1) for frame in frames])
    dy = dd.concat([dd.from_pandas(pd.Series(y[a:b], index=range(a, b)), npartitions=1)
                    for a, b in itertools.pairwise(starts)])  # fmt: skip
    return dX, dy, problem


WORDS = {
    "NaN": "Input X contains NaN",
    "infinity": "Input X contains infinity",
    "one class": "classes",
    "no rows": "0 sample",
    "y NaN": "Input y contains NaN",
    "text": "not numeric",
}


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(drawn=dask_inputs())
def test_any_dask_input_trains_or_is_refused_before_any_shard(client, drawn):
    X, y, problem = drawn
    before = actor_keys(client)
    clf = SGDClassifier(max_iter=1, tol=None, batch_size=4, random_state=0)
    if problem is None:
        clf.fit(X, y)
        assert np.isfinite(clf.coef_).all()
        return
    with pytest.raises((ValueError, TypeError), match=WORDS[problem]):
        clf.fit(X, y)
    assert actor_keys(client) <= before
    assert not hasattr(clf, "coef_")

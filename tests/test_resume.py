"""Estimators saved and loaded, and fits resumed after their process died."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

import dask_sgd
from dask_sgd import SGDClassifier, SGDRegressor
from dask_sgd.checkpoint import CheckpointError, load_checkpoint

PARAMS = dict(max_iter=6, tol=None, random_state=0, optimizer="adam", learning_rate="constant")


def classification(n_samples=1000):
    X, y = make_classification(n_samples=n_samples, n_features=6, random_state=0)
    return X, np.array(["no", "yes"])[y]


def test_a_saved_classifier_loads_and_goes_on_as_the_original(tmp_path):
    X, y = classification()
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    clf = SGDClassifier(eta0=0.01, average=10, **PARAMS).fit(frame, y)
    dask_sgd.save(clf, tmp_path)
    loaded = dask_sgd.load(tmp_path)
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_array_equal(loaded.coef_, clf.coef_)
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    np.testing.assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert (loaded.n_iter_, loaded.t_, loaded.history_) == (clf.n_iter_, clf.t_, clf.history_)
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))
    # the optimizer state and the average came along: partial_fit continues identically
    np.testing.assert_array_equal(
        loaded.partial_fit(frame, y).coef_, clf.partial_fit(frame, y).coef_
    )


def test_a_saved_regressor_keeps_float32_and_notes_what_json_cannot_hold(tmp_path):
    X, y = make_regression(n_samples=300, n_features=4, random_state=0)
    reg = SGDRegressor(random_state=np.random.RandomState(0), max_iter=3, tol=None)
    reg.fit(X.astype(np.float32), y.astype(np.float32))
    dask_sgd.save(reg, tmp_path)
    loaded = dask_sgd.load(tmp_path)
    assert loaded.coef_.dtype == np.float32
    np.testing.assert_array_equal(loaded.predict(X), reg.predict(X))
    assert loaded.random_state is None  # a RandomState is not JSON
    assert load_checkpoint(tmp_path)[1]["params_not_saved"] == ["random_state"]


def test_loading_refuses_what_is_not_an_estimator(tmp_path):
    dask_sgd.checkpoint.save_checkpoint(tmp_path, {"params": np.zeros(3)}, {"epoch": 1})
    with pytest.raises(CheckpointError, match="does not describe an estimator"):
        dask_sgd.load(tmp_path)


def as_before_the_model_protocol(path, **changes) -> dict:
    """Rewrite the manifest at ``path`` as dask_sgd 0.1.0 wrote it: a "layout" entry (the
    linear model's configuration) and no "model" entry. The array files and their checksums
    stay as they are."""
    manifest = Path(path) / "manifest.json"
    meta = json.loads(manifest.read_text())
    model = meta.pop("model")
    assert model["family"] == "linear"
    meta["layout"] = model["config"]
    meta.update(changes)
    manifest.write_text(json.dumps(meta, indent=1))
    return meta


def test_a_checkpoint_written_before_the_model_protocol_loads_as_a_linear_model(tmp_path):
    X, y = classification()
    clf = SGDClassifier(eta0=0.01, **PARAMS).fit(X, y)
    dask_sgd.save(clf, tmp_path)
    meta = as_before_the_model_protocol(tmp_path)
    assert meta["layout"] == {"n_features": 6, "n_outputs": 1, "fit_intercept": True}

    loaded = dask_sgd.load(tmp_path)

    np.testing.assert_array_equal(loaded.coef_, clf.coef_)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.partial_fit(X, y).coef_, clf.partial_fit(X, y).coef_)


def test_an_unfinished_fit_written_before_the_model_protocol_resumes(tmp_path):
    X, y = classification()
    SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **{**PARAMS, "max_iter": 3}).fit(X, y)
    as_before_the_model_protocol(tmp_path, complete=False)  # as if 6 epochs stopped after 3

    resumed = SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **PARAMS).fit(X, y)

    whole = SGDClassifier(eta0=0.01, **PARAMS).fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    assert [r["epoch"] for r in resumed.history_] == list(range(1, 7))
    assert load_checkpoint(tmp_path)[1]["model"]["family"] == "linear"  # now the new format
    # ... and an old checkpoint of another model is refused as a new one is
    as_before_the_model_protocol(tmp_path, complete=False)
    with pytest.raises(ValueError, match=r"Cannot resume from the checkpoint.*its model is"):
        SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **PARAMS).fit(X[:, :5], y)


# --- resuming a fit whose process died ------------------------------------------------------


def _fit_and_die_after(epochs: int, path: str, dask_input: bool) -> None:
    """Fit in this (child) process, which dies right after writing checkpoint ``epochs``."""
    import os

    import dask_sgd.estimators._training as training

    written = []
    real_write = training.write_training_checkpoint

    def write_then_maybe_die(*args, **kwargs):
        real_write(*args, **kwargs)
        written.append(1)
        if len(written) == epochs:
            os._exit(7)

    training.write_training_checkpoint = write_then_maybe_die
    X, y = classification()
    clf = SGDClassifier(eta0=0.01, checkpoint_path=path, **PARAMS)
    if not dask_input:
        clf.fit(X, y)
        return
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        clf.fit(da.from_array(X, chunks=250), da.from_array(y, chunks=250))


def die_mid_fit(path, *, dask_input: bool) -> None:
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_fit_and_die_after, args=(3, str(path), dask_input))
    process.start()
    process.join(90)
    assert process.exitcode == 7
    meta = load_checkpoint(path)[1]
    assert (meta["epochs_done"], meta["complete"]) == (3, False)


@pytest.mark.timeout(120)
def test_a_fit_resumes_exactly_where_its_process_died(tmp_path):
    die_mid_fit(tmp_path, dask_input=False)
    X, y = classification()
    resumed = SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **PARAMS).fit(X, y)
    whole = SGDClassifier(eta0=0.01, **PARAMS).fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    assert [r["loss"] for r in resumed.history_] == [r["loss"] for r in whole.history_]
    assert (resumed.n_iter_, resumed.t_) == (whole.n_iter_, whole.t_) == (6, whole.t_)
    assert load_checkpoint(tmp_path)[1]["complete"]
    # a finished fit's checkpoint is not resumed: the next fit starts over, as fit does
    again = SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **PARAMS).fit(X, y)
    np.testing.assert_array_equal(again.coef_, whole.coef_)
    assert [r["epoch"] for r in again.history_] == list(range(1, 7))


@pytest.mark.timeout(120)
def test_a_dask_fit_resumes_on_a_fresh_cluster(tmp_path, client):
    die_mid_fit(tmp_path, dask_input=True)
    written = load_checkpoint(tmp_path)[1]["history"]
    X, y = classification()
    dX, dy = da.from_array(X, chunks=250), da.from_array(y, chunks=250)
    resumed = SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **PARAMS).fit(dX, dy)
    assert resumed.history_[:3] == written
    assert [r["epoch"] for r in resumed.history_] == list(range(1, 7))
    assert resumed.n_iter_ == 6
    whole = SGDClassifier(eta0=0.01, **PARAMS).fit(dX, dy)
    assert resumed.t_ == whole.t_  # the step, and with it the schedule, went on
    assert resumed.score(X, y) >= whole.score(X, y) - 0.02


def test_a_checkpoint_of_another_model_is_not_resumed(tmp_path):
    die_mid_fit(tmp_path, dask_input=False)
    X, y = classification()
    clf = SGDClassifier(eta0=0.01, checkpoint_path=tmp_path, **PARAMS)
    with pytest.raises(ValueError, match=r"Cannot resume from the checkpoint.*its model is"):
        clf.fit(X[:, :5], y)
    assert not hasattr(clf, "coef_")
    assert load_checkpoint(tmp_path)[1]["epochs_done"] == 3  # untouched

"""The Dask defaults on problems they were not chosen on: unscaled columns, an offset target,
rare positives, noisy labels; and the defaults suite at a small size."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss, r2_score

from dask_sgd import SGDClassifier, SGDRegressor
from dask_sgd.benchmarks import defaults as suite

pytestmark = pytest.mark.timeout(120)

N_TRAIN, N_TEST = 60_000, 20_000
ALPHA = 1e-4  # the default penalty's


def unscaled_rows(rng, n_rows, n_features=8):
    """Columns of scales 1e-2 to 1e2, offset by up to ten times their scale."""
    scales = np.logspace(-2, 2, n_features)
    offsets = scales * np.linspace(-10, 10, n_features)
    Z = rng.standard_normal((n_rows, n_features))
    return Z, Z * scales + offsets


def on_dask(X, y):
    return da.from_array(X, chunks=15_000), da.from_array(y, chunks=15_000)


def test_unscaled_columns_and_a_target_offset_train_to_the_optimum_in_three_epochs(client):
    """Standardizing on the fly: a regression on columns four orders of magnitude apart,
    its target offset by 300, lands within 0.002 of the exact solver's R² in 3 epochs
    (the previous defaults, plain SGD on the raw columns, diverged or stalled at R² < 0)."""
    rng = np.random.default_rng(0)
    Z, X = unscaled_rows(rng, N_TRAIN + N_TEST)
    y = Z @ rng.standard_normal(8) * 10 + 300 + 5 * rng.standard_normal(len(Z))
    reference = Ridge(alpha=ALPHA * N_TRAIN).fit(X[:N_TRAIN], y[:N_TRAIN])
    best = r2_score(y[N_TRAIN:], reference.predict(X[N_TRAIN:]))
    model = SGDRegressor(max_iter=3, tol=None, random_state=0).fit(
        *on_dask(X[:N_TRAIN], y[:N_TRAIN])
    )
    assert model._model.family == "standardized-linear"
    assert r2_score(y[N_TRAIN:], model.predict(X[N_TRAIN:])) >= best - 0.002
    # history_ reports the objective in the target's units: the averaged model's is the
    # exact solver's (its penalty included, large here: the small columns' coefficients are)
    residual = y[:N_TRAIN] - reference.predict(X[:N_TRAIN])
    optimum = 0.5 * np.mean(residual**2) + 0.5 * ALPHA * reference.coef_ @ reference.coef_
    assert model.history_[-1]["averaged_objective"] == pytest.approx(optimum, rel=0.05)


def test_unscaled_columns_and_rare_positives_classify_at_the_optimum(client):
    """The same columns, 3 % positives: within 0.5 % of the exact solver's held-out
    log-loss in 3 epochs, and no epoch's mean loss above the loss at the start."""
    rng = np.random.default_rng(1)
    Z, X = unscaled_rows(rng, N_TRAIN + N_TEST)
    odds = Z @ rng.standard_normal(8) - 4.5
    y = (rng.random(len(Z)) < 1 / (1 + np.exp(-odds))).astype(int)
    assert 0.01 < y.mean() < 0.06
    exact = LogisticRegression(C=1 / (ALPHA * N_TRAIN), solver="newton-cholesky", tol=1e-10)
    best = log_loss(y[N_TRAIN:], exact.fit(X[:N_TRAIN], y[:N_TRAIN]).predict_proba(X[N_TRAIN:]))
    model = SGDClassifier(loss="log_loss", max_iter=3, tol=None, random_state=0)
    model.fit(*on_dask(X[:N_TRAIN], y[:N_TRAIN]))
    assert log_loss(y[N_TRAIN:], model.predict_proba(X[N_TRAIN:])) <= 1.005 * best
    assert max(epoch["loss"] for epoch in model.history_) < np.log(2)


def test_the_stopping_rule_watches_the_averaged_model(client):
    """On noisy labels the iterates' losses go on falling for many epochs while their
    average stands still; the rule watches the averaged model's objective on a fixed
    sample (``averaged_objective``) and stops within a few epochs."""
    rng = np.random.default_rng(2)
    n_rows = 40_000
    X = rng.standard_normal((n_rows, 20))
    y = (X @ rng.standard_normal(20) * 0.2 + rng.standard_normal(n_rows) > 0).astype(int)
    model = SGDClassifier(loss="log_loss", random_state=0).fit(*on_dask(X, y))
    assert model.n_iter_ <= 5
    objectives = [epoch["averaged_objective"] for epoch in model.history_]
    assert abs(objectives[-1] - objectives[-2]) < model.tol  # the epoch the rule stopped at


def test_a_user_setting_turns_the_dask_schedule_off(client):
    """A chosen optimizer or rate keeps the raw coordinates and no averaging."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20_000, 4))
    y = (X[:, 0] > 0).astype(int)
    model = SGDClassifier(optimizer="adam", eta0=0.01, max_iter=1, tol=None).fit(*on_dask(X, y))
    assert model._model.family == "linear" and model._train_state.n_averaged == 0


@pytest.mark.timeout(180)
def test_the_defaults_suite_runs_at_a_small_size(tmp_path):
    """``dask-sgd bench defaults --quick`` on a problem the old defaults failed: the first
    epoch's mean loss stays below the loss at the start (the old defaults' first epoch on
    the unscaled problem was 30 to 140 times the loss at the start) and the rule stops the fit."""
    (row,) = suite.main(["--quick", "--problems", "unscaled", "--output", str(tmp_path)])
    assert row["problem"] == "unscaled" and np.isfinite(row["reference"])
    assert row["max_epoch_loss"] < row["start_loss"] == pytest.approx(np.log(5))
    assert row["default_stopped"] and len(row["by_epochs"]) >= 1
    (saved,) = json.loads((tmp_path / "defaults.json").read_text())
    assert saved["default_metric"] == row["default_metric"]
    assert (tmp_path / "defaults.md").read_text().count("\n| unscaled |") == 1

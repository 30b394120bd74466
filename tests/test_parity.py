"""Parity with scikit-learn on its bundled real data sets, in a StandardScaler pipeline.

Each side's score is the mean over three seeds of the held-out accuracy (or R²), so that the
comparison measures the algorithms rather than one lucky shuffle.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import linear_model
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dask_sgd import SGDClassifier, SGDRegressor

#: no Dask cluster here: `make test` runs these on every core (pytest-xdist)
pytestmark = pytest.mark.in_process

SEEDS = (0, 1, 2)
TOLERANCE = 0.02


def mean_held_out_score(load, make_estimator):
    X, y = load(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    scores = [
        make_pipeline(StandardScaler(), make_estimator(seed))
        .fit(X_train, y_train)
        .score(X_test, y_test)
        for seed in SEEDS
    ]
    return float(np.mean(scores))


@pytest.mark.parametrize("load", [load_breast_cancer, load_digits], ids=["breast_cancer", "digits"])
@pytest.mark.parametrize("loss", ["hinge", "log_loss", "modified_huber"])
def test_classifier_accuracy_matches_sklearn(load, loss):
    ours = mean_held_out_score(load, lambda seed: SGDClassifier(loss=loss, random_state=seed))
    theirs = mean_held_out_score(
        load, lambda seed: linear_model.SGDClassifier(loss=loss, random_state=seed)
    )
    assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


@pytest.mark.parametrize("loss", ["squared_error", "squared_epsilon_insensitive"])
def test_regressor_r2_matches_sklearn(loss):
    ours = mean_held_out_score(
        load_diabetes, lambda seed: SGDRegressor(loss=loss, random_state=seed)
    )
    theirs = mean_held_out_score(
        load_diabetes, lambda seed: linear_model.SGDRegressor(loss=loss, random_state=seed)
    )
    assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


def test_multinomial_log_loss_matches_logistic_regression():
    """Softmax SGD with LogisticRegression's penalty (alpha = 1 / (C · n_train))."""
    X, _ = load_digits(return_X_y=True)
    alpha = 1 / (1.0 * int(0.75 * len(X)))
    ours = mean_held_out_score(
        load_digits,
        lambda seed: SGDClassifier(
            loss="log_loss",
            alpha=alpha,
            optimizer="adam",
            learning_rate="constant",
            eta0=1e-3,
            random_state=seed,
        ),
    )
    theirs = mean_held_out_score(
        load_digits, lambda seed: linear_model.LogisticRegression(max_iter=1000)
    )
    assert abs(ours - theirs) <= TOLERANCE, (ours, theirs)


def test_per_sample_sgd_is_sklearns_algorithm():
    """``batch_size=1`` with the l2 penalty follows scikit-learn's updates closely."""
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    params = dict(loss="log_loss", max_iter=5, tol=None, shuffle=False, random_state=0)
    ours = SGDClassifier(batch_size=1, **params).fit(X, y)
    theirs = linear_model.SGDClassifier(**params).fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0.05, atol=0.05)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=0.05, atol=0.05)

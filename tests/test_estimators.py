"""Behaviour of SGDClassifier and SGDRegressor beyond scikit-learn's generic checks."""

from __future__ import annotations

import io
import itertools
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression

from dask_sgd import SGDClassifier, SGDRegressor, optim, plot_history


@pytest.fixture
def binary():
    return make_classification(n_samples=300, n_features=6, random_state=0)


@pytest.fixture
def multiclass():
    return make_classification(
        n_samples=300, n_features=8, n_informative=5, n_classes=3, random_state=0
    )


@pytest.fixture
def regression():
    X, y = make_regression(n_samples=300, n_features=5, noise=0.5, random_state=0)
    return X, y / y.std()


# --- bad input, before any training -------------------------------------------------------


@pytest.mark.parametrize("Estimator", [SGDClassifier, SGDRegressor])
@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "Input X contains NaN"), (np.inf, "Input X contains infinity")],
)
def test_non_finite_X_is_refused(Estimator, binary, value, message):
    X, y = binary
    X = X.copy()
    X[3, 2] = value
    with pytest.raises(ValueError, match=message):
        Estimator().fit(X, y)


def test_non_finite_y_is_refused(regression):
    X, y = regression
    y = y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        SGDRegressor().fit(X, y)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.arange(5.0), "Expected 2D array, got 1D array instead"),
        (np.empty((0, 3)), "0 sample"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), "could not convert"),
        (np.ones((2, 2)) + 1j, "Complex data not supported"),
    ],
)
def test_malformed_X_is_refused(X, message):
    with pytest.raises(ValueError, match=message):
        SGDClassifier().fit(X, np.arange(len(X)) % 2)


def test_feature_count_mismatch_at_predict(binary):
    X, y = binary
    clf = SGDClassifier(random_state=0).fit(X, y)
    with pytest.raises(
        ValueError, match="X has 5 features, but SGDClassifier is expecting 6 features"
    ):
        clf.predict(X[:, :5])


def test_single_class_is_refused(binary):
    X, _ = binary
    with pytest.raises(ValueError, match="The number of classes has to be greater than one"):
        SGDClassifier().fit(X, np.zeros(len(X)))


def test_partial_fit_needs_classes_first(binary):
    X, y = binary
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        SGDClassifier().partial_fit(X, y)


def test_partial_fit_refuses_unseen_labels(binary):
    X, y = binary
    clf = SGDClassifier().partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X, y + 1)


def test_partial_fit_refuses_balanced_class_weight(binary):
    X, y = binary
    with pytest.raises(ValueError, match="class_weight 'balanced' is not supported"):
        SGDClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])


def test_optimal_learning_rate_needs_alpha(binary):
    with pytest.raises(ValueError, match="alpha must be > 0 since learning_rate is 'optimal'"):
        SGDClassifier(alpha=0).fit(*binary)


def test_invalid_parameter_uses_sklearn_wording(binary):
    with pytest.raises(ValueError, match="The 'optimizer' parameter of SGDClassifier"):
        SGDClassifier(optimizer="lbfgs").fit(*binary)


def test_dask_input_without_a_client_is_explained():
    import dask.array as da
    from distributed import Client

    with pytest.raises(ValueError):  # the premise: no client exists in this test
        Client.current()
    X, y = make_classification(n_samples=100, n_features=5, random_state=0)
    with pytest.raises(ValueError, match="Training on Dask collections needs a distributed"):
        SGDClassifier().fit(da.from_array(X, chunks=50), da.from_array(y, chunks=50))
    assert not hasattr(SGDClassifier(), "coef_")


# --- divergence ---------------------------------------------------------------------------


def test_divergence_names_epoch_and_keeps_fitted_state(regression):
    X, y = regression
    reg = SGDRegressor(random_state=0).fit(X, y)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(reg).items()}
    reg.set_params(learning_rate="constant", eta0=1.0)
    with pytest.raises(ValueError, match=r"overflow occurred at epoch #1.*StandardScaler"):
        reg.fit(X * 1e300, y)
    np.testing.assert_array_equal(reg.coef_, before["coef_"])
    assert reg.t_ == before["t_"]
    assert reg.history_ == before["history_"]


def test_failed_fit_with_new_features_keeps_n_features_in(binary, regression):
    X, y = regression
    reg = SGDRegressor(random_state=0).fit(X, y)
    reg.set_params(learning_rate="constant", eta0=1.0)
    with pytest.raises(ValueError, match="overflow"):
        reg.fit(np.hstack([X, X]) * 1e300, y)
    assert reg.n_features_in_ == X.shape[1]
    assert reg.predict(X).shape == (len(X),)


# --- dtypes and input types ---------------------------------------------------------------


@pytest.mark.parametrize("Estimator", [SGDClassifier, SGDRegressor])
def test_float32_is_trained_and_stored_in_float32(Estimator, binary):
    X, y = binary
    est = Estimator(random_state=0, max_iter=5, tol=None).fit(X.astype(np.float32), y)
    assert est.coef_.dtype == np.float32
    assert est.intercept_.dtype == np.float32
    assert est._train_state.params.dtype == np.float32


def test_sparse_input_matches_dense(binary):
    """The same minibatches give the same model. (With ``batch_size="auto"`` small dense
    data trains row by row while sparse rows keep batches of 8; and the intercept steps at
    0.01 of the rate on sparse input, scikit-learn's rule, hence none here.)"""
    X, y = binary
    params = dict(random_state=0, max_iter=5, tol=None, batch_size=8, fit_intercept=False)
    dense = SGDClassifier(**params).fit(X, y)
    sparse = SGDClassifier(**params)
    sparse.fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-10)
    np.testing.assert_array_equal(sparse.predict(sp.csr_matrix(X)), dense.predict(X))


def test_pandas_input_records_feature_names(binary):
    X, y = binary
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = SGDClassifier(random_state=0).fit(frame, pd.Series(y))
    assert list(clf.feature_names_in_) == list(frame.columns)
    assert clf.score(frame, y) > 0.8


def test_string_labels(binary):
    X, y = binary
    labels = np.array(["no", "yes"])[y]
    clf = SGDClassifier(random_state=0).fit(X, labels)
    assert set(clf.predict(X)) <= {"no", "yes"}
    assert clf.score(X, labels) > 0.8


# --- shapes, probabilities, multiclass ----------------------------------------------------


def test_multiclass_one_vs_rest_shapes(multiclass):
    X, y = multiclass
    clf = SGDClassifier(random_state=0).fit(X, y)
    assert clf.coef_.shape == (3, X.shape[1])
    assert clf.intercept_.shape == (3,)
    assert clf.decision_function(X).shape == (len(X), 3)
    assert not hasattr(clf, "predict_proba")


def test_multinomial_log_loss_probabilities(multiclass):
    X, y = multiclass
    clf = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, atol=1e-12)
    assert clf.score(X, y) > 0.7


def test_binary_log_loss_probabilities_are_the_logistic_function(binary):
    X, y = binary
    clf = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    scores = clf.decision_function(X)
    expected = 1 / (1 + np.exp(-scores))
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X), atol=1e-12)


def test_modified_huber_probabilities_match_sklearn(multiclass):
    from sklearn.linear_model import SGDClassifier as SklearnSGD

    X, y = multiclass
    ours = SGDClassifier(loss="modified_huber", random_state=0).fit(X, y)
    theirs = SklearnSGD(loss="modified_huber").fit(X, y)
    theirs.coef_, theirs.intercept_ = ours.coef_, ours.intercept_
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X))


# --- training state -----------------------------------------------------------------------


def test_same_random_state_same_fit(binary):
    X, y = binary
    a = SGDClassifier(random_state=3).fit(X, y)
    b = SGDClassifier(random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = SGDClassifier(random_state=4).fit(X, y)
    assert not np.array_equal(a.coef_, c.coef_)


def test_history_records_every_epoch(binary):
    X, y = binary
    clf = SGDClassifier(max_iter=7, tol=None, random_state=0).fit(X, y)
    assert clf.n_iter_ == 7
    assert [h["epoch"] for h in clf.history_] == list(range(1, 8))
    assert all(h["samples"] == len(X) for h in clf.history_)
    times = [h["wall_time"] for h in clf.history_]
    assert times == sorted(times)
    assert clf.history_[-1]["loss"] < clf.history_[0]["loss"]
    assert clf.t_ == 7 * int(np.ceil(len(X) / clf.batch_size_)) + 1


def test_partial_fit_continues_the_optimizer_state(binary):
    X, y = binary
    clf = SGDClassifier(optimizer="adam", learning_rate="constant", eta0=0.01, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1])
    first_count = int(clf._train_state.opt_state.count)
    clf.partial_fit(X, y)
    assert int(clf._train_state.opt_state.count) == 2 * first_count
    assert clf.n_iter_ == 1
    assert [h["epoch"] for h in clf.history_] == [1, 2]


def test_partial_fit_epochs_equal_fit_epochs(regression):
    X, y = regression
    params = dict(random_state=0, tol=None, shuffle=False)
    fitted = SGDRegressor(max_iter=3, **params).fit(X, y)
    stepped = SGDRegressor(**params)
    for _ in range(3):
        stepped.partial_fit(X, y)
    np.testing.assert_allclose(stepped.coef_, fitted.coef_)
    assert stepped.t_ == fitted.t_


def test_warm_start_starts_from_the_fitted_coefficients(binary):
    X, y = binary
    clf = SGDClassifier(max_iter=1, tol=None, warm_start=True, random_state=0)
    clf.fit(X, y)
    first = clf.coef_.copy(), clf.intercept_.copy()
    cold = SGDClassifier(max_iter=1, tol=None, random_state=0)
    cold.fit(X, y, coef_init=first[0], intercept_init=first[1])
    np.testing.assert_allclose(clf.fit(X, y).coef_, cold.coef_)


def test_coef_init_of_the_wrong_shape_is_refused(binary):
    X, y = binary
    with pytest.raises(ValueError, match="Provided coef_init does not match dataset"):
        SGDClassifier().fit(X, y, coef_init=np.zeros(3))


def test_average_stores_the_mean_of_the_iterates(regression):
    X, y = regression
    plain = SGDRegressor(max_iter=3, tol=None, random_state=0).fit(X, y)
    averaged = SGDRegressor(max_iter=3, tol=None, average=True, random_state=0).fit(X, y)
    state = averaged._train_state
    np.testing.assert_array_equal(state.params, plain._train_state.params)
    assert state.n_averaged == state.step
    assert not np.allclose(averaged.coef_, plain.coef_)


def test_sample_weight_scales_the_gradient(regression):
    X, y = regression
    params = dict(penalty=None, learning_rate="constant", max_iter=3, tol=None, random_state=0)
    weighted = SGDRegressor(eta0=0.01, **params).fit(X, y, sample_weight=np.full(len(X), 2.0))
    faster = SGDRegressor(eta0=0.02, **params).fit(X, y)
    np.testing.assert_allclose(weighted.coef_, faster.coef_)


def test_balanced_class_weight_helps_the_minority():
    X, y = make_classification(n_samples=600, weights=[0.9], flip_y=0, random_state=0)
    plain = SGDClassifier(random_state=0).fit(X, y)
    balanced = SGDClassifier(class_weight="balanced", random_state=0).fit(X, y)
    assert (balanced.predict(X) == 1).sum() > (plain.predict(X) == 1).sum()


def test_early_stopping_records_validation_scores(binary):
    X, y = binary
    clf = SGDClassifier(early_stopping=True, random_state=0).fit(X, y)
    assert all(0 <= h["validation_score"] <= 1 for h in clf.history_)
    assert clf.n_iter_ < clf.max_iter
    assert all(h["samples"] == 270 for h in clf.history_)  # 10 % held out


def test_adaptive_learning_rate_shrinks(regression):
    X, y = regression
    reg = SGDRegressor(learning_rate="adaptive", eta0=0.1, random_state=0).fit(X, y)
    factors = [h["lr_factor"] for h in reg.history_]
    assert factors[-1] < factors[0]
    assert all(later <= earlier for earlier, later in itertools.pairwise(factors))


@pytest.mark.parametrize(
    "loss", ["squared_error", "huber", "epsilon_insensitive", "squared_epsilon_insensitive"]
)
def test_a_classifier_on_a_regression_loss_takes_the_regressors_schedule(loss, multiclass):
    """scikit-learn's "optimal" first rate is sized for the classification losses: its own
    SGDClassifier scores 0.1 to 0.7 here with these losses (seed 0)."""
    X, y = multiclass
    assert SGDClassifier()._schedule().learning_rate == "optimal"
    clf = SGDClassifier(loss=loss, random_state=0)
    assert clf._schedule().learning_rate == "invscaling"
    assert clf.fit(X, y).score(X, y) > 0.7


def test_auto_eta0_is_sklearns_but_larger_for_adagrad(regression):
    """Adagrad's steps shrink like 1 / sqrt(t) by themselves: at 0.01 under the regressor's
    "invscaling" it reaches R² 0.57 here."""
    assert SGDRegressor()._eta0() == SGDClassifier()._eta0() == 0.01
    assert SGDRegressor(optimizer="adagrad")._eta0() == 0.1
    assert SGDRegressor(optimizer=optim.chain(optim.adagrad()))._eta0() == 0.1
    assert SGDRegressor(optimizer="adagrad", eta0=0.01)._eta0() == 0.01
    X, y = regression
    assert SGDRegressor(optimizer="adagrad", random_state=0).fit(X, y).score(X, y) > 0.95


def test_small_data_trains_row_by_row():
    """In process "auto" keeps at least 128 steps per epoch: Huber's small gradients (at
    most epsilon) moved 8-row epochs too little for the stopping rule (R² 0.09 here)."""
    from sklearn import linear_model

    X, y = make_regression(n_samples=2000, n_features=10, noise=10, random_state=0)
    y = y / y.std()
    params = dict(max_iter=1, tol=None)
    assert SGDRegressor(**params).fit(X, y).batch_size_ == 8
    assert SGDRegressor(**params).fit(X[:600], y[:600]).batch_size_ == 4
    assert SGDRegressor(batch_size=8, **params).fit(X[:200], y[:200]).batch_size_ == 8
    X, y = X[:200], y[:200]
    ours = SGDRegressor(loss="huber", random_state=0).fit(X, y)
    theirs = linear_model.SGDRegressor(loss="huber", random_state=0).fit(X, y)
    assert ours.batch_size_ == 1
    assert ours.score(X, y) > theirs.score(X, y) - 0.02


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_fits(name, regression):
    X, y = regression
    reg = SGDRegressor(optimizer=name, learning_rate="constant", eta0=0.01, random_state=0)
    assert reg.fit(X, y).score(X, y) > 0.95


def test_custom_optimizer_object_clones_and_pickles(regression):
    X, y = regression
    reg = SGDRegressor(optimizer=optim.momentum(0.5), learning_rate="constant", eta0=0.01)
    assert clone(reg).get_params()["optimizer"] == reg.optimizer
    reg.fit(X, y)
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(restored.predict(X), reg.predict(X))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verbose_shows_one_display(binary, capsys, monkeypatch):
    """A line per epoch where no bar can redraw in place (a log, a pipe); on a terminal, the
    bar alone, the epoch's loss in its postfix, and the closing line after it."""
    SGDClassifier(verbose=1, max_iter=2, tol=None, random_state=0).fit(*binary)
    printed = capsys.readouterr()
    assert "-- Epoch 1" in printed.out and "-- Epoch 2" in printed.out
    assert printed.err == ""  # no bar

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    clf = SGDClassifier(verbose=1, max_iter=50, random_state=0).fit(*binary)
    shown = terminal.getvalue()
    assert "-- Epoch" not in shown
    bar, after = shown.rsplit("\n", 2)[:2]
    bar = bar.split("\r")[-1]  # tqdm redraws in place
    assert f"{clf.n_iter_}/50" in bar and "loss=" in bar and "samples_per_s=" in bar
    assert after.startswith(f"Convergence after {clf.n_iter_} epochs")
    monkeypatch.undo()

    SGDClassifier(max_iter=2, tol=None, random_state=0).fit(*binary)
    assert capsys.readouterr() == ("", "")  # quiet by default


def test_plot_history_draws_the_loss_against_time_and_epochs(binary):
    import matplotlib.pyplot as plt

    clf = SGDClassifier(max_iter=4, tol=None, random_state=0).fit(*binary)
    figure = plot_history(clf.history_)
    by_time, by_epoch = (axis.lines[0] for axis in figure.axes)
    np.testing.assert_allclose(by_epoch.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(by_time.get_ydata(), [h["loss"] for h in clf.history_])
    plt.close(figure)
    with pytest.raises(ValueError, match="history is empty"):
        plot_history([])


def test_clip_norm_tames_a_fit_that_unscaled_data_throws_off():
    X, y = make_regression(n_samples=200, n_features=5, noise=1, random_state=0)
    X = X * 100  # unscaled: the first gradients throw the coefficients far off
    params = dict(learning_rate="constant", eta0=0.01, max_iter=20, tol=None, random_state=0)
    assert SGDRegressor(**params).fit(X, y).score(X, y) < 0
    assert SGDRegressor(clip_norm=10.0, **params).fit(X, y).score(X, y) > 0.99

"""SGDRegressor: linear regression trained by minibatch SGD, scikit-learn's API."""

from __future__ import annotations

from typing import ClassVar

from sklearn.base import RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from dask_sgd.blocks import is_dask_collection
from dask_sgd.estimators._base import BaseSGD
from dask_sgd.estimators._dask import predict_blocks
from dask_sgd.estimators._training import keep_state_on_error
from dask_sgd.losses import REGRESSION_LOSSES
from dask_sgd.models import Model


class SGDRegressor(RegressorMixin, BaseSGD):
    """Linear regression (least squares, Huber, SVR, …) trained by minibatch SGD.

    A drop-in for :class:`sklearn.linear_model.SGDRegressor`: the same parameters with the
    same meaning, plus ``batch_size`` and ``optimizer``. Each step applies the mean gradient
    of ``batch_size`` rows, ``θ ← θ − η_t · d_t`` (see :class:`dask_sgd.SGDClassifier`).

    Parameters
    ----------
    loss : str, default="squared_error"
        One of "squared_error", "huber", "epsilon_insensitive",
        "squared_epsilon_insensitive".
    penalty, alpha, l1_ratio, fit_intercept, max_iter, tol, shuffle, verbose, epsilon, \
random_state, early_stopping, validation_fraction, n_iter_no_change, warm_start, \
average, batch_size, optimizer, clip_norm, strategy, n_backup, local_steps, elastic_rate, \
overlap, n_fetch, n_push, staleness_aware_lr, staleness_bound, n_shards, scale_learning_rate, \
warmup_epochs, snapshot_steps, snapshot_seconds, checkpoint_path
        As for :class:`dask_sgd.SGDClassifier`; early stopping scores R².
    learning_rate : {"auto", "invscaling", "constant", "optimal", "adaptive"}, \
default="auto"
        As for :class:`dask_sgd.SGDClassifier`; "auto" is "invscaling" in process
        (scikit-learn's default). On Dask input, with ``optimizer="auto"``, it is the
        standardized, averaged Adagrad of :mod:`dask_sgd.defaults`: the target is
        standardized too (for the losses quadratic in it: "squared_error", "huber",
        "squared_epsilon_insensitive"; centred only for "epsilon_insensitive"), and ``tol``
        is compared with the loss of the standardized target.
    eta0 : float or "auto", default="auto"
        As for :class:`dask_sgd.SGDClassifier`: 0.01 (scikit-learn's default), 0.1 with
        ``optimizer="adagrad"``, 0.35 for the "auto" schedule on Dask input (before the
        strategy scales it: 0.5 on two workers).
    power_t : float, default=0.25

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    n_iter_, t_, batch_size_, n_features_in_, feature_names_in_, history_
        As for :class:`dask_sgd.SGDClassifier`.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from dask_sgd import SGDRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=0)
    >>> reg = SGDRegressor(random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.99
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        **BaseSGD._parameter_constraints,
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
    }
    _in_process_learning_rate: ClassVar[str] = "invscaling"

    def __init__(
        self,
        loss="squared_error",
        *,
        penalty="l2",
        alpha=0.0001,
        l1_ratio=0.15,
        fit_intercept=True,
        max_iter=1000,
        tol=1e-3,
        shuffle=True,
        verbose=0,
        epsilon=0.1,
        random_state=None,
        learning_rate="auto",
        eta0="auto",
        power_t=0.25,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change="auto",
        warm_start=False,
        average=False,
        batch_size="auto",
        optimizer="auto",
        clip_norm=None,
        strategy="local",
        n_backup=1,
        local_steps="auto",
        elastic_rate=None,
        overlap=False,
        n_fetch=1,
        n_push=1,
        staleness_aware_lr=False,
        staleness_bound=3,
        n_shards=None,
        scale_learning_rate=True,
        warmup_epochs=1.0,
        snapshot_steps=1000,
        snapshot_seconds=30.0,
        checkpoint_path=None,
    ):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.average = average
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.clip_norm = clip_norm
        self.strategy = strategy
        self.n_backup = n_backup
        self.local_steps = local_steps
        self.elastic_rate = elastic_rate
        self.overlap = overlap
        self.n_fetch = n_fetch
        self.n_push = n_push
        self.staleness_aware_lr = staleness_aware_lr
        self.staleness_bound = staleness_bound
        self.n_shards = n_shards
        self.scale_learning_rate = scale_learning_rate
        self.warmup_epochs = warmup_epochs
        self.snapshot_steps = snapshot_steps
        self.snapshot_seconds = snapshot_seconds
        self.checkpoint_path = checkpoint_path

    @_fit_context(prefer_skip_nested_validation=True)
    @keep_state_on_error
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model: up to ``max_iter`` epochs from zero (or warm) coefficients.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        coef_init : ndarray of shape (n_features,), default=None
        intercept_init : ndarray of shape (1,), default=None
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : SGDRegressor
        """
        return self._fit(
            X,
            y,
            sample_weight,
            is_partial=False,
            coef_init=coef_init,
            intercept_init=intercept_init,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    @keep_state_on_error
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, continuing from the current state (optimizer state included).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : SGDRegressor
        """
        return self._fit(X, y, sample_weight, is_partial=True)

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,), or a lazy Dask array for Dask input
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            return predict_blocks(self, "predict", X, n_columns=None, dtype=self.coef_.dtype)
        return self._raw_predictions(X).ravel()

    def _n_outputs(self) -> int:
        return 1

    def _store_params(self, model: Model, theta) -> None:
        super()._store_params(model, theta)
        self.coef_ = self.coef_[0]  # one output: scikit-learn's shape (n_features,)

    def _score_params(self, model: Model, theta, X, y, sample_weight) -> float:
        predicted = model.raw(theta, X)[:, 0]
        return r2_score(y, predicted, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

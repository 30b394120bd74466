"""MLPClassifier and MLPRegressor: scikit-learn's networks, trained by dask_sgd's engine.

The parameters are scikit-learn's, with its meanings, and dask_sgd's own for Dask input
(``strategy`` and the rest, as :class:`~dask_sgd.SGDClassifier` takes them). The model is
:class:`~dask_sgd.models.mlp.MLPModel`; what differs from scikit-learn is said in
``docs/mlp.md``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from dask_sgd import optim, schedules
from dask_sgd.blocks import is_dask_collection
from dask_sgd.data import TargetEncoder, check_labels_known
from dask_sgd.estimators._dask import predict_blocks
from dask_sgd.estimators._training import (
    DASK_SGD_PARAMETERS,
    Components,
    TrainedEstimator,
    TrainingSpec,
    keep_state_on_error,
)
from dask_sgd.losses import get_loss, log_softmax
from dask_sgd.models import Model, Objective
from dask_sgd.models.mlp import ACTIVATIONS, MLPModel
from dask_sgd.penalties import get_penalty

#: scikit-learn's ``batch_size="auto"``: ``min(200, n_samples)``
AUTO_BATCH_SIZE = 200


class BaseMLP(TrainedEstimator):
    """scikit-learn's multilayer perceptron parameters, on dask_sgd's training machinery."""

    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        **DASK_SGD_PARAMETERS,
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
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
    def fit(self, X, y, sample_weight=None):
        """Fit the network: up to ``max_iter`` epochs from Glorot's start (or warm).

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, is_partial=False)

    # --- what a subclass defines ----------------------------------------------------------

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _loss_name(self) -> tuple[str, bool]:
        """The loss and whether it is the multinomial one."""
        raise NotImplementedError

    # --- validation ---------------------------------------------------------------------------

    def _more_validate_params(self) -> None:
        if self.solver == "lbfgs":
            raise ValueError(
                "solver='lbfgs' is not offered by dask_sgd: L-BFGS takes full-batch steps "
                "with a line search, which is neither stochastic nor parallel over "
                "partitions. Use solver='adam' or solver='sgd'."
            )
        sizes = np.atleast_1d(self.hidden_layer_sizes)
        if sizes.size and np.any(sizes <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {list(sizes)}.")

    # --- what the parameters mean -------------------------------------------------------------

    def _rows_per_step(self) -> int:
        return AUTO_BATCH_SIZE if self.batch_size == "auto" else int(self.batch_size)

    def _cluster_settings(self) -> dict:
        """On Dask, "auto" is a unit's minibatch of scikit-learn's rows (200), fewer where a
        worker's share would give under 64 steps per epoch (the linear models' rule)."""
        return super()._cluster_settings() | {"largest_auto_batch": AUTO_BATCH_SIZE}

    def _make_model(self, n_features: int) -> Model:
        sizes = tuple(int(size) for size in np.atleast_1d(self.hidden_layer_sizes))
        return MLPModel(n_features, sizes, self._n_outputs(), self.activation)

    def _components(self, n_features: int, moments=None) -> Components:
        """The network, its loss (a minibatch's weighted mean, over its weights' sum, as
        scikit-learn's) with scikit-learn's penalty (``alpha / 2 · ||W||²`` over a
        minibatch's rows: an L2 penalty of ``alpha / batch_size`` on the mean loss), the
        solver and its learning-rate schedule."""
        model = self._make_model(n_features)
        name, multinomial = self._loss_name()
        penalty = get_penalty("l2", alpha=self.alpha / self._rows_per_step())
        loss = get_loss(name, multinomial=multinomial)
        objective = Objective(model, loss, penalty, weighted_mean=True)
        return Components(model, objective, self._optimizer(), self._schedule())

    def _optimizer(self) -> optim.GradientTransformation:
        if self.solver == "adam":
            return optim.adam(self.beta_1, self.beta_2, self.epsilon)
        if self.momentum == 0:
            return optim.sgd()
        return optim.trace(self.momentum, nesterov=self.nesterovs_momentum)

    def _schedule(self) -> schedules.Schedule:
        """Adam's rate is constant; "sgd"'s follows ``learning_rate``. scikit-learn's
        "invscaling" divides by ``(samples seen + 1) ** power_t`` at each epoch's end; here
        at every step, by the samples seen so far."""
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            return schedules.invscaling(
                self.learning_rate_init, self.power_t, time_scale=self._rows_per_step()
            )
        return schedules.constant(self.learning_rate_init)

    def _training_spec(self) -> TrainingSpec:
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        return TrainingSpec(
            max_iter=self.max_iter,
            batch_size=self._rows_per_step(),
            shuffle=self.shuffle,
            random_state=self.random_state,
            warm_start=self.warm_start,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            adaptive_eta0=self.learning_rate_init if adaptive else None,
            validation_score=self._score_params if self.early_stopping else None,
            validation_fraction=self.validation_fraction,
            checkpoint_path=self.checkpoint_path,
            verbose=int(self.verbose),
        )

    def _store_params(self, model: Model, theta) -> None:
        self.coefs_ = [coef.copy() for coef in model.coefs(theta)]
        self.intercepts_ = [intercept.copy() for intercept in model.intercepts(theta)]
        self.n_layers_ = model.n_layers
        self.n_outputs_ = model.n_outputs
        self.out_activation_ = self._out_activation()

    def _fit(self, X, y, sample_weight, *, is_partial: bool, classes=None, **init):
        """As every family's, but ``n_iter_`` counts the epochs of every ``partial_fit``, as
        scikit-learn's networks count them."""
        before = getattr(self, "n_iter_", 0) if is_partial else 0
        super()._fit(X, y, sample_weight, is_partial=is_partial, classes=classes, **init)
        self.n_iter_ += before
        return self

    # scikit-learn's record of the epochs, read from ``history_`` (also after ``load``)

    @property
    def loss_curve_(self) -> list[float]:
        return [record["loss"] for record in self.history_]

    @property
    def loss_(self) -> float:
        return self.loss_curve_[-1]

    @property
    def best_loss_(self) -> float | None:
        return None if self.validation_scores_ is not None else min(self.loss_curve_)

    @property
    def validation_scores_(self) -> list[float] | None:
        scores = [record.get("validation_score") for record in self.history_]
        return None if None in scores else scores

    @property
    def best_validation_score_(self) -> float | None:
        scores = self.validation_scores_
        return None if scores is None else max(scores)

    # --- prediction -----------------------------------------------------------------------------

    def _fitted_params(self, model: MLPModel) -> np.ndarray:
        """θ as ``coefs_`` and ``intercepts_`` hold it now."""
        pieces = []
        for coef, intercept in zip(self.coefs_, self.intercepts_, strict=True):
            pieces += [np.asarray(coef).reshape(-1), np.asarray(intercept).reshape(-1)]
        theta = np.concatenate(pieces)
        if theta.shape[0] != model.layout.size:
            raise ValueError("coefs_ and intercepts_ do not match the network's layers.")
        return theta

    def _raw_predictions(self, X) -> np.ndarray:
        """The network's raw outputs on in-memory ``X``, ``(n_samples, n_outputs)``."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        model = self._make_model(self.n_features_in_)
        return model.raw(self._fitted_params(model), X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, BaseMLP):
    """A multilayer perceptron classifier: scikit-learn's ``MLPClassifier``, trained by
    minibatch SGD or Adam in process or on a Dask cluster.

    The output is logistic for two classes, softmax for more (log-loss either way). The
    parameters are scikit-learn's (``solver="lbfgs"`` is refused: see ``docs/mlp.md``),
    then dask_sgd's own for Dask input, as :class:`~dask_sgd.SGDClassifier` takes them.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : list of ndarray
        The weights of each layer, ``(fan_in, fan_out)``.
    intercepts_ : list of ndarray
    n_layers_, n_outputs_ : int
    out_activation_ : str
        "logistic" or "softmax".
    loss_, best_loss_ : float
        The last epoch's loss and the smallest (None with ``early_stopping``).
    loss_curve_ : list of float
        Each epoch's mean loss, the penalty included (on Dask, without it).
    validation_scores_, best_validation_score_
        With ``early_stopping``, each epoch's accuracy on the held-out rows, and the best.
    n_iter_, t_ : int
        Epochs run, and steps taken + 1.
    history_ : list of dict
        One record per epoch (dask_sgd's own).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from dask_sgd import MLPClassifier
    >>> X, y = make_classification(200, 5, random_state=0)
    >>> clf = MLPClassifier((8,), batch_size=20, max_iter=1000, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    @_fit_context(prefer_skip_nested_validation=True)
    @keep_state_on_error
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``, continuing from the current state.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class; required on the first call, ignored afterwards.

        Returns
        -------
        self : MLPClassifier
        """
        return self._fit(X, y, sample_weight, is_partial=True, classes=classes)

    def _check_first_partial_fit(self, classes) -> None:
        if classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")

    def _target_encoder(self, labels, counts, *, first_call: bool, classes) -> TargetEncoder:
        """Learn ``classes_`` (or check the labels against it): one output (logistic) for two
        classes, one per class (softmax) for more."""
        check_classification_targets(labels)
        if first_call:
            self.classes_ = np.unique(labels if classes is None else np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(
                    "The number of classes has to be greater than one; got "
                    f"{len(self.classes_)} class"
                )
        check_labels_known(np.unique(labels), self.classes_)
        return TargetEncoder(self.classes_, self._loss_name()[1], None)

    def _n_outputs(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _loss_name(self) -> tuple[str, bool]:
        return "log_loss", len(self.classes_) > 2

    def _out_activation(self) -> str:
        return "logistic" if len(self.classes_) == 2 else "softmax"

    def _score_params(self, model: Model, theta, X, y, sample_weight) -> float:
        raw = model.raw(theta, X)
        indices = (raw[:, 0] > 0).astype(int) if raw.shape[1] == 1 else raw.argmax(axis=1)
        return accuracy_score(y, self.classes_[indices], sample_weight=sample_weight)

    def predict(self, X):
        """The most probable class of each row; lazy for Dask input.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            return predict_blocks(self, "predict", X, n_columns=None, dtype=self.classes_.dtype)
        raw = self._raw_predictions(X)
        indices = (raw[:, 0] > 0).astype(int) if raw.shape[1] == 1 else raw.argmax(axis=1)
        return self.classes_[indices]

    def predict_proba(self, X):
        """Class probabilities: the logistic of the output (two classes) or its softmax.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            dtype = self.coefs_[0].dtype
            return predict_blocks(
                self, "predict_proba", X, n_columns=len(self.classes_), dtype=dtype
            )
        raw = self._raw_predictions(X)
        if raw.shape[1] == 1:
            positive = 0.5 * (1 + np.tanh(0.5 * raw[:, 0]))  # the logistic function, stably
            return np.column_stack([1 - positive, positive])
        return np.exp(log_softmax(raw))

    def predict_log_proba(self, X):
        """The logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class MLPRegressor(RegressorMixin, BaseMLP):
    """A multilayer perceptron regressor: scikit-learn's ``MLPRegressor`` (identity output,
    squared error), trained by minibatch SGD or Adam in process or on a Dask cluster.

    The parameters and fitted attributes are :class:`MLPClassifier`'s (no ``classes_``;
    ``out_activation_`` is "identity"; the validation score is R²). One target per row.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from dask_sgd import MLPRegressor
    >>> X, y = make_regression(200, 5, random_state=0)
    >>> reg = MLPRegressor((8,), batch_size=20, learning_rate_init=0.01, max_iter=1000,
    ...                    random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape, reg.n_iter_ < 1000  # converged
    ((2,), True)
    """

    @_fit_context(prefer_skip_nested_validation=True)
    @keep_state_on_error
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, continuing from the current state.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MLPRegressor
        """
        return self._fit(X, y, sample_weight, is_partial=True)

    def _n_outputs(self) -> int:
        return 1

    def _loss_name(self) -> tuple[str, bool]:
        return "squared_error", False

    def _out_activation(self) -> str:
        return "identity"

    def _score_params(self, model: Model, theta, X, y, sample_weight) -> float:
        return r2_score(y, model.raw(theta, X)[:, 0], sample_weight=sample_weight)

    def predict(self, X):
        """The predicted target of each row; lazy for Dask input.

        Parameters
        ----------
        X : {array-like, sparse matrix, Dask array or data frame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if is_dask_collection(X):
            dtype = self.coefs_[0].dtype
            return predict_blocks(self, "predict", X, n_columns=None, dtype=dtype)
        return self._raw_predictions(X)[:, 0]

"""What SGDClassifier and SGDRegressor share: SGD's parameters and what they mean.

The training itself (the in-process loop, the Dask orchestration, checkpoints and resuming)
is in :mod:`dask_sgd.estimators._training`, shared with any other estimator family.
"""

from __future__ import annotations

import math
from dataclasses import replace
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from dask_sgd import defaults, optim
from dask_sgd.data import TargetEncoder
from dask_sgd.estimators._training import (
    DASK_SGD_PARAMETERS,
    Components,
    Coordinates,
    TrainedEstimator,
    TrainingSpec,
)
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Model, Objective, StandardizedLinearModel
from dask_sgd.models.products import raw_outputs
from dask_sgd.penalties import get_penalty
from dask_sgd.schedules import get_schedule
from dask_sgd.standardize import (
    SCALED_LOSSES,
    DataMoments,
    standardized_model,
    start_intercepts,
)

#: ``eta0="auto"``: scikit-learn's default initial rate...
SKLEARN_ETA0 = 0.01
#: ...and Adagrad's, whose steps shrink by themselves (see ``BaseSGD._eta0``)
ADAGRAD_ETA0 = 0.1


def _is_adagrad(optimizer) -> bool:
    """Whether ``optimizer`` (a name or a transformation) scales its steps as Adagrad does."""
    if isinstance(optimizer, str):
        return optimizer == "adagrad"
    if isinstance(optimizer, optim.Chain):
        return any(_is_adagrad(t) for t in optimizer.transformations)
    return isinstance(optimizer, optim.ScaleByAdagrad)


class BaseSGD(TrainedEstimator):
    """Base class: scikit-learn's SGD parameters plus ``batch_size`` and ``optimizer``.

    The model is a :class:`~dask_sgd.models.LinearModel` with entries "coef" and
    "intercept", which become ``coef_`` and ``intercept_``; a subclass may train another
    model family with those entries by overriding :meth:`_make_model`.
    """

    _parameter_constraints: ClassVar[dict] = {
        "penalty": [StrOptions({"l2", "l1", "elasticnet"}), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "shuffle": ["boolean"],
        "verbose": ["verbose"],
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "learning_rate": [StrOptions({"auto", "constant", "optimal", "invscaling", "adaptive"})],
        "eta0": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "power_t": [Interval(Real, None, None, closed="neither")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "warm_start": ["boolean"],
        "average": [Interval(Integral, 0, None, closed="neither"), "boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "optimizer": [StrOptions({"auto", *optim.OPTIMIZERS}), optim.GradientTransformation],
        "clip_norm": [Interval(Real, 0, None, closed="neither"), None],
        **DASK_SGD_PARAMETERS,
    }

    #: the schedule that ``learning_rate="auto"`` is in process (scikit-learn's default)
    _in_process_learning_rate: ClassVar[str] = "optimal"

    # --- what subclasses define -------------------------------------------------------------

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _is_multinomial(self) -> bool:
        return False

    def _score_params(self, model: Model, theta, X, y, sample_weight) -> float:
        raise NotImplementedError

    # --- validation ---------------------------------------------------------------------------

    def _more_validate_params(self) -> None:
        if self._schedule().learning_rate == "optimal" and self.alpha == 0:
            raise ValueError(
                "alpha must be > 0 since learning_rate is 'optimal'. alpha is used "
                "to compute the optimal learning rate."
            )

    # --- what the parameters mean -------------------------------------------------------------

    def _auto_learning_rate(self) -> str:
        """The schedule that ``learning_rate="auto"`` is in process."""
        return self._in_process_learning_rate

    def _eta0(self) -> float:
        """``eta0``, "auto" resolved: scikit-learn's 0.01, or 0.1 for Adagrad.

        Adagrad divides each gradient by the root of its coordinate's summed squares, so its
        steps shrink like ``1 / sqrt(t)`` by themselves; a schedule's rate sized for plain
        SGD's gradients (0.01), decaying on top of that, barely moves the model (under
        the regressor's "invscaling" a step is about ``0.01 / t ** 0.75``).
        """
        if self.eta0 != "auto":
            return self.eta0
        return ADAGRAD_ETA0 if _is_adagrad(self.optimizer) else SKLEARN_ETA0

    def _schedule(self) -> defaults.Schedule:
        """The learning rate and optimizer, "auto" resolved (see :mod:`dask_sgd.defaults`)
        for the input of the call that started training."""
        return defaults.schedule(
            self.learning_rate,
            self._eta0(),
            self.power_t,
            self.optimizer,
            in_process=self._auto_learning_rate(),
            on_dask=getattr(self, "_auto_for_dask", False),
            eta0_given=self.eta0 != "auto",
            sparse=getattr(self, "_sparse_input", False),
        )

    def _make_model(self, n_features: int) -> Model:
        return LinearModel(n_features, self._n_outputs(), self.fit_intercept)

    def _components(self, n_features: int, moments: DataMoments | None = None) -> Components:
        """The model, objective, optimizer and schedule that the parameters describe; where
        the schedule is standardized, the model is trained in standardized coordinates
        (:mod:`dask_sgd.standardize`): the data's ``moments``', or on a later call, the
        first call's, kept with its model."""
        model = self._make_model(n_features)
        epsilon = self.epsilon
        # standardizing is a linear model's change of variables: another family (a
        # subclass's _make_model) trains in its own coordinates
        if self._schedule().standardized and type(model) is LinearModel:
            kept = getattr(self, "_model", None)
            if moments is not None:
                model = standardized_model(
                    model, moments, target_scaled=self.loss in SCALED_LOSSES
                )
            elif isinstance(kept, StandardizedLinearModel) and kept.n_features == n_features:
                model = kept
        if isinstance(model, StandardizedLinearModel):
            epsilon = self.epsilon / model.target_scale  # the loss's kink, in ỹ's units
        loss = get_loss(self.loss, epsilon=epsilon, multinomial=self._is_multinomial())
        penalty = get_penalty(self.penalty, alpha=self.alpha, l1_ratio=self.l1_ratio)
        chosen = self._schedule()
        schedule = get_schedule(
            chosen.learning_rate,
            eta0=chosen.eta0,
            power_t=chosen.power_t,
            alpha=self.alpha,
            loss=get_loss(self.loss, epsilon=epsilon),  # the binary loss sets t0
        )
        objective = Objective(model, loss, penalty, clip_norm=self.clip_norm)
        return Components(model, objective, optim.get_optimizer(chosen.optimizer), schedule)

    def _training_spec(self) -> TrainingSpec:
        adaptive = self._schedule().learning_rate == "adaptive"
        return TrainingSpec(
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            random_state=self.random_state,
            average=int(self.average) if self.average else 0,
            warm_start=self.warm_start,
            tol=self.tol,
            n_iter_no_change=self._n_iter_no_change(),
            adaptive_eta0=self._eta0() if adaptive else None,
            validation_score=self._score_params if self.early_stopping else None,
            validation_fraction=self.validation_fraction,
            checkpoint_path=self.checkpoint_path,
            verbose=self.verbose,
        )

    def _coordinates(
        self, model: Model, encoder: TargetEncoder, spec: TrainingSpec, label_counts, n_rows: int
    ) -> Coordinates:
        """A standardized model's fit (see :mod:`dask_sgd.defaults`): the target standardized
        as the model's is, ``tol`` in its units, averaging from the middle of the first
        epoch and over each later epoch (tail averaging) unless ``average`` says otherwise,
        a classifier's intercepts from the classes' frequencies, and ``history_``'s losses
        back in the target's units."""
        # on sparse input Dask's "auto" trains the plain model: its columns are not
        # standardized (docs/sparse.md), but it is averaged and starts from the classes'
        # frequencies all the same
        sparse_auto = self._schedule().standardized and getattr(self, "_sparse_input", False)
        if not isinstance(model, StandardizedLinearModel) and not sparse_auto:
            return super()._coordinates(model, encoder, spec, label_counts, n_rows)
        unit = getattr(model, "target_scale", 1.0) ** 2  # a standardized target's loss in y's
        spec = replace(
            spec,
            tol=None if spec.tol is None else spec.tol * unit,
            average=spec.average or math.ceil(defaults.DASK_AVERAGE_FROM_EPOCH * n_rows),
            average_each_epoch=not spec.average,
        )
        if encoder.classes is None:
            if isinstance(model, StandardizedLinearModel):
                encoder = replace(
                    encoder, target_center=model.target_center, target_scale=model.target_scale
                )
            return Coordinates(encoder, spec, {}, unit)
        if not model.fit_intercept:
            return Coordinates(encoder, spec, {}, unit)
        labels, counts = label_counts
        weights = np.ones(len(encoder.classes))  # one each: a class yet unseen is not -inf
        weights[np.searchsorted(encoder.classes, labels)] += counts
        if encoder.class_weight is not None:
            weights = weights * encoder.class_weight
        start = start_intercepts(
            get_loss(self.loss), weights, multinomial=self._is_multinomial()
        )
        return Coordinates(encoder, spec, {"start_intercept": start}, unit)

    def _n_iter_no_change(self, steps_per_epoch: int | None = None) -> int:
        """``n_iter_no_change``, "auto" resolved for the call that started training (on Dask
        input, for epochs of ``steps_per_epoch`` steps a unit, once the units are known)."""
        if self.n_iter_no_change != "auto":
            return self.n_iter_no_change
        if self._schedule().standardized:
            if steps_per_epoch is None:
                return defaults.DASK_N_ITER_NO_CHANGE
            return defaults.dask_n_iter_no_change(steps_per_epoch)
        return defaults.N_ITER_NO_CHANGE

    def _initial_params(
        self,
        model: Model,
        dtype,
        rng,
        *,
        warm: bool,
        coef_init=None,
        intercept_init=None,
        start_intercept=None,
    ) -> np.ndarray:
        """The model's start, or the given (or, warm, the fitted) coefficients and intercept.

        ``start_intercept`` (a standardized model's, in its units) replaces the intercept of
        the model's own start."""
        theta = model.init_params(rng, dtype=dtype)
        if warm and coef_init is None and intercept_init is None and hasattr(self, "coef_"):
            coef_init, intercept_init = self.coef_, self.intercept_
        if isinstance(model, StandardizedLinearModel):
            if coef_init is None and intercept_init is None:
                if start_intercept is not None:
                    theta[model.layout.slice("intercept")] = start_intercept
                return theta
            plain = LinearModel(model.n_features, model.n_outputs, model.fit_intercept)
            original = self._initial_params(
                plain, np.float64, rng, warm=False, coef_init=coef_init,
                intercept_init=intercept_init,
            )  # fmt: skip
            return model.from_original(original).astype(dtype)
        if intercept_init is None and coef_init is None and start_intercept is not None:
            intercept_init = start_intercept  # a plain model's start on sparse input
        for name, value in (("coef", coef_init), ("intercept", intercept_init)):
            if value is None:
                continue
            where = model.layout.slice(name)
            value = np.asarray(value, dtype=dtype).reshape(-1)
            if value.shape[0] != where.stop - where.start:
                raise ValueError(f"Provided {name}_init does not match dataset.")
            theta[where] = value
        return theta

    def _store_params(self, model: Model, theta) -> None:
        if isinstance(model, StandardizedLinearModel):
            theta = model.to_original(theta).astype(theta.dtype)
        self.coef_ = model.layout.view(theta, "coef").copy()
        self.intercept_ = model.layout.view(theta, "intercept").copy()

    # --- prediction -----------------------------------------------------------------------------

    def _fitted_params(self, model: Model) -> np.ndarray:
        """θ as ``coef_`` and ``intercept_`` hold it now (a user may have set them)."""
        coef, intercept = np.asarray(self.coef_), np.asarray(self.intercept_)
        theta = np.empty(model.layout.size, dtype=np.result_type(coef, intercept))
        theta[model.layout.slice("coef")] = coef.reshape(-1)
        theta[model.layout.slice("intercept")] = intercept.reshape(-1)
        return theta

    def _raw_predictions(self, X) -> np.ndarray:
        """The model's raw outputs on in-memory ``X``, shape ``(n_samples, n_outputs)``."""
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        model = self._make_model(self.n_features_in_)
        if type(model) is LinearModel:  # coef_ and intercept_ are its θ: no model-wide copy
            coef = np.asarray(self.coef_).reshape(model.layout.shape("coef"))
            return raw_outputs(X, coef, np.asarray(self.intercept_).reshape(-1))
        return model.raw(self._fitted_params(model), X)

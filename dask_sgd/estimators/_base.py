"""What SGDClassifier and SGDRegressor share: parameters, validation and the training run."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from functools import wraps
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

from dask_sgd import defaults, optim
from dask_sgd.blocks import is_dask_collection, persist_blocks
from dask_sgd.checkpoint import checkpoint_exists, load_checkpoint
from dask_sgd.data import TargetEncoder, validation_split
from dask_sgd.engine.cluster import ClusterTrainer
from dask_sgd.engine.local import iterate_minibatches
from dask_sgd.engine.loop import ConvergenceMonitor, EpochResult, train_epochs
from dask_sgd.engine.steps import TrainState, run_minibatches
from dask_sgd.estimators._checkpoint import (
    check_resumable,
    restore_monitor,
    restore_training_state,
    write_training_checkpoint,
)
from dask_sgd.estimators._dask import check_dask_features, current_client
from dask_sgd.losses import get_loss
from dask_sgd.models import LinearModel, Objective
from dask_sgd.penalties import get_penalty
from dask_sgd.schedules import get_schedule, scaled

MAX_INT = np.iinfo(np.int32).max


class BaseSGD(BaseEstimator):
    """Base class: scikit-learn's SGD parameters plus ``batch_size`` and ``optimizer``."""

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
        "eta0": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, None, None, closed="neither")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "average": [Interval(Integral, 0, None, closed="neither"), "boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "optimizer": [StrOptions({"auto", *optim.OPTIMIZERS}), optim.GradientTransformation],
        "clip_norm": [Interval(Real, 0, None, closed="neither"), None],
        "strategy": [StrOptions({"sync", "backup", "local", "downpour", "ssp"})],
        "n_backup": [Interval(Integral, 0, None, closed="left")],
        "local_steps": [Interval(Integral, 1, None, closed="left")],
        "elastic_rate": [Interval(Real, 0, 1, closed="right"), None],
        "n_fetch": [Interval(Integral, 1, None, closed="left")],
        "n_push": [Interval(Integral, 1, None, closed="left")],
        "staleness_aware_lr": ["boolean"],
        "staleness_bound": [Interval(Integral, 0, None, closed="left")],
        "n_shards": [Interval(Integral, 1, None, closed="left"), None],
        "scale_learning_rate": ["boolean"],
        "warmup_epochs": [Interval(Real, 0, None, closed="left")],
        "snapshot_steps": [Interval(Integral, 1, None, closed="left")],
        "snapshot_seconds": [Interval(Real, 0, None, closed="neither")],
        "checkpoint_path": [str, os.PathLike, None],
    }

    #: the schedule that ``learning_rate="auto"`` is in process (scikit-learn's default)
    _in_process_learning_rate: ClassVar[str] = "optimal"

    # --- what subclasses define -------------------------------------------------------------

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _is_multinomial(self) -> bool:
        return False

    def _store_params(self, model: LinearModel, theta: np.ndarray) -> None:
        raise NotImplementedError

    def _score_params(self, model: LinearModel, theta, X, y, sample_weight) -> float:
        raise NotImplementedError

    # --- validation ---------------------------------------------------------------------------

    def _more_validate_params(self) -> None:
        if self._schedule().learning_rate == "optimal" and self.alpha == 0:
            raise ValueError(
                "alpha must be > 0 since learning_rate is 'optimal'. alpha is used "
                "to compute the optimal learning rate."
            )

    def _validate_X_y(self, X, y, sample_weight, *, reset: bool):
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            accept_sparse="csr",
            dtype=[np.float64, np.float32],
            order="C",
            accept_large_sparse=False,
            y_numeric=not is_classifier(self),
        )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype)
        return X, y, sample_weight

    def _initial_params(self, model, dtype, coef_init, intercept_init, *, warm: bool):
        """Zeros, or the given (or, warm, the fitted) coefficients and intercept."""
        theta = model.init_params(dtype=dtype)
        if warm and coef_init is None and intercept_init is None and hasattr(self, "coef_"):
            coef_init, intercept_init = self.coef_, self.intercept_
        for name, value in (("coef", coef_init), ("intercept", intercept_init)):
            if value is None:
                continue
            where = model.layout.slice(name)
            value = np.asarray(value, dtype=dtype).reshape(-1)
            if value.shape[0] != where.stop - where.start:
                raise ValueError(f"Provided {name}_init does not match dataset.")
            theta[where] = value
        return theta

    # --- the flow of fit and partial_fit ----------------------------------------------------

    def _fit(self, X, y, sample_weight, *, is_partial: bool, classes=None, **init):
        """``fit`` (from scratch, up to max_iter epochs) or ``partial_fit`` (one epoch)."""
        first_call = not is_partial or not hasattr(self, "coef_")
        if first_call:
            # what "auto" becomes is decided here, for this call and the partial_fits after it
            self._auto_for_dask = is_dask_collection(X)
            self._more_validate_params()
            if is_partial:
                self._check_first_partial_fit(classes)
        max_iter = 1 if is_partial else self.max_iter
        if is_dask_collection(X):
            return self._fit_dask(
                X,
                y,
                sample_weight,
                max_iter=max_iter,
                is_partial=is_partial,
                first_call=first_call,
                classes=classes,
                **init,
            )
        X, y, sample_weight = self._validate_X_y(X, y, sample_weight, reset=first_call)
        labels, counts = np.unique(y, return_counts=True) if is_classifier(self) else ([], [])
        encoder = self._target_encoder(labels, counts, first_call=first_call, classes=classes)
        Y, sample_weight = encoder(y, sample_weight, X.dtype)
        self._train(
            X,
            Y,
            sample_weight,
            y_for_split=y,
            max_iter=max_iter,
            is_partial=is_partial,
            **init,
        )
        return self

    def _check_first_partial_fit(self, classes) -> None:
        """Checks that only the first call to ``partial_fit`` makes."""

    # --- training -----------------------------------------------------------------------------

    def _schedule(self) -> defaults.Schedule:
        """The learning rate and optimizer, "auto" resolved (see :mod:`dask_sgd.defaults`)
        for the input of the call that started training."""
        return defaults.schedule(
            self.learning_rate,
            self.eta0,
            self.power_t,
            self.optimizer,
            in_process=self._in_process_learning_rate,
            on_dask=getattr(self, "_auto_for_dask", False),
            classifier=is_classifier(self),
        )

    def _components(self, n_features: int):
        """The model, objective, optimizer and schedule that the parameters describe."""
        model = LinearModel(n_features, self._n_outputs(), self.fit_intercept)
        loss = get_loss(self.loss, epsilon=self.epsilon, multinomial=self._is_multinomial())
        penalty = get_penalty(self.penalty, alpha=self.alpha, l1_ratio=self.l1_ratio)
        chosen = self._schedule()
        schedule = get_schedule(
            chosen.learning_rate,
            eta0=chosen.eta0,
            power_t=chosen.power_t,
            alpha=self.alpha,
            loss=get_loss(self.loss, epsilon=self.epsilon),  # the binary loss sets t0
        )
        objective = Objective(model, loss, penalty, clip_norm=self.clip_norm)
        return model, objective, optim.get_optimizer(chosen.optimizer), schedule

    def _start_state(self, model, optimizer, dtype, coef_init, intercept_init, is_partial):
        """The state to train from: kept (partial_fit), warm, given, or zeros."""
        state = getattr(self, "_train_state", None) if is_partial else None
        if state is None or state.params.shape[0] != model.layout.size:
            theta = self._initial_params(
                model, dtype, coef_init, intercept_init, warm=is_partial or self.warm_start
            )
            state = TrainState.create(theta, optimizer, averaged=bool(self.average))
        return state

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(MAX_INT))

    def _train(
        self,
        X,
        Y,
        sample_weight,
        *,
        y_for_split,
        max_iter: int,
        is_partial: bool,
        coef_init=None,
        intercept_init=None,
    ) -> None:
        """Train in process on validated, encoded data and store the result."""
        model, objective, optimizer, schedule = self._components(X.shape[1])
        state = self._start_state(model, optimizer, X.dtype, coef_init, intercept_init, is_partial)

        validation_score = None
        if self.early_stopping and not is_partial:
            train, held_out = validation_split(
                y_for_split,
                sample_weight,
                validation_fraction=self.validation_fraction,
                stratify=hasattr(self, "classes_"),
                random_state=self.random_state,
            )
            X_val, y_val = X[held_out], y_for_split[held_out]
            sw_val = None if sample_weight is None else sample_weight[held_out]
            validation_score = lambda s: self._score_params(
                model, s.final_params, X_val, y_val, sw_val
            )
            X, Y = X[train], Y[train]
            sample_weight = None if sample_weight is None else sample_weight[train]

        rng = np.random.default_rng(self._seed()) if self.shuffle else None
        average_start = int(self.average) if self.average else 0
        batch_size = self.batch_size_ = defaults.batch_size(self.batch_size)

        def run_epoch(state: TrainState, lr_factor: float):
            batches = iterate_minibatches(X, Y, sample_weight, batch_size, rng)
            learning_rate = scaled(schedule, lr_factor)
            return run_minibatches(
                state, batches, objective, optimizer, learning_rate, average_start
            )

        self._run_epochs(run_epoch, state, model, max_iter, is_partial, validation_score, rng)

    def _fit_dask(
        self,
        X,
        y,
        sample_weight,
        *,
        max_iter: int,
        is_partial: bool,
        first_call: bool,
        classes,
        **init,
    ):
        """Train on Dask collections: persist and check the blocks, then run the strategy."""
        if self.average:
            raise ValueError("average is not supported with Dask input yet.")
        if self.early_stopping and not is_partial:
            raise ValueError(
                "early_stopping is not supported with Dask input yet; set "
                "early_stopping=False and evaluate on held-out data yourself."
            )
        client = current_client()
        data = persist_blocks(
            client, X, y, sample_weight, classifier=is_classifier(self), seed=self._seed()
        )
        try:
            check_dask_features(self, data.n_features, data.feature_names, reset=first_call)
            encoder = self._target_encoder(
                *data.label_counts(), first_call=first_call, classes=classes
            )
            model, objective, optimizer, schedule = self._components(data.n_features)
            state = self._start_state(
                model,
                optimizer,
                data.dtype,
                init.get("coef_init"),
                init.get("intercept_init"),
                is_partial,
            )
            trainer = ClusterTrainer(
                client,
                data,
                objective,
                optimizer,
                schedule,
                encoder,
                batch_size=self.batch_size,
                n_shards=self.n_shards,
                scale_learning_rate=self.scale_learning_rate,
                warmup_epochs=self.warmup_epochs,
                strategy=self.strategy,
                local_steps=self.local_steps,
                elastic_rate=self.elastic_rate,
                n_fetch=self.n_fetch,
                n_push=self.n_push,
                staleness_aware=self.staleness_aware_lr,
                staleness_bound=self.staleness_bound,
                n_backup=self.n_backup,
                snapshot_steps=self.snapshot_steps,
                snapshot_seconds=self.snapshot_seconds,
            )
            self.batch_size_ = trainer.batch_size
            try:
                self._run_epochs(trainer.run_epoch, state, model, max_iter, is_partial)
            finally:
                trainer.close()
        finally:
            data.release()
        return self

    def _target_encoder(self, labels, counts, *, first_call: bool, classes) -> TargetEncoder:
        """How targets become model outputs and weights; a classifier learns its classes here.

        ``labels`` and ``counts`` are the distinct targets and how often each occurs (empty
        for regression). In process the encoder runs once on ``y``; on Dask, on each block
        as a unit starts.
        """
        return TargetEncoder()

    def _run_epochs(
        self, run_epoch, state, model, max_iter, is_partial, validation_score=None, rng=None
    ):
        """Train up to ``max_iter`` epochs and store the result.

        With ``checkpoint_path``, a checkpoint is written after every epoch, and ``fit``
        first resumes from an unfinished fit's checkpoint there: its state, stopping rule,
        history and, in process, the shuffling generator ``rng``.
        """
        monitor = ConvergenceMonitor(
            tol=None if is_partial else self.tol,
            n_iter_no_change=self.n_iter_no_change,
            adaptive_eta0=self.eta0 if self._schedule().learning_rate == "adaptive" else None,
        )
        history = list(getattr(self, "history_", [])) if is_partial else []
        path, epochs_done = self.checkpoint_path, 0
        if path is not None and not is_partial and checkpoint_exists(path):
            arrays, meta = load_checkpoint(path)
            if not meta.get("complete", True):
                check_resumable(meta, self, model)
                state = restore_training_state(arrays, meta, state)
                restore_monitor(meta, monitor)
                if rng is not None and meta.get("rng") is not None:
                    rng.bit_generator.state = meta["rng"]
                history, epochs_done = meta["history"], meta["epochs_done"]

        def write_checkpoint(state, new_history, finished):
            write_training_checkpoint(
                path,
                self,
                model,
                state,
                epochs_done=epochs_done + len(new_history),
                monitor=monitor,
                history=history + new_history,
                rng=rng,
                complete=finished or is_partial,
            )

        result = train_epochs(
            run_epoch,
            state,
            max_iter=max(max_iter - epochs_done, 0),
            monitor=monitor,
            validation_score=validation_score,
            first_epoch=len(history) + 1,
            verbose=self.verbose,
            on_epoch=None if path is None else write_checkpoint,
        )
        self._finish(
            model, replace(result, n_iter=result.n_iter + epochs_done), history, is_partial
        )

    def _finish(self, model: LinearModel, result: EpochResult, history: list, is_partial: bool):
        if not is_partial and not result.converged and self.tol is not None and result.n_iter > 1:
            warnings.warn(
                "Maximum number of iteration reached before convergence. Consider increasing "
                "max_iter to improve the fit.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._store_params(model, result.state.final_params)
        self._train_state = result.state
        self.n_iter_ = result.n_iter
        self.t_ = result.state.step + 1
        self.history_ = history + result.history


def keep_state_on_error(method):
    """Run a fitting method; if it raises, restore the estimator's attributes as they were."""

    @wraps(method)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    return wrapper

"""The fit machinery that every estimator family shares, whatever its parameters.

An estimator family subclasses :class:`TrainedEstimator` and says, through a few hooks, what
its parameters mean: the model (``_make_model``), the objective, optimizer and schedule
(``_components``), the settings of the training loop (``_training_spec``, a
:class:`TrainingSpec`), how targets are encoded, where training starts and how the trained
parameters become fitted attributes. This module does the rest, for every family alike:
validating and encoding the input, the in-process loop (:func:`train_in_process`), the
orchestration on Dask (:func:`train_on_dask`), checkpoints
and resuming (:func:`run_epochs`), and storing the result (:func:`finish`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import wraps
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

from dask_sgd import defaults
from dask_sgd._array import is_host
from dask_sgd.blocks import is_dask_collection, persist_blocks
from dask_sgd.checkpoint import checkpoint_exists, load_checkpoint
from dask_sgd.data import TargetEncoder, validation_split
from dask_sgd.engine.cluster import ClusterTrainer
from dask_sgd.engine.local import iterate_minibatches
from dask_sgd.engine.loop import ConvergenceMonitor, EpochResult, train_epochs
from dask_sgd.engine.steps import TrainState, run_minibatches
from dask_sgd.engine.strategies import STRATEGY_NAMES, get_strategy
from dask_sgd.estimators._checkpoint import (
    check_resumable,
    register_estimator,
    restore_monitor,
    restore_training_state,
    write_training_checkpoint,
)
from dask_sgd.estimators._dask import check_dask_features, current_client
from dask_sgd.models import Model, Objective
from dask_sgd.models.products import start_warm_up
from dask_sgd.optim import GradientTransformation
from dask_sgd.schedules import Schedule, scaled
from dask_sgd.sparse.lazy import SPARSE_INTERCEPT_RATE

MAX_INT = np.iinfo(np.int32).max

#: in process, ``batch_size="auto"`` keeps at least this many steps per epoch: the stopping
#: rule judges whole epochs (``tol``, ``n_iter_no_change``) and momentum remembers about ten
#: steps, so an epoch of a few dozen 8-row steps stops before it has converged. Below 256
#: rows every step is one row, scikit-learn's own algorithm, where an epoch costs little.
MIN_IN_PROCESS_STEPS_PER_EPOCH = 128

#: ``score(model, theta, X, y, sample_weight) -> float``, higher is better
ValidationScore = Callable[[Model, Any, Any, Any, Any], float]


class Components(NamedTuple):
    """What an estimator's parameters make of ``n_features`` inputs: the things it trains."""

    model: Model
    objective: Objective
    optimizer: GradientTransformation
    schedule: Schedule


@dataclass(frozen=True)
class TrainingSpec:
    """The settings of the training loop that an estimator's parameters give.

    Parameters
    ----------
    max_iter : int
        Epochs of ``fit`` at most (``partial_fit`` runs one).
    batch_size : int or "auto"
        Rows per minibatch (per worker and step on Dask); "auto" is resolved by
        :func:`dask_sgd.defaults.batch_size`.
    shuffle : bool
        Visit the rows in a new random order every epoch (in process).
    random_state : int, RandomState instance or None
        Draws the seed of the shuffling, of the blocks on Dask and of the model's random
        start, and splits off the validation rows.
    average : int
        Averaged SGD from this sample on; 0 is off.
    average_each_epoch : bool
        Restart the average at the start of every epoch after the one where it began (tail
        averaging: the model is the mean of its last epoch's iterates).
    warm_start : bool
        ``fit`` starts from the fitted parameters.
    tol, n_iter_no_change : float or None, int
        The stopping rule (:class:`dask_sgd.engine.loop.ConvergenceMonitor`).
    adaptive_eta0 : float or None
        The initial rate of an "adaptive" schedule, which the stopping rule divides.
    validation_score : callable or None
        Early stopping: ``score(model, theta, X, y, sample_weight)`` on the held-out rows,
        higher is better; None trains on every row.
    validation_fraction : float
        The share of rows held out for ``validation_score``.
    checkpoint_path : str, path or None
        Where ``fit`` writes a checkpoint after every epoch and resumes an unfinished one.
    verbose : int
        Print one line per epoch.
    """

    max_iter: int
    batch_size: int | str = "auto"
    shuffle: bool = True
    random_state: Any = None
    average: int = 0
    average_each_epoch: bool = False
    warm_start: bool = False
    tol: float | None = None
    n_iter_no_change: int = 5
    adaptive_eta0: float | None = None
    validation_score: ValidationScore | None = None
    validation_fraction: float = 0.1
    checkpoint_path: str | os.PathLike | None = None
    verbose: int = 0


class Coordinates(NamedTuple):
    """A Dask fit in a model's own coordinates (a standardized model's, say): the target
    encoder, the training loop's settings, keyword arguments of the start
    (``_initial_params``) and the unit of the loss that ``history_`` reports."""

    encoder: TargetEncoder
    spec: TrainingSpec
    start: dict
    loss_unit: float


#: the constraints of dask_sgd's own parameters, which every family takes with the same names
#: and meanings (see :meth:`TrainedEstimator._cluster_settings`)
DASK_SGD_PARAMETERS: dict[str, list] = {
    "strategy": [StrOptions(STRATEGY_NAMES)],  # grows as strategies register
    "n_backup": [Interval(Integral, 0, None, closed="left")],
    "local_steps": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "elastic_rate": [Interval(Real, 0, 1, closed="right"), None],
    "overlap": ["boolean"],
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


class TrainedEstimator(BaseEstimator):
    """Base of the estimators that this module trains; defining a subclass registers it.

    The registry (by class name) is where :func:`dask_sgd.load` finds the class that a
    checkpoint names, without importing anything the file says. A subclass defines the
    hooks that raise ``NotImplementedError`` here and may refine the others.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_estimator(cls)

    # --- what a family defines ----------------------------------------------------------------

    def _make_model(self, n_features: int) -> Model:
        """The model that the parameters describe, on ``n_features`` inputs."""
        raise NotImplementedError

    def _components(self, n_features: int, moments: Any = None) -> Components:
        """The model, objective, optimizer and schedule of a fit on ``n_features`` inputs,
        given the data's ``moments`` (a :class:`dask_sgd.standardize.DataMoments`) on a
        first call on Dask, which a family may use to choose the model's coordinates."""
        raise NotImplementedError

    def _training_spec(self) -> TrainingSpec:
        """The settings of the training loop."""
        raise NotImplementedError

    def _n_iter_no_change(self, steps_per_epoch: int | None = None) -> int:
        """The stopping rule's epochs without improvement, for epochs of ``steps_per_epoch``
        steps a unit (on Dask, once the units are known)."""
        return self.n_iter_no_change

    def _store_params(self, model: Model, theta: np.ndarray) -> None:
        """Set the fitted attributes from the trained parameters ``theta``."""
        raise NotImplementedError

    def _initial_params(self, model: Model, dtype, rng, *, warm: bool, **init) -> np.ndarray:
        """Where training starts: ``model.init_params(rng)`` unless ``init`` (the keyword
        arguments of ``fit``) or, ``warm``, the fitted parameters say otherwise."""
        if warm and hasattr(self, "_train_state"):
            return np.array(self._train_state.final_params, dtype=dtype)
        return model.init_params(rng, dtype=dtype)

    def _cluster_settings(self) -> dict[str, Any]:
        """The strategy and the trainer's settings for Dask input: dask_sgd's own parameters,
        which every family takes with the same names and meanings."""
        options = {
            "local_steps": self.local_steps,
            "elastic_rate": self.elastic_rate,
            "overlap": self.overlap,
            "n_fetch": self.n_fetch,
            "n_push": self.n_push,
            "staleness_aware": self.staleness_aware_lr,
            "staleness_bound": self.staleness_bound,
            "n_backup": self.n_backup,
        }
        return {
            "strategy": get_strategy(self.strategy, **options),
            "batch_size": self.batch_size,
            "n_shards": self.n_shards,
            "scale_learning_rate": self.scale_learning_rate,
            "warmup_epochs": self.warmup_epochs,
            "snapshot_steps": self.snapshot_steps,
            "snapshot_seconds": self.snapshot_seconds,
        }

    def _coordinates(
        self, model: Model, encoder: TargetEncoder, spec: TrainingSpec, label_counts, n_rows: int
    ) -> Coordinates:
        """What training in ``model``'s coordinates changes in a fit on Dask: the target's
        encoding, the loop's settings, the start and the loss's unit; nothing by default."""
        return Coordinates(encoder, spec, {}, 1.0)

    def _more_validate_params(self) -> None:
        """Checks across parameters, made by the first call that trains."""

    def _check_first_partial_fit(self, classes) -> None:
        """Checks that only the first call to ``partial_fit`` makes."""

    def _validate_X_y(self, X, y, sample_weight, *, reset: bool):
        """In-memory input, checked as scikit-learn checks it: float64 or float32 kept."""
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

    def _target_encoder(self, labels, counts, *, first_call: bool, classes) -> TargetEncoder:
        """How targets become model outputs and weights; a classifier learns its classes here.

        ``labels`` and ``counts`` are the distinct targets and how often each occurs (empty
        for regression). In process the encoder runs once on ``y``; on Dask, on each block
        as a unit starts.
        """
        return TargetEncoder()

    # --- the flow ---------------------------------------------------------------------------

    def _fit(self, X, y, sample_weight, *, is_partial: bool, classes=None, **init):
        return fit_estimator(
            self, X, y, sample_weight, is_partial=is_partial, classes=classes, **init
        )


def draw_seed(random_state) -> int:
    """One seed from ``random_state`` (a draw from it, when it is a ``RandomState``)."""
    return int(check_random_state(random_state).randint(MAX_INT))


def init_rng(seed: int) -> np.random.Generator:
    """The generator of a model's random start: a stream apart from the shuffling one."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def fit_estimator(estimator, X, y, sample_weight, *, is_partial: bool, classes=None, **init):
    """``fit`` (from scratch, up to ``max_iter`` epochs) or ``partial_fit`` (one epoch).

    ``init`` holds the estimator's own keyword arguments of ``fit`` (``coef_init``, ...),
    which reach its ``_initial_params``.
    """
    if not is_dask_collection(X) and not is_host(X):
        raise TypeError(
            f"X is an array of {type(X).__module__.split('.')[0]}: dask_sgd trains on GPU "
            "arrays (CuPy's) as the chunks of a Dask array (dask.array.from_array(X, "
            "chunks=...) with a distributed Client), and in process on NumPy arrays only."
        )
    first_call = not is_partial or not hasattr(estimator, "_train_state")
    if first_call:
        # what "auto" becomes is decided here, for this call and the partial_fits after it
        estimator._auto_for_dask = is_dask_collection(X)
        estimator._sparse_input = False  # on Dask, the blocks say (train_on_dask)
        estimator._model = None  # the model trained (a standardized one, say), kept after
        estimator._more_validate_params()
        if is_partial:
            estimator._check_first_partial_fit(classes)
    if is_dask_collection(X):
        return train_on_dask(
            estimator,
            X,
            y,
            sample_weight,
            is_partial=is_partial,
            first_call=first_call,
            classes=classes,
            **init,
        )
    X, y, sample_weight = estimator._validate_X_y(X, y, sample_weight, reset=first_call)
    labels, counts = np.unique(y, return_counts=True) if is_classifier(estimator) else ([], [])
    encoder = estimator._target_encoder(labels, counts, first_call=first_call, classes=classes)
    train_in_process(
        estimator, X, y, sample_weight, encoder, (labels, counts), is_partial=is_partial, **init
    )
    return estimator


def start_state(
    estimator,
    spec: TrainingSpec,
    components: Components,
    dtype,
    *,
    is_partial: bool,
    seed: int,
    init: dict,
) -> TrainState:
    """The state to train from: kept (partial_fit), warm, given, or the model's start."""
    model, optimizer = components.model, components.optimizer
    state = getattr(estimator, "_train_state", None) if is_partial else None
    if state is None or state.params.shape[0] != model.layout.size:
        theta = estimator._initial_params(
            model, dtype, init_rng(seed), warm=is_partial or spec.warm_start, **init
        )
        state = TrainState.create(theta, optimizer, averaged=spec.average > 0)
    return state


def train_in_process(
    estimator, X, y, sample_weight, encoder, label_counts, *, is_partial: bool, **init
) -> None:
    """Train on validated in-memory data and store the result.

    The model's coordinates are a standardized model's only for a ``partial_fit`` after a
    first call on Dask input that trained standardized (the kept ``_model``)."""
    components = estimator._components(X.shape[1])
    model, objective, optimizer, schedule = components
    encoder, spec, start, loss_unit = estimator._coordinates(
        model, encoder, estimator._training_spec(), label_counts, X.shape[0]
    )
    Y, sample_weight = encoder(y, sample_weight, X.dtype)
    y_for_split, init = y, start | init

    validation_score = None
    if spec.validation_score is not None and not is_partial:
        train, held_out = validation_split(
            y_for_split,
            sample_weight,
            validation_fraction=spec.validation_fraction,
            stratify=hasattr(estimator, "classes_"),
            random_state=spec.random_state,
        )
        X_val, y_val = X[held_out], y_for_split[held_out]
        sw_val = None if sample_weight is None else sample_weight[held_out]

        def validation_score(state: TrainState) -> float:
            return spec.validation_score(model, state.final_params, X_val, y_val, sw_val)

        X, Y = X[train], Y[train]
        sample_weight = None if sample_weight is None else sample_weight[train]

    # drawn after the split, which draws from a RandomState first (as scikit-learn does)
    seed = draw_seed(spec.random_state)
    state = start_state(
        estimator, spec, components, X.dtype, is_partial=is_partial, seed=seed, init=init
    )
    rng = np.random.default_rng(seed) if spec.shuffle else None
    batch_size = estimator.batch_size_ = in_process_batch_size(
        spec.batch_size, X.shape[0], sparse=sp.issparse(X)
    )

    def run_epoch(state: TrainState, lr_factor: float):
        if spec.average_each_epoch and state.n_averaged:  # a new average for this epoch
            state = replace(state, average=np.zeros_like(state.params), n_averaged=0)
        batches = iterate_minibatches(X, Y, sample_weight, batch_size, rng)
        learning_rate = scaled(schedule, lr_factor)
        state, loss_sum, rows = run_minibatches(
            state, batches, objective, optimizer, learning_rate, spec.average,
            sparse_intercept_rate=SPARSE_INTERCEPT_RATE,
        )  # fmt: skip
        return state, loss_sum * loss_unit, rows  # the loss in the data's units

    run_epochs(
        estimator,
        spec,
        model,
        run_epoch,
        state,
        is_partial=is_partial,
        validation_score=validation_score,
        rng=rng,
    )


def in_process_batch_size(setting: int | str, n_rows: int, *, sparse: bool = False) -> int:
    """Rows per step in process: as set, else :func:`dask_sgd.defaults.batch_size` (8), less
    on small dense data so that an epoch takes at least ``MIN_IN_PROCESS_STEPS_PER_EPOCH``
    steps. Sparse rows keep batches of 8: taking CSR rows one at a time costs about 100 µs
    a step, which made scikit-learn's checks on sparse input several times slower.

    Examples
    --------
    >>> [in_process_batch_size("auto", n) for n in (200, 300, 600, 100_000)]
    [1, 2, 4, 8]
    >>> in_process_batch_size(32, 200)
    32
    """
    size = defaults.batch_size(setting)
    if setting == "auto" and not sparse:
        size = max(1, min(size, n_rows // MIN_IN_PROCESS_STEPS_PER_EPOCH))
    return size


def train_on_dask(
    estimator,
    X,
    y,
    sample_weight,
    *,
    is_partial: bool,
    first_call: bool,
    classes,
    **init,
):
    """Train on Dask collections: persist and check the blocks, then run the strategy."""
    spec = estimator._training_spec()
    if spec.validation_score is not None and not is_partial:
        raise ValueError(
            "early_stopping is not supported with Dask input yet; set "
            "early_stopping=False and evaluate on held-out data yourself."
        )
    client = current_client()
    client.run(start_warm_up)  # numba starts on the workers while they check the blocks
    seed = draw_seed(spec.random_state)
    data = persist_blocks(
        client, X, y, sample_weight, classifier=is_classifier(estimator), seed=seed
    )
    if first_call:
        estimator._sparse_input = data.sparse
    try:
        check_dask_features(estimator, data.n_features, data.feature_names, reset=first_call)
        label_counts = data.label_counts()
        encoder = estimator._target_encoder(*label_counts, first_call=first_call, classes=classes)
        # later partial_fits keep the first call's coordinates (its model)
        moments = data.moments() if first_call else None
        components = estimator._components(data.n_features, moments)
        model, objective, optimizer, schedule = components
        encoder, spec, start, loss_unit = estimator._coordinates(
            model, encoder, spec, label_counts, data.n_rows
        )
        state = start_state(
            estimator, spec, components, data.dtype, is_partial=is_partial, seed=seed,
            init=start | init,
        )  # fmt: skip
        trainer = ClusterTrainer(
            client, data, objective, optimizer, schedule, encoder,
            average=spec.average, average_each_epoch=spec.average_each_epoch,
            **estimator._cluster_settings(),
        )  # fmt: skip
        try:
            estimator.batch_size_ = trainer.start().batch_size
            patience = estimator._n_iter_no_change(trainer.steps_per_epoch)
            spec = replace(spec, n_iter_no_change=patience)  # small data: short epochs

            def run_epoch(state: TrainState, lr_factor: float):
                state, loss_sum, rows, extra = trainer.run_epoch(state, lr_factor)
                if "averaged_objective" in extra:
                    extra["averaged_objective"] *= loss_unit
                return state, loss_sum * loss_unit, rows, extra  # in the data's units

            run_epochs(
                estimator, spec, model, run_epoch, state, is_partial=is_partial,
                in_client=trainer.in_client,
            )  # fmt: skip
        finally:
            trainer.close()
    finally:
        data.release()
    return estimator


def run_epochs(
    estimator,
    spec: TrainingSpec,
    model: Model,
    run_epoch,
    state: TrainState,
    *,
    is_partial: bool,
    validation_score=None,
    rng: np.random.Generator | None = None,
    in_client=lambda state: state,
) -> None:
    """Train up to ``spec.max_iter`` epochs (one for ``partial_fit``) and store the result.

    With ``checkpoint_path``, a checkpoint is written after every epoch, and ``fit`` first
    resumes from an unfinished fit's checkpoint there: its state, stopping rule, history
    and, in process, the shuffling generator ``rng``. ``in_client(state)`` gives an epoch's
    state its arrays (a large model's stay on the Dask workers between epochs), for a
    checkpoint and at the end.
    """
    max_iter = 1 if is_partial else spec.max_iter
    monitor = ConvergenceMonitor(
        tol=None if is_partial else spec.tol,
        n_iter_no_change=spec.n_iter_no_change,
        adaptive_eta0=spec.adaptive_eta0,
    )
    history = list(getattr(estimator, "history_", [])) if is_partial else []
    path, epochs_done = spec.checkpoint_path, 0
    if path is not None and not is_partial and checkpoint_exists(path):
        arrays, meta = load_checkpoint(path)
        if not meta.get("complete", True):
            check_resumable(meta, estimator, model)
            state = restore_training_state(arrays, meta, state)
            restore_monitor(meta, monitor)
            if rng is not None and meta.get("rng") is not None:
                rng.bit_generator.state = meta["rng"]
            history, epochs_done = meta["history"], meta["epochs_done"]

    def write_checkpoint(state, new_history, finished):
        write_training_checkpoint(
            path,
            estimator,
            model,
            in_client(state),
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
        verbose=spec.verbose,
        on_epoch=None if path is None else write_checkpoint,
    )
    finish(
        estimator,
        spec,
        model,
        replace(result, state=in_client(result.state), n_iter=result.n_iter + epochs_done),
        history,
        is_partial=is_partial,
    )


def finish(
    estimator,
    spec: TrainingSpec,
    model: Model,
    result: EpochResult,
    history: list,
    *,
    is_partial: bool,
) -> None:
    """Store what training gives: the fitted attributes, the state, n_iter_, t_, history_."""
    if not is_partial and not result.converged and spec.tol is not None and result.n_iter > 1:
        warnings.warn(
            "Maximum number of iteration reached before convergence. Consider increasing "
            "max_iter to improve the fit.",
            ConvergenceWarning,
            stacklevel=3,
        )
    estimator._store_params(model, result.state.final_params)
    estimator._model = model  # what _train_state's parameters mean
    estimator._train_state = result.state
    estimator.n_iter_ = result.n_iter
    estimator.t_ = result.state.step + 1
    estimator.history_ = history + result.history


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

"""Estimators as checkpoints: a fitted model, or a fit to resume (see :mod:`dask_sgd.checkpoint`).

A checkpoint holds the flat parameter vector θ, the model that reads it (its family and
configuration, :meth:`dask_sgd.models.Model.describe`), the optimizer state's leaves, the
step, the epochs done, the stopping rule's state, the shuffling generator's state, the
history, the estimator's parameters (those that survive JSON unchanged) and its fitted
attributes. ``complete`` tells a finished fit from one that stopped part way.

Loading looks the estimator's class up by name in :data:`ESTIMATORS` (every subclass of
:class:`dask_sgd.estimators._training.TrainedEstimator` is in it) and the model's family in
:data:`dask_sgd.models.MODEL_FAMILIES`; it never imports what the file names.
"""

from __future__ import annotations

import json
from typing import Any
from weakref import WeakValueDictionary

import numpy as np
from sklearn.utils.validation import check_is_fitted

import dask_sgd
from dask_sgd._tree import tree_leaves, tree_unflatten
from dask_sgd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dask_sgd.engine.loop import ConvergenceMonitor
from dask_sgd.engine.steps import TrainState
from dask_sgd.models import Model, model_from_config
from dask_sgd.models.base import LEGACY_FAMILY

#: the estimator classes a checkpoint may name, by class name; weak, so that a class defined
#: in a function goes when it does, and the last class defined under a name wins
ESTIMATORS: WeakValueDictionary[str, type] = WeakValueDictionary()


def register_estimator(cls: type) -> type:
    """Let checkpoints name ``cls`` (by its ``__name__``)."""
    ESTIMATORS[cls.__name__] = cls
    return cls


def _json_params(estimator) -> tuple[dict, list[str]]:
    """The parameters that JSON gives back unchanged (a tuple as a list: ``hidden_layer_sizes``
    takes either), and the names of the others."""
    kept, skipped = {}, []
    for name, value in estimator.get_params(deep=False).items():
        try:
            same = json.loads(json.dumps(value)) == (list(value) if type(value) is tuple else value)
        except (TypeError, ValueError):
            same = False
        if same:
            kept[name] = value
        else:
            skipped.append(name)
    return kept, skipped


def _labels(values: np.ndarray, what: str) -> dict:
    """Labels as JSON: numbers, booleans or strings, with their dtype."""
    if values.dtype.kind in "biuf":
        return {"values": values.tolist(), "dtype": values.dtype.str}
    if all(isinstance(value, str) for value in values.tolist()):
        return {"values": values.tolist(), "dtype": "object" if values.dtype.kind == "O" else "str"}
    raise CheckpointError(f"Cannot save {what} of dtype {values.dtype}: not numbers or strings.")


def _from_labels(entry: dict) -> np.ndarray:
    dtype = {"object": object, "str": str}.get(entry["dtype"], entry["dtype"])
    return np.asarray(entry["values"], dtype=dtype)


def saved_model(meta: dict) -> dict[str, Any] | None:
    """The manifest's ``{"family": ..., "config": ...}`` of the model, or None.

    Checkpoints written before the model protocol (dask_sgd 0.1.0) have no "model" entry but
    a "layout" entry, which is the configuration of the one family there was then.
    """
    if "model" in meta:
        return meta["model"]
    if isinstance(meta.get("layout"), dict):
        return {"family": LEGACY_FAMILY, "config": meta["layout"]}
    return None


def training_checkpoint(
    estimator,
    model: Model,
    state: TrainState,
    *,
    epochs_done: int,
    monitor: ConvergenceMonitor,
    history: list[dict],
    rng: np.random.Generator | None,
    complete: bool,
) -> tuple[dict, dict]:
    """The arrays and manifest entries of a checkpoint of ``estimator`` at ``state``."""
    arrays = {"params": state.params}
    if state.average is not None:
        arrays["average"] = state.average
    for index, leaf in enumerate(tree_leaves(state.opt_state)):
        arrays[f"opt_state.{index}"] = np.asarray(leaf)
    params, skipped = _json_params(estimator)
    fitted = {
        "n_features_in": int(estimator.n_features_in_),
        "on_dask": bool(getattr(estimator, "_auto_for_dask", False)),  # what "auto" became
    }
    if hasattr(estimator, "feature_names_in_"):
        fitted["feature_names_in"] = _labels(estimator.feature_names_in_, "feature names")
    if hasattr(estimator, "classes_"):
        fitted["classes"] = _labels(estimator.classes_, "classes")
    best = monitor.best if np.isfinite(monitor.best) else None
    meta = {
        "estimator": type(estimator).__name__,
        "library_version": dask_sgd.__version__,
        "complete": complete,
        "params": params,
        "params_not_saved": skipped,
        "fitted": fitted,
        "model": model.describe(),
        "step": int(state.step),
        "samples": int(state.samples),
        "n_averaged": int(state.n_averaged),
        "epochs_done": epochs_done,
        "monitor": {
            "best": best,
            "no_improvement": monitor.no_improvement,
            "lr_factor": monitor.lr_factor,
        },
        "rng": None if rng is None else rng.bit_generator.state,
        "history": history,
    }
    return arrays, meta


def write_training_checkpoint(path: str, estimator, model, state, **progress) -> None:
    save_checkpoint(path, *training_checkpoint(estimator, model, state, **progress))


def restore_training_state(arrays: dict, meta: dict, like: TrainState) -> TrainState:
    """The TrainState a checkpoint holds, shaped as ``like`` (the optimizer's fresh state)."""
    leaves = tree_leaves(like.opt_state)
    saved = [arrays.get(f"opt_state.{index}") for index in range(len(leaves))]
    if f"opt_state.{len(leaves)}" in arrays or any(
        leaf is None or np.shape(leaf) != np.shape(fresh)
        for leaf, fresh in zip(saved, leaves, strict=True)
    ):
        raise CheckpointError(
            "The checkpoint's optimizer state does not fit this estimator's optimizer "
            f"({meta['params'].get('optimizer', 'not saved')!r} when it was written)."
        )
    params = arrays["params"]
    if params.shape != like.params.shape:
        raise CheckpointError(
            f"The checkpoint holds {params.shape[0]} parameters, this model has "
            f"{like.params.shape[0]}."
        )
    return TrainState(
        params.astype(like.params.dtype, copy=False),
        tree_unflatten(like.opt_state, [np.asarray(leaf) for leaf in saved]),
        step=meta["step"],
        samples=meta["samples"],
        average=arrays.get("average"),
        n_averaged=meta["n_averaged"],
    )


def restore_monitor(meta: dict, monitor: ConvergenceMonitor) -> None:
    saved = meta["monitor"]
    monitor.best = float("inf") if saved["best"] is None else saved["best"]
    monitor.no_improvement = saved["no_improvement"]
    monitor.lr_factor = saved["lr_factor"]


def save(estimator, path: str) -> None:
    """Write a fitted estimator (``SGDClassifier``, ``SGDRegressor``, ...) to ``path``.

    ``path`` is a directory or an fsspec URL. The format is numeric ``.npy`` files and a
    JSON manifest, no pickle; load it back with :func:`load`.
    """
    check_is_fitted(estimator)
    model = getattr(estimator, "_model", None) or estimator._make_model(estimator.n_features_in_)
    write_training_checkpoint(
        path,
        estimator,
        model,
        estimator._train_state,
        epochs_done=estimator.n_iter_,
        monitor=ConvergenceMonitor(tol=None, n_iter_no_change=1),  # no stopping rule to resume
        history=estimator.history_,
        rng=None,
        complete=True,
    )


def load(path: str):
    """The estimator saved at ``path``, fitted: predicts at once, and ``partial_fit`` goes on.

    Parameters that JSON cannot hold (an optimizer object, a ``RandomState``) come back as
    their defaults; they are listed in the manifest's ``params_not_saved``.
    """
    arrays, meta = load_checkpoint(path)
    try:
        cls = ESTIMATORS[meta["estimator"]]
        estimator = cls(**meta["params"])
        fitted, described = meta["fitted"], saved_model(meta)
        if described is None:
            raise KeyError("model")
        if "classes" in fitted:
            estimator.classes_ = _from_labels(fitted["classes"])
        estimator.n_features_in_ = fitted["n_features_in"]
        if "feature_names_in" in fitted:
            estimator.feature_names_in_ = _from_labels(fitted["feature_names_in"])
        model = model_from_config(described["family"], described["config"])
        estimator._auto_for_dask = fitted.get("on_dask", False)
        optimizer = estimator._components(fitted["n_features_in"]).optimizer
        like = TrainState.create(  # a template: the shapes of θ and of the optimizer state
            np.zeros(model.layout.size, dtype=arrays["params"].dtype),
            optimizer,
            averaged="average" in arrays,
        )
        state = restore_training_state(arrays, meta, like)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"Checkpoint at {path!r} does not describe an estimator: {error!r}"
        ) from None
    estimator._store_params(model, state.final_params)
    estimator._model, estimator._train_state = model, state
    estimator.n_iter_ = meta["epochs_done"]
    estimator.t_ = state.step + 1
    estimator.history_ = meta["history"]
    return estimator


def check_resumable(meta: dict, estimator, model: Model) -> None:
    """Refuse to resume a fit whose checkpoint was written for another model or data."""
    # compared as JSON gives it back: a tuple in a configuration is a list in the file
    saved, current = saved_model(meta), json.loads(json.dumps(model.describe()))
    problems = []
    if meta.get("estimator") != type(estimator).__name__:
        problems.append(f"it holds a {meta.get('estimator')}")
    if saved != current:
        problems.append(f"its model is {saved}, this one {current}")
    saved_classes = meta.get("fitted", {}).get("classes")
    if saved_classes is not None and not np.array_equal(
        _from_labels(saved_classes), getattr(estimator, "classes_", None)
    ):
        problems.append("its classes differ")
    if problems:
        raise ValueError(
            f"Cannot resume from the checkpoint at {estimator.checkpoint_path!r}: "
            + "; ".join(problems)
            + ". Remove it, or choose another checkpoint_path."
        )

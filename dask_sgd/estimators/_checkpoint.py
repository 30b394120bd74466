"""Estimators as checkpoints: a fitted model, or a fit to resume (see :mod:`dask_sgd.checkpoint`).

A checkpoint holds the flat parameter vector θ and its layout, the optimizer state's leaves,
the step, the epochs done, the stopping rule's state, the shuffling generator's state, the
history, the estimator's parameters (those that survive JSON unchanged) and its fitted
attributes. ``complete`` tells a finished fit from one that stopped part way.
"""

from __future__ import annotations

import json

import numpy as np
from sklearn.utils.validation import check_is_fitted

import dask_sgd
from dask_sgd._tree import tree_leaves, tree_unflatten
from dask_sgd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dask_sgd.engine.loop import ConvergenceMonitor
from dask_sgd.engine.steps import TrainState
from dask_sgd.models import LinearModel


def _json_params(estimator) -> tuple[dict, list[str]]:
    """The parameters that JSON gives back unchanged, and the names of the others."""
    kept, skipped = {}, []
    for name, value in estimator.get_params(deep=False).items():
        try:
            same = json.loads(json.dumps(value)) == value
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


def _layout(model: LinearModel) -> dict:
    return {
        "n_features": model.n_features,
        "n_outputs": model.n_outputs,
        "fit_intercept": model.fit_intercept,
    }


def training_checkpoint(
    estimator,
    model: LinearModel,
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
        "layout": _layout(model),
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
    """Write a fitted ``SGDClassifier`` or ``SGDRegressor`` to ``path`` (a directory or URL).

    The format is numeric ``.npy`` files and a JSON manifest, no pickle; load it back with
    :func:`load`.
    """
    check_is_fitted(estimator)
    model = LinearModel(estimator.n_features_in_, estimator._n_outputs(), estimator.fit_intercept)
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
    estimators = {cls.__name__: cls for cls in (dask_sgd.SGDClassifier, dask_sgd.SGDRegressor)}
    try:
        cls = estimators[meta["estimator"]]
        estimator = cls(**meta["params"])
        fitted, layout = meta["fitted"], meta["layout"]
        if "classes" in fitted:
            estimator.classes_ = _from_labels(fitted["classes"])
        estimator.n_features_in_ = fitted["n_features_in"]
        if "feature_names_in" in fitted:
            estimator.feature_names_in_ = _from_labels(fitted["feature_names_in"])
        model = LinearModel(layout["n_features"], layout["n_outputs"], layout["fit_intercept"])
        estimator._auto_for_dask = fitted.get("on_dask", False)
        optimizer = estimator._components(layout["n_features"])[2]
        like = TrainState.create(
            model.init_params(dtype=arrays["params"].dtype),
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
    estimator._train_state = state
    estimator.n_iter_ = meta["epochs_done"]
    estimator.t_ = state.step + 1
    estimator.history_ = meta["history"]
    return estimator


def check_resumable(meta: dict, estimator, model: LinearModel) -> None:
    """Refuse to resume a fit whose checkpoint was written for another model or data."""
    layout = _layout(model)
    problems = []
    if meta.get("estimator") != type(estimator).__name__:
        problems.append(f"it holds a {meta.get('estimator')}")
    if meta.get("layout") != layout:
        problems.append(f"its model is {meta.get('layout')}, this one {layout}")
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

"""What the estimators need for Dask input: the client, feature checks, lazy prediction."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from distributed import get_client

from dask_sgd._array import host_dtype, is_host, to_host


def current_client() -> Any:
    """The Dask client in use (``distributed.get_client()``), or a clear error."""

    try:
        return get_client()
    except ValueError:
        raise ValueError(
            "Training on Dask collections needs a distributed Client: create one first "
            "(client = distributed.Client(...)), or pass NumPy or pandas data to train in "
            "process."
        ) from None


def check_dask_features(estimator, n_features: int, names, *, reset: bool) -> None:
    """Record (``reset``) or check the number and names of features, as scikit-learn does."""
    string_names = names is not None and all(isinstance(n, str) for n in names)
    if reset:
        estimator.n_features_in_ = n_features
        if string_names:
            estimator.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    if n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None and string_names and list(fitted) != list(names):
        raise ValueError("The feature names should match those that were passed during fit.")


#: a fitted estimator whose arrays take more than this many bytes goes to the workers once,
#: scattered, instead of inside the task graph, which the scheduler receives whole: a
#: model of 2^20 hashed columns made a 12 MiB graph (Dask warns above 10 MB), one of 2^24
#: would make 190 MB
SCATTER_BYTES = 1 << 20

#: what prediction does not read: the training state holds θ again (and its optimizer's)
NOT_FOR_PREDICTION = ("_train_state",)


def predict_blocks(estimator, method: str, X, *, n_columns: int | None, dtype) -> Any:
    """``estimator.method`` applied block by block: a lazy Dask array.

    ``n_columns=None`` gives one value per row; otherwise ``n_columns`` values per row.
    Blocks may be SciPy sparse matrices (hashed features): each block is predicted as it
    is, and the predictions are dense. Blocks of device arrays (CuPy's) are copied to host
    first, and predicted there. A large model goes to the workers once, as a future
    that the lazy array holds (:data:`SCATTER_BYTES`).
    """
    names = getattr(estimator, "feature_names_in_", None)
    array = X.to_dask_array() if hasattr(X, "columns") else X
    if array.ndim != 2:
        raise ValueError(f"Expected 2D array, got {array.ndim}D array instead.")
    check_dask_features(estimator, array.shape[1], getattr(X, "columns", None), reset=False)
    array = array.rechunk({1: -1}) if len(array.chunks[1]) > 1 else array
    if not is_host(array._meta):  # device blocks (CuPy's): the fitted model is NumPy's
        array = array.map_blocks(to_host, meta=np.empty((0, 0), host_dtype(array.dtype)))
    fitted = _for_prediction(estimator)
    if n_columns is None:
        return array.map_blocks(
            _apply, fitted, method, names, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype)
        )
    return array.map_blocks(
        _apply,
        fitted,
        method,
        names,
        chunks=(array.chunks[0], (n_columns,)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype),
    )


def _for_prediction(estimator) -> Any:
    """A shallow copy of ``estimator`` without what prediction does not read; scattered
    (a future) if its arrays are large and a distributed client is running."""
    light = copy.copy(estimator)
    for name in NOT_FOR_PREDICTION:
        light.__dict__.pop(name, None)
    size = sum(v.nbytes for v in vars(light).values() if isinstance(v, np.ndarray))
    if size <= SCATTER_BYTES:
        return light
    try:
        client = get_client()
    except ValueError:  # another scheduler: the graph stays in this process
        return light
    return client.scatter(light, hash=False)


def _apply(block, estimator, method: str, names):
    """A fitted estimator's method on one block (named columns where it was fitted so)."""
    if names is not None:
        block = pd.DataFrame(block, columns=names)
    return getattr(estimator, method)(block)

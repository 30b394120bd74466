"""What the estimators need for Dask input: the client, feature checks, lazy prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from distributed import get_client


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


def predict_blocks(estimator, method: str, X, *, n_columns: int | None, dtype) -> Any:
    """``estimator.method`` applied block by block: a lazy Dask array.

    ``n_columns=None`` gives one value per row; otherwise ``n_columns`` values per row.
    """
    names = getattr(estimator, "feature_names_in_", None)
    array = X.to_dask_array() if hasattr(X, "columns") else X
    if array.ndim != 2:
        raise ValueError(f"Expected 2D array, got {array.ndim}D array instead.")
    check_dask_features(estimator, array.shape[1], getattr(X, "columns", None), reset=False)
    array = array.rechunk({1: -1}) if len(array.chunks[1]) > 1 else array
    apply = _BlockMethod(estimator, method, names)
    if n_columns is None:
        return array.map_blocks(apply, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype))
    return array.map_blocks(
        apply, chunks=(array.chunks[0], (n_columns,)), dtype=dtype, meta=np.empty((0, 0), dtype)
    )


class _BlockMethod:
    """Calls a fitted estimator's method on one block (named columns where it was fitted so)."""

    def __init__(self, estimator, method: str, names) -> None:
        self.estimator, self.method, self.names = estimator, method, names

    def __call__(self, block):
        if self.names is not None:
            block = pd.DataFrame(block, columns=self.names)
        return getattr(self.estimator, self.method)(block)

"""dask_sgd: distributed stochastic gradient descent on Dask, with scikit-learn's API."""

from __future__ import annotations

from dask_sgd.errors import TrainingFailed
from dask_sgd.estimators import MLPClassifier, MLPRegressor, SGDClassifier, SGDRegressor
from dask_sgd.estimators._checkpoint import load, save
from dask_sgd.progress import plot_history

__version__ = "0.1.0"

__all__ = [
    "MLPClassifier",
    "MLPRegressor",
    "SGDClassifier",
    "SGDRegressor",
    "TrainingFailed",
    "__version__",
    "load",
    "plot_history",
    "save",
]

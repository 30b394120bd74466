"""scikit-learn estimators trained by dask_sgd."""

from __future__ import annotations

from dask_sgd.estimators.classifier import SGDClassifier
from dask_sgd.estimators.mlp import MLPClassifier, MLPRegressor
from dask_sgd.estimators.regressor import SGDRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "SGDClassifier", "SGDRegressor"]

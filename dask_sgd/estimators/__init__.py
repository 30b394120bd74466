"""scikit-learn estimators trained by dask_sgd."""

from dask_sgd.estimators.classifier import SGDClassifier
from dask_sgd.estimators.regressor import SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor"]

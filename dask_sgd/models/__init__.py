"""Models on one flat parameter vector, and the objective that trains them.

A model family is one module here that subclasses :class:`Model` (see
:mod:`dask_sgd.models.base`); :class:`LinearModel` is the first, :class:`MLPModel`
(multilayer perceptrons) the second.
"""

from __future__ import annotations

from dask_sgd.models.base import MODEL_FAMILIES, Model, get_model_family, model_from_config
from dask_sgd.models.layout import Layout
from dask_sgd.models.linear import LinearModel, StandardizedLinearModel
from dask_sgd.models.mlp import MLPModel
from dask_sgd.models.objective import Objective

__all__ = [
    "MODEL_FAMILIES",
    "Layout",
    "LinearModel",
    "MLPModel",
    "Model",
    "Objective",
    "StandardizedLinearModel",
    "get_model_family",
    "model_from_config",
]

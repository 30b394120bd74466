"""Models on one flat parameter vector, and the objective that trains them."""

from __future__ import annotations

from dask_sgd.models.layout import Layout
from dask_sgd.models.linear import LinearModel
from dask_sgd.models.objective import Objective

__all__ = ["Layout", "LinearModel", "Objective"]

"""Linear models on a flat parameter vector: ``raw = X @ coef.T + intercept``.

One model serves every case: regression (one output), binary classification (one output),
one-vs-rest multiclass (one output per class, all classes at once) and multinomial softmax
(one output per class). ``X`` may be dense (NumPy or CuPy) or a SciPy sparse matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dask_sgd._array import get_namespace
from dask_sgd.models.base import Model
from dask_sgd.models.layout import Layout

Array = Any


@dataclass(frozen=True)
class LinearModel(Model):
    """``n_outputs`` linear functions of ``n_features`` inputs (the family ``"linear"``).

    Examples
    --------
    >>> import numpy as np
    >>> model = LinearModel(n_features=2, n_outputs=1)
    >>> theta = np.array([1.0, 2.0, 0.5])  # coef (1, 2), then intercept (1,)
    >>> model.raw(theta, np.array([[1.0, 1.0]]))
    array([[3.5]])
    """

    family = "linear"

    n_features: int
    n_outputs: int = 1
    fit_intercept: bool = True

    @cached_property
    def layout(self) -> Layout:
        return Layout.from_shapes(
            {"coef": (self.n_outputs, self.n_features), "intercept": (self.n_outputs,)}
        )

    @property
    def penalized(self) -> tuple[slice, ...]:
        return (self.layout.slice("coef"),)  # never the intercept, as scikit-learn

    def init_params(self, rng: Any = None, *, xp: Any = None, dtype: Any = "float64") -> Array:
        """All-zero parameters, as scikit-learn's SGD starts (``rng`` plays no part)."""
        xp = xp if xp is not None else get_namespace()
        return xp.zeros(self.layout.size, dtype=dtype)

    def forward(self, theta: Array, X: Array) -> tuple[Array, Array]:
        """Raw predictions, shape ``(n_samples, n_outputs)``; the backward pass needs ``X``."""
        coef = self.layout.view(theta, "coef")
        return X @ coef.T + self.layout.view(theta, "intercept"), X

    def backward(self, theta: Array, cache: Array, draw: Array) -> Array:
        """Chain rule: the flat gradient of ``sum(loss)`` given ``draw = dloss/draw``."""
        X = cache
        xp = get_namespace(theta)
        coef_grad = (X.T @ draw).T
        intercept_grad = draw.sum(axis=0)
        if not self.fit_intercept:
            intercept_grad = xp.zeros_like(intercept_grad)
        flat = xp.concatenate([xp.reshape(coef_grad, -1), intercept_grad])
        return flat.astype(theta.dtype, copy=False)

    def grad(self, theta: Array, X: Array, draw: Array) -> Array:
        """:meth:`backward` from ``X`` itself (a linear model's forward cache is ``X``)."""
        return self.backward(theta, X, draw)

    def config(self) -> dict[str, Any]:
        return {
            "n_features": int(self.n_features),
            "n_outputs": int(self.n_outputs),
            "fit_intercept": bool(self.fit_intercept),
        }

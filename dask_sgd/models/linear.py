"""Linear models on a flat parameter vector: ``raw = X @ coef.T + intercept``.

One model serves every case: regression (one output), binary classification (one output),
one-vs-rest multiclass (one output per class, all classes at once) and multinomial softmax
(one output per class). ``X`` may be dense (NumPy or CuPy) or a SciPy sparse matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from dask_sgd._array import astype, concat, get_namespace, like
from dask_sgd.models.base import Model
from dask_sgd.models.layout import Layout
from dask_sgd.models.products import raw_outputs, transposed_times

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
        return raw_outputs(X, coef, self.layout.view(theta, "intercept")), X

    def backward(self, theta: Array, cache: Array, draw: Array) -> Array:
        """Chain rule: the flat gradient of ``sum(loss)`` given ``draw = dloss/draw``."""
        X = cache
        xp = get_namespace(theta)
        coef_grad = transposed_times(X, draw)
        intercept_grad = xp.sum(draw, axis=0)
        if not self.fit_intercept:
            intercept_grad = xp.zeros_like(intercept_grad)
        return astype(concat(xp, [xp.reshape(coef_grad, (-1,)), intercept_grad]), theta.dtype)

    def grad(self, theta: Array, X: Array, draw: Array) -> Array:
        """:meth:`backward` from ``X`` itself (a linear model's forward cache is ``X``)."""
        return self.backward(theta, X, draw)

    def config(self) -> dict[str, Any]:
        return {
            "n_features": int(self.n_features),
            "n_outputs": int(self.n_outputs),
            "fit_intercept": bool(self.fit_intercept),
        }


@dataclass(frozen=True, eq=False)
class StandardizedLinearModel(LinearModel):
    """A linear model in standardized coordinates (the family ``"standardized-linear"``).

    θ holds the coefficients of ``x̃ = (x − mean) / std`` for the target
    ``ỹ = (y − target_center) / target_scale``: ``raw = x̃ @ coef.T + intercept``, computed as ``x @ (coef / std).T
    + intercept − (coef / std) @ mean`` so that no block is ever copied (one matrix product
    per minibatch, as :class:`LinearModel`'s, and O(n_features) more). The penalty is meant
    in the original units, ``P(target_scale · coef / std) / target_scale²``, so that the
    objective is scikit-learn's whatever the columns' scales (see :mod:`dask_sgd.standardize`).

    Examples
    --------
    >>> import numpy as np
    >>> model = StandardizedLinearModel(1, mean=[10.0], std=[2.0])
    >>> model.raw(np.array([3.0, 0.5]), np.array([[12.0]]))  # 3 · (12 − 10) / 2 + 0.5
    array([[3.5]])
    """

    family = "standardized-linear"

    mean: Any = ()
    std: Any = ()
    target_center: float = 0.0
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            values = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if values.shape != (self.n_features,):
                raise ValueError(
                    f"{name} has {values.size} entries for {self.n_features} features."
                )
            object.__setattr__(self, name, values)
        # mean, std and the penalty's factor in each namespace and dtype used
        object.__setattr__(self, "_as", {})

    def _constants_like(self, theta: Array) -> tuple[Array, Array, Array]:
        """``(mean, std, penalty factor)`` in θ's namespace, dtype and device."""
        key = (type(theta), theta.dtype, getattr(theta, "device", None))
        if key not in self._as:
            factor = np.tile(self.target_scale / self.std, self.n_outputs)
            self._as[key] = tuple(
                like(v, theta, theta.dtype) for v in (self.mean, self.std, factor)
            )
        return self._as[key]

    def _effective(self, theta: Array) -> tuple[Array, Array]:
        """``(coef / std, intercept in x's units)`` in θ's namespace and dtype."""
        mean, std, _ = self._constants_like(theta)
        coef = self.layout.view(theta, "coef") / std
        return coef, self.layout.view(theta, "intercept") - coef @ mean

    def forward(self, theta: Array, X: Array) -> tuple[Array, Array]:
        coef, intercept = self._effective(theta)
        return raw_outputs(X, coef, intercept), X

    def backward(self, theta: Array, cache: Array, draw: Array) -> Array:
        xp = get_namespace(theta)
        mean, std, _ = self._constants_like(theta)
        per_output = xp.sum(draw, axis=0)
        coef_grad = (transposed_times(cache, draw) - per_output[:, None] * mean) / std
        if not self.fit_intercept:
            per_output = xp.zeros_like(per_output)
        return astype(concat(xp, [xp.reshape(coef_grad, (-1,)), per_output]), theta.dtype)

    def penalty_map(self, where: slice, theta: Array) -> tuple[Any, float]:
        return self._constants_like(theta)[2], 1.0 / self.target_scale**2

    def to_original(self, theta: Array) -> Array:
        """θ of the :class:`LinearModel` in the data's units that predicts as this one."""
        coef = self.layout.view(theta, "coef") * (self.target_scale / self.std)
        intercept = (
            self.target_center + self.target_scale * self.layout.view(theta, "intercept")
        ) - coef @ self.mean
        return np.concatenate([coef.reshape(-1), intercept])

    def from_original(self, theta: Array) -> Array:
        """The inverse of :meth:`to_original`.

        Examples
        --------
        >>> model = StandardizedLinearModel(
        ...     1, mean=[5.0], std=[2.0], target_center=3.0, target_scale=4.0
        ... )
        >>> model.to_original(model.from_original(np.array([1.5, 0.5])))
        array([1.5, 0.5])
        """
        theta = np.asarray(theta, dtype=np.float64)
        coef = self.layout.view(theta, "coef")
        intercept = (
            self.layout.view(theta, "intercept") - self.target_center + coef @ self.mean
        ) / self.target_scale
        return np.concatenate([(coef * (self.std / self.target_scale)).reshape(-1), intercept])

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "target_center": float(self.target_center),
            "target_scale": float(self.target_scale),
        }

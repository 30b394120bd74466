"""Multilayer perceptrons on a flat parameter vector (the family ``"mlp"``).

scikit-learn's network: fully connected hidden layers with one activation, and a linear
output layer whose raw outputs the loss turns into probabilities (the logistic or softmax
of log-loss) or takes as they are (squared error). θ holds the layers in order, each
layer's weights ``(fan_in, fan_out)`` then its biases, so that a layer is one contiguous
slice: shards split θ by layers' slices, and a unit can push the last layer's gradient
while it computes the first layers'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np

from dask_sgd._array import astype, get_namespace
from dask_sgd.models.base import Model
from dask_sgd.models.layout import Layout

Array = Any

#: scikit-learn's hidden activations
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


def activate(name: str, z: Array) -> Array:
    """The activation ``name`` of ``z`` (``z`` itself for the identity)."""
    xp = get_namespace(z)
    if name == "relu":
        return xp.maximum(z, 0)
    if name == "tanh":
        return xp.tanh(z)
    if name == "logistic":  # σ(z) through tanh: no overflow for any z
        return 0.5 * (1 + xp.tanh(0.5 * z))
    return z


def derivative_from_output(name: str, a: Array) -> Array:
    """The activation's derivative at ``z``, from its output ``a`` (what the forward pass
    keeps), as scikit-learn computes it."""
    xp = get_namespace(a)
    if name == "relu":
        return astype(a > 0, a.dtype)
    if name == "tanh":
        return 1 - a * a
    if name == "logistic":
        return a * (1 - a)
    return xp.ones_like(a)


@dataclass(frozen=True)
class MLPModel(Model):
    """Fully connected layers ``n_features → hidden_layer_sizes… → n_outputs``.

    Examples
    --------
    >>> import numpy as np
    >>> model = MLPModel(n_features=2, hidden_layer_sizes=(3,), n_outputs=1)
    >>> model.layout.size  # 2·3 + 3, then 3·1 + 1
    13
    >>> theta = model.init_params(0)
    >>> model.raw(theta, np.ones((4, 2))).shape
    (4, 1)
    """

    family = "mlp"

    n_features: int
    hidden_layer_sizes: tuple[int, ...] = (100,)
    n_outputs: int = 1
    activation: str = "relu"

    def __post_init__(self) -> None:
        sizes = tuple(int(size) for size in self.hidden_layer_sizes)
        if any(size <= 0 for size in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"The activation '{self.activation}' is not supported. Supported activations "
                f"are {list(ACTIVATIONS)}."
            )
        object.__setattr__(self, "hidden_layer_sizes", sizes)

    @cached_property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden_layer_sizes, self.n_outputs)

    @property
    def n_layers(self) -> int:
        """The layers, input and output included (scikit-learn's ``n_layers_``)."""
        return len(self.layer_sizes)

    @cached_property
    def layout(self) -> Layout:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(pairwise(self.layer_sizes)):
            shapes[f"coef_{i}"] = (fan_in, fan_out)
            shapes[f"intercept_{i}"] = (fan_out,)
        return Layout.from_shapes(shapes)

    @property
    def penalized(self) -> tuple[slice, ...]:
        """The weights of every layer; never a bias (scikit-learn's ``alpha``)."""
        return tuple(self.layout.slice(f"coef_{i}") for i in range(self.n_layers - 1))

    def coefs(self, theta: Array) -> list[Array]:
        """Each layer's weights, ``(fan_in, fan_out)`` views of θ (``coefs_``)."""
        return [self.layout.view(theta, f"coef_{i}") for i in range(self.n_layers - 1)]

    def intercepts(self, theta: Array) -> list[Array]:
        """Each layer's biases, views of θ (``intercepts_``)."""
        return [self.layout.view(theta, f"intercept_{i}") for i in range(self.n_layers - 1)]

    def init_params(self, rng: Any = None, *, xp: Any = None, dtype: Any = "float64") -> Array:
        """Glorot's uniform start, as scikit-learn's: each layer's weights, then its biases,
        from U(−b, b) with ``b = sqrt(6 / (fan_in + fan_out))`` (2, not 6, for the logistic
        activation). ``rng``: a seed, a :class:`numpy.random.RandomState` (a seed makes one,
        as scikit-learn's ``random_state``: the same start as its own) or a Generator."""
        if rng is None or isinstance(rng, (int, np.integer)):
            rng = np.random.RandomState(rng)
        factor = 2.0 if self.activation == "logistic" else 6.0
        pieces = []
        for fan_in, fan_out in pairwise(self.layer_sizes):
            bound = np.sqrt(factor / (fan_in + fan_out))
            pieces.append(rng.uniform(-bound, bound, (fan_in, fan_out)).reshape(-1))
            pieces.append(rng.uniform(-bound, bound, fan_out))
        xp = xp if xp is not None else get_namespace()
        return xp.asarray(np.concatenate(pieces), dtype=dtype)

    def forward(self, theta: Array, X: Array) -> tuple[Array, list[Array]]:
        """Raw outputs ``(n_samples, n_outputs)``, and every layer's input (what the
        backward pass needs: ``X``, then each hidden layer's activations)."""
        inputs = [X]
        coefs, intercepts = self.coefs(theta), self.intercepts(theta)
        for i, (coef, intercept) in enumerate(zip(coefs, intercepts, strict=True)):
            z = inputs[-1] @ coef
            z += intercept
            if i == len(coefs) - 1:
                return z, inputs
            inputs.append(activate(self.activation, z))
        raise AssertionError("unreachable: a network has an output layer")

    @cached_property
    def layer_slices(self) -> tuple[tuple[slice, slice], ...]:
        """Each layer's ``(weights, biases)`` slices of θ, input layer first."""
        layout = self.layout
        return tuple(
            (layout.slice(f"coef_{i}"), layout.slice(f"intercept_{i}"))
            for i in range(self.n_layers - 1)
        )

    def backward(self, theta: Array, cache: list[Array], draw: Array) -> Array:
        """Backpropagation: the flat gradient of ``sum(loss)`` given ``draw = dloss/draw``,
        layer by layer from the output, in θ's dtype."""
        grad, pieces = self.backward_pieces(theta, cache, draw)
        for _ in pieces:
            pass
        return grad

    def backward_pieces(
        self, theta: Array, cache: list[Array], draw: Array
    ) -> tuple[Array, Iterator[slice]]:
        """:meth:`backward` a layer at a time, from the output: each layer's slice of θ
        (its weights, then its biases) is yielded as soon as its gradient is final, before
        the layers below it are computed."""
        grad = get_namespace(theta).empty_like(theta)
        return grad, self._backpropagate(theta, cache, draw, grad)

    def _backpropagate(self, theta, inputs: list[Array], delta: Array, grad) -> Iterator[slice]:
        xp = get_namespace(theta)
        coefs = self.coefs(theta)
        for i in range(len(coefs) - 1, -1, -1):
            weights, biases = self.layer_slices[i]
            grad[biases] = xp.sum(delta, axis=0)
            grad[weights] = xp.reshape(inputs[i].T @ delta, (-1,))  # X may be SciPy sparse
            yield slice(weights.start, biases.stop)
            if i:
                delta = delta @ coefs[i].T
                delta *= derivative_from_output(self.activation, inputs[i])

    def config(self) -> dict[str, Any]:
        return {
            "n_features": int(self.n_features),
            "hidden_layer_sizes": [int(size) for size in self.hidden_layer_sizes],
            "n_outputs": int(self.n_outputs),
            "activation": str(self.activation),
        }

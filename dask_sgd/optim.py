"""Optimizers as pairs of pure functions, in the style of optax.

A :class:`GradientTransformation` has two pure methods, ``init(params) -> state`` and
``update(grads, state, params) -> (direction, state)``, and holds nothing but its
hyperparameters. State is a tuple of arrays shaped like
the parameters (plus scalar counters), so a parameter-server shard can hold the state of its
own slice and a checkpoint can save it. :func:`chain` composes transformations.

Unlike optax, the transformations return a *direction* and the caller applies the learning
rate: ``θ ← θ − η_t · d_t`` (:func:`apply_updates`). The learning rate then lives in one place,
where the schedule, warmup, the linear scaling rule and scikit-learn's "adaptive" reduction
act on it, and a shard can scale it (by staleness, say) without touching the optimizer.

Every transformation here is elementwise (``elementwise=True``): a shard can update its own
slice without seeing the others. A transformation that needs the whole vector (clipping by
the global norm) says ``elementwise=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from dask_sgd._array import astype, get_namespace, like

Array = Any
State = Any


class GradientTransformation:
    """A pure optimizer: ``init(params) -> state``; ``update(g, state, params) -> (d, state)``.

    Subclasses are frozen dataclasses holding only their hyperparameters, so that they
    compare, clone and pickle by value (an estimator keeps one as a parameter, and Dask ships
    one to every worker).
    """

    #: Whether a shard can apply the update to its own slice of the parameters.
    elementwise: ClassVar[bool] = True
    #: Whether the direction is the gradient divided by its own running size (Adagrad,
    #: RMSProp, Adam): a larger batch then calls for the square-root scaling rule.
    normalizes: ClassVar[bool] = False

    def init(self, params: Array) -> State:
        raise NotImplementedError

    def update(self, g: Array, state: State, params: Array | None = None) -> tuple[Array, State]:
        raise NotImplementedError

    def zero_gradient_decay(self) -> Any:
        """The factor by which each state leaf is multiplied in a step whose input is zero,
        as a tree shaped as the state (None for scalar leaves such as Adam's count).

        Lazily updated sparse parameters (:class:`dask_sgd.sparse.lazy.LazyParams`) catch an
        entry untouched for ``k`` steps up with ``factor ** k``. A transformation whose
        state does not simply decay under a zero input does not define it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not say how its state evolves under a zero gradient."
        )

    def penalty_scaling(self, state: State) -> Array | None:
        """Each entry's factor on its gradient, where it stays the same while the entry's
        gradient is zero (Adagrad's ``1 / (√G + eps)``); None where there is none
        (plain SGD's factor is 1) or where it changes under zero gradients (Adam, RMSProp).

        Lazily regularized sparse parameters pass the L2 shrink through this factor, so
        that the penalty weighs on each entry as its loss gradient does
        (:class:`dask_sgd.sparse.lazy.LazyParams`).
        """
        return None


class TraceState(NamedTuple):
    momentum: Array


class AdagradState(NamedTuple):
    sum_of_squares: Array


class RMSState(NamedTuple):
    mean_square: Array


class AdamState(NamedTuple):
    count: Array
    mu: Array
    nu: Array


@dataclass(frozen=True)
class Identity(GradientTransformation):
    """Plain SGD: the direction is the gradient."""

    def init(self, params):
        return ()

    def update(self, g, state, params=None):
        return g, state

    def zero_gradient_decay(self):
        return ()


@dataclass(frozen=True)
class Trace(GradientTransformation):
    """Heavy-ball momentum ``m ← decay·m + g`` (PyTorch's convention); Nesterov if asked."""

    decay: float = 0.9
    nesterov: bool = False

    def init(self, params):
        return TraceState(get_namespace(params).zeros_like(params))

    def update(self, g, state, params=None):
        momentum = self.decay * state.momentum + g
        direction = g + self.decay * momentum if self.nesterov else momentum
        return direction, TraceState(momentum)

    def zero_gradient_decay(self):
        return TraceState(self.decay)


@dataclass(frozen=True)
class ScaleByAdagrad(GradientTransformation):
    """Adagrad: ``G ← G + g²``, direction ``g / (√G + eps)``."""

    normalizes: ClassVar[bool] = True
    eps: float = 1e-10

    def init(self, params):
        return AdagradState(get_namespace(params).zeros_like(params))

    def update(self, g, state, params=None):
        xp = get_namespace(g)
        sum_of_squares = state.sum_of_squares + g * g
        return g / (xp.sqrt(sum_of_squares) + self.eps), AdagradState(sum_of_squares)

    def zero_gradient_decay(self):
        return AdagradState(1.0)

    def penalty_scaling(self, state):
        return 1.0 / (get_namespace(state.sum_of_squares).sqrt(state.sum_of_squares) + self.eps)


@dataclass(frozen=True)
class ScaleByRMS(GradientTransformation):
    """RMSProp: ``v ← decay·v + (1 − decay)·g²``, direction ``g / (√v + eps)``."""

    normalizes: ClassVar[bool] = True
    decay: float = 0.9
    eps: float = 1e-8

    def init(self, params):
        return RMSState(get_namespace(params).zeros_like(params))

    def update(self, g, state, params=None):
        xp = get_namespace(g)
        mean_square = self.decay * state.mean_square + (1 - self.decay) * g * g
        return g / (xp.sqrt(mean_square) + self.eps), RMSState(mean_square)

    def zero_gradient_decay(self):
        return RMSState(self.decay)


@dataclass(frozen=True)
class ScaleByAdam(GradientTransformation):
    """Adam with bias correction: direction ``m̂ / (√v̂ + eps)``."""

    normalizes: ClassVar[bool] = True
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def init(self, params):
        xp = get_namespace(params)
        count = like(np.zeros((), np.int64), params)  # on θ's device
        return AdamState(count, xp.zeros_like(params), xp.zeros_like(params))

    def update(self, g, state, params=None):
        xp = get_namespace(g)
        count = state.count + 1
        # the arithmetic of the textbook formulas, in their order, on fresh arrays updated in
        # place (half the temporaries: a network's step spent a quarter of its time here)
        mu = (1 - self.b1) * g
        mu += self.b1 * state.mu
        nu = (1 - self.b2) * g
        nu *= g
        nu += self.b2 * state.nu
        # the bias corrections computed in float64, then in g's dtype: float32 stays float32
        # (no float64 temporaries)
        steps = astype(xp.asarray(count), xp.float64)
        denominator = xp.sqrt(nu / astype(1 - self.b2**steps, g.dtype))
        denominator += self.eps
        direction = mu / astype(1 - self.b1**steps, g.dtype)
        direction /= denominator
        return direction, AdamState(count, mu, nu)

    def zero_gradient_decay(self):
        return AdamState(None, self.b1, self.b2)


@dataclass(frozen=True)
class Chain(GradientTransformation):
    """Apply ``transformations`` in order; the state is the tuple of their states."""

    transformations: tuple[GradientTransformation, ...]

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return all(t.elementwise for t in self.transformations)

    @property
    def normalizes(self) -> bool:  # type: ignore[override]
        return any(t.normalizes for t in self.transformations)

    def init(self, params):
        return tuple(t.init(params) for t in self.transformations)

    def update(self, g, state, params=None):
        new_state = []
        for t, s in zip(self.transformations, state, strict=True):
            g, s = t.update(g, s, params)
            new_state.append(s)
        return g, tuple(new_state)

    def zero_gradient_decay(self):
        # lazily, an untouched entry's direction counts as zero: so is the next one's input
        return tuple(t.zero_gradient_decay() for t in self.transformations)


def identity() -> GradientTransformation:
    return Identity()


def trace(decay: float = 0.9, nesterov: bool = False) -> GradientTransformation:
    return Trace(decay, nesterov)


def scale_by_adagrad(eps: float = 1e-10) -> GradientTransformation:
    return ScaleByAdagrad(eps)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8) -> GradientTransformation:
    return ScaleByRMS(decay, eps)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    return ScaleByAdam(b1, b2, eps)


def chain(*transformations: GradientTransformation) -> GradientTransformation:
    """Compose ``transformations``: the direction of one is the input of the next."""
    return Chain(tuple(transformations))


def apply_updates(params: Array, direction: Array, learning_rate: float) -> Array:
    """``params − learning_rate · direction``, in the parameters' dtype."""
    return params - astype(learning_rate * direction, params.dtype)


def sgd() -> GradientTransformation:
    return identity()


def momentum(decay: float = 0.9) -> GradientTransformation:
    return trace(decay)


def nesterov(decay: float = 0.9) -> GradientTransformation:
    return trace(decay, nesterov=True)


def adagrad(eps: float = 1e-10) -> GradientTransformation:
    return scale_by_adagrad(eps)


def rmsprop(decay: float = 0.9, eps: float = 1e-8) -> GradientTransformation:
    return scale_by_rms(decay, eps)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    return scale_by_adam(b1, b2, eps)


OPTIMIZERS: dict[str, Callable[[], GradientTransformation]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}


def get_optimizer(spec: str | GradientTransformation) -> GradientTransformation:
    """An optimizer from its name (with default settings) or as given.

    Examples
    --------
    >>> get_optimizer("adam").elementwise
    True
    """
    if isinstance(spec, GradientTransformation):
        return spec
    if spec not in OPTIMIZERS:
        raise ValueError(
            f"The optimizer {spec!r} is not supported; choose from {sorted(OPTIMIZERS)}."
        )
    return OPTIMIZERS[spec]()

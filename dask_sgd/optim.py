"""Optimizers as pairs of pure functions, in the style of optax.

A :class:`GradientTransformation` is ``init(params) -> state`` and
``update(grads, state, params) -> (direction, state)``. State is a tuple of arrays shaped like
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
from typing import Any, NamedTuple

from dask_sgd._array import get_namespace

Array = Any
State = Any


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(params) -> state``; ``update(g, state, params) -> (d, state)``."""

    init: Callable[[Array], State]
    update: Callable[[Array, State, Array | None], tuple[Array, State]]
    elementwise: bool = True


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


def identity() -> GradientTransformation:
    """Plain SGD: the direction is the gradient."""
    return GradientTransformation(lambda params: (), lambda g, state, params=None: (g, state))


def trace(decay: float = 0.9, nesterov: bool = False) -> GradientTransformation:
    """Heavy-ball momentum ``m ← decay·m + g`` (PyTorch's convention); Nesterov if asked."""

    def init(params):
        return TraceState(get_namespace(params).zeros_like(params))

    def update(g, state, params=None):
        momentum = decay * state.momentum + g
        direction = g + decay * momentum if nesterov else momentum
        return direction, TraceState(momentum)

    return GradientTransformation(init, update)


def scale_by_adagrad(eps: float = 1e-10) -> GradientTransformation:
    """Adagrad: ``G ← G + g²``, direction ``g / (√G + eps)``."""

    def init(params):
        return AdagradState(get_namespace(params).zeros_like(params))

    def update(g, state, params=None):
        xp = get_namespace(g)
        sum_of_squares = state.sum_of_squares + g * g
        return g / (xp.sqrt(sum_of_squares) + eps), AdagradState(sum_of_squares)

    return GradientTransformation(init, update)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8) -> GradientTransformation:
    """RMSProp: ``v ← decay·v + (1 − decay)·g²``, direction ``g / (√v + eps)``."""

    def init(params):
        return RMSState(get_namespace(params).zeros_like(params))

    def update(g, state, params=None):
        xp = get_namespace(g)
        mean_square = decay * state.mean_square + (1 - decay) * g * g
        return g / (xp.sqrt(mean_square) + eps), RMSState(mean_square)

    return GradientTransformation(init, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam with bias correction: direction ``m̂ / (√v̂ + eps)``."""

    def init(params):
        xp = get_namespace(params)
        zeros = xp.zeros_like(params)
        return AdamState(xp.zeros((), dtype=xp.int64), zeros, zeros)

    def update(g, state, params=None):
        xp = get_namespace(g)
        count = state.count + 1
        mu = b1 * state.mu + (1 - b1) * g
        nu = b2 * state.nu + (1 - b2) * g * g
        mu_hat = mu / (1 - b1**count)
        nu_hat = nu / (1 - b2**count)
        return (mu_hat / (xp.sqrt(nu_hat) + eps)).astype(g.dtype), AdamState(count, mu, nu)

    return GradientTransformation(init, update)


def chain(*transformations: GradientTransformation) -> GradientTransformation:
    """Apply ``transformations`` in order; the state is the tuple of their states."""

    def init(params):
        return tuple(t.init(params) for t in transformations)

    def update(g, state, params=None):
        new_state = []
        for t, s in zip(transformations, state, strict=True):
            g, s = t.update(g, s, params)
            new_state.append(s)
        return g, tuple(new_state)

    return GradientTransformation(init, update, all(t.elementwise for t in transformations))


def apply_updates(params: Array, direction: Array, learning_rate: float) -> Array:
    """``params − learning_rate · direction``, in the parameters' dtype."""
    return params - (learning_rate * direction).astype(params.dtype, copy=False)


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
        raise ValueError(f"The optimizer {spec!r} is not supported; choose from {sorted(OPTIMIZERS)}.")
    return OPTIMIZERS[spec]()

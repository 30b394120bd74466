"""Losses as pairs ``loss(y, raw)`` and ``dloss(y, raw)``, after scikit-learn's ``_sgd_fast``.

``raw`` is the model's raw prediction (``X @ coef.T + intercept``) and ``dloss`` is the
derivative of the loss with respect to it; the model applies the chain rule. Both work
elementwise on arrays of shape ``(n_samples, n_outputs)`` in the arrays' own namespace
(NumPy, CuPy, any array API namespace). Classification losses take targets in {-1, +1}, one
column per class (one-vs-rest); the multinomial loss takes one-hot targets and returns one
value per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dask_sgd._array import get_namespace

Array = Any


@dataclass(frozen=True)
class Loss:
    """Base class: subclasses define ``loss`` and ``dloss`` on raw predictions."""

    #: Whether ``loss`` returns one value per row instead of one per element.
    rowwise: ClassVar[bool] = False
    #: Whether ``|dloss|`` is bounded whatever ``raw`` is, so that it needs no clipping.
    bounded_dloss: ClassVar[bool] = False

    def loss(self, y: Array, raw: Array) -> Array:
        raise NotImplementedError

    def dloss(self, y: Array, raw: Array) -> Array:
        raise NotImplementedError

    def loss_sum_and_dloss(self, y: Array, raw: Array) -> tuple[Array, Array]:
        """``(loss(y, raw).sum(), dloss(y, raw))``; a loss may share work between them."""
        return get_namespace(raw).sum(self.loss(y, raw)), self.dloss(y, raw)


@dataclass(frozen=True)
class Hinge(Loss):
    """``max(0, threshold - y * raw)``; ``threshold=0`` is the perceptron loss."""

    bounded_dloss: ClassVar[bool] = True
    threshold: float = 1.0

    def loss(self, y, raw):
        xp = get_namespace(raw)
        return xp.maximum(self.threshold - y * raw, 0)

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        return xp.where(y * raw <= self.threshold, -y, 0.0)


@dataclass(frozen=True)
class SquaredHinge(Loss):
    """``max(0, threshold - y * raw) ** 2``."""

    threshold: float = 1.0

    def loss(self, y, raw):
        xp = get_namespace(raw)
        return xp.maximum(self.threshold - y * raw, 0) ** 2

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        return -2 * y * xp.maximum(self.threshold - y * raw, 0)


@dataclass(frozen=True)
class LogLoss(Loss):
    """Binary logistic loss ``log(1 + exp(-y * raw))``, computed without overflow."""

    bounded_dloss: ClassVar[bool] = True

    def loss(self, y, raw):
        xp = get_namespace(raw)
        return xp.logaddexp(0, -y * raw)

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        # -y * sigmoid(-y * raw), written with tanh so that it cannot overflow.
        return -y * 0.5 * (1 - xp.tanh(0.5 * y * raw))

    def loss_sum_and_dloss(self, y, raw):
        """Both from one exponential, ``e = exp(-|z|)`` with ``z = y * raw`` (about half the
        time of :meth:`loss` and :meth:`dloss` apart): ``loss = log1p(e) + max(-z, 0)``, and
        ``sigmoid(-z)`` is ``e / (1 + e)`` for ``z >= 0``, else ``1 / (1 + e)``."""
        xp = get_namespace(raw)
        z = y * raw
        e = xp.exp(-xp.abs(z))
        loss_sum = xp.sum(xp.log1p(e)) + xp.sum(xp.maximum(-z, 0))
        sigmoid = xp.where(z >= 0, e, 1.0)
        sigmoid /= 1 + e
        return loss_sum, -y * sigmoid


@dataclass(frozen=True)
class ModifiedHuber(Loss):
    """Quadratically smoothed hinge: ``max(0, 1 - z) ** 2`` for ``z >= -1``, else ``-4 z``."""

    bounded_dloss: ClassVar[bool] = True

    def loss(self, y, raw):
        xp = get_namespace(raw)
        z = y * raw
        return xp.where(z >= -1, xp.maximum(1 - z, 0) ** 2, -4 * z)

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        z = y * raw
        return xp.where(z >= -1, -2 * y * xp.maximum(1 - z, 0), -4 * y)


@dataclass(frozen=True)
class MultinomialLogLoss(Loss):
    """Softmax cross-entropy on one-hot targets; one loss value per row."""

    rowwise: ClassVar[bool] = True
    bounded_dloss: ClassVar[bool] = True

    def loss(self, y, raw):
        return -get_namespace(raw).sum(y * log_softmax(raw), axis=1)

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        return xp.exp(log_softmax(raw)) - y

    def loss_sum_and_dloss(self, y, raw):
        """Both from one log-softmax."""
        xp = get_namespace(raw)
        log_p = log_softmax(raw)
        return -xp.sum(y * log_p), xp.exp(log_p) - y


@dataclass(frozen=True)
class SquaredError(Loss):
    """``0.5 * (raw - y) ** 2``."""

    def loss(self, y, raw):
        return 0.5 * (raw - y) ** 2

    def dloss(self, y, raw):
        return raw - y


@dataclass(frozen=True)
class Huber(Loss):
    """Squared error within ``epsilon`` of the target, linear beyond it."""

    bounded_dloss: ClassVar[bool] = True

    epsilon: float = 0.1

    def loss(self, y, raw):
        xp = get_namespace(raw)
        r = xp.abs(raw - y)
        c = self.epsilon
        return xp.where(r <= c, 0.5 * r**2, c * r - 0.5 * c**2)

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        return xp.clip(raw - y, -self.epsilon, self.epsilon)


@dataclass(frozen=True)
class EpsilonInsensitive(Loss):
    """``max(0, |y - raw| - epsilon)``, the loss of linear support vector regression."""

    bounded_dloss: ClassVar[bool] = True

    epsilon: float = 0.1

    def loss(self, y, raw):
        xp = get_namespace(raw)
        return xp.maximum(xp.abs(y - raw) - self.epsilon, 0)

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        r = raw - y
        return xp.where(xp.abs(r) > self.epsilon, xp.sign(r), 0.0)


@dataclass(frozen=True)
class SquaredEpsilonInsensitive(Loss):
    """``max(0, |y - raw| - epsilon) ** 2``."""

    epsilon: float = 0.1

    def loss(self, y, raw):
        xp = get_namespace(raw)
        return xp.maximum(xp.abs(y - raw) - self.epsilon, 0) ** 2

    def dloss(self, y, raw):
        xp = get_namespace(raw)
        r = raw - y
        return 2 * xp.sign(r) * xp.maximum(xp.abs(r) - self.epsilon, 0)


def log_softmax(raw: Array) -> Array:
    """Row-wise log-softmax, shifted by the row maximum so that it cannot overflow."""
    xp = get_namespace(raw)
    shifted = raw - xp.max(raw, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


#: scikit-learn's loss names; a classifier may also use the regression losses.
CLASSIFICATION_LOSSES = (
    "hinge",
    "log_loss",
    "modified_huber",
    "squared_hinge",
    "perceptron",
    "squared_error",
    "huber",
    "epsilon_insensitive",
    "squared_epsilon_insensitive",
)
REGRESSION_LOSSES = (
    "squared_error",
    "huber",
    "epsilon_insensitive",
    "squared_epsilon_insensitive",
)


def get_loss(name: str, *, epsilon: float = 0.1, multinomial: bool = False) -> Loss:
    """Build a loss from scikit-learn's name for it.

    ``multinomial`` selects softmax cross-entropy for ``"log_loss"`` with several classes.

    Examples
    --------
    >>> get_loss("huber", epsilon=1.35)
    Huber(epsilon=1.35)
    """
    if name == "log_loss":
        return MultinomialLogLoss() if multinomial else LogLoss()
    losses = {
        "hinge": lambda: Hinge(1.0),
        "perceptron": lambda: Hinge(0.0),
        "squared_hinge": lambda: SquaredHinge(1.0),
        "modified_huber": ModifiedHuber,
        "squared_error": SquaredError,
        "huber": lambda: Huber(epsilon),
        "epsilon_insensitive": lambda: EpsilonInsensitive(epsilon),
        "squared_epsilon_insensitive": lambda: SquaredEpsilonInsensitive(epsilon),
    }
    if name not in losses:
        raise ValueError(f"The loss {name!r} is not supported.")
    return losses[name]()

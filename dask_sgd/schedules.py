"""Learning-rate schedules: functions of the step (the number of updates already applied).

scikit-learn's four (``constant``, ``optimal``, ``invscaling``, ``adaptive``) and the two
pieces of large-batch training (Goyal et al. 2017): the linear scaling rule and gradual
warmup. Step ``t`` here is scikit-learn's ``t_ - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dask_sgd.losses import Loss

#: A schedule is any function of the step. The ones below are frozen dataclasses, so that
#: they print, compare and pickle by value.
Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Constant:
    eta0: float

    def __call__(self, step: int) -> float:
        return self.eta0


@dataclass(frozen=True)
class InverseScaling:
    eta0: float
    power_t: float
    time_scale: float = 1.0

    def __call__(self, step: int) -> float:
        return self.eta0 / (step * self.time_scale + 1) ** self.power_t


@dataclass(frozen=True)
class Optimal:
    alpha: float
    t0: float

    def __call__(self, step: int) -> float:
        return 1.0 / (self.alpha * (self.t0 + step))


@dataclass(frozen=True)
class Scaled:
    schedule: Schedule
    factor: float

    def __call__(self, step: int) -> float:
        return self.factor * self.schedule(step)


@dataclass(frozen=True)
class Warmup:
    schedule: Schedule
    warmup_steps: int
    start_factor: float
    start_step: int = 0

    def __call__(self, step: int) -> float:
        progress = min(max(step - self.start_step, 0) / self.warmup_steps, 1.0)
        return (self.start_factor + (1 - self.start_factor) * progress) * self.schedule(step)


def constant(eta0: float) -> Schedule:
    """``η_t = eta0``.

    Examples
    --------
    >>> constant(0.1)(1000)
    0.1
    """
    return Constant(eta0)


def adaptive(eta0: float) -> Schedule:
    """scikit-learn's "adaptive": ``eta0`` while the loss keeps decreasing.

    As a function of the step it is constant; the division by 5 after ``n_iter_no_change``
    epochs without improvement depends on the losses, so the training loop applies it
    (see :class:`dask_sgd.engine.loop.ConvergenceMonitor`).
    """
    return constant(eta0)


def invscaling(eta0: float, power_t: float, *, time_scale: float = 1.0) -> Schedule:
    """``η_t = eta0 / (t · time_scale + 1) ** power_t``: ``time_scale`` is the samples a step
    counts for where time is counted in samples (scikit-learn's MLP: its batch size).

    Examples
    --------
    >>> invscaling(1.0, 0.5)(3)
    0.5
    >>> invscaling(1.0, 0.5, time_scale=4)(2)  # 8 samples seen
    0.3333333333333333
    """
    return InverseScaling(eta0, power_t, time_scale)


def optimal(alpha: float, t0: float) -> Schedule:
    """Bottou's ``η_t = 1 / (alpha · (t0 + t))``; see :func:`optimal_t0` for scikit-learn's t0."""
    return Optimal(alpha, t0)


def optimal_t0(alpha: float, loss: Loss) -> float:
    """scikit-learn's heuristic offset for the "optimal" schedule (Léon Bottou's sgd code).

    It picks ``t0`` so that the first step is about the size of a typical weight,
    ``1 / sqrt(sqrt(alpha))``.
    """
    typical_weight = math.sqrt(1.0 / math.sqrt(alpha))
    gradient = float(loss.dloss(1.0, -typical_weight))
    initial_eta = typical_weight / max(1.0, gradient)
    return 1.0 / (initial_eta * alpha)


def scaled(schedule: Schedule, factor: float) -> Schedule:
    """``factor · schedule(t)``."""
    if factor == 1:
        return schedule
    return Scaled(schedule, factor)


def linear_scaling_factor(effective_batch: int, reference_batch: int) -> float:
    """The linear scaling rule: the learning rate grows with the effective batch.

    ``k`` workers with minibatches of ``B`` rows make an effective batch of ``k·B``; a
    learning rate tuned for ``reference_batch`` rows is multiplied by this factor.

    Examples
    --------
    >>> linear_scaling_factor(4 * 256, 256)
    4.0
    """
    return effective_batch / reference_batch


def batch_scaling_factor(effective_batch: int, reference_batch: int, *, normalized: bool) -> float:
    """The learning rate's factor for a larger batch: the linear rule for SGD (Goyal et al.
    2017), the square-root rule for optimizers that divide by the gradient's running size,
    such as Adam (Malladi et al. 2022): their steps do not grow with the gradient, only its
    noise falls.

    Examples
    --------
    >>> batch_scaling_factor(4 * 256, 256, normalized=False)
    4.0
    >>> batch_scaling_factor(4 * 256, 256, normalized=True)
    2.0
    """
    factor = linear_scaling_factor(effective_batch, reference_batch)
    return math.sqrt(factor) if normalized else factor


def warmup(
    schedule: Schedule, warmup_steps: int, start_factor: float, start_step: int = 0
) -> Schedule:
    """Gradual warmup: the factor on ``schedule`` moves linearly from ``start_factor`` (up
    to step ``start_step``) to 1 (``warmup_steps`` later).

    With the linear scaling rule (``scaled(s, k)`` and ``start_factor=1/k``) this ramps the
    learning rate from the single-worker value to ``k`` times it over ``warmup_steps``.

    Examples
    --------
    >>> s = warmup(constant(4.0), warmup_steps=4, start_factor=0.25)
    >>> [s(t) for t in range(6)]
    [1.0, 1.75, 2.5, 3.25, 4.0, 4.0]
    """
    if warmup_steps <= 0 or start_factor == 1:
        return schedule
    return Warmup(schedule, warmup_steps, start_factor, start_step)


def get_schedule(
    learning_rate: str, *, eta0: float, power_t: float, alpha: float, loss: Loss
) -> Schedule:
    """Build a schedule from scikit-learn's ``learning_rate`` and its parameters."""
    if learning_rate == "optimal":
        return optimal(alpha, optimal_t0(alpha, loss))
    if learning_rate == "invscaling":
        return invscaling(eta0, power_t)
    if learning_rate == "adaptive":
        return adaptive(eta0)
    if learning_rate == "constant":
        return constant(eta0)
    raise ValueError(f"The learning rate schedule {learning_rate!r} is not supported.")

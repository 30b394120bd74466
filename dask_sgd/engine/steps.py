"""The unit of gradient work: minibatch steps on the rows of one block.

The in-process path runs it over the whole data set; a Dask worker runs the same function on
the blocks it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any

import numpy as np
import scipy.sparse as sp

from dask_sgd._array import get_namespace
from dask_sgd.errors import NonFiniteParameters
from dask_sgd.models import LinearModel, Objective
from dask_sgd.optim import GradientTransformation, apply_updates
from dask_sgd.sparse.gradient import param_indices, sparse_loss_and_grad, touched_columns
from dask_sgd.sparse.lazy import LazyParams

Array = Any


@dataclass(frozen=True)
class TrainState:
    """Everything training carries from one step to the next.

    ``average`` is the running mean of the parameters for averaged SGD (ASGD), taken over
    the updates from sample number ``average_start`` on; ``n_averaged`` counts them.
    """

    params: Array
    opt_state: Any
    step: int = 0
    samples: int = 0
    average: Array | None = None
    n_averaged: int = 0

    @classmethod
    def create(
        cls, params: Array, optimizer: GradientTransformation, *, averaged: bool
    ) -> TrainState:
        average = get_namespace(params).zeros_like(params) if averaged else None
        return cls(params, optimizer.init(params), average=average)

    @property
    def final_params(self) -> Array:
        """The averaged parameters once averaging has begun, else the current ones."""
        return self.average if self.n_averaged else self.params


def refuse_unusable_gradient(grad: Array, step: int, partition: int | None = None) -> None:
    """Raise :class:`NonFiniteParameters` unless ``grad`` and its squared norm are finite.

    A finite gradient whose square overflows (rows of size 1e200, say) is refused too:
    Adam, RMSProp and Adagrad square it into their state, which becomes infinite, and then
    stop moving the parameters without an error (a model of zeros).
    """
    xp = get_namespace(grad)
    if bool(xp.isfinite(grad @ grad)):
        return
    what = "gradient norm" if bool(xp.all(xp.isfinite(grad))) else "gradient"
    raise NonFiniteParameters(step, what, partition)


def run_minibatches(
    state: TrainState,
    batches: Iterable[tuple[Array, Array, Array | None]],
    objective: Objective,
    optimizer: GradientTransformation,
    learning_rate: Callable[[int], float],
    average_start: int = 0,
    *,
    sparse_intercept_rate: float = 1.0,
) -> tuple[TrainState, float, int]:
    """Apply one optimizer step per minibatch ``(X, y, sample_weight)``.

    Returns the new state, the objective summed over the rows of each minibatch before its
    update (see :meth:`Objective.loss_and_grad`), and the number of rows seen.
    ``average_start > 0`` turns on averaging from that sample on: a step whose rows reach
    it is the first averaged one. Raises :class:`NonFiniteParameters` before a step with a
    non-finite gradient or result.

    SciPy sparse minibatches of a :class:`LinearModel` take :class:`LazySteps`: steps that
    cost the entries they touch, the penalty applied lazily, and the intercepts' rate
    multiplied by ``sparse_intercept_rate``; everything else takes :class:`DenseSteps`.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return state, 0.0, 0
    if sp.issparse(first[0]) and type(objective.model) is LinearModel:
        steps = LazySteps(state, objective, optimizer, sparse_intercept_rate)
    else:
        steps = DenseSteps(state, objective, optimizer)
    step, samples = state.step, state.samples
    averaged = state.average is not None
    loss_sum, rows = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for X, y, sample_weight in chain([first], batches):
            n_rows = X.shape[0]
            loss_sum += steps.step(
                X, y, sample_weight, learning_rate(step), step,
                averaged and samples + n_rows >= average_start,
            )  # fmt: skip
            step += 1
            samples += n_rows
            rows += n_rows
    params, opt_state, average, n_averaged = steps.result()
    new_state = replace(
        state, params=params, opt_state=opt_state, step=step, samples=samples,
        average=average, n_averaged=n_averaged,
    )  # fmt: skip
    return new_state, float(loss_sum), rows


class DenseSteps:
    """Steps on the whole parameter vector, in the array's own namespace; the running
    average updated after every averaged step."""

    def __init__(self, state: TrainState, objective: Objective, optimizer: GradientTransformation):
        self.objective, self.optimizer = objective, optimizer
        self.params, self.opt_state = state.params, state.opt_state
        self.average, self.n_averaged = state.average, state.n_averaged
        self.xp = get_namespace(state.params)

    def step(self, X, y, sample_weight, lr: float, step: int, averaged: bool) -> float:
        """One step; the minibatch's summed objective before it."""
        batch_loss, grad = self.objective.loss_and_grad(self.params, X, y, sample_weight)
        refuse_unusable_gradient(grad, step)
        direction, self.opt_state = self.optimizer.update(grad, self.opt_state, self.params)
        self.params = apply_updates(self.params, direction, lr)
        if not bool(self.xp.all(self.xp.isfinite(self.params))):
            raise NonFiniteParameters(step)
        if averaged:
            self.n_averaged += 1
            self.average = self.average + (self.params - self.average) / self.n_averaged
        return batch_loss

    def result(self) -> tuple[Array, Any, Array | None, int]:
        return self.params, self.opt_state, self.average, self.n_averaged


class LazySteps:
    """Steps on CSR minibatches of a :class:`LinearModel`, each in O(entries it touches)
    (:class:`~dask_sgd.sparse.lazy.LazyParams`).

    The penalty is applied as scikit-learn applies it on sparse input: the L2 part shrinks
    every coefficient (one scale factor), the L1 part truncates the touched coefficients
    cumulatively; the optimizer sees the loss's gradient only, and an entry's state catches
    up as under zero gradients when it is next touched. The pending L1 truncation of every
    coefficient is applied at the end (the dense state then carries it all). The loss
    summed is the loss plus the penalty at the parameters before each step, as the dense
    steps'. O(size) twice per call of :func:`run_minibatches`: to build the lazy state and
    to make it dense again.
    """

    def __init__(
        self,
        state: TrainState,
        objective: Objective,
        optimizer: GradientTransformation,
        intercept_rate: float = 1.0,
    ):
        self.objective, self.state = objective, state
        penalty = objective.penalty
        l1 = penalty.alpha * penalty.l1_ratio
        (penalized,) = objective.model.penalized
        self.lazy = LazyParams(
            state.params, optimizer, l2=penalty.alpha - l1, l1=l1, penalized=penalized,
            unpenalized_rate=intercept_rate, opt_state=state.opt_state, step=state.step,
        )  # fmt: skip
        if state.average is not None and state.n_averaged:
            self.lazy.start_averaging(state.average, state.n_averaged)

    def step(self, X, y, sample_weight, lr: float, step: int, averaged: bool) -> float:
        """One step; the minibatch's summed objective (loss and penalty) before it."""
        lazy = self.lazy
        indices = param_indices(self.objective.model, touched_columns(X))
        values = lazy.values(indices)
        batch_loss, grad = sparse_loss_and_grad(
            self.objective, values, indices, X, y, sample_weight
        )
        refuse_unusable_gradient(grad.values, step)
        batch_loss += X.shape[0] * lazy.penalty_value()
        if averaged and not lazy.averaging:
            lazy.start_averaging()  # this step is the first averaged one
        lazy.apply(grad.indices, grad.values, lr)
        if not lazy.finite(grad.indices):
            raise NonFiniteParameters(step)
        return batch_loss

    def result(self) -> tuple[Array, Any, Array | None, int]:
        self.lazy.flush_l1()
        params, opt_state, average, n_averaged = self.lazy.dense()
        return params, opt_state, self.state.average if average is None else average, n_averaged

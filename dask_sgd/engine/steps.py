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
    ``average_start > 0`` turns on averaging from that sample on. Raises
    :class:`NonFiniteParameters` before a step with a non-finite gradient or result.

    SciPy sparse minibatches of a :class:`LinearModel` take :func:`run_sparse_minibatches`:
    steps that cost the entries they touch, the penalty applied lazily, and the intercepts'
    rate multiplied by ``sparse_intercept_rate``.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return state, 0.0, 0
    batches = chain([first], batches)
    if sp.issparse(first[0]) and type(objective.model) is LinearModel:
        return run_sparse_minibatches(
            state, batches, objective, optimizer, learning_rate, average_start,
            intercept_rate=sparse_intercept_rate,
        )  # fmt: skip
    params, opt_state = state.params, state.opt_state
    step, samples = state.step, state.samples
    average, n_averaged = state.average, state.n_averaged
    xp = get_namespace(params)
    loss_sum, rows = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for X, y, sample_weight in batches:
            batch_loss, grad = objective.loss_and_grad(params, X, y, sample_weight)
            refuse_unusable_gradient(grad, step)
            direction, opt_state = optimizer.update(grad, opt_state, params)
            params = apply_updates(params, direction, learning_rate(step))
            if not bool(xp.isfinite(params).all()):
                raise NonFiniteParameters(step)
            step += 1
            samples += X.shape[0]
            loss_sum += batch_loss
            rows += X.shape[0]
            if average is not None and samples >= average_start:
                n_averaged += 1
                average = average + (params - average) / n_averaged
    new_state = replace(
        state,
        params=params,
        opt_state=opt_state,
        step=step,
        samples=samples,
        average=average,
        n_averaged=n_averaged,
    )
    return new_state, float(loss_sum), rows


def run_sparse_minibatches(
    state: TrainState,
    batches: Iterable[tuple[Array, Array, Array | None]],
    objective: Objective,
    optimizer: GradientTransformation,
    learning_rate: Callable[[int], float],
    average_start: int = 0,
    *,
    intercept_rate: float = 1.0,
) -> tuple[TrainState, float, int]:
    """:func:`run_minibatches` on CSR minibatches of a :class:`LinearModel`, each step in
    O(entries it touches) (:class:`~dask_sgd.sparse.lazy.LazyParams`).

    The penalty is applied as scikit-learn applies it on sparse input: the L2 part shrinks
    every coefficient (one scale factor), the L1 part truncates the touched coefficients
    cumulatively; the optimizer sees the loss's gradient only, and an entry's state catches
    up as under zero gradients when it is next touched. The pending L1 truncation of every
    coefficient is applied at the end (the dense state then carries it all). The loss
    summed is the loss plus the penalty at the parameters before each step, as the dense
    path's. O(size) twice per call, to build and to materialize the state.
    """
    model = objective.model
    penalty = objective.penalty
    l1 = penalty.alpha * penalty.l1_ratio
    (penalized,) = model.penalized
    lazy = LazyParams(
        state.params, optimizer, l2=penalty.alpha - l1, l1=l1, penalized=penalized,
        unpenalized_rate=intercept_rate, opt_state=state.opt_state, step=state.step,
    )  # fmt: skip
    step, samples = state.step, state.samples
    if state.average is not None and state.n_averaged:
        lazy.start_averaging(state.average, state.n_averaged)
    loss_sum, rows = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for X, y, sample_weight in batches:
            n_rows = X.shape[0]
            indices = param_indices(model, touched_columns(X))
            values = lazy.values(indices)
            batch_loss, grad = sparse_loss_and_grad(objective, values, indices, X, y, sample_weight)
            refuse_unusable_gradient(grad.values, step)
            batch_loss += n_rows * lazy.penalty_value()
            if (
                state.average is not None
                and not lazy.averaging
                and samples + n_rows >= average_start
            ):
                lazy.start_averaging()  # this step is the first averaged one
            lazy.apply(grad.indices, grad.values, learning_rate(step))
            if not bool(np.isfinite(lazy.values(grad.indices)).all()):
                raise NonFiniteParameters(step)
            step += 1
            samples += n_rows
            loss_sum += batch_loss
            rows += n_rows
    lazy.flush_l1()
    params, opt_state, average, n_averaged = lazy.dense()
    new_state = replace(
        state,
        params=params,
        opt_state=opt_state,
        step=step,
        samples=samples,
        average=state.average if average is None else average,
        n_averaged=n_averaged,
    )
    return new_state, float(loss_sum), rows

"""The training objective: mean weighted loss of a model plus a penalty on its weights.

It knows a model only through the protocol of :class:`dask_sgd.models.base.Model`: one
forward pass and one backward pass per minibatch, and the slices the penalty applies to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import reduce
from operator import add
from typing import Any

from dask_sgd._array import get_namespace
from dask_sgd.losses import Loss
from dask_sgd.models.base import Model
from dask_sgd.penalties import Penalty

Array = Any

#: scikit-learn clips the loss derivative to this size, which keeps a diverging squared loss
#: (squared hinge with the "optimal" schedule, for one) finite.
MAX_DLOSS = 1e12


@dataclass(frozen=True)
class Objective:
    """``(1/n) Σ_i w_i L(y_i, f_θ(x_i)) + penalty(θ[model.penalized])`` on a minibatch.

    This is the unit of gradient work: a worker calls :meth:`loss_and_grad` on minibatches
    of its own blocks; the in-process path calls it on minibatches of the whole data. Both
    go through :meth:`loss_and_grad_pieces` (a synchronous unit calls it directly), the
    method a variant overrides.
    """

    model: Model
    loss: Loss
    penalty: Penalty
    #: rescale a gradient whose Euclidean norm exceeds this (keyword-only: subclasses may
    #: add positional fields)
    clip_norm: float | None = field(default=None, kw_only=True)
    #: divide a weighted minibatch's loss by its weights' sum, as scikit-learn's networks do,
    #: not by its rows, as its SGD estimators do
    weighted_mean: bool = field(default=False, kw_only=True)

    def loss_and_grad(
        self, theta: Array, X: Array, y: Array, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        """Return ``(Σ_i (L_i + penalty), gradient of the objective)`` on a minibatch.

        The first value is scikit-learn's per-epoch convergence measure summed over the
        rows: unweighted losses plus the penalty, at the parameters before the update (with
        ``weighted_mean``, the weighted mean loss times the rows, as scikit-learn's networks
        measure it). The gradient is that of the weighted mean loss plus the penalty.
        """
        summed, grad, pieces = self.loss_and_grad_pieces(theta, X, y, sample_weight)
        for _ in pieces:
            pass
        return summed, grad

    def loss_and_grad_pieces(
        self, theta: Array, X: Array, y: Array, sample_weight: Array | None = None
    ) -> tuple[Array, Array, Iterator[slice]]:
        """:meth:`loss_and_grad` in the order the backward pass finishes θ's entries
        (:meth:`Model.backward_pieces`): ``(summed, grad, pieces)``, where iterating
        ``pieces`` fills ``grad`` and yields each slice of θ whose entries are then final.
        With ``clip_norm`` the gradient is final only as a whole (its norm decides): one
        piece, at the end."""
        raw, cache = self.model.forward(theta, X)
        loss_sum, draw = self.loss.loss_sum_and_dloss(y, raw)
        if self.weighted_mean and sample_weight is not None:
            loss_sum = X.shape[0] * self._weighted_mean_loss(y, raw, sample_weight)
        if not self.loss.bounded_dloss:
            draw = get_namespace(draw).clip(draw, -MAX_DLOSS, MAX_DLOSS)
        if sample_weight is not None:
            draw = draw * sample_weight[:, None]
        n_rows = X.shape[0]
        grad, pieces = self.model.backward_pieces(theta, cache, draw)
        summed = loss_sum + n_rows * self._penalty_value(theta)
        denominator = self._denominator(n_rows, sample_weight)
        return summed, grad, self._finished(theta, grad, pieces, denominator)

    def _finished(self, theta: Array, grad: Array, pieces, denominator) -> Iterator[slice]:
        """The model's pieces of ``grad`` made the objective's: divided by ``denominator``,
        the penalty's gradient added, and (``clip_norm``) the whole clipped."""
        for piece in pieces:
            grad[piece] /= denominator
            for where in self.model.penalized:
                if where.stop <= piece.start or piece.stop <= where.start:
                    continue
                if where.start < piece.start or piece.stop < where.stop:
                    raise ValueError(f"The model's gradient piece {piece} splits {where}.")
                factor, weight = self.model.penalty_map(where, theta)
                if weight == 1 and isinstance(factor, float) and factor == 1:
                    grad[where] += self.penalty.grad(theta[where])
                else:  # the chain rule through the map to the penalty's units
                    grad[where] += (weight * factor) * self.penalty.grad(factor * theta[where])
            if self.clip_norm is None:
                yield piece
        if self.clip_norm is not None:
            norm = float(get_namespace(grad).sum(grad * grad)) ** 0.5
            # a NaN or infinite norm passes unclipped: the caller refuses the gradient
            if self.clip_norm < norm < float("inf"):
                grad *= self.clip_norm / norm
            yield slice(0, grad.shape[0])

    def value(self, theta: Array, X: Array, y: Array, sample_weight: Array | None = None) -> float:
        """The objective itself (weighted mean loss plus penalty), for tests and reports."""
        raw = self.model.forward(theta, X)[0]
        return float(self._weighted_mean_loss(y, raw, sample_weight) + self._penalty_value(theta))

    def _weighted_mean_loss(self, y: Array, raw: Array, sample_weight: Array | None) -> Any:
        xp = get_namespace(raw)
        per_row = self.loss.loss(y, raw)
        if not self.loss.rowwise:
            per_row = xp.sum(per_row, axis=1)
        if sample_weight is not None:
            per_row = per_row * sample_weight
        return xp.sum(per_row) / self._denominator(per_row.shape[0], sample_weight)

    def _denominator(self, n_rows: int, sample_weight: Array | None) -> Any:
        """What the summed (weighted) loss of a minibatch is divided by: its rows, or with
        ``weighted_mean`` its weights' sum."""
        if self.weighted_mean and sample_weight is not None:
            return get_namespace(sample_weight).sum(sample_weight)
        return n_rows

    def _penalty_value(self, theta: Array) -> Any:
        """The penalty, summed over the penalised slices (exactly the one value for one)."""
        values = []
        for where in self.model.penalized:
            factor, weight = self.model.penalty_map(where, theta)
            values.append(weight * self.penalty.value(factor * theta[where]))
        return reduce(add, values) if values else 0.0

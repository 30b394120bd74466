"""The training objective: mean weighted loss of a model plus a penalty on its coefficients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dask_sgd.losses import Loss
from dask_sgd.models.linear import LinearModel
from dask_sgd.penalties import Penalty

Array = Any

#: scikit-learn clips the loss derivative to this size, which keeps a diverging squared loss
#: (squared hinge with the "optimal" schedule, for one) finite.
MAX_DLOSS = 1e12


@dataclass(frozen=True)
class Objective:
    """``(1/n) Σ_i w_i L(y_i, f_θ(x_i)) + penalty(coef)`` on a minibatch.

    This is the unit of gradient work: a worker calls :meth:`loss_and_grad` on minibatches
    of its own blocks; the in-process path calls it on minibatches of the whole data.
    """

    model: LinearModel
    loss: Loss
    penalty: Penalty
    #: rescale a gradient whose Euclidean norm exceeds this (keyword-only: subclasses may
    #: add positional fields)
    clip_norm: float | None = field(default=None, kw_only=True)

    def loss_and_grad(
        self, theta: Array, X: Array, y: Array, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        """Return ``(Σ_i (L_i + penalty), gradient of the objective)`` on a minibatch.

        The first value is scikit-learn's per-epoch convergence measure summed over the
        rows: unweighted losses plus the penalty, at the parameters before the update. The
        gradient is that of the weighted mean loss plus the penalty.
        """
        raw = self.model.raw(theta, X)
        loss_sum, draw = self.loss.loss_sum_and_dloss(y, raw)
        if not self.loss.bounded_dloss:
            draw = draw.clip(-MAX_DLOSS, MAX_DLOSS)
        if sample_weight is not None:
            draw = draw * sample_weight[:, None]
        n_rows = X.shape[0]
        grad = self.model.grad(theta, X, draw)
        grad /= n_rows
        where = self.model.layout.slice("coef")
        grad[where] += self.penalty.grad(theta[where])
        summed = loss_sum + n_rows * self.penalty.value(theta[where])
        if self.clip_norm is not None:
            norm = float((grad * grad).sum()) ** 0.5
            if norm > self.clip_norm:  # a NaN norm passes: the caller refuses the gradient
                grad = grad * (self.clip_norm / norm)
        return summed, grad

    def value(self, theta: Array, X: Array, y: Array, sample_weight: Array | None = None) -> float:
        """The objective itself (weighted mean loss plus penalty), for tests and reports."""
        per_row = self.loss.loss(y, self.model.raw(theta, X))
        if not self.loss.rowwise:
            per_row = per_row.sum(axis=1)
        if sample_weight is not None:
            per_row = per_row * sample_weight
        coef = theta[self.model.layout.slice("coef")]
        return float(per_row.mean() + self.penalty.value(coef))

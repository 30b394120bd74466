"""What a fit on sparse input tells its shards and units: the penalty, applied lazily.

On sparse input the penalty is not part of a minibatch's gradient (that would touch every
coefficient at every step): each holder of parameters, a shard for its slice of θ or a
local-SGD unit for the entries its round touches, applies it lazily
(:class:`~dask_sgd.sparse.lazy.LazyParams`). This says how, for a slice or a set of entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dask_sgd.models import LinearModel, Objective
from dask_sgd.sparse.lazy import SPARSE_INTERCEPT_RATE, LazyParams


@dataclass(frozen=True)
class SparseSetup:
    """The lazily applied penalty of a linear model on sparse input: the L2 and L1 weights,
    θ's entries it applies to (the coefficients: those before ``penalized_stop``), and the
    factor on the other entries' (the intercepts') learning rate."""

    l2: float
    l1: float
    penalized_stop: int
    unpenalized_rate: float = SPARSE_INTERCEPT_RATE

    @classmethod
    def of(cls, objective: Objective) -> SparseSetup | None:
        """The setup of ``objective``'s model and penalty on sparse input (a plain
        :class:`LinearModel`). None for any other model: a network's gradient is dense
        whatever its input (every hidden weight moves each step), so it trains on sparse
        rows with the dense exchange, its first layer multiplying the CSR rows."""
        model = objective.model
        if type(model) is not LinearModel:
            return None
        (coef,) = model.penalized
        penalty = objective.penalty
        l1 = penalty.alpha * penalty.l1_ratio
        return cls(penalty.alpha - l1, l1, coef.stop)

    def for_slice(self, params: Any, optimizer: Any, where: slice, **state: Any) -> LazyParams:
        """The lazily regularized parameters of θ's slice ``where`` (a shard's)."""
        penalized = slice(0, max(0, min(where.stop, self.penalized_stop) - where.start))
        return self._lazy(params, optimizer, penalized, **state)

    def at(self, indices: np.ndarray, values: Any, optimizer: Any, **state: Any) -> LazyParams:
        """The lazily regularized parameters of θ's entries at ``indices`` (sorted): a
        local-SGD unit's working set for a round."""
        return self._lazy(values, optimizer, slice(0, self.penalized_count(indices)), **state)

    def penalized_count(self, indices: np.ndarray) -> int:
        """How many of θ's entries at ``indices`` (sorted) the penalty applies to: a prefix."""
        return int(np.searchsorted(indices, self.penalized_stop))

    def decay(self, learning_rate: float) -> float:
        """The factor of one step's L2 shrink on the penalized entries."""
        return 1.0 - learning_rate * self.l2

    def _lazy(self, params, optimizer, penalized: slice, **state) -> LazyParams:
        return LazyParams(
            params,
            optimizer,
            l2=self.l2,
            l1=self.l1,
            penalized=penalized,
            unpenalized_rate=self.unpenalized_rate,
            **state,
        )

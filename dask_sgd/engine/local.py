"""In-process training: minibatches of in-memory data, one pass per epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

Array = Any


def iterate_minibatches(
    X: Array,
    y: Array,
    sample_weight: Array | None,
    batch_size: int,
    rng: np.random.Generator | None,
) -> Iterator[tuple[Array, Array, Array | None]]:
    """Yield ``(X, y, sample_weight)`` minibatches covering every row once.

    With ``rng`` the rows are visited in a fresh random order (each minibatch is a copy of
    ``batch_size`` rows); without it, in order, as slices.
    """
    n_samples = X.shape[0]
    order = rng.permutation(n_samples) if rng is not None else None
    for start in range(0, n_samples, batch_size):
        rows = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        weight = None if sample_weight is None else sample_weight[rows]
        yield X[rows], y[rows], weight

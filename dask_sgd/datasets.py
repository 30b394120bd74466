"""Synthetic data generated on the Dask workers, block by block (never on the client)."""

from __future__ import annotations

import dask.array as da
import numpy as np


def make_linear_classification(
    n_samples: int,
    n_features: int,
    *,
    chunk_rows: int = 100_000,
    flip_y: float = 0.05,
    random_state: int = 0,
    dtype=np.float64,
) -> tuple[da.Array, da.Array]:
    """A binary problem with a linear boundary, as lazy Dask arrays.

    Rows are standard normal; ``y = [x · w + noise > 0]`` for one random ``w``; a share
    ``flip_y`` of the labels is then drawn at random. Each block is generated where it is
    computed, from its own seed, so the data never passes through the client.

    Examples
    --------
    >>> X, y = make_linear_classification(1000, 5, chunk_rows=300)
    >>> X.shape, X.chunks[0], y.dtype
    ((1000, 5), (300, 300, 300, 100), dtype('int64'))
    """
    weights = np.random.default_rng(random_state).standard_normal(n_features)
    rows = tuple(min(chunk_rows, n_samples - start) for start in range(0, n_samples, chunk_rows))
    seeds = da.from_array(np.arange(len(rows)) + random_state * 1_000_003, chunks=1)

    def block(seed_block, block_info=None):
        """X with y as its last column: one generated block serves both."""
        n_rows = rows[block_info[0]["chunk-location"][0]]
        rng = np.random.default_rng(int(seed_block[0]))
        X = rng.standard_normal((n_rows, n_features))
        y = (X @ weights + 0.5 * rng.standard_normal(n_rows) > 0).astype(np.float64)
        flip = rng.random(n_rows) < flip_y
        y[flip] = rng.integers(0, 2, flip.sum())
        return np.column_stack([X, y]).astype(dtype)

    Xy = da.map_blocks(
        block,
        seeds,
        new_axis=1,
        chunks=(rows, (n_features + 1,)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype),
    )
    return Xy[:, :-1], Xy[:, -1].astype(np.int64)

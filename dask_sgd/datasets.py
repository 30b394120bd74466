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

    def draw(rng, n_rows):
        X = rng.standard_normal((n_rows, n_features))
        y = (X @ weights + 0.5 * rng.standard_normal(n_rows) > 0).astype(np.float64)
        return X, y

    return _generate_blocks(draw, n_samples, n_features, chunk_rows, random_state, 0, flip_y, dtype)


def make_classification_blocks(
    n_samples: int,
    n_features: int = 100,
    *,
    n_informative: int = 50,
    n_redundant: int = 2,
    flip_y: float = 0.05,
    class_sep: float = 1.0,
    chunk_rows: int = 100_000,
    random_state: int = 0,
    first_block: int = 0,
    dtype=np.float64,
) -> tuple[da.Array, da.Array]:
    """scikit-learn's ``make_classification`` (two classes of two clusters each), generated
    block by block on the workers, at any size.

    The problem (cluster centres on hypercube vertices, each cluster's covariance, the
    redundant features' mixing and the order of the columns) is drawn once from
    ``random_state``; each block draws its rows from its own seed, numbered from
    ``first_block`` (give held-out rows their own range). The same distribution as
    ``make_classification``, not the same rows: a row's cluster is drawn, not dealt out.

    Examples
    --------
    >>> X, y = make_classification_blocks(1000, 10, n_informative=4, chunk_rows=400)
    >>> X.shape, X.chunks[0], sorted(set(y.compute().tolist()))
    ((1000, 10), (400, 400, 200), [0, 1])
    """
    rng = np.random.default_rng(random_state)
    n_clusters = 4  # two per class
    centroids = (2 * rng.integers(0, 2, (n_clusters, n_informative)) - 1) * class_sep
    covariances = 2 * rng.random((n_clusters, n_informative, n_informative)) - 1
    mixing = 2 * rng.random((n_informative, n_redundant)) - 1
    columns = rng.permutation(n_features)
    n_useless = n_features - n_informative - n_redundant

    def draw(rng, n_rows):
        cluster = rng.integers(0, n_clusters, n_rows)
        informative = rng.standard_normal((n_rows, n_informative))
        for k in range(n_clusters):
            mine = cluster == k
            informative[mine] = informative[mine] @ covariances[k] + centroids[k]
        X = np.hstack(
            [informative, informative @ mixing, rng.standard_normal((n_rows, n_useless))]
        )[:, columns]
        return X, (cluster % 2).astype(np.float64)

    return _generate_blocks(
        draw, n_samples, n_features, chunk_rows, random_state, first_block, flip_y, dtype
    )


def _generate_blocks(
    draw,
    n_samples,
    n_features,
    chunk_rows,
    random_state,
    first_block,
    flip_y,
    dtype,
    target_dtype=np.int64,
):
    """Lazy ``(X, y)`` whose blocks ``draw(rng, n_rows) -> (X, y)`` makes where they are
    computed, each from its own seed; a share ``flip_y`` of the (binary) labels is then
    redrawn. ``target_dtype`` is the targets' type: integer labels, or float for regression."""
    rows = tuple(min(chunk_rows, n_samples - start) for start in range(0, n_samples, chunk_rows))
    seeds = da.from_array(
        np.arange(first_block, first_block + len(rows)) + random_state * 1_000_003, chunks=1
    )

    def block(seed_block, block_info=None):
        """X with y as its last column, row-major: one generated block serves both."""
        n_rows = rows[block_info[0]["chunk-location"][0]]
        rng = np.random.default_rng(int(seed_block[0]))
        X, y = draw(rng, n_rows)
        if flip_y:
            flip = rng.random(n_rows) < flip_y
            y[flip] = rng.integers(0, 2, flip.sum())
        return np.ascontiguousarray(np.column_stack([X, y]), dtype=dtype)

    Xy = da.map_blocks(
        block,
        seeds,
        new_axis=1,
        chunks=(rows, (n_features + 1,)),
        dtype=dtype,
        meta=np.empty((0, 0), dtype),
    )
    return Xy[:, :-1], Xy[:, -1].astype(target_dtype)

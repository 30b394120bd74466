"""Synthetic data generated on the Dask workers, block by block (never on the client)."""

from __future__ import annotations

import functools

import dask
import dask.array as da
import numpy as np
import scipy.sparse


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


#: W2 sparse-ctr (``BENCHMARKS.md``): 13 numeric and 26 categorical fields per row
CTR_NUMERIC, CTR_CATEGORICAL = 13, 26
#: the share of positive labels that the bias is set for
CTR_POSITIVE_RATE = 0.295
_ZIPF_EXPONENT = 1.1
_COLUMN_SALT, _WEIGHT_SALT = 0x9E3779B97F4A7C15, 0xD1B54A32D192ED03


def make_ctr_blocks(
    n_samples: int,
    n_features: int = 2**20,
    *,
    chunk_size: int = 100_000,
    random_state: int = 0,
    first_block: int = 0,
    return_proba: bool = False,
):
    """Hashed click-through-like rows (workload W2 of ``BENCHMARKS.md``): lazy Dask arrays
    whose blocks are float32 ``scipy.sparse.csr_matrix``, generated on the workers.

    Each row has 13 numeric fields, ``log1p`` of Poisson counts whose means are log-normal,
    standardized with the generator's own mean and deviation (columns 0 to 12), and 26
    categorical fields: field ``f`` has ``V_f`` values, ``V_f`` log-uniform in [10, 10^6], and
    each row draws one from a Zipf law (exponent 1.1) truncated to ``V_f``; the pair (field,
    value) is hashed to one of the other ``n_features - 13`` columns with value 1 (values of
    two pairs that collide in a row add up). About 39 non-zeros per row.

    The label is ``y ~ Bernoulli(σ(b + Σ w))``: a weight per (field, value) from N(0, 0.5²),
    made from a hash of (field, value, ``random_state``) where it is needed (no table of
    weights), numeric weights from N(0, 0.3²), and the bias ``b`` set for 29.5 % positives.
    The true model lives in (field, value) space, so hash collisions are part of the noise.

    The problem (vocabularies, count laws, numeric weights, bias) is drawn from
    ``random_state`` alone; block ``i`` draws its rows from its own seed, numbered from
    ``first_block``: held-out rows from the same true model are another call with a
    ``first_block`` that no training block reaches. With ``return_proba``, the true
    probabilities come third: the mean log-loss of ``y`` under them is the Bayes log-loss.

    Examples
    --------
    >>> from sklearn.metrics import log_loss
    >>> X, y, p = make_ctr_blocks(3000, 2**16, chunk_size=1000, return_proba=True)
    >>> X.shape, X.chunks[0], type(X.blocks[0].compute()).__name__, X.dtype
    ((3000, 65536), (1000, 1000, 1000), 'csr_matrix', dtype('float32'))
    >>> X_test, y_test = make_ctr_blocks(1000, 2**16, chunk_size=1000, first_block=1_000)
    >>> y, p = y.compute(), p.compute()
    >>> bool(0.2 < y.mean() < 0.35), bool(log_loss(y, p) < log_loss(y, [y.mean()] * len(y)))
    (True, True)
    """
    if n_features <= CTR_NUMERIC:
        raise ValueError(f"n_features must exceed {CTR_NUMERIC}, got {n_features}.")
    model = _ctr_model(random_state)
    rows = [min(chunk_size, n_samples - start) for start in range(0, n_samples, chunk_size)]
    meta = scipy.sparse.csr_matrix((0, n_features), dtype=np.float32)
    parts: tuple[list, list, list] = ([], [], [])
    for index, n_rows in enumerate(rows):
        block = dask.delayed(_ctr_block, pure=True)(
            model, random_state, first_block + index, n_rows, n_features
        )
        parts[0].append(da.from_delayed(block[0], (n_rows, n_features), meta=meta))
        parts[1].append(da.from_delayed(block[1], (n_rows,), dtype=np.int64))
        parts[2].append(da.from_delayed(block[2], (n_rows,), dtype=np.float64))
    X, y, proba = (da.concatenate(part) for part in parts)
    return (X, y, proba) if return_proba else (X, y)


@functools.lru_cache(maxsize=8)
def _ctr_model(random_state: int) -> dict:
    """The true model of :func:`make_ctr_blocks` for one seed: a few dozen numbers. The
    numeric fields' mean and deviation, and the bias, come from 20,000 rows drawn here from
    a seed of their own (the same for every call, so every block agrees)."""
    rng = np.random.default_rng([random_state, 0])
    model = {
        "log_mean": rng.uniform(-1.0, 4.0, CTR_NUMERIC),
        "log_sigma": rng.uniform(0.5, 1.5, CTR_NUMERIC),
        "vocabulary": np.round(10 ** rng.uniform(1.0, 6.0, CTR_CATEGORICAL)).astype(np.int64),
        "numeric_weights": rng.normal(0.0, 0.3, CTR_NUMERIC),
        "weight_salt": int(_mix(np.uint64(random_state) ^ np.uint64(_WEIGHT_SALT))[0]),
        "center": np.zeros(CTR_NUMERIC),
        "scale": np.ones(CTR_NUMERIC),
        "bias": 0.0,
    }
    calibration = np.random.default_rng([random_state, 1])
    counts = _ctr_counts(model, calibration, 20_000)
    model["center"], model["scale"] = counts.mean(axis=0), counts.std(axis=0)
    numeric, _, weights = _ctr_fields(model, calibration, 20_000, 2**20)
    logits = numeric @ model["numeric_weights"] + weights.sum(axis=1)
    low, high = -20.0, 20.0  # the mean probability grows with the bias: bisect
    for _ in range(60):
        middle = (low + high) / 2
        share = (1 / (1 + np.exp(-(logits + middle)))).mean()
        low, high = (middle, high) if share < CTR_POSITIVE_RATE else (low, middle)
    model["bias"] = (low + high) / 2
    return model


def _ctr_counts(model: dict, rng, n_rows: int) -> np.ndarray:
    """``log1p`` of Poisson counts with log-normal means, one column per numeric field."""
    means = np.exp(
        model["log_mean"] + model["log_sigma"] * rng.standard_normal((n_rows, CTR_NUMERIC))
    )
    return np.log1p(rng.poisson(means))


def _ctr_fields(model: dict, rng, n_rows: int, n_features: int):
    """A block's standardized numeric fields, its categorical columns, and the true weights
    of its (field, value) pairs."""
    numeric = (_ctr_counts(model, rng, n_rows) - model["center"]) / model["scale"]
    # Zipf truncated to V_f by inverting a Pareto law's distribution function on [1, V_f + 1)
    power = 1 - _ZIPF_EXPONENT
    top = (model["vocabulary"] + 1.0) ** power
    rank = ((top - 1) * rng.random((n_rows, CTR_CATEGORICAL)) + 1) ** (1 / power)
    value = np.minimum(rank.astype(np.int64), model["vocabulary"]) - 1
    keys = (np.arange(CTR_CATEGORICAL, dtype=np.uint64) << np.uint64(32)) | value.astype(np.uint64)
    columns = CTR_NUMERIC + _mix(keys ^ np.uint64(_COLUMN_SALT)) % np.uint64(
        n_features - CTR_NUMERIC
    )
    hashed = _mix(keys ^ np.uint64(model["weight_salt"]))
    first, second = _unit(hashed), _unit(_mix(hashed))
    weights = 0.5 * np.sqrt(-2 * np.log1p(-first)) * np.cos(2 * np.pi * second)  # Box-Muller
    return numeric, columns.astype(np.int64), weights


def _ctr_block(model: dict, random_state: int, block: int, n_rows: int, n_features: int):
    """One block of :func:`make_ctr_blocks`: CSR rows, labels and true probabilities."""
    rng = np.random.default_rng([random_state, 2, block])
    numeric, columns, weights = _ctr_fields(model, rng, n_rows, n_features)
    logits = model["bias"] + numeric @ model["numeric_weights"] + weights.sum(axis=1)
    proba = 1 / (1 + np.exp(-logits))
    y = (rng.random(n_rows) < proba).astype(np.int64)
    width = CTR_NUMERIC + CTR_CATEGORICAL
    indices = np.hstack([np.broadcast_to(np.arange(CTR_NUMERIC), (n_rows, CTR_NUMERIC)), columns])
    values = np.hstack([numeric, np.ones((n_rows, CTR_CATEGORICAL))]).astype(np.float32)
    X = scipy.sparse.csr_matrix(
        (values.ravel(), indices.ravel().astype(np.int32), np.arange(0, width * n_rows + 1, width)),
        shape=(n_rows, n_features),
    )
    X.sum_duplicates()  # sorted columns; a collision within a row adds its ones
    return X, y, proba


def _mix(keys: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, on arrays (their uint64 arithmetic wraps without warning)."""
    z = np.array(keys, dtype=np.uint64, ndmin=1)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _unit(hashed: np.ndarray) -> np.ndarray:
    """A 64-bit hash as a uniform float in [0, 1), from its top 53 bits."""
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53

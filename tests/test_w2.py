"""W2 sparse-ctr: the hashed click-through-like rows that ``make_ctr_blocks`` makes."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse
from sklearn.metrics import log_loss

from dask_sgd.datasets import CTR_CATEGORICAL, CTR_NUMERIC, make_ctr_blocks

N_FEATURES = 2**18


def _compute(*arrays):
    return dask.compute(*arrays, scheduler="sync")


@pytest.mark.timeout(20)
def test_blocks_are_float32_csr_with_known_chunks_and_about_39_fields_a_row():
    X, y = make_ctr_blocks(5_000, N_FEATURES, chunk_size=2_000, random_state=3)
    assert X.shape == (5_000, N_FEATURES) and X.chunks == ((2_000, 2_000, 1_000), (N_FEATURES,))
    assert y.shape == (5_000,) and y.chunks == ((2_000, 2_000, 1_000),)
    blocks = _compute(*X.to_delayed().ravel())
    assert all(type(b) is scipy.sparse.csr_matrix and b.dtype == np.float32 for b in blocks)
    assert [b.shape for b in blocks] == [(n, N_FEATURES) for n in (2_000, 2_000, 1_000)]
    assert all(b.has_canonical_format for b in blocks)  # sorted columns, no duplicates
    whole = scipy.sparse.vstack(blocks).tocsr()
    per_row = np.diff(whole.indptr)
    # every numeric field, one column per categorical field but for rare collisions in a row
    assert per_row.max() == CTR_NUMERIC + CTR_CATEGORICAL
    assert 38.5 < per_row.mean() <= CTR_NUMERIC + CTR_CATEGORICAL
    numeric = whole[:, :CTR_NUMERIC].toarray()
    assert np.abs(numeric.mean(axis=0)).max() < 0.1  # standardized by the generator
    assert np.abs(numeric.std(axis=0) - 1).max() < 0.1
    hashed = whole[:, CTR_NUMERIC:]
    assert set(np.unique(hashed.data)) <= {1.0, 2.0}  # ones; a collision adds two
    # a long tail: many columns are seen once, a few (the Zipf heads) in most rows
    counts = np.bincount(hashed.indices)
    assert (counts == 1).sum() > 10_000 and counts.max() > 0.2 * len(per_row)


@pytest.mark.timeout(20)
def test_labels_are_a_minority_of_positives_and_the_true_model_beats_the_base_rate():
    _, y, proba = make_ctr_blocks(
        20_000, N_FEATURES, chunk_size=10_000, random_state=0, return_proba=True
    )
    y, proba = _compute(y, proba)
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert 0.2 <= y.mean() <= 0.35
    base, bayes = log_loss(y, np.full(len(y), y.mean())), log_loss(y, proba)
    assert 0.55 < base < 0.65 and 0.3 < bayes < 0.42  # calibration: 0.606 and 0.34 at 1e5 rows
    assert abs(proba.mean() - y.mean()) < 0.02  # y is drawn from these probabilities


@pytest.mark.timeout(20)
def test_the_same_seed_makes_the_same_rows_and_another_seed_other_rows():
    first, again, other = (
        _compute(*make_ctr_blocks(1_000, N_FEATURES, chunk_size=500, random_state=seed))
        for seed in (7, 7, 8)
    )
    assert (first[0] != again[0]).nnz == 0
    np.testing.assert_array_equal(first[1], again[1])
    assert (first[0] != other[0]).nnz > 0


def _mean_logit_by_column(X, proba):
    """How often each hashed column occurs, and the mean true logit of the rows it is in."""
    hashed = X[:, CTR_NUMERIC:].tocsc()
    hashed.data[:] = 1
    counts = np.diff(hashed.indptr)
    return counts, (hashed.T @ np.log(proba / (1 - proba))) / np.maximum(counts, 1)


@pytest.mark.timeout(20)
def test_held_out_rows_are_new_rows_of_the_same_true_model():
    """Another block range: other rows, the same weights. A frequent (field, value) pair
    moves the logits of the rows it is in alike in both ranges; another seed's model not."""

    def rows(random_state=0, first_block=0):
        X, y, proba = make_ctr_blocks(
            5_000, N_FEATURES, chunk_size=2_500, random_state=random_state,
            first_block=first_block, return_proba=True,
        )  # fmt: skip
        return _compute(X, y, proba)

    train, test, other = rows(), rows(first_block=100), rows(random_state=1, first_block=100)
    assert (train[0][:1_000] != test[0][:1_000]).nnz > 0 and not np.array_equal(train[1], test[1])
    counts, means = _mean_logit_by_column(train[0], train[2])
    correlations = []
    for X, _, proba in (test, other):
        their_counts, their_means = _mean_logit_by_column(X, proba)
        frequent = (counts >= 100) & (their_counts >= 100)
        assert frequent.sum() > 100
        correlations.append(np.corrcoef(means[frequent], their_means[frequent])[0, 1])
    assert correlations[0] > 0.7 and correlations[1] < 0.4, correlations
    # and the true model scores the held-out rows as well as the training ones
    assert abs(log_loss(train[1], train[2]) - log_loss(test[1], test[2])) < 0.03


@pytest.mark.timeout(20)
def test_the_reference_is_fitted_once_per_generator_setting_and_kept(tmp_path, monkeypatch):
    from dask_sgd.benchmarks import w2

    size = dict(n_samples=2_000, n_test=500, n_features=2**12, chunk_size=1_000)
    X, y = _compute(*make_ctr_blocks(2_000, 2**12, chunk_size=1_000))
    X_test, y_test = _compute(*make_ctr_blocks(500, 2**12, chunk_size=1_000, first_block=9))
    data = {"X": X, "y": y, "X_test": X_test, "y_test": y_test}
    cache = tmp_path / "w2-reference.json"
    first = w2.reference(data, size, cache)
    assert not first["cached"] and set(first["by_C"]) == {str(c) for c in w2.REFERENCE_C}
    assert first["log_loss"] == min(fit["log_loss"] for fit in first["by_C"].values())
    assert first["log_loss"] < log_loss(y_test, np.full(len(y_test), y.mean()))

    def no_fit(*args, **kwargs):
        raise AssertionError("the kept reference is fitted again")

    monkeypatch.setattr(w2.LogisticRegression, "fit", no_fit)
    again = w2.reference(data, size, cache)
    assert again["cached"] and again["log_loss"] == first["log_loss"]
    with pytest.raises(AssertionError, match="fitted again"):  # another setting: fitted
        w2.reference(data, size | {"n_samples": 3_000}, cache)
    with pytest.raises(AssertionError, match="fitted again"):  # other rows (a new generator)
        w2.reference(data | {"y_test": 1 - y_test}, size, cache)

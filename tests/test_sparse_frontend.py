"""Sparse input for ``dask-sgd train``: svmlight files and Parquet columns hashed on the workers,
read into Dask arrays of CSR blocks, and trained on end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file
from sklearn.feature_extraction import FeatureHasher

from dask_sgd.cli import train as train_command
from dask_sgd.cli.sources import DataError, parse_size, read


@pytest.fixture(scope="module")
def scheduler(client):
    """The address of the shared in-process cluster, for --scheduler."""
    return client.cluster.scheduler_address


def sparse_problem(n_rows: int, n_features: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse rows labelled by the sign of a fixed linear function of them (separable)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, n_features, density=0.05, format="csr", random_state=rng)
    weights = np.random.default_rng(0).normal(size=n_features)
    scores = X @ weights
    return X, (scores > np.median(scores)).astype(np.int64)


def write_svmlight_parts(directory, sizes, n_features=60, zero_based=True):
    parts = [sparse_problem(n, n_features, seed) for seed, n in enumerate(sizes)]
    for i, (X, y) in enumerate(parts):
        dump_svmlight_file(X, y, str(directory / f"part-{i}.svm"), zero_based=zero_based)
    return sp.vstack([X for X, _ in parts]).tocsr(), np.concatenate([y for _, y in parts])


@pytest.mark.timeout(20)
@pytest.mark.parametrize("zero_based", [True, False])
def test_svmlight_files_become_one_csr_block_per_file(tmp_path, zero_based):
    X_all, y_all = write_svmlight_parts(tmp_path, [40, 55, 30], zero_based=zero_based)
    (tmp_path / "notes.txt").write_text("not data")  # a directory's other files are not read
    width = X_all.indices.max() + 1  # the first pass finds it, whichever base the files use
    X, y = read(str(tmp_path), None)
    assert X.chunks == ((40, 55, 30), (width,)) and y.chunks == ((40, 55, 30),)
    blocks = [X.blocks[i].compute() for i in range(3)]
    assert all(isinstance(block, sp.csr_matrix) for block in blocks)
    assert isinstance(X._meta, sp.csr_matrix)
    together = X.compute()
    np.testing.assert_allclose(together.toarray(), X_all[:, :width].toarray(), rtol=1e-15)
    np.testing.assert_array_equal(y.compute(), y_all)


@pytest.mark.timeout(20)
def test_svmlight_with_a_width_and_a_base_skips_the_first_pass(tmp_path):
    X_all, y_all = write_svmlight_parts(tmp_path, [40, 55, 30], zero_based=False)
    X, y = read(str(tmp_path / "part-*.svm"), None, n_features=100, index_base="1")
    assert np.isnan(X.shape[0]) and X.shape[1] == 100  # rows known once read
    assert X.numblocks == (3, 1) and y.numblocks == (3,)
    together = X.compute()
    assert together.shape == (125, 100)
    np.testing.assert_allclose(together[:, :60].toarray(), X_all.toarray(), rtol=1e-15)
    np.testing.assert_array_equal(y.compute(), y_all)


@pytest.mark.timeout(20)
def test_svmlight_indices_beyond_the_width_or_base_are_refused(tmp_path):
    write_svmlight_parts(tmp_path, [40, 30], zero_based=True)
    with pytest.raises(DataError, match="beyond --n-features 10"):
        read(str(tmp_path), None, n_features=10)
    with pytest.raises(DataError, match="has an index 0"):
        read(str(tmp_path), None, index_base="1")


def categorical_frame(n: int, seed: int) -> pd.DataFrame:
    """A categorical, a string (with missing values), an int and a float column, and a label
    that the categories decide: two of (city paris or oslo, afternoon, phone), a linear
    threshold on their one-hot columns."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["paris", "lima", "oslo", "kyoto"], n)
    device = rng.choice(["phone", "tablet", "desktop"], n).astype(object)
    device[rng.random(n) < 0.1] = None
    hour = rng.integers(0, 24, n)
    votes = np.isin(city, ["paris", "oslo"]).astype(int) + (hour >= 12) + (device == "phone")
    clicked = (votes >= 2).astype(np.int64)
    return pd.DataFrame(
        {
            "city": pd.Categorical(city),
            "device": device,
            "hour": hour,
            "price": np.round(rng.random(n), 3),
            "clicked": clicked,
        }
    )


def expected_hashing(frame: pd.DataFrame, n_features: int) -> sp.csr_matrix:
    """scikit-learn's FeatureHasher on each row's {name: value}: strings (the categories, ints
    as text) at "name=value" with 1, floats at "name" with their value; missing left out."""
    records = [
        {
            name: (str(value) if name != "price" else value)
            for name, value in row.items()
            if not pd.isna(value)
        }
        for row in frame.to_dict("records")
    ]
    hasher = FeatureHasher(n_features, input_type="dict", alternate_sign=False)
    return hasher.transform(records)


@pytest.mark.timeout(20)
def test_hashed_parquet_columns_become_csr_blocks_hashed_alike_on_every_partition(tmp_path):
    frames = [categorical_frame(300, seed) for seed in (1, 2)]
    # the first 20 rows in both partitions
    frames[1] = pd.concat([frames[0].iloc[:20], frames[1].iloc[20:]], ignore_index=True)
    for i, frame in enumerate(frames):
        frame.to_parquet(tmp_path / f"part-{i}.parquet")
    X, y = read(str(tmp_path), "clicked", hash_features=1024)
    assert X.shape[1] == 1024 and X.numblocks[0] == 2 and isinstance(X._meta, sp.csr_matrix)
    blocks = [X.blocks[i].compute() for i in range(2)]
    assert all(isinstance(block, sp.csr_matrix) for block in blocks)
    whole = pd.concat(frames, ignore_index=True)
    features = whole.drop(columns="clicked")
    hashed = sp.vstack(blocks).tocsr()
    np.testing.assert_allclose(hashed.toarray(), expected_hashing(features, 1024).toarray())
    np.testing.assert_array_equal(y.compute(), whole["clicked"].to_numpy())

    # without the float: one 1 per category present (a collision adds them up)
    categories = hashed - expected_hashing(features[["price"]], 1024)
    assert set(np.unique(categories.data)) <= {0.0, 1.0, 2.0, 3.0}
    present = 3 - features["device"].isna().to_numpy()
    np.testing.assert_array_equal(np.asarray(categories.sum(axis=1)).ravel(), present)
    # the same rows in two partitions hash alike, rows unlike them differently
    assert (blocks[0][:20] != blocks[1][:20]).nnz == 0
    assert (blocks[0][20:] != blocks[1][20:]).nnz > 0


@pytest.mark.timeout(10)
def test_hash_sizes_read_as_integers_or_powers():
    assert parse_size("2**20") == 2**20 and parse_size("2^10") == 1024
    assert parse_size(" 1000 ") == 1000  # any positive width; FeatureHasher takes the modulo
    for bad in ("0", "-4", "2**40", "twenty", "2**"):
        with pytest.raises(ValueError, match="positive integer"):
            parse_size(bad)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hash-features", "2**"], "a positive integer below 2**31 (like 2**20), not '2**'"),
        (["--target", "label"], "svmlight files carry their labels"),
        (["--index-base", "2"], "invalid choice: '2'"),
    ],
)
def test_sparse_options_fail_clearly_before_training(tmp_path, capsys, args, message):
    write_svmlight_parts(tmp_path, [20])
    with pytest.raises(SystemExit) as exit_info:
        train_command.main([str(tmp_path), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(20)
def test_hash_features_needs_a_table(tmp_path, capsys):
    np.save(tmp_path / "rows.npy", np.zeros((10, 3)))
    with pytest.raises(SystemExit):
        train_command.main([str(tmp_path / "rows.npy"), "--target", "0", "--hash-features", "8"])
    assert "hashes a table's columns" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_train_on_svmlight_files_reports_a_held_out_metric(scheduler, tmp_path, capsys):
    write_svmlight_parts(tmp_path, [1500, 1500, 1500], n_features=60)
    report = train_command.main(
        [
            *(str(tmp_path), "--loss", "log_loss", "--max-iter", "5", "--set", "tol=null"),
            *("--scheduler", scheduler, "--quiet"),
        ]
    )
    assert report["epochs"] == 5
    assert report["accuracy"] > 0.8 and report["log_loss"] < 0.6
    assert "SGDClassifier: 5 epochs" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_train_on_hashed_parquet_reports_a_held_out_metric(scheduler, tmp_path):
    for seed in (1, 2):
        categorical_frame(3000, seed).to_parquet(tmp_path / f"part-{seed}.parquet")
    report = train_command.main(
        [
            *(str(tmp_path), "--target", "clicked", "--hash-features", "2**10"),
            *("--loss", "log_loss", "--max-iter", "5", "--set", "tol=null"),
            *("--scheduler", scheduler, "--quiet"),
        ]
    )
    # the label is city-pair XOR afternoon: linear in the one-hot (city, hour) features
    assert report["accuracy"] > 0.9

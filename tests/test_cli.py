"""The ``dask-sgd`` command: ``train`` on real files, its errors, and the dispatcher."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

import dask_sgd
from dask_sgd.cli import main as cli_main


@pytest.fixture(scope="module")
def scheduler(client):
    """The address of the shared in-process cluster, for --scheduler."""
    return client.cluster.scheduler_address


def classification_frame(n=4000):
    X, y = make_classification(
        n_samples=n, n_features=6, n_informative=6, n_redundant=0, class_sep=2.0, random_state=0
    )  # logistic regression: 0.96 accuracy, log-loss 0.13
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    frame["label"] = np.where(y == 1, "yes", "no")
    return frame


def train(*args: str) -> dict:
    from dask_sgd.cli import train as train_command

    return train_command.main(list(args))


def test_train_on_parquet_reports_held_out_metrics_and_saves_a_loadable_model(
    scheduler, tmp_path, capsys
):
    frame = classification_frame()
    frame.iloc[:2000].to_parquet(tmp_path / "part-0.parquet")
    frame.iloc[2000:].to_parquet(tmp_path / "part-1.parquet")
    report = train(
        str(tmp_path),
        *("--target", "label", "--loss", "log_loss", "--max-iter", "5", "--set", "tol=null"),
        *("--set", "batch_size=32", "--scheduler", scheduler, "--output", str(tmp_path / "m")),
    )
    assert report["epochs"] == 5
    assert report["accuracy"] > 0.9 and 0 < report["log_loss"] < 0.3
    model = dask_sgd.load(str(tmp_path / "m"))
    assert list(model.classes_) == ["no", "yes"] and model.batch_size == 32
    assert list(model.feature_names_in_) == [f"f{i}" for i in range(6)]
    out = capsys.readouterr().out
    assert "-- Epoch 5" in out and "saved to" in out


def test_train_on_an_npy_array_takes_the_target_by_index(scheduler, tmp_path):
    X, y = make_regression(n_samples=3000, n_features=4, noise=1.0, random_state=0)
    np.save(tmp_path / "rows.npy", np.column_stack([y / 100, X]))  # the target comes first
    report = train(
        str(tmp_path / "rows.npy"),
        *("--target", "0", "--estimator", "regressor", "--scheduler", scheduler, "--quiet"),
    )
    assert report["r2"] > 0.95


def test_train_on_zarr(scheduler, tmp_path):
    zarr = pytest.importorskip("zarr")
    X, y = make_classification(n_samples=3000, n_features=5, random_state=1)
    array = zarr.open_array(
        str(tmp_path / "rows.zarr"), mode="w", shape=(3000, 6), chunks=(1000, 6), dtype="f8"
    )
    array[:] = np.column_stack([X, y])
    report = train(str(tmp_path / "rows.zarr"), "--target", "-1", "--scheduler", scheduler)
    assert report["accuracy"] > 0.8


def test_train_on_csv_with_the_embedded_cluster(tmp_path):
    classification_frame(2000).to_csv(tmp_path / "rows.csv", index=False)
    report = train(
        str(tmp_path / "rows.csv"), "--target", "label", "--max-iter", "3", "--set", "tol=null"
    )
    assert report["accuracy"] > 0.9


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: [str(d / "missing.parquet"), "--target", "y"], "No such file or directory"),
        (lambda d: [str(d / "rows.csv"), "--target", "price"], "Column 'price' is not in"),
        (lambda d: [str(d / "rows.npy"), "--target", "label"], "by index for an array"),
        (lambda d: [str(d / "rows.npy"), "--target", "9"], "Column 9 is not in"),
        (lambda d: [str(d / "rows.txt"), "--target", "y"], "Cannot tell the format"),
        (lambda d: [str(d / "rows.csv"), "--target", "f0", "--set", "alpha"], "PARAM=VALUE"),
        (
            lambda d: [str(d / "rows.csv"), "--target", "label", "--set", "speed=9"],
            "SGDClassifier has no parameter 'speed'",
        ),
        (
            lambda d: [
                *(str(d / "rows.csv"), "--target", "label"),
                *("--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1"),
            ],
            "Cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'",
        ),
    ],
)
def test_train_errors_are_clear_and_come_before_training(tmp_path, capsys, make_args, message):
    classification_frame(100).to_csv(tmp_path / "rows.csv", index=False)
    np.save(tmp_path / "rows.npy", np.zeros((10, 3)))
    (tmp_path / "rows.txt").write_text("1,2\n")
    with pytest.raises(SystemExit) as exit_info:
        train(*make_args(tmp_path))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_estimator_parameter_fails_with_scikit_learns_words(tmp_path, capsys):
    classification_frame(100).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(SystemExit):  # before any cluster starts: no --scheduler is needed
        train(str(tmp_path / "rows.csv"), "--target", "label", "--set", "alpha=-1")
    assert "The 'alpha' parameter of SGDClassifier must be" in capsys.readouterr().err


def test_the_command_dispatches_and_refuses_unknown_commands(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train-everything"])
    assert "invalid choice: 'train-everything'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--target" in capsys.readouterr().out

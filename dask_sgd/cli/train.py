"""``dask-sgd train``: fit an estimator on a data file, report held-out metrics, save it.

    dask-sgd train DATA [--target NAME] [--format F] [--estimator classifier|regressor]
        [--loss LOSS] [--strategy S] [--max-iter N] [--set PARAM=VALUE ...]
        [--n-features N] [--index-base auto|0|1] [--hash-features 2**20]
        [--test-fraction 0.1] [--scheduler ADDRESS | --n-workers 2] [--output PATH] [--quiet]

The data (see :mod:`dask_sgd.cli.sources`) stays lazy until the fit persists it on the
workers; svmlight files and hashed tables are Dask arrays of ``scipy.sparse`` CSR blocks.
A random ``--test-fraction`` of the rows is held out; its metrics are computed on the
client (accuracy and, where the loss has probabilities, log-loss; R² for regression). The fitted model is written with :func:`dask_sgd.save` (numeric arrays and a JSON manifest,
no pickle) and read back with :func:`dask_sgd.load`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster
from sklearn.base import is_classifier
from sklearn.metrics import accuracy_score, log_loss, r2_score
from sklearn.utils._param_validation import InvalidParameterError

import dask_sgd
from dask_sgd.cli.sources import (
    FORMATS,
    DataError,
    check_exists,
    check_options,
    guess_format,
    parse_size,
    read,
)

ESTIMATORS = {"classifier": dask_sgd.SGDClassifier, "regressor": dask_sgd.SGDRegressor}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-sgd train", description=__doc__.splitlines()[0].strip("`: ")
    )
    parser.add_argument(
        "data", help="a Parquet, CSV, Zarr, .npy or svmlight path or fsspec URL (a glob works)"
    )
    parser.add_argument(
        "--target",
        help="the target: a column name, or an index for arrays (svmlight files carry theirs)",
    )
    parser.add_argument("--format", choices=FORMATS, help="default: from the path's name")
    parser.add_argument(
        "--n-features",
        type=int,
        help="svmlight: the number of columns (default: the highest index found by a first "
        "pass over the files)",
    )
    parser.add_argument(
        "--index-base",
        choices=("auto", "0", "1"),
        default="auto",
        help="svmlight: whether indices count from 0 or 1 (auto: 1 unless some file has an "
        "index 0); with --n-features and 0 or 1, the first pass is skipped",
    )
    parser.add_argument(
        "--hash-features",
        type=hash_size,
        metavar="N",
        help="Parquet or CSV: hash every column but the target into N sparse columns on the "
        "workers (N like 2**20)",
    )
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default="classifier")
    parser.add_argument("--loss", help="default: the estimator's (hinge, squared_error)")
    parser.add_argument("--strategy", help="default: the estimator's (local)")
    parser.add_argument("--max-iter", type=int, help="epochs; default: the estimator's")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="any other estimator parameter; VALUE is read as JSON where it can be "
        "(--set alpha=1e-5 --set batch_size=512 --set tol=null)",
    )
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--scheduler", help="a running cluster's scheduler address")
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to reach --scheduler"
    )
    parser.add_argument(
        "--n-workers", type=int, default=2, help="workers of the embedded LocalCluster"
    )
    parser.add_argument("--output", help="where to save the fitted model")
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    return parser


def hash_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:  # argparse words a ValueError as "invalid value" only
        raise argparse.ArgumentTypeError(str(error)) from None


def estimator_params(args) -> dict:
    """The estimator's parameters from the options; a bad name or value fails in ``fit``
    with scikit-learn's wording, before training."""
    params = {"random_state": args.random_state, "verbose": 0 if args.quiet else 1}
    for name in ("loss", "strategy", "max_iter"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise DataError(f"--set takes PARAM=VALUE, not {item!r}.")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value  # a string: --set learning_rate=constant
    return params


@contextlib.contextmanager
def connect(scheduler: str | None, n_workers: int, timeout: float):
    """A client of the given scheduler, or of an embedded LocalCluster."""
    if scheduler is None:
        with (
            LocalCluster(n_workers=n_workers, threads_per_worker=1) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as error:
        raise DataError(f"Cannot reach the Dask scheduler at {scheduler!r}: {error}") from None
    with client:
        yield client


def held_out_split(X, y, fraction: float, seed: int):
    """``(X_train, y_train, X_test, y_test)``: a random ``fraction`` of the rows held out."""
    if fraction <= 0:
        return X, y, None, None
    if hasattr(X, "columns"):  # a data frame: split it with its target, row by row
        frame = X.assign(__target__=y)
        train, test = frame.random_split([1 - fraction, fraction], random_state=seed)
        return (
            train.drop(columns="__target__"),
            train["__target__"].rename(y.name),
            test.drop(columns="__target__"),
            test["__target__"].rename(y.name),
        )
    if np.isnan(X.shape[0]):  # blocks of unknown length: one generator per block
        held = y.map_blocks(_held_rows, fraction, seed, dtype=bool, meta=np.empty(0, dtype=bool))
    else:
        rng = da.random.default_rng(seed)
        held = rng.random(X.shape[0], chunks=(X.chunks[0],)) < fraction
    return X[~held], y[~held], X[held], y[held]


def _held_rows(block, fraction: float, seed: int, block_info=None) -> np.ndarray:
    """Which of a block's rows are held out: a generator of the seed and the block's place."""
    place = block_info[0]["chunk-location"][0] if block_info else 0
    return np.random.default_rng([seed, place]).random(len(block)) < fraction


def held_out_metrics(estimator, X_test, y_test) -> dict:
    """Accuracy and log-loss (classifier) or R² (regressor), computed on the client."""
    if X_test is None:
        return {}
    truth = y_test.compute()  # apart: Dask warns when arrays and data frames mix in one call
    if is_classifier(estimator):
        has_proba = estimator.loss in ("log_loss", "modified_huber")
        lazy = [estimator.predict(X_test)]
        if has_proba:
            lazy.append(estimator.predict_proba(X_test))
        predicted, *proba = dask.compute(*lazy)
        metrics = {"accuracy": accuracy_score(truth, predicted)}
        if has_proba:
            metrics["log_loss"] = log_loss(truth, proba[0], labels=estimator.classes_)
        return metrics
    return {"r2": r2_score(truth, estimator.predict(X_test).compute())}


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except (DataError, InvalidParameterError) as error:
        print(f"dask-sgd train: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def train(args) -> dict:
    reader = functools.partial(
        read,
        args.data,
        args.target,
        args.format,
        n_features=args.n_features,
        index_base=args.index_base,
        hash_features=args.hash_features,
    )
    # svmlight's first pass over the files runs on the workers; other data is opened here,
    # so that a missing file or column fails before a cluster starts
    check_exists(args.data)
    fmt = args.format or guess_format(args.data)
    check_options(fmt, args.target, args.n_features, args.index_base, args.hash_features)
    svmlight = fmt == "svmlight"
    X, y = (None, None) if svmlight else reader()
    cls = ESTIMATORS[args.estimator]
    params = estimator_params(args)
    unknown = sorted(set(params) - set(cls().get_params()))
    if unknown:
        raise DataError(f"{cls.__name__} has no parameter {', '.join(map(repr, unknown))}.")
    estimator = cls(**params)
    estimator._validate_params()  # scikit-learn's own check, before any cluster starts
    with connect(args.scheduler, args.n_workers, args.connect_timeout) as client:
        print(f"dashboard: {client.dashboard_link}")
        if svmlight:
            X, y = reader()
        X_train, y_train, X_test, y_test = held_out_split(
            X, y, args.test_fraction, args.random_state
        )
        started = time.perf_counter()
        estimator.fit(X_train, y_train)
        seconds = time.perf_counter() - started
        report = {"fit_seconds": seconds, "epochs": estimator.n_iter_}
        report |= held_out_metrics(estimator, X_test, y_test)
    shown = ", ".join(f"{name} {value:.4f}" for name, value in report.items() if name != "epochs")
    print(f"{type(estimator).__name__}: {report['epochs']} epochs; {shown}")
    if args.output:
        dask_sgd.save(estimator, args.output)
        print(f"saved to {args.output} (dask_sgd.load reads it)")
    return report

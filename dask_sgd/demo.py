"""The README's main job: distributed training on an embedded LocalCluster.

``make demo`` (or ``python -m dask_sgd.demo``) starts two single-threaded workers, generates
about a million rows on them, trains a logistic regression, and reports held-out metrics,
wall time, samples per second and the dashboard address. It trains with the estimator's
defaults for Dask input (local SGD on up to 1024 rows per worker and step, standardized,
averaged Adagrad; see :mod:`dask_sgd.defaults`); ``--strategy`` picks another strategy. The fit's progress is one
display (``verbose``): a bar with the epoch's loss on a terminal, a line per epoch in a log.
"""

from __future__ import annotations

import argparse
import time

import dask
from distributed import Client, LocalCluster
from sklearn.metrics import accuracy_score, log_loss

from dask_sgd import SGDClassifier
from dask_sgd.datasets import make_linear_classification
from dask_sgd.engine.strategies import STRATEGIES


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1_100_000, help="rows, 1/11 held out")
    parser.add_argument("--n-features", type=int, default=100)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="local")
    parser.add_argument(
        "--dashboard-address", default=":8787", help='":0" for any free port (default :8787)'
    )
    args = parser.parse_args(argv)

    with (
        LocalCluster(
            n_workers=args.n_workers, threads_per_worker=1, dashboard_address=args.dashboard_address
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"dashboard: {client.dashboard_link}")
        n_test = args.n_samples // 11
        chunk_rows = max(1, n_test // 2)
        X, y = make_linear_classification(
            args.n_samples, args.n_features, chunk_rows=chunk_rows, random_state=0
        )
        n_train = args.n_samples - n_test
        X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
        print(
            f"data: {n_train:,} training rows and {n_test:,} held out, {args.n_features} "
            f"features, generated on {args.n_workers} workers"
        )

        clf = SGDClassifier(
            loss="log_loss",
            max_iter=args.epochs,
            tol=None,
            strategy=args.strategy,
            random_state=0,
            verbose=1,
        )
        started = time.perf_counter()
        clf.fit(X_train, y_train)
        seconds = time.perf_counter() - started

        proba, labels, truth = dask.compute(
            clf.predict_proba(X_test)[:, 1], clf.predict(X_test), y_test
        )
        samples = sum(h["samples"] for h in clf.history_)
        report = {
            "held_out_log_loss": log_loss(truth, proba),
            "held_out_accuracy": accuracy_score(truth, labels),
            "fit_seconds": seconds,
            "samples_per_second": samples / seconds,
        }
        print(
            f"held-out log-loss {report['held_out_log_loss']:.4f}, accuracy "
            f"{report['held_out_accuracy']:.4f}; fit {seconds:.2f} s (data loading included), "
            f"{report['samples_per_second']:,.0f} samples/s on {args.n_workers} workers "
            f"({args.strategy})"
        )
        return report


if __name__ == "__main__":
    main()

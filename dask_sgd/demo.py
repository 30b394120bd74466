"""The README's main job: train a classifier on generated data and report how it went.

Run it with ``make demo`` (or ``python -m dask_sgd.demo``). Training runs in process for now;
the distributed engine will run the same job on an embedded ``LocalCluster``.
"""

from __future__ import annotations

import argparse
import time

from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score, log_loss

from dask_sgd import SGDClassifier


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=220_000)
    parser.add_argument("--n-features", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    n_test = args.n_samples // 11
    X, y = make_classification(
        n_samples=args.n_samples,
        n_features=args.n_features,
        n_informative=args.n_features // 2,
        flip_y=0.05,
        random_state=0,
    )
    X_train, y_train, X_test, y_test = X[:-n_test], y[:-n_test], X[-n_test:], y[-n_test:]
    print(f"data: {len(X_train):,} training rows, {n_test:,} held out, {X.shape[1]} features")

    clf = SGDClassifier(
        loss="log_loss",
        optimizer="adam",
        learning_rate="constant",
        eta0=1e-3,
        alpha=1e-6,
        batch_size=1024,
        max_iter=args.epochs,
        tol=None,
        random_state=0,
        verbose=1,
    )
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - started

    report = {
        "held_out_log_loss": log_loss(y_test, clf.predict_proba(X_test)),
        "held_out_accuracy": accuracy_score(y_test, clf.predict(X_test)),
        "fit_seconds": seconds,
        "samples_per_second": clf.n_iter_ * len(X_train) / seconds,
    }
    print(
        f"held-out log-loss {report['held_out_log_loss']:.4f}, "
        f"accuracy {report['held_out_accuracy']:.4f}; "
        f"fit {seconds:.2f} s, {report['samples_per_second']:,.0f} samples/s (in process)"
    )
    return report


if __name__ == "__main__":
    main()

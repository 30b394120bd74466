"""Engine efficiency: samples per second of each strategy against a plain NumPy loop.

    python -m dask_sgd.benchmarks.engine_efficiency [--n-samples 1000000] [--n-features 100]

Every contender runs the same algorithm on the same rows: minibatch logistic regression
with Adam (lr 1e-3, alpha 1e-6), ``batch_size`` rows per worker and step. The plain loop
runs in this process, BLAS on one thread; dask_sgd runs on a LocalCluster of
single-threaded worker processes with 1 and with 2 workers ("sync"; "local", averaging
every 32 steps), and with 2 workers ("local", averaging every 8 steps; "downpour", pulling
and pushing every step). Times cover training epochs only (data generated and persisted
before any clock starts). The per-step overhead of each strategy, with its defaults on 2
workers, is the time of a unit's step (one row, one worker) minus the plain loop's step on
one row.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from distributed import Client, LocalCluster
from threadpoolctl import threadpool_limits

from dask_sgd import SGDClassifier
from dask_sgd.datasets import make_linear_classification


def numpy_loop(X, y, batch_size: int, epochs: int = 1) -> float:
    """Minibatch logistic regression with Adam: the hardware limit of one core.

    BLAS is held to one thread, as in Dask's worker processes: left alone, OpenBLAS spreads
    the matrix products over every core and the loop is no longer one core's limit.
    """
    with threadpool_limits(1):
        return _numpy_loop(X, y, batch_size, epochs)


def _numpy_loop(X, y, batch_size: int, epochs: int) -> float:
    n, p = X.shape
    w, b = np.zeros(p), 0.0
    m, v = np.zeros(p + 1), np.zeros(p + 1)
    sign = 2.0 * y - 1
    step = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, n, batch_size):
            Xb, sb = X[start : start + batch_size], sign[start : start + batch_size]
            dz = -sb * 0.5 * (1 - np.tanh(0.5 * sb * (Xb @ w + b)))
            g = np.append(Xb.T @ dz / len(sb) + 1e-6 * w, dz.mean())
            step += 1
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            d = (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
            w, b = w - 1e-3 * d[:-1], b - 1e-3 * d[-1]
    return n * epochs / (time.perf_counter() - started)


def dask_sgd_rate(
    n_workers: int, X, y, batch_size: int, epochs: int, strategy: str = "sync", **options
) -> tuple[float, float]:
    """(samples per second, seconds per step of a unit) of a strategy, epochs after the
    first; a unit's step is ``batch_size`` rows on one worker."""
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0") as c,
        Client(c) as client,
    ):
        X, y = client.persist([X, y])
        clf = SGDClassifier(
            loss="log_loss",
            optimizer="adam",
            learning_rate="constant",
            eta0=1e-3,
            alpha=1e-6,
            batch_size=batch_size,
            max_iter=epochs + 1,
            tol=None,
            random_state=0,
            strategy=strategy,
            **options,
        ).fit(X, y)
        timed = clf.history_[1:]  # the first epoch also starts the parameter server
        seconds = timed[-1]["wall_time"] - clf.history_[0]["wall_time"]
        samples = sum(h["samples"] for h in timed)
        steps_per_unit = samples / (n_workers * batch_size)
        return samples / seconds, seconds / steps_per_unit


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--overhead-samples", type=int, default=4_000)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    X, y = make_linear_classification(
        args.n_samples, args.n_features, chunk_rows=args.n_samples // 8, random_state=0
    )
    X_local, y_local = X.compute(), y.compute()
    results: dict = {"n_samples": args.n_samples, "n_features": args.n_features}
    # the best of three: this machine's speed drifts, and the limit is what it can reach
    results["numpy_loop"] = max(numpy_loop(X_local, y_local, args.batch_size) for _ in range(3))
    for k in (1, 2):
        rate, _ = dask_sgd_rate(k, X, y, args.batch_size, epochs=2)
        results[f"dask_sgd_{k}_workers"] = rate
        results[f"fraction_of_{k}x_numpy_loop"] = rate / (k * results["numpy_loop"])

    for k, local_steps in ((1, 32), (2, 8), (2, 32)):
        rate, _ = dask_sgd_rate(
            k, X, y, args.batch_size, epochs=2, strategy="local", local_steps=local_steps
        )
        results[f"dask_sgd_local{local_steps}_{k}_workers"] = rate
        results[f"local{local_steps}_fraction_of_{k}x_numpy_loop"] = rate / (
            k * results["numpy_loop"]
        )

    rate, _ = dask_sgd_rate(2, X, y, args.batch_size, epochs=2, strategy="downpour")
    results["dask_sgd_downpour_2_workers"] = rate
    results["downpour_fraction_of_2x_numpy_loop"] = rate / (2 * results["numpy_loop"])

    # 8 blocks, so that each worker runs a unit (the first rows alone are a single block)
    rows = args.overhead_samples // 8
    small_X = X[: args.overhead_samples].rechunk((rows, -1))
    small_y = y[: args.overhead_samples].rechunk(rows)
    tiny_compute = 1 / numpy_loop(X_local[: args.overhead_samples], y_local, 1)
    for strategy in ("sync", "backup", "local", "downpour", "ssp"):
        _, step_seconds = dask_sgd_rate(2, small_X, small_y, 1, epochs=1, strategy=strategy)
        results[f"{strategy}_step_seconds_batch_1"] = step_seconds
        results[f"{strategy}_overhead_per_step_seconds"] = step_seconds - tiny_compute

    for name, value in results.items():
        print(f"{name:>32}: {value:,.4g}")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()

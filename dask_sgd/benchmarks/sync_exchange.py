"""Synchronous steps through the shards' direct lanes against Dask's actor calls.

    python -m dask_sgd.benchmarks.sync_exchange [--repeats 3] [--output results.json]

Two parts, on a LocalCluster of 2 single-threaded worker processes, each contender run in
turn within every repeat (this machine's speed drifts; compare within a repeat):

- **Overhead per step** (as ``engine_efficiency``'s last part): logistic regression with
  Adam on 4,000 × 100 rows in 8 blocks, one row per worker and step, one epoch after the
  first; a unit's step time minus a plain NumPy step on one row. "sync" and "backup"
  (``n_backup=1``), each through the lanes (the default) and through actor calls
  (``lanes=False``, the reference path).
- **Throughput** (as its first part): 1,000,000 × 100 rows, 1,024 rows per worker and
  step, two epochs after the first; samples per second of "sync" both ways, against two
  plain NumPy loops run side by side as two processes (each on half of the rows, BLAS on
  one thread).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from dataclasses import dataclass

import numpy as np
from distributed import Client, LocalCluster
from threadpoolctl import threadpool_limits

from dask_sgd import SGDClassifier
from dask_sgd.benchmarks import report
from dask_sgd.datasets import make_linear_classification
from dask_sgd.engine.strategies import STRATEGIES, Backup, Sync, register

THROUGH_ACTORS = {"sync": "sync-actor-calls", "backup": "backup-actor-calls"}


def register_reference_paths() -> None:
    """ "sync" and "backup" through Dask's actor calls, under names of their own."""

    @dataclass(frozen=True)
    class SyncThroughActors(Sync):
        name = THROUGH_ACTORS["sync"]
        lanes: bool = False

    @dataclass(frozen=True)
    class BackupThroughActors(Backup):
        name = THROUGH_ACTORS["backup"]
        lanes: bool = False

    for cls in (SyncThroughActors, BackupThroughActors):
        if cls.name not in STRATEGIES:
            register(cls)


def plain_loop(X, y, batch_size: int) -> float:
    """Samples per second of minibatch logistic regression with Adam, one BLAS thread."""
    with threadpool_limits(1):
        n, p = X.shape
        w, b = np.zeros(p), 0.0
        m, v = np.zeros(p + 1), np.zeros(p + 1)
        sign = 2.0 * y - 1
        started = time.perf_counter()
        for step, start in enumerate(range(0, n, batch_size), 1):
            Xb, sb = X[start : start + batch_size], sign[start : start + batch_size]
            dz = -sb * 0.5 * (1 - np.tanh(0.5 * sb * (Xb @ w + b)))
            g = np.append(Xb.T @ dz / len(sb) + 1e-6 * w, dz.mean())
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            d = (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
            w, b = w - 1e-3 * d[:-1], b - 1e-3 * d[-1]
        return n / (time.perf_counter() - started)


def _loop_process(n_rows: int, seed: int, barrier, results) -> None:
    X, y = make_linear_classification(n_rows, 100, chunk_rows=n_rows, random_state=seed)
    X, y = X.compute(), y.compute()
    barrier.wait()  # both loops run at once
    results.put(max(plain_loop(X, y, 1024) for _ in range(3)))


def loops_side_by_side(n_rows: int, k: int = 2) -> float:
    """Samples per second of ``k`` plain loops run at once as ``k`` processes, summed."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(k), context.Queue()
    processes = [
        context.Process(target=_loop_process, args=(n_rows // k, seed, barrier, results))
        for seed in range(k)
    ]
    for process in processes:
        process.start()
    rates = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


def fit_rate(X, y, batch_size: int, epochs: int, strategy: str) -> tuple[float, float]:
    """(samples per second, seconds per unit step) of ``strategy`` on 2 workers, epochs
    after the first."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        X, y = client.persist([X, y])
        clf = SGDClassifier(
            loss="log_loss", optimizer="adam", learning_rate="constant", eta0=1e-3, alpha=1e-6,
            batch_size=batch_size, max_iter=epochs + 1, tol=None, random_state=0,
            strategy=strategy,
        ).fit(X, y)  # fmt: skip
        timed = clf.history_[1:]
        seconds = timed[-1]["wall_time"] - clf.history_[0]["wall_time"]
        samples = sum(record["samples"] for record in timed)
        return samples / seconds, seconds / (samples / (2 * batch_size))


def markdown_table(results: dict) -> str:
    """Actor calls against the lanes: the median of the repeats and their range."""
    runs = results["runs"]

    def figure(key: str, scale: float, digits: int) -> str:
        return report.median_and_range([run[key] for run in runs], scale, digits)

    rows = [  # label, key, scale, digits
        ['"sync" overhead per step, ms', "sync_{}_overhead_per_step_seconds", 1e3, 2],
        ['"backup" (`n_backup=1`) overhead per step, ms', "backup_{}_overhead_per_step_seconds", 1e3, 2],
        ['"sync" step of 1,024 rows per worker, ms', "sync_{}_step_seconds_batch_1024", 1e3, 2],
        ['"sync" M samples/s, 2 workers', "sync_{}_samples_per_second", 1e-6, 2],
        ['"sync" / two plain loops side by side', "sync_{}_fraction_of_two_loops", 1, 3],
    ]  # fmt: skip
    table = [
        [label] + [figure(key.format(path), scale, digits) for path in ("actor_calls", "lanes")]
        for label, key, scale, digits in rows
    ]
    loops = figure("two_loops_side_by_side", 1e-6, 1)
    table.append(["two plain loops side by side (the limit), M samples/s", loops, loops])
    return report.markdown_table(["figure", "through actor calls", "through the lanes"], table)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--overhead-samples", type=int, default=4_000)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    register_reference_paths()

    n = args.overhead_samples
    small_X, small_y = make_linear_classification(n, 100, chunk_rows=n // 8, random_state=0)
    X, y = make_linear_classification(
        args.n_samples, 100, chunk_rows=args.n_samples // 8, random_state=0
    )
    plain_step = 1 / plain_loop(small_X.compute(), small_y.compute(), 1)
    runs = []
    for _ in range(args.repeats):
        run: dict = {"plain_step_batch_1_seconds": plain_step}
        for strategy in ("sync", "backup"):
            for path, name in (("lanes", strategy), ("actor_calls", THROUGH_ACTORS[strategy])):
                _, step = fit_rate(small_X, small_y, 1, 1, name)
                run[f"{strategy}_{path}_overhead_per_step_seconds"] = step - plain_step
        run["two_loops_side_by_side"] = loops_side_by_side(args.n_samples)
        for path, name in (("lanes", "sync"), ("actor_calls", THROUGH_ACTORS["sync"])):
            rate, step = fit_rate(X, y, 1024, 2, name)
            run[f"sync_{path}_samples_per_second"] = rate
            run[f"sync_{path}_fraction_of_two_loops"] = rate / run["two_loops_side_by_side"]
            run[f"sync_{path}_step_seconds_batch_1024"] = step
        print(json.dumps({key: float(f"{value:.4g}") for key, value in run.items()}), flush=True)
        runs.append(run)
    results = {"runs": runs}
    for key in runs[0]:
        results[f"median_{key}"] = float(np.median([run[key] for run in runs]))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=2)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()

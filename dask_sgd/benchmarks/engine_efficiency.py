"""Engine efficiency: every strategy's samples per second against the hardware's limit.

    dask-sgd bench engine [--n-samples 1000000] [--n-features 100] [--quick] [--output FILE]

(``python -m dask_sgd.benchmarks.engine_efficiency`` is the same.) Follows ``BENCHMARKS.md``,
"The limit: engine efficiency". Every contender runs the same algorithm on the same rows
(``make_linear_classification(n_samples, n_features, random_state=0)``, 8 blocks):
minibatch logistic regression with Adam (lr 1e-3, alpha 1e-6), ``batch_size`` rows per
worker (or loop) and step. Everything below is measured in one run:

- **The limit for k workers** is k plain NumPy loops run side by side as k separate
  processes, each on its 1/k of the rows, with BLAS held to one thread in each
  (threadpoolctl): :func:`dask_sgd.benchmarks.plain_loop.side_by_side`. Each process is
  a fresh interpreter that runs the loop's file as a script (NumPy and threadpoolctl
  alone: a ``multiprocessing`` spawn would import dask_sgd in each, seconds per process)
  and loads its rows from a copy saved before; then all start together (a barrier on
  their pipes) and train ``--epochs`` passes. The limit is the samples of all k over the
  wall time from their common start to the last one's finish (not the sum of each one's
  own rate: one that finishes early does not count as if it kept going), the best of
  ``--rounds`` such rounds, since this machine's speed drifts and the limit is what it
  can reach. k = 1 and k = 2, before any cluster starts.
- **dask_sgd** runs on one ``LocalCluster(threads_per_worker=1)`` with 2 workers, then
  scaled down to 1 (a new cluster would import everything again): every strategy ("sync",
  "backup", "local", "downpour", "ssp", each with its own defaults; "backup" needs 2
  workers), "local" averaging every 32 steps, and "default", the estimator's default
  strategy with its defaults (``strategy`` not passed). Samples per second over the
  epochs after the first (the first also starts the parameter server) of a fit of
  ``--epochs`` + 1 epochs, as a fraction of the k-process limit: the median of
  ``--repeats`` first fits (the contenders take turns, so that the machine's drift
  spreads over all of them), with min and max.
- **Each fit is a user's first fit on its data**: the rows are made again on the workers
  for every fit, under keys of their own, persisted and waited for as ``persist`` placed
  them, with no replica or block left by an earlier fit; they are released after it, and
  the next fit waits until the scheduler holds nothing. A throw-away fit on small data
  first starts each worker's machinery (its imports), so that no contender pays a new
  cluster's first fit.
- **Setup and memory of a user's fit**: ``SGDClassifier(loss="log_loss")`` with its
  defaults (the Dask defaults: Adagrad, standardized, averaged) on 2 workers, its first
  fit on its data. Setup is ``fit``'s wall time minus the epochs' own clock (the history's
  last ``wall_time``; that clock starts just before the first epoch), as in the scaling
  benchmark: making, checking and placing the blocks, and the little that ``fit`` does
  after its last epoch; what the first epoch does before its first minibatch (starting
  the parameter server) is in the epochs' time. ``setup_and_first_epoch_extra_seconds``
  adds the first epoch's excess over a later one. Setup is reported beside one plain
  pass over the same rows on one core (the 1-process limit's time for one pass). Peak
  worker memory is the largest resident memory of a worker process during that fit
  (sampled every 0.2 s), beside the worker's share of the persisted rows plus its
  process's resident memory measured before those rows were made (the baseline); the
  ratio is the larger of the two workers'. Setup is the median over the repeats, memory
  the run with the largest ratio.
- **Per-step coordination overhead** of each strategy (and the default) with 2 workers:
  the time of a unit's step on one row (batch 1, ``--overhead-samples`` rows in 8 blocks,
  one timed epoch) minus the plain loop's step on one row (in this process, BLAS on one
  thread, the best of three); the median over the repeats.

Prints every measurement and a table of the goals of issue 15; ``--output`` writes them
as JSON. ``--quick`` runs a small size and only what the goals need ("default" and
"sync", the overhead of "sync"), for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster, wait

from dask_sgd import SGDClassifier
from dask_sgd.benchmarks import report
from dask_sgd.benchmarks.memory import PeakMemory, worker_rss, worker_shares
from dask_sgd.benchmarks.plain_loop import numpy_loop, side_by_side
from dask_sgd.datasets import make_linear_classification
from dask_sgd.workers import worker_statuses

#: the algorithm that every contender runs (the loop hard-codes the same)
ALGORITHM = dict(
    loss="log_loss",
    optimizer="adam",
    learning_rate="constant",
    eta0=1e-3,
    alpha=1e-6,
    tol=None,
    random_state=0,
)
#: contender -> its options beyond the algorithm; "default" passes no ``strategy``
CONTENDERS = {
    "default": {},
    "sync": {"strategy": "sync"},
    "backup": {"strategy": "backup"},
    "local": {"strategy": "local"},
    "local every 32 steps": {"strategy": "local", "local_steps": 32},
    "downpour": {"strategy": "downpour"},
    "ssp": {"strategy": "ssp"},
}
#: the strategies whose per-step overhead is measured (with the default strategy)
OVERHEAD_STRATEGIES = ["default", "sync", "backup", "local", "downpour", "ssp"]
#: ``--quick``: small enough for a smoke test
QUICK = dict(
    n_samples=16_000,
    n_features=20,
    batch_size=256,
    overhead_samples=160,
    rounds=2,
    epochs=1,
    contenders=["default", "sync"],
    overhead_strategies=["sync"],
    repeats=1,
)
#: issue 15's goals: (figure, key, goal, "min" if at least the goal else "max", unit)
GOALS = (
    ("default strategy, 1 worker / 1 plain loop", "default_1_worker_fraction", 0.9, "min", ""),
    (
        "default strategy, 2 workers / 2 loops side by side",
        "default_2_workers_fraction",
        0.8,
        "min",
        "",
    ),
    ('"sync", 2 workers / 2 loops side by side', "sync_2_workers_fraction", 0.5, "min", ""),
    ("sync per-step overhead, 2 workers", "sync_overhead_ms", 2.0, "max", " ms"),
    (
        "setup of a first fit / one plain pass over the same rows (1 core)",
        "setup_over_plain_pass",
        2.0,
        "max",
        "",
    ),
    (
        "peak worker memory / (share of data + baseline)",
        "peak_memory_ratio",
        1.25,
        "max",
        "",
    ),
)


def make_rows(n_samples: int, n_features: int, blocks: int = 8):
    """The benchmark's rows, as lazy Dask arrays: the same rows wherever they are made."""
    return make_linear_classification(
        n_samples, n_features, chunk_rows=-(-n_samples // blocks), random_state=0
    )


def _copy(block):
    return np.array(block, order="C", copy=True)


def wait_idle(client, timeout: float = 30) -> None:
    """Wait until the scheduler holds no task: what a fit left is released (the rows, and
    the blocks that dask_sgd made of them) before the next fit, or a worker retires."""
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_n_tasks) and time.monotonic() < deadline:
        time.sleep(0.02)


def _n_tasks(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def fresh_data(client, data: dict):
    """The rows made again on the workers under keys of their own, persisted and waited
    for: a first fit on them finds them as ``persist`` placed them."""
    token = uuid.uuid4().hex
    X, y = make_rows(**data)
    X = X.map_blocks(_copy, name=f"engine-X-{token}")
    y = y.map_blocks(_copy, name=f"engine-y-{token}")
    X, y = client.persist([X, y])
    wait([X, y])
    return X, y


def first_fit(client, data: dict, estimator: SGDClassifier, measure_memory: bool = False) -> dict:
    """Fit ``estimator`` as a user's first fit on fresh rows; its timings (and memory)."""
    baseline = worker_rss(client) if measure_memory else None
    X, y = fresh_data(client, data)
    try:
        shares = worker_shares(client, X, y) if measure_memory else None
        memory = PeakMemory(client) if measure_memory else None
        started = time.perf_counter()
        if memory is not None:
            with memory:
                estimator.fit(X, y)
        else:
            estimator.fit(X, y)
        seconds = time.perf_counter() - started
    finally:
        client.cancel([X, y])
        del X, y
        wait_idle(client)
    walls = [h["wall_time"] for h in estimator.history_]
    timed = estimator.history_[1:]  # the first epoch also starts the parameter server
    result = {
        "seconds": seconds,
        "setup_seconds": seconds - walls[-1],
        "first_epoch_seconds": walls[0],
        "epochs": len(walls),
    }
    if timed:
        later_epoch = (walls[-1] - walls[0]) / len(timed)
        result["setup_and_first_epoch_extra_seconds"] = (
            result["setup_seconds"] + walls[0] - later_epoch
        )
        samples = sum(h["samples"] for h in timed)
        result["samples_per_second"] = samples / (walls[-1] - walls[0])
        result["timed_samples"] = samples
        result["timed_seconds"] = walls[-1] - walls[0]
    if memory is not None:
        ratios = {
            worker: memory.peaks[worker] / (shares.get(worker, 0) + baseline[worker])
            for worker in baseline
        }
        worst = max(ratios, key=ratios.get)
        result["memory"] = {
            "peak_bytes": memory.peaks[worst],
            "share_bytes": shares.get(worst, 0),
            "baseline_bytes": baseline[worst],
            "ratio": ratios[worst],
            "peak_beyond_baseline_over_share": (memory.peaks[worst] - baseline[worst])
            / max(shares.get(worst, 0), 1),
            "workers": {
                worker: {
                    "peak_bytes": memory.peaks[worker],
                    "share_bytes": shares.get(worker, 0),
                    "baseline_bytes": baseline[worker],
                }
                for worker in baseline
            },
        }
    return result


def summarize(runs: list[dict], keys) -> dict:
    """The median of each of ``keys`` over ``runs``, with its min and max, and the runs."""
    out: dict = {}
    for key in keys:
        values = [run[key] for run in runs]
        out |= {key: statistics.median(values), f"{key}_min": min(values)}
        out[f"{key}_max"] = max(values)
    return out | {"runs": runs}


def run_fits(client, n_workers: int, args, limit: float, data: dict, overhead: dict) -> dict:
    """Every contender on the client's ``n_workers`` workers, ``--repeats`` times (in turns,
    so that the machine's drift spreads over all), each a first fit on fresh rows; on 2
    workers also a user's default fit (setup, memory) and the per-step overheads."""
    warm_up = dict(n_samples=max(64 * n_workers, 1_000), n_features=data["n_features"])
    first_fit(client, warm_up, SGDClassifier(**ALGORITHM, max_iter=1))
    names = [name for name in args.contenders if name != "backup" or n_workers > 1]
    runs: dict = {name: [] for name in names}
    user_runs: list[dict] = []
    overhead_runs: dict = {name: [] for name in args.overhead_strategies if overhead}
    for _ in range(args.repeats):
        if n_workers == 2:
            user = SGDClassifier(
                loss="log_loss", max_iter=args.epochs + 1, tol=None, random_state=0
            )
            user_runs.append(fit := first_fit(client, data, user, measure_memory=True))
            print(f"{n_workers} workers, SGDClassifier(loss='log_loss'): setup "
                  f"{fit['setup_seconds']:.3f} s, peak memory ratio "
                  f"{fit['memory']['ratio']:.2f}", flush=True)  # fmt: skip
        for name in names:
            estimator = SGDClassifier(
                **ALGORITHM,
                batch_size=args.batch_size,
                max_iter=args.epochs + 1,
                **CONTENDERS[name],
            )
            fit = first_fit(client, data, estimator)
            steps = fit["timed_samples"] / (n_workers * args.batch_size)
            fit["step_seconds"] = fit["timed_seconds"] / steps
            runs[name].append(fit)
            print(
                f"{n_workers} worker(s), {name}: {fit['samples_per_second']:,.0f} samples/s, "
                f"{fit['samples_per_second'] / limit:.3f} of {n_workers} loop(s)",
                flush=True,
            )
        for name, overhead_fits in overhead_runs.items():
            estimator = SGDClassifier(**ALGORITHM, batch_size=1, max_iter=2, **CONTENDERS[name])
            fit = first_fit(client, overhead["data"], estimator)
            step = fit["timed_seconds"] / (fit["timed_samples"] / n_workers)
            overhead_fits.append(
                {
                    "step_seconds_batch_1": step,
                    "overhead_per_step_seconds": step - overhead["loop_step_seconds"],
                }
            )
            print(f"overhead per step, {name}: {1e3 * (step - overhead['loop_step_seconds']):.3f}"
                  " ms", flush=True)  # fmt: skip

    out: dict = {"fits": {}}
    for name in args.contenders:
        if name not in runs:
            out["fits"][name] = {"not_applicable": "n_backup=1 needs at least 2 workers"}
            continue
        keys = ("samples_per_second", "seconds", "setup_seconds", "first_epoch_seconds")
        out["fits"][name] = fit = summarize(runs[name], (*keys, "step_seconds"))
        fit["fraction_of_limit"] = fit["samples_per_second"] / limit
    if user_runs:
        keys = ("seconds", "setup_seconds", "setup_and_first_epoch_extra_seconds")
        out["user_defaults"] = summarize(user_runs, (*keys, "first_epoch_seconds"))
        # peak memory is a worst case: the run with the largest ratio
        out["user_defaults"]["memory"] = max(
            (run["memory"] for run in user_runs), key=lambda memory: memory["ratio"]
        )
    if overhead_runs:
        keys = ("step_seconds_batch_1", "overhead_per_step_seconds")
        out["overhead"] = {name: summarize(rs, keys) for name, rs in overhead_runs.items()}
    return out


def scale_down(cluster, client, n_workers: int, timeout: float = 60) -> None:
    """Retire workers until ``n_workers`` are left."""
    cluster.scale(n_workers)
    deadline = time.monotonic() + timeout
    while len(worker_statuses(client)) > n_workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster did not scale down to {n_workers} worker(s)")
        time.sleep(0.05)


def goal_figures(results: dict) -> dict:
    """The figures of issue 15's goal table, from a run's results."""
    user = results["workers"]["2"]["user_defaults"]
    return {
        "default_1_worker_fraction": results["workers"]["1"]["fits"]["default"][
            "fraction_of_limit"
        ],
        "default_2_workers_fraction": results["workers"]["2"]["fits"]["default"][
            "fraction_of_limit"
        ],
        "sync_2_workers_fraction": results["workers"]["2"]["fits"]["sync"]["fraction_of_limit"],
        "sync_overhead_ms": 1e3
        * results["workers"]["2"]["overhead"]["sync"]["overhead_per_step_seconds"],
        "setup_over_plain_pass": user["setup_seconds"] / results["limits"]["1"]["pass_seconds"],
        "peak_memory_ratio": user["memory"]["ratio"],
    }


def markdown(results: dict) -> str:
    """The run's tables: contenders against the limits, overheads, and the goals."""
    limits = results["limits"]
    lines = [
        (
            f"{results['n_samples']:,} × {results['n_features']} float64 rows, "
            f"batch {results['batch_size']} per worker, {results['epochs']} timed epoch(s); "
            f"dask_sgd: the median of {results['repeats']} first fit(s) each."
        ),
        "",
        "| contender | samples / s (median [min, max]) | fraction of the limit |",
        "| --- | ---: | ---: |",
    ]
    for k in ("1", "2"):
        lines.append(
            f"| {k} plain loop(s) side by side (the {k}-worker limit) | "
            f"{limits[k]['samples_per_second']:,.0f} | 1 |"
        )
    for k in ("1", "2"):
        for name, fit in results["workers"][k]["fits"].items():
            if "not_applicable" in fit:
                lines.append(f"| dask_sgd {name}, {k} worker(s) | {fit['not_applicable']} | |")
                continue
            lines.append(
                f"| dask_sgd {name}, {k} worker(s) | {fit['samples_per_second']:,.0f} "
                f"[{fit['samples_per_second_min']:,.0f}, {fit['samples_per_second_max']:,.0f}] | "
                f"{fit['fraction_of_limit']:.3f} |"
            )
    lines += [
        "",
        "| strategy, 2 workers, batch 1 | step (median) | overhead per step (median) |",
        "| --- | ---: | ---: |",
    ]
    for name, row in results["workers"]["2"]["overhead"].items():
        lines.append(
            f"| {name} | {1e3 * row['step_seconds_batch_1']:.3f} ms | "
            f"{1e3 * row['overhead_per_step_seconds']:.3f} ms |"
        )
    user = results["workers"]["2"]["user_defaults"]
    lines += [
        "",
        (
            f"Setup of a first fit (SGDClassifier(loss='log_loss'), 2 workers, median): "
            f"{user['setup_seconds']:.3f} s; one plain pass on one core: "
            f"{limits['1']['pass_seconds']:.3f} s. Peak worker memory (the largest ratio) "
            f"{user['memory']['peak_bytes'] / 2**20:,.0f} MiB; share of the data "
            f"{user['memory']['share_bytes'] / 2**20:,.0f} MiB + baseline "
            f"{user['memory']['baseline_bytes'] / 2**20:,.0f} MiB."
        ),
        "",
        "| figure (issue 15) | measured | goal | met |",
        "| --- | ---: | ---: | --- |",
    ]
    for goal in results["goals"]:
        sign = "≥" if goal["direction"] == "min" else "≤"
        lines.append(
            f"| {goal['figure']} | {goal['value']:.3g}{goal['unit']} | "
            f"{sign} {goal['goal']:g}{goal['unit']} | {'yes' if goal['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def before_after_table(before: dict, after: dict) -> str:
    """Two runs side by side: the limits' and the fits' rates, and the goals' figures."""

    def rate(results: dict, k: str, name: str | None = None) -> str:
        found = results["limits"][k] if name is None else results["workers"][k]["fits"][name]
        value = found.get("samples_per_second")
        return "" if value is None else f"{value / 1e6:.2f}"

    rows = [
        [f"the {k}-worker limit, M samples/s", rate(before, k), rate(after, k), ""]
        for k in ("1", "2")
    ]
    for k in ("1", "2"):
        for name in after["workers"][k]["fits"]:
            label = f'"{name}", {k} worker{"s" * (k != "1")}, M samples/s'
            figures = [rate(before, k, name), rate(after, k, name)]
            if any(figures):  # "backup" needs 2 workers
                rows.append([label, *figures, ""])
    before_values = {goal["key"]: goal["value"] for goal in before["goals"]}
    for goal in after["goals"]:
        sign = "≥" if goal["direction"] == "min" else "≤"
        rows.append([
            goal["figure"] + goal["unit"].replace(" ", ", "),
            f"{before_values[goal['key']]:.2f}",
            f"**{goal['value']:.2f}**",
            f"{sign} {goal['goal']:g}",
        ])  # fmt: skip
    return report.markdown_table(["figure", "before", "after", "goal"], rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (passes) per fit")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the side-by-side loops")
    parser.add_argument("--overhead-samples", type=int, default=4_000)
    parser.add_argument(
        "--repeats", type=int, default=3, help="first fits per dask_sgd contender (the median)"
    )
    parser.add_argument(
        "--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS)
    )
    parser.add_argument(
        "--overhead-strategies", nargs="+", choices=list(CONTENDERS), default=OVERHEAD_STRATEGIES
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small size and only the contenders of the goals, for a smoke test",
    )
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:  # the small size, where no option says otherwise
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)

    data = dict(n_samples=args.n_samples, n_features=args.n_features)
    overhead_data = dict(n_samples=args.overhead_samples, n_features=args.n_features)
    results: dict = {
        "n_samples": args.n_samples,
        "n_features": args.n_features,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "limits": {},
        "workers": {},
    }
    # the limits first, with no cluster running beside them; the loops read the same rows
    with tempfile.TemporaryDirectory(prefix="dask-sgd-engine-") as folder:
        X_path, y_path = Path(folder, "X.npy"), Path(folder, "y.npy")
        for path, part in zip((X_path, y_path), make_rows(**data), strict=True):
            np.save(path, np.ascontiguousarray(part.compute()))
        for k in (1, 2):
            limit = side_by_side(
                k, X_path, y_path, args.n_samples, args.batch_size, args.epochs, args.rounds
            )
            results["limits"][str(k)] = limit
            print(f"{k} plain loop(s) side by side: {limit['samples_per_second']:,.0f} "
                  "samples/s", flush=True)  # fmt: skip
    X_small, y_small = (part.compute() for part in make_rows(**overhead_data))
    loop_step = 1 / max(numpy_loop(X_small, y_small, 1) for _ in range(3))
    results["loop_step_seconds_batch_1"] = loop_step
    # one cluster, 2 workers and then 1: a new cluster (or worker) imports everything again
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        for k in (2, 1):
            if k < 2:
                scale_down(cluster, client, k)
            overhead = {"data": overhead_data, "loop_step_seconds": loop_step} if k == 2 else {}
            limit = results["limits"][str(k)]["samples_per_second"]
            results["workers"][str(k)] = run_fits(client, k, args, limit, data, overhead)

    figures = goal_figures(results)
    results["goals"] = [
        {
            "figure": figure,
            "key": key,
            "value": figures[key],
            "goal": goal,
            "direction": direction,
            "unit": unit,
            "met": bool(figures[key] >= goal if direction == "min" else figures[key] <= goal),
        }
        for figure, key, goal, direction, unit in GOALS
    ]
    results["figures"] = figures
    print()
    print(markdown(results))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()

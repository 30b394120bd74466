"""Soak: many undisturbed fits back to back; no worker may die, nothing may be recovered.

    dask-sgd bench soak [--minutes 10] [--workers 2 3] [--amm-interval 2s] [--quick] [--json F]

For each cluster size in ``--workers`` (its share of ``--minutes``), a LocalCluster of
single-threaded worker processes under Nannies, with the Active Memory Manager on (Dask's
default; ``--amm-interval`` shortens its period so that a race with it shows sooner), runs
fits one after another until the time is up: every strategy in turn, on data of several
shapes (dense binary, dense three-class, dense regression, hashed sparse CSR), 1 to 3
epochs each. Nothing is injected; it counts

- worker deaths (workers the scheduler removed: in a soak, nothing retires),
- the fits' recoveries, shard moves and membership changes (``history_``),
- fits that raised,
- error lines in the scheduler's, the workers' and the Nannies' logs,

prints a table, and exits with 1 (``SystemExit``) if any count is not 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import dask
from distributed import Client, LocalCluster, wait
from distributed.diagnostics.plugin import SchedulerPlugin

import dask_sgd
from dask_sgd.datasets import make_classification_blocks, make_ctr_blocks
from dask_sgd.engine.strategies import STRATEGIES

#: the shapes of data, each made once per cluster: (name, estimator, make (X, y))
SHAPES = {
    "dense-binary": (
        dask_sgd.SGDClassifier,
        lambda: make_classification_blocks(20_000, 20, n_informative=10, chunk_rows=2_500),
    ),
    "dense-3-class": (
        dask_sgd.SGDClassifier,
        lambda: _three_classes(
            make_classification_blocks(12_000, 10, n_informative=5, chunk_rows=2_000)
        ),
    ),
    "dense-regression": (
        dask_sgd.SGDRegressor,
        lambda: _regression(
            make_classification_blocks(12_000, 10, n_informative=5, chunk_rows=2_000)
        ),
    ),
    "sparse-csr": (
        dask_sgd.SGDClassifier,
        lambda: make_ctr_blocks(20_000, 2**16, chunk_size=5_000),
    ),
}


def _three_classes(Xy):
    X, _ = Xy
    return X, (X[:, 0] > -0.5).astype(int) + (X[:, 1] > 0.5).astype(int)


def _regression(Xy):
    X, _ = Xy
    return X, X[:, 0] * 2.0 - X[:, 1] + 0.1 * X[:, 2]


class Deaths(SchedulerPlugin):
    """Records the workers the scheduler removes, and when (``time.time()``)."""

    name = "dask-sgd-soak-deaths"

    def __init__(self) -> None:
        self.removed: list[tuple[str, float]] = []

    def remove_worker(self, scheduler, worker, **kwargs) -> None:
        self.removed.append((worker, time.time()))

    @classmethod
    def seen(cls, client: Client) -> list[tuple[str, float]]:
        """What the plugin registered on ``client``'s scheduler has recorded."""
        return client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins[cls.name].removed
        )


@dataclass
class SoakRun:
    """What one cluster size's soak counted."""

    workers: int
    minutes: float = 0.0
    fits: int = 0
    deaths: int = 0
    recoveries: int = 0
    shard_moves: int = 0
    membership_changes: int = 0
    failed_fits: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        counts = (self.deaths, self.recoveries, self.shard_moves, self.membership_changes)
        return not any(counts) and not self.failed_fits and not self.error_lines


def soak(n_workers: int, seconds: float, amm_interval: str) -> SoakRun:
    """Fits back to back for ``seconds`` on ``n_workers`` worker processes."""
    run = SoakRun(n_workers)
    config = {
        "distributed.scheduler.active-memory-manager.start": True,
        "distributed.scheduler.active-memory-manager.interval": amm_interval,
    }
    with (
        dask.config.set(config),
        LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(Deaths(), name=Deaths.name)
        data = {name: client.persist(make()) for name, (_, make) in SHAPES.items()}
        wait([part for X_y in data.values() for part in X_y])
        started = time.perf_counter()
        strategies, shapes = sorted(STRATEGIES), list(SHAPES)
        while time.perf_counter() - started < seconds:
            # 5 strategies, 4 shapes, 3 lengths: every strategy in the first 5 fits, every
            # combination in 60
            i = run.fits
            strategy, shape, epochs = strategies[i % 5], shapes[i % 4], 1 + i % 3
            estimator = SHAPES[shape][0](
                strategy=strategy, max_iter=epochs, tol=None, random_state=run.fits
            )
            try:
                estimator.fit(*data[shape])
            except Exception as error:  # noqa: BLE001 (a failed fit is what the soak counts)
                run.failed_fits.append(f"{strategy} on {shape}: {type(error).__name__}: {error}")
            else:
                for record in estimator.history_:
                    run.recoveries += len(record.get("recoveries", ()))
                    run.shard_moves += len(record.get("shard_moves", ()))
                    run.membership_changes += len(record.get("membership", ()))
            run.fits += 1
        run.minutes = (time.perf_counter() - started) / 60
        run.deaths = len(Deaths.seen(client))
        run.error_lines = _error_lines(client)
    return run


def _error_lines(client: Client) -> list[str]:
    """The error (and worse) lines the scheduler, the workers and the Nannies logged."""
    logs = {"scheduler": client.get_scheduler_logs()}
    logs |= {f"worker {w}": lines for w, lines in client.get_worker_logs().items()}
    logs |= {f"nanny {w}": lines for w, lines in client.get_worker_logs(nanny=True).items()}
    bad = {logging.getLevelName(level) for level in (logging.ERROR, logging.CRITICAL)}
    return [
        f"{who}: {line}" for who, lines in logs.items() for level, line in lines if level in bad
    ]


def main(argv: list[str] | None = None) -> list[SoakRun]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="in all (default 10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--amm-interval", default="2s", help="Dask's default: 2s")
    parser.add_argument(
        "--quick", action="store_true", help="the suite's smoke run: 2 workers, 0.25 minutes"
    )
    parser.add_argument("--json", help="write the counts here")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.workers = 0.25, [2]
    seconds = args.minutes * 60 / len(args.workers)
    runs = [soak(n, seconds, args.amm_interval) for n in args.workers]
    print(f"Soak: every strategy on {len(SHAPES)} shapes of data, AMM every {args.amm_interval}")
    print("| workers | minutes | fits | deaths | recoveries | shard moves | failed fits | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run.workers} | {run.minutes:.1f} | {run.fits} | {run.deaths} | "
            f"{run.recoveries} | {run.shard_moves} | {len(run.failed_fits)} | "
            f"{len(run.error_lines)} |"
        )
        for line in run.failed_fits + run.error_lines:
            print(f"  {line[:300]}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(run) | {"clean": run.clean} for run in runs], out, indent=1)
    if not all(run.clean for run in runs):
        raise SystemExit(1)
    return runs


if __name__ == "__main__":
    main()

"""A user's first fit on persisted data: its setup against one plain pass over the same rows,
and the workers' peak memory against their share of the data.

    python -m dask_sgd.benchmarks.first_fit [--scale 1] [--repeats 3] [--workers 2]

W1's problem (``--scale`` × 1,000,000 × 100 float64 rows in 8 partitions per million rows
of 125,000 rows each) is generated on a LocalCluster of single-threaded worker processes,
persisted and waited for; then the default ``SGDClassifier`` fits it for one epoch. Every
repeat generates data of its own (no replica and no block of an earlier fit is left), after
one warm-up fit on small data, so each timed fit is a user's first fit on its data on a
cluster that has trained before.

- **setup**: the fit's wall time before its first epoch starts (making, checking and
  placing the blocks; ``fit``'s time minus the epoch's ``wall_time``).
- **plain pass**: one pass of ``dask-sgd bench engine``'s plain NumPy loop (logistic
  regression with Adam, 1024 rows per step, BLAS on one thread) over 1,000,000 of the rows,
  in this process, times ``--scale``.
- **memory**: each worker's resident memory sampled every 0.1 s during the fit
  (``peak``), against its resident memory before the data existed (``baseline``, after the
  warm-up fit) plus the bytes of the persisted partitions it holds (``share``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psutil
from distributed import Client, LocalCluster, wait

import dask_sgd
from dask_sgd.benchmarks import report
from dask_sgd.benchmarks.memory import worker_shares
from dask_sgd.benchmarks.plain_loop import numpy_loop
from dask_sgd.benchmarks.scaling import W1
from dask_sgd.datasets import make_classification_blocks

MB = 2**20


def _rss() -> int:
    return psutil.Process().memory_info().rss


class PeakRSS:
    """Each worker's largest resident memory while the ``with`` block runs."""

    def __init__(self, client, interval: float = 0.1) -> None:
        import threading

        self.client, self.interval, self.peaks = client, interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for worker, rss in self.client.run(_rss).items():
                self.peaks[worker] = max(self.peaks.get(worker, 0), rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for worker, rss in self.client.run(_rss).items():
            self.peaks[worker] = max(self.peaks.get(worker, 0), rss)


def first_fit(client, n_rows: int, first_block: int, baseline: dict) -> dict:
    X, y = make_classification_blocks(n_rows, chunk_rows=125_000, first_block=first_block, **W1)
    X, y = client.persist([X, y])
    wait([X, y])
    share = worker_shares(client, X, y)
    before = client.run(_rss)
    clf = dask_sgd.SGDClassifier(loss="log_loss", max_iter=1, tol=None, random_state=0)
    with PeakRSS(client) as memory:
        started = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - started
    ratios = {
        w: memory.peaks[w] / (share[w] + baseline[w]) for w in sorted(memory.peaks)
    }  # fmt: skip
    result = {
        "setup_seconds": seconds - clf.history_[-1]["wall_time"],
        "epoch_seconds": clf.history_[-1]["wall_time"],
        "share_mb": [share[w] / MB for w in sorted(share)],
        "baseline_mb": [baseline[w] / MB for w in sorted(baseline)],
        "before_fit_mb": [before[w] / MB for w in sorted(before)],
        "peak_mb": [memory.peaks[w] / MB for w in sorted(memory.peaks)],
        "peak_ratio": max(ratios.values()),
    }
    del X, y
    return result


def plain_pass_seconds(repeats: int = 3) -> float:
    """One plain pass over 1,000,000 of W1's rows, on one core (the best of ``repeats``)."""
    X, y = make_classification_blocks(1_000_000, chunk_rows=125_000, **W1)
    X, y = np.ascontiguousarray(X.compute()), y.compute().astype(np.float64)
    return min(1_000_000 / numpy_loop(X, y, 1024) for _ in range(repeats))


def markdown_table(*results: dict) -> str:
    """A row per run (a size): each fit's setup, their median against the plain pass, the
    median peak memory ratio and the epochs' range."""
    rows = []
    for result in results:
        fits = result["fits"]
        epochs = [fit["epoch_seconds"] for fit in fits]
        rows.append([
            f"{result.get('label', '')} {result['scale']}× W1".strip(),
            ", ".join(f"{fit['setup_seconds']:.2f}" for fit in fits),
            f"{result['setup_seconds']:.2f}",
            f"{result['plain_pass_seconds']:.2f}",
            f"{result['setup_over_plain_pass']:.2f}",
            f"{result['peak_ratio']:.2f}",
            f"{min(epochs):.2f}–{max(epochs):.2f}",
        ])  # fmt: skip
    header = [
        "rows", "setup of each fit, s", "median, s", "plain pass, s", "setup / plain pass",
        "peak memory / (share + baseline)", "epoch, s",
    ]  # fmt: skip
    return report.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="millions of rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--label", default="", help="names this run's row in the table")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    plain = plain_pass_seconds() * args.scale
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        first_fit(client, 250_000, 10_000, client.run(_rss))  # warm-up: imports, first fit
        time.sleep(1)
        baseline = client.run(_rss)
        fits = [
            first_fit(client, args.scale * 1_000_000, 1000 * (i + 1), baseline)
            for i in range(args.repeats)
        ]
    setup = float(np.median([fit["setup_seconds"] for fit in fits]))
    result = {
        "label": args.label,
        "scale": args.scale,
        "plain_pass_seconds": plain,
        "setup_seconds": setup,
        "setup_over_plain_pass": setup / plain,
        "peak_ratio": float(np.median([fit["peak_ratio"] for fit in fits])),
        "fits": fits,
    }
    for fit in fits:
        print(
            f"setup {fit['setup_seconds']:.2f} s, epoch {fit['epoch_seconds']:.2f} s, "
            f"share {fit['share_mb']} MiB, baseline {fit['baseline_mb']} MiB, "
            f"before the fit {fit['before_fit_mb']} MiB, peak {fit['peak_mb']} MiB, peak / (share + baseline) {fit['peak_ratio']:.2f}"
        )
    print(
        f"{args.scale}x W1: setup {setup:.2f} s (median of {args.repeats}), plain pass "
        f"{plain:.2f} s, ratio {setup / plain:.2f}; peak memory ratio {result['peak_ratio']:.2f}"
    )
    report.save_and_print(result, args.json, markdown_table)
    return result


if __name__ == "__main__":
    main()

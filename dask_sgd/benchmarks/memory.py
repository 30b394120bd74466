"""Worker memory for the benchmarks: resident memory now, its peak during a fit, and each
worker's share of a persisted collection."""

from __future__ import annotations

import threading

import psutil
from distributed import futures_of

from dask_sgd.workers import worker_statuses


def _rss() -> int:
    return psutil.Process().memory_info().rss


def worker_rss(client) -> dict[str, int]:
    """The resident memory of every worker process now, by worker address."""
    return client.run(_rss)


def worker_shares(client, *collections) -> dict[str, int]:
    """The bytes of the persisted ``collections`` that each worker holds (a key held by two
    workers counts on both)."""
    futures = futures_of(list(collections))
    sizes = client.nbytes([future.key for future in futures], summary=False)
    shares = dict.fromkeys(worker_statuses(client), 0)
    for key, workers in client.who_has(futures).items():
        for worker in workers:
            shares[worker] = shares.get(worker, 0) + sizes[key]
    return shares


class PeakMemory:
    """The largest resident memory of any worker process while the ``with`` block runs
    (``peak``), and of each (``peaks``, by worker address), sampled every ``interval``
    seconds."""

    def __init__(self, client, interval: float = 0.2) -> None:
        self.client, self.interval, self.peak = client, interval, 0
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for worker, rss in worker_rss(self.client).items():
                self.peaks[worker] = max(self.peaks.get(worker, 0), rss)
                self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for worker, rss in worker_rss(self.client).items():  # and once at the end
            self.peaks[worker] = max(self.peaks.get(worker, 0), rss)
            self.peak = max(self.peak, rss)

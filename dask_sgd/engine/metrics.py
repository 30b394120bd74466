"""A segment's record for the ``/dask-sgd`` dashboard page (:mod:`dask_sgd.dashboard`)."""

from __future__ import annotations

import time
from typing import Any

from dask_sgd.dashboard import TOPIC
from dask_sgd.engine.strategies import Strategy, UnitResult


def publish_segment(
    client: Any,
    fit_id: str,
    strategy: Strategy,
    step: int,
    workers: list[str],
    results: list[UnitResult],
    seconds: float,
    pushes: list[int],
) -> None:
    """Log the segment's loss, each worker's rows per second and the shards' push counts as
    a Dask event; ``workers[j]`` is where unit ``j`` ran."""
    rows = sum(result.rows for result in results)
    rates: dict[str, float] = {}
    for worker, result in zip(workers, results, strict=True):
        rates[worker] = rates.get(worker, 0.0) + result.rows / max(seconds, 1e-9)
    record = {
        "fit": fit_id,
        "strategy": strategy.name,
        "time": time.time(),
        "step": int(step),
        "loss": float(sum(result.loss_sum for result in results) / max(rows, 1)),
        "rows_per_second": rates,
        "workers": len(workers),
        "pushes": pushes,
        **strategy.dashboard(results),
    }
    client.log_event(TOPIC, record)

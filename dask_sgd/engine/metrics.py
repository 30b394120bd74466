"""A segment's record for the ``/dask-sgd`` dashboard page (:mod:`dask_sgd.dashboard`)."""

from __future__ import annotations

import time
from typing import Any

from dask_sgd.blocks import Unit
from dask_sgd.dashboard import TOPIC
from dask_sgd.engine.strategies import Strategy, UnitResult


def rows_per_worker(units: list[Unit], results: list[UnitResult]) -> dict[str, int]:
    """The rows that each worker's units trained on; ``results[j]`` is unit ``j``'s."""
    rows: dict[str, int] = {}
    for unit, result in zip(units, results, strict=True):
        rows[unit.worker] = rows.get(unit.worker, 0) + result.rows
    return rows


def publish_segment(
    client: Any,
    fit_id: str,
    strategy: Strategy,
    step: int,
    units: list[Unit],
    results: list[UnitResult],
    seconds: float,
    pushes: list[int],
) -> None:
    """Log the segment's loss, each worker's rows per second and the shards' push counts as
    a Dask event."""
    rows = sum(result.rows for result in results)
    rates = {
        worker: n_rows / max(seconds, 1e-9)
        for worker, n_rows in rows_per_worker(units, results).items()
    }
    record = {
        "fit": fit_id,
        "strategy": strategy.name,
        "time": time.time(),
        "step": int(step),
        "loss": float(sum(result.loss_sum for result in results) / max(rows, 1)),
        "rows_per_second": rates,
        "workers": len(units),
        "pushes": pushes,
        **strategy.dashboard(results),
    }
    client.log_event(TOPIC, record)

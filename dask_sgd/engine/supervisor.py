"""Supervising a segment's units: submit one per worker, wait, abort, name the cause.

The units wait for each other at the shards, so when one fails the others would wait for
ever: the supervisor aborts the shards, which fails every waiting unit with
:class:`TrainingAborted`. Those failures are consequences; the error reported is the first
one that is not (a non-finite step before any other, as it names the step and partition).
"""

from __future__ import annotations

from typing import Any

from distributed import KilledWorker, wait

from dask_sgd.blocks import Unit
from dask_sgd.engine.keeper import ShardKeeper
from dask_sgd.engine.strategies import Carry, Strategy, UnitResult
from dask_sgd.engine.units import SegmentPlan, train_unit
from dask_sgd.errors import NonFiniteParameters, ShardLost, TrainingAborted, TrainingFailed


class UnitSupervisor:
    """Runs the units of one segment and returns their results, or raises the cause."""

    def __init__(self, client: Any, keeper: ShardKeeper, strategy: Strategy) -> None:
        self.client, self.keeper, self.strategy = client, keeper, strategy

    def run(self, units: list[Unit], plan: SegmentPlan, carries: list[Carry]) -> list[UnitResult]:
        """Each unit runs the whole segment; raise :class:`ShardLost` if a shard's worker
        left, else the root cause of a failure."""
        futures = [self._submit(j, unit, plan, carries[j]) for j, unit in enumerate(units)]
        try:
            failed = self._wait(futures)
            if failed:
                raise root_cause(failed)
            results = self._results(futures)
        except (ShardLost, TrainingFailed, NonFiniteParameters):
            raise
        except Exception as error:  # a unit or a call failed: was it a lost shard?
            self.keeper.raise_if_lost(grace=2.0, cause=error)
            if isinstance(error, KilledWorker):
                raise TrainingFailed(
                    f"Workers kept dying under a training task: {error}"
                ) from error
            raise
        finally:
            # Release now, not when garbage collected: a reference cycle (through a timed-out
            # wait's traceback) can hold these futures, and Dask reruns a finished unit that
            # is still wanted when the worker holding its result dies.
            for future in futures:
                future.release()
        return results

    def _submit(self, index: int, unit: Unit, plan: SegmentPlan, carry: Carry):
        server = self.keeper.server
        return self.client.submit(
            train_unit,
            [block.key for block in unit.blocks],
            unit.partitions,
            server.refs,
            server.ranges,
            self.strategy,
            plan,
            index,
            carry,
            key=f"dask-sgd-{self.strategy.name}-step{plan.first_step}-unit{index}-{server.name}",
            workers=[unit.worker],
            allow_other_workers=True,
            pure=False,
        )

    def _wait(self, futures: list) -> list[BaseException]:
        """Wait for the units, watching the shards' workers and the scheduler; return the
        units' errors in the order they failed (none if all finished).

        At the first failure the shards are aborted, so that no other unit waits for it, and
        the other units are awaited (they end at their next exchange). If a shard's worker
        is gone, raise
        :class:`ShardLost` at once: calls to a dead worker would wait for a timeout.
        """
        pending, errors = set(futures), []
        while pending:
            try:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            failed = [future for future in done if future.status == "error"]
            if failed and not errors:
                self.keeper.abort(self.keeper.lost_shards())
            errors += [future.exception() for future in failed]
            self.keeper.raise_if_lost()
        return errors

    def _results(self, futures: list) -> list[UnitResult]:
        """The finished units' results, watching the shards' workers until each is here: a
        result lost with its worker before it came makes Dask run its unit again, and a
        rerun whose shard left with that worker would wait for the shard for ever."""
        results = []
        for future in futures:
            while True:
                try:
                    results.append(future.result(timeout=1.0))
                    break
                except TimeoutError:
                    self.keeper.raise_if_lost()
        return results


def root_cause(errors: list[BaseException]) -> BaseException:
    """The error to report: a non-finite step (the earliest), else the first error that is
    not a consequence of the abort."""
    refused = [error for error in errors if isinstance(error, NonFiniteParameters)]
    if refused:
        return min(refused, key=lambda error: error.step)
    causes = [error for error in errors if not isinstance(error, TrainingAborted)]
    return (causes or errors)[0]

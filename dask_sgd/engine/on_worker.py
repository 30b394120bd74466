"""What a fit keeps on each worker between its segments, and Dask's machinery off its core.

A unit is a new task every segment, but much of what it sets up is the same each time: its
blocks' targets, encoded as the losses take them (a pass over every row's label, about 7 %
of an epoch on W1), are kept here by partition for the rest of the fit.

While a fit trains on a worker, the worker's statistical profiler is stopped. Every 10 ms
it takes the GIL to walk every thread's stack, which slowed a unit's steps by about 8 % on
W1 (``docs/benchmarks.md``, "Engine efficiency"); the dashboard's profile page shows
nothing for that worker meanwhile. Heartbeats, the memory monitor and the other periodic
callbacks keep running: they cost little, and the scheduler and the memory limits need
them. The first fit on a worker stops the profiler, and the last one to end
(:func:`forget_fit`, which the trainer runs on every worker when it closes) restarts it.
A worker whose fit ended without that call (its client died) keeps it stopped until it
restarts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: the worker's periodic callbacks that a fit stops: the statistical profiler's
PROFILER_CALLBACKS = ("profile", "profile-cycle")
#: the worker attribute holding the fits' states, by fit
FITS = "_dask_sgd_fits"
#: the worker attribute naming the callbacks the first fit stopped
STOPPED = "_dask_sgd_stopped_callbacks"


@dataclass
class FitOnWorker:
    """One fit's state on one worker: encoded targets by partition."""

    targets: dict[int, tuple[Any, Any]] = field(default_factory=dict)


def fit_on_worker(worker: Any, fit_id: str) -> FitOnWorker:
    """The state of the fit ``fit_id`` on ``worker``, made by the fit's first unit there,
    which also stops the profiler (on the worker's event loop, where the callbacks run)."""
    fits = worker.__dict__.setdefault(FITS, {})
    if fit_id not in fits:
        fits[fit_id] = FitOnWorker()
        worker.loop.add_callback(_stop_profiler, worker)
    return fits[fit_id]


def _stop_profiler(worker: Any) -> None:
    if getattr(worker, STOPPED, None) is not None or not getattr(worker, FITS, None):
        return  # stopped by another fit already, or every fit has ended meanwhile
    stopped = []
    for name in PROFILER_CALLBACKS:
        callback = worker.periodic_callbacks.get(name)
        if callback is not None and callback.is_running():
            callback.stop()
            stopped.append(name)
    setattr(worker, STOPPED, stopped)


def forget_fit(dask_worker: Any, fit_id: str) -> None:
    """Drop the fit's state (``client.run`` runs this on the event loop of every worker);
    the last fit to end restarts the callbacks the first one stopped."""
    fits = getattr(dask_worker, FITS, {})
    fits.pop(fit_id, None)
    stopped = getattr(dask_worker, STOPPED, None)
    if fits or stopped is None:
        return
    for name in stopped:
        dask_worker.periodic_callbacks[name].start()
    setattr(dask_worker, STOPPED, None)


def forget_on_workers(client: Any, fit_id: str) -> None:
    """Run :func:`forget_fit` on every worker (best effort: a worker that left has nothing
    to forget, and a cluster that is closing restores nothing)."""
    try:
        client.run(forget_fit, fit_id=fit_id, on_error="ignore")
    except (OSError, RuntimeError) as error:
        logger.debug("Could not forget the fit on the workers: %r", error)

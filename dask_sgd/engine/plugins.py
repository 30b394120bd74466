"""The scheduler plugins a fit needs, registered for the length of the fit.

:class:`~dask_sgd.ps.retirement.ShardRetirement` wraps the scheduler's ``retire_workers``
handler: it is registered when a fit starts and removed, giving the handler back, when the
last fit on the cluster ends (each fit registers itself with it, on the scheduler's event
loop, so that two fits never race). :class:`~dask_sgd.dashboard.DashboardPage` stays: it
has no scheduler hook, it only adds the ``/dask-sgd`` page to the dashboard, which shows
the last fit after it ended.
"""

from __future__ import annotations

import logging
from typing import Any

from dask_sgd.dashboard import DashboardPage
from dask_sgd.ps.retirement import ShardRetirement

logger = logging.getLogger(__name__)


def attach_plugins(client: Any, fit_id: str) -> None:
    """Register the plugins for the fit ``fit_id`` (best effort: a scheduler that cannot
    import dask_sgd trains without them)."""
    try:
        client.run_on_scheduler(_attach, fit_id=fit_id)
    except (ImportError, OSError, RuntimeError) as error:
        logger.warning(
            "Workers holding shards cannot retire gracefully, and the /dask-sgd dashboard "
            "page is not available: %r",
            error,
        )


def detach_plugins(client: Any, fit_id: str) -> None:
    """The fit ``fit_id`` has ended: remove the retirement plugin if no fit uses it."""
    try:
        client.run_on_scheduler(_detach, fit_id=fit_id)
    except (ImportError, OSError, RuntimeError) as error:  # the scheduler is gone
        logger.debug("Could not detach the plugins: %r", error)


async def _attach(dask_scheduler: Any, fit_id: str) -> None:
    for plugin in (ShardRetirement(), DashboardPage()):
        await dask_scheduler.register_scheduler_plugin(plugin, plugin.name, idempotent=True)
    dask_scheduler.plugins[ShardRetirement.name].fits.add(fit_id)


async def _detach(dask_scheduler: Any, fit_id: str) -> None:
    retirement = dask_scheduler.plugins.get(ShardRetirement.name)
    if retirement is None:
        return
    retirement.fits.discard(fit_id)
    if not retirement.fits:
        await retirement.close()
        dask_scheduler.remove_plugin(ShardRetirement.name)

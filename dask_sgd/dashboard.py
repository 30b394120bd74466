"""A page on the Dask dashboard, ``/dask-sgd``: the fits on the cluster, live.

The trainer publishes one record per segment (every few seconds) as a Dask structured event
(``Client.log_event``, topic ``dask-sgd``): the training loss, the number of workers
training, rows per second of each worker, the staleness of asynchronous pushes and each
parameter-server shard's push count. A scheduler plugin, registered by the first fit on a
cluster, adds the page to the scheduler's dashboard as Dask adds its own: a Bokeh
application on the dashboard's web server, listed in the dashboard's menu. The page
(:mod:`dask_sgd.dashboard_page`) reads the records on the scheduler and draws the latest
fit's.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed import SchedulerPlugin
from tornado.ioloop import IOLoop

logger = logging.getLogger(__name__)

TOPIC = "dask-sgd"
ROUTE = "/dask-sgd"


class DashboardPage(SchedulerPlugin):
    """Adds ``/dask-sgd`` to the scheduler's dashboard and its menu."""

    name = "dask-sgd-dashboard"
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        dashboard = dashboard_of(scheduler)
        if dashboard is None:  # a scheduler without a dashboard (or without Bokeh)
            return
        # imported here: Bokeh takes a while to import, and only the scheduler draws
        from distributed.dashboard.core import BokehApplication
        from distributed.dashboard.scheduler import template_variables

        from dask_sgd.dashboard_page import page_doc

        # Dask's pages share this (memoized) list of menu entries: one more shows on them all
        menu = template_variables(scheduler)
        if ROUTE.strip("/") not in menu["pages"]:
            menu["pages"].append(ROUTE.strip("/"))
        application = BokehApplication(
            {ROUTE: page_doc}, scheduler, prefix=dashboard.prefix, template_variables=menu
        )
        scheduler.http_application.add_application(application)
        application.initialize(IOLoop.current())
        application.start()


def dashboard_of(scheduler: Any) -> Any:
    """The Bokeh server of the scheduler's dashboard, or None where there is none."""
    try:
        from bokeh.server.server import BokehTornado
    except ImportError:
        return None
    http = getattr(scheduler, "http_application", None)
    servers = (app for app in getattr(http, "applications", ()) if isinstance(app, BokehTornado))
    return next(servers, None)

"""The scheduler plugins a fit registers: there while a fit runs, gone when none does."""

from __future__ import annotations

import dask.array as da
from sklearn.datasets import make_classification

from dask_sgd import SGDClassifier
from dask_sgd.dashboard import DashboardPage
from dask_sgd.engine.plugins import attach_plugins, detach_plugins
from dask_sgd.ps.retirement import ShardRetirement


def retirement_state(client) -> tuple[bool, bool]:
    """Whether the retirement plugin is registered, and whether it holds the handler."""

    def look(dask_scheduler):
        plugin = dask_scheduler.plugins.get(ShardRetirement.name)
        handler = dask_scheduler.handlers["retire_workers"]
        return plugin is not None, plugin is not None and handler == plugin.retire_workers

    return tuple(client.run_on_scheduler(look))


def test_the_retirement_plugin_stays_while_any_fit_runs_and_then_leaves(client):
    assert retirement_state(client) == (False, False)
    attach_plugins(client, "first")
    attach_plugins(client, "second")  # a second fit on the same cluster
    assert retirement_state(client) == (True, True)
    detach_plugins(client, "first")
    assert retirement_state(client) == (True, True)  # the second fit still runs
    detach_plugins(client, "second")
    assert retirement_state(client) == (False, False)  # the scheduler's own handler is back
    assert client.run_on_scheduler(
        lambda dask_scheduler: (
            dask_scheduler.handlers["retire_workers"] == dask_scheduler.retire_workers
        )
    )


def test_a_fit_leaves_no_retirement_plugin_and_keeps_the_dashboard_page(client):
    X, y = make_classification(n_samples=400, n_features=4, random_state=0)
    SGDClassifier(max_iter=2, tol=None, batch_size=16).fit(
        da.from_array(X, chunks=100), da.from_array(y, chunks=100)
    )
    assert retirement_state(client) == (False, False)
    assert client.run_on_scheduler(
        lambda dask_scheduler: DashboardPage.name in dask_scheduler.plugins
    )

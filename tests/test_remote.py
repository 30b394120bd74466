"""A unit's calls to the shards (:mod:`dask_sgd.ps.remote`): an error, never a wait for ever,
when a shard's worker is gone; and units that depend on no task (shards by address, blocks
by key)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from dask import array as da
from distributed import get_worker
from distributed.actor import Actor
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils_test import gen_cluster

from dask_sgd import SGDClassifier, optim
from dask_sgd.ps import Clocked, ParameterShard
from dask_sgd.ps.remote import RemoteShard, ShardRef, ShardUnreachable

#: a dead worker's port refuses at once, but Dask retries a connection for this long
SHORT_CONNECT = {"distributed.comm.timeouts.connect": "1s"}


def pushes_and_pulls(ref: ShardRef) -> tuple:
    """A task: a push, a pull, and a request the shard refuses, through ``ref``."""
    shard = RemoteShard(ref, get_worker())
    shard.push(0, np.array([1.0, 2.0]), 0.5, ("unit", 0), 0).result()
    params, version = shard.pull().result()
    try:
        shard.call("claim", 1).result()
    except ValueError as error:
        return params, version, str(error)
    return params, version, None


def call_through(shard: RemoteShard | Actor) -> None:
    """A task: a pull from ``shard`` (a RemoteShard or an actor proxy), waiting at most
    5 s (after a connection timeout of 1 s); "timed out" if no answer came."""
    try:
        shard.pull().result(timeout=5)
    except TimeoutError:
        return "timed out"
    return "answered"


@gen_cluster(client=True)
async def test_a_task_calls_a_shard_on_another_worker_and_gets_its_errors(c, s, a, b):
    actor = await c.submit(
        ParameterShard, np.zeros(2), optim.sgd(), Clocked(1), actor=True, workers=[a.address]
    )
    ref = ShardRef.of(actor)
    params, version, refused = await c.submit(pushes_and_pulls, ref, workers=[b.address])
    np.testing.assert_array_equal(params, [-0.5, -1.0])
    assert version == 1
    assert refused.startswith("Clocked has no request 'claim'")


@gen_cluster(client=True, config=SHORT_CONNECT)
async def test_a_call_to_a_shard_whose_worker_is_gone_raises(c, s, a, b):
    future = c.submit(ParameterShard, np.zeros(2), optim.sgd(), actor=True, workers=[b.address])
    actor = await future
    ref = ShardRef.of(actor)
    del actor, future  # as the trainer does when it restarts the shards elsewhere
    await b.close()

    def call(ref):
        try:
            RemoteShard(ref, get_worker()).pull().result()
        except ShardUnreachable as error:
            return str(error)

    message = await c.submit(call, ref, workers=[a.address])
    assert message.startswith(f"Could not reach the parameter-server shard {ref.key} on ")


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="Dask's behaviour: a proxy's call waits for ever"
)
@gen_cluster(client=True, config=SHORT_CONNECT, timeout=60)
async def test_dask_an_actor_call_to_a_gone_worker_waits_for_ever(c, s, a, b):
    """The reproducer of what :class:`RemoteShard` works around (distributed 2026.8): in a
    task, an actor proxy's call that cannot connect waits on the actor's future; once that
    future is released, its error is only logged and the call never answers. (Passes, and
    so fails here as an unexpected pass, the day Dask answers the call with an error.)"""
    future = c.submit(ParameterShard, np.zeros(2), optim.sgd(), actor=True, workers=[b.address])
    actor = await future
    cls, address, key = actor._cls, actor._address, actor.key
    del actor, future
    await b.close()

    def call(cls, address, key):
        try:
            return call_through(Actor(cls, address, key))
        except (OSError, RuntimeError, asyncio.CancelledError):  # what a caller can act on
            return "raised"

    assert await c.submit(call, cls, address, key, workers=[a.address]) == "raised"


class UnitDependencies(SchedulerPlugin):
    """Records the dependencies of every training unit the scheduler runs."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "processing" and "-unit" in str(key):
            task = self.scheduler.tasks[key]
            self.seen[str(key)] = [str(dep.key) for dep in task.dependencies]


@pytest.mark.timeout(60)
def test_training_units_depend_on_no_task(client):
    """A unit that took the shards' actors, or its blocks, as arguments would depend on
    their keys, and its worker would close when told to drop its replica of one while the
    unit runs (issue 19's deaths): units take them by address and by key."""
    plugin = UnitDependencies()
    client.register_plugin(plugin, name="unit-dependencies")
    X = da.random.default_rng(0).normal(size=(400, 4), chunks=100)
    y = (X[:, 0] > 0).astype(int)
    for strategy in ("sync", "downpour"):
        SGDClassifier(strategy=strategy, max_iter=1, tol=None, random_state=0).fit(X, y)
    seen = client.run_on_scheduler(
        lambda dask_scheduler: dask_scheduler.plugins["unit-dependencies"].seen
    )
    client.unregister_scheduler_plugin("unit-dependencies")
    assert len(seen) >= 4, seen  # two units (one per worker) of each fit at least
    assert all(dependencies == [] for dependencies in seen.values()), seen

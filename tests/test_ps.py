"""The parameter server: shard actors on real (in-process) Dask clusters."""

from __future__ import annotations

import asyncio
import socket
import time

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster
from distributed.protocol import deserialize, serialize
from distributed.utils_test import gen_cluster

from dask_sgd import defaults, optim
from dask_sgd._tree import tree_leaves
from dask_sgd.errors import NonFiniteParameters, TrainingAborted
from dask_sgd.ps import (
    Averaging,
    Clocked,
    MeanGradientStep,
    ParameterServer,
    ParameterShard,
    shard_ranges,
)
from dask_sgd.ps.lane import Lanes, LaneStream
from dask_sgd.ps.retirement import ShardRetirement
from dask_sgd.ps.server import ServerState
from dask_sgd.ps.shard import ShardSnapshot
from dask_sgd.sparse import SparseVector
from dask_sgd.sparse.setup import SparseSetup


@gen_cluster(client=True)
async def test_a_request_the_rule_does_not_know_is_refused(c, s, a, b):
    shard = await c.submit(ParameterShard, np.zeros(3), optim.sgd(), Clocked(1), actor=True)
    with pytest.raises(ValueError, match="Clocked has no request 'claim'"):
        await shard.call("claim", 1)  # the budget is Downpour's, not bounded staleness'
    _, version = await shard.call("pull_bounded", 0)
    assert version == 0


@gen_cluster(client=True)
async def test_push_applies_the_optimizer_once_per_token(c, s, a, b):
    shard = await c.submit(ParameterShard, np.ones(2), optim.momentum(0.5), actor=True)
    await shard.push(np.array([1.0, 2.0]), 0.1, token=("unit", 0))
    await shard.push(np.array([1.0, 2.0]), 0.1, token=("unit", 0))
    await shard.push(np.array([1.0, 2.0]), 0.1, token=("unit", 1))
    # momentum: m1 = g, m2 = 0.5 g + g; θ = 1 - 0.1 (g + 1.5 g)
    params, version = await shard.pull()
    np.testing.assert_allclose(params, 1 - 0.25 * np.array([1.0, 2.0]))
    assert version == (await shard.stats()).pushes == 2


@gen_cluster(client=True)
async def test_a_staleness_aware_push_divides_its_rate_by_its_staleness(c, s, a, b):
    """Three updates since the pusher fetched at version 0: staleness 3, so the step is
    η / 3 with ``staleness_aware`` (Zhang et al. 2016), η without; the same for a unit of
    bounded staleness."""
    grad = np.array([1.0, 2.0])
    for aware, rate in ((False, 0.3), (True, 0.1)):
        for rule, unit in ((None, ()), (Clocked(2), (1,))):
            shard = await c.submit(ParameterShard, np.zeros(2), optim.sgd(), rule, actor=True)
            for t in range(3):  # updates that change nothing
                await shard.push(*unit, np.zeros(2), 0.3, ("other", t), 0)
            answer = await shard.push(*unit, grad, 0.3, ("late", 0), 0, aware)
            assert answer[:2] == (4, 3)  # the version after it, its staleness
            params, _ = await shard.pull()
            np.testing.assert_allclose(params, -rate * grad)


@gen_cluster(client=True)
async def test_synchronous_step_waits_for_every_contributor(c, s, a, b):
    shard = await c.submit(
        ParameterShard, np.zeros(2), optim.sgd(), MeanGradientStep(2), actor=True
    )
    first = asyncio.ensure_future(shard.push(0, np.array([1.0, 0.0]), (0, 0), 1.0))
    await asyncio.sleep(0.05)
    assert not first.done()  # one of two gradients has arrived
    assert (await shard.stats()).version == 0
    second = await shard.push(0, np.array([3.0, 2.0]), (0, 1), 1.0)
    params, version = await first
    np.testing.assert_array_equal(params, [-2.0, -1.0])  # minus the mean gradient
    np.testing.assert_array_equal(second[0], params)
    assert version == second[1] == 1


@gen_cluster(client=True)
async def test_synchronous_steps_apply_in_order(c, s, a, b):
    shard = await c.submit(
        ParameterShard, np.zeros(1), optim.sgd(), MeanGradientStep(1), actor=True
    )
    later = asyncio.ensure_future(shard.push(1, np.array([10.0]), 1, 1.0))
    await asyncio.sleep(0.05)
    assert not later.done()  # step 1 waits for step 0
    await shard.push(0, np.array([1.0]), 0, 1.0)
    params, version = await later
    assert version == 2
    np.testing.assert_array_equal(params, [-11.0])


# before the tests of the module's client (a cluster whose loop a gen_cluster test's own
# client must not meet)
async def _ticks(gaps: list[float], stop: asyncio.Event) -> None:
    """The event loop's pace: the seconds between ticks meant to be 2 ms apart."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rule", ["downpour", "sync"])
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)])
async def test_a_large_slices_update_leaves_the_workers_event_loop_running(c, s, a, rule):
    """Two Adam updates of a slice of 2^23 entries: the event loop that the worker shares
    here with the scheduler and the client keeps ticking meanwhile (it was held for each
    update's whole length), and the updates apply in the order they came."""
    rng = np.random.default_rng(0)
    params = rng.standard_normal(2**23)
    grads = [rng.standard_normal(params.size) for _ in range(2)]
    exchange = MeanGradientStep(1) if rule == "sync" else None
    start = await c.scatter(params)  # not in the graph: 64 MiB
    shard = await c.submit(ParameterShard, start, optim.adam(), exchange, actor=True)
    gaps: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticks(gaps, stop))
    started = time.perf_counter()
    if rule == "sync":  # rounds 1 and 0, sent in that order: 0 applies first
        pushes = [shard.push(round_, grads[round_], round_, 0.01) for round_ in (1, 0)]
    else:
        pushes = [shard.push(grad, 0.01, token=i) for i, grad in enumerate(grads)]
    answers = await asyncio.gather(*pushes)
    seconds = time.perf_counter() - started
    stop.set()
    await ticker
    final, version = await shard.pull()
    assert version == 2
    order = [0, 1]  # rounds apply in their order; Downpour's pushes in their arrival's
    if rule == "downpour":
        assert sorted(version for version, _ in answers) == [1, 2]
        order = [i for _, i in sorted((version, i) for i, (version, _) in enumerate(answers))]
    expected = ParameterShard(params, optim.adam())
    for i in order:
        expected.apply(grads[i], 0.01)
    np.testing.assert_array_equal(final, expected.params)
    assert max(gaps) < seconds / 4, (max(gaps), seconds)


@gen_cluster(client=True)
async def test_duplicate_synchronous_push_is_not_counted_twice(c, s, a, b):
    shard = await c.submit(
        ParameterShard, np.zeros(1), optim.sgd(), MeanGradientStep(2), actor=True
    )
    first = asyncio.ensure_future(shard.push(0, np.array([2.0]), "same", 1.0))
    rerun = asyncio.ensure_future(shard.push(0, np.array([2.0]), "same", 1.0))
    await asyncio.sleep(0.05)
    assert not first.done() and not rerun.done()
    await shard.push(0, np.array([4.0]), "other", 1.0)
    np.testing.assert_array_equal((await first)[0], [-3.0])


@gen_cluster(client=True)
async def test_a_snapshot_keeps_its_state_while_the_shard_goes_on(c, s, a, b):
    shard = await c.submit(ParameterShard, np.zeros(2), optim.adam(), actor=True)
    await shard.push(np.ones(2), 0.1)
    saved = await shard.snapshot()
    params = saved.params.copy()
    await shard.push(np.ones(2), 0.1)
    assert (await shard.stats()).version == 2
    assert saved.version == 1 and int(saved.opt_state.count) == 1
    np.testing.assert_array_equal(saved.params, params)  # updates never work in place


@gen_cluster(client=True)
async def test_averaging_round_sets_the_mean_without_the_optimizer(c, s, a, b):
    shard = await c.submit(ParameterShard, np.zeros(2), optim.adam(), Averaging(2), actor=True)
    first = asyncio.ensure_future(shard.push(0, np.array([1.0, 4.0]), (0, 0), 1.0))
    await asyncio.sleep(0.05)
    assert not first.done()
    params, version = await shard.push(0, np.array([3.0, 0.0]), (0, 1), 1.0)
    np.testing.assert_array_equal(params, [2.0, 2.0])
    np.testing.assert_array_equal((await first)[0], params)
    assert version == 1
    assert int((await shard.snapshot()).opt_state.count) == 0  # no optimizer step


@gen_cluster(client=True)
async def test_bounded_staleness_holds_back_a_unit_too_far_ahead(c, s, a, b):
    """Two units, bound 1: unit 0 may compute step t only once unit 1 has pushed t - 1 times."""
    shard = await c.submit(ParameterShard, np.zeros(1), optim.sgd(), Clocked(2), actor=True)
    for step in range(2):  # unit 0 runs ahead: steps 0 and 1 need nothing from unit 1
        _, version = await shard.call("pull_bounded", step - 1)
        _, _, lead = await shard.push(0, np.array([1.0]), 1.0, (step, 0), version)
        assert lead == step
    held = asyncio.ensure_future(shard.call("pull_bounded", 2 - 1))  # step 2: two clocks ahead
    await asyncio.sleep(0.05)
    assert not held.done()
    # a rerun of unit 1's push must not tick its clock twice
    for _ in range(2):
        await shard.push(1, np.array([1.0]), 1.0, (0, 1), 0)
    params, version = await held
    assert version == 3
    np.testing.assert_array_equal(params, [-3.0])
    assert (await shard.stats()).pushes == 3


@gen_cluster(client=True)
async def test_abort_releases_a_unit_waiting_for_the_slowest(c, s, a, b):
    shard = await c.submit(ParameterShard, np.zeros(1), optim.sgd(), Clocked(2), actor=True)
    held = asyncio.ensure_future(shard.call("pull_bounded", 1))
    await asyncio.sleep(0.05)
    await shard.abort("a training unit failed")
    with pytest.raises(TrainingAborted, match="a training unit failed"):
        await held


@gen_cluster(client=True)
async def test_an_update_that_is_not_finite_is_refused(c, s, a, b):
    shard = await c.submit(ParameterShard, np.ones(2), optim.momentum(0.5), actor=True)
    await shard.push(np.array([1.0, 1.0]), 0.1, token=1)
    before = await shard.snapshot()
    with pytest.raises(NonFiniteParameters, match="parameters at step 1"):
        await shard.push(np.array([1.0, np.inf]), 0.1, token=2)
    after = await shard.snapshot()
    assert after.version == before.version == 1
    np.testing.assert_array_equal(after.params, before.params)
    np.testing.assert_array_equal(after.opt_state.momentum, before.opt_state.momentum)

    rule = MeanGradientStep(2)
    synchronous = await c.submit(ParameterShard, np.ones(2), optim.momentum(0.5), rule, actor=True)
    before = await synchronous.snapshot()
    first = asyncio.ensure_future(synchronous.push(0, np.array([1e308, 0.0]), (0, 0), 1e10))
    with pytest.raises(NonFiniteParameters):  # the mean of two finite gradients overflows
        await synchronous.push(0, np.array([1e308, 0.0]), (0, 1), 1e10)
    after = await synchronous.snapshot()
    assert after.version == before.version == 0
    np.testing.assert_array_equal(after.params, before.params)
    np.testing.assert_array_equal(after.opt_state.momentum, before.opt_state.momentum)
    await synchronous.abort("refused")
    with pytest.raises(TrainingAborted, match="refused"):
        await first


# --- the shards' direct lanes (a plain TCP stream per unit, bypassing actor calls) ---------


async def lane_streams(shard, n: int) -> list[LaneStream]:
    host, port, secret = await shard.call("open_lane", "127.0.0.1")
    streams = [
        await asyncio.to_thread(LaneStream, (host, port), bytes.fromhex(secret)) for _ in range(n)
    ]
    for stream in streams:  # a test that would wait for ever fails instead
        stream.sock.settimeout(10)
    return streams


def answered(stream: LaneStream, seconds: float = 0.05) -> bool:
    """Whether the lane has sent ``stream`` its answer (within ``seconds``)."""
    stream.sock.settimeout(seconds)
    try:
        return bool(stream.sock.recv(1, socket.MSG_PEEK))
    except TimeoutError:
        return False
    finally:
        stream.sock.settimeout(10)


@pytest.mark.timeout(30)
@gen_cluster(client=True)
async def test_a_lane_step_waits_for_every_contributor_and_answers_each_once(c, s, a, b):
    rule = MeanGradientStep(2)
    shard = await c.submit(ParameterShard, np.zeros(2), optim.sgd(), rule, actor=True)
    first, second = await lane_streams(shard, 2)
    try:
        await asyncio.to_thread(first.send_push, 0, np.array([1.0, 0.0]), (0, 0), 1.0)
        assert not await asyncio.to_thread(answered, first)  # one of two gradients
        assert (await shard.stats()).version == 0
        await asyncio.to_thread(second.send_push, 0, np.array([3.0, 2.0]), (0, 1), 1.0)
        for stream in (first, second):
            params, version = await asyncio.to_thread(stream.receive)
            np.testing.assert_array_equal(params, [-2.0, -1.0])  # minus the mean gradient
            assert version == 1
        # a rerun unit's push (same token) is not counted twice; the step waits on
        await asyncio.to_thread(first.send_push, 1, np.array([1.0, 1.0]), (1, 0), 1.0)
        await asyncio.to_thread(second.send_push, 1, np.array([1.0, 1.0]), (1, 0), 1.0)
        assert not await asyncio.to_thread(answered, first)
        assert (await shard.stats()).pushes == 3
        # a stream without the lane's secret (it comes through Dask's comms) is closed unheard
        host, port, _ = await shard.call("open_lane", "127.0.0.1")
        intruder = await asyncio.to_thread(LaneStream, (host, port), bytes(16))
        intruder.sock.settimeout(10)
        await asyncio.to_thread(intruder.send_push, 1, np.array([9.0, 9.0]), (1, 1), 1.0)
        with pytest.raises(ConnectionError):
            await asyncio.to_thread(intruder.receive)
        intruder.close()
        assert (await shard.stats()).pushes == 3
        # the actor calls reach the same barrier
        params, version = await shard.push(1, np.array([3.0, 3.0]), (1, 1), 1.0)
        np.testing.assert_array_equal(params, [-4.0, -3.0])
        for stream in (first, second):
            assert await asyncio.to_thread(stream.receive) == (pytest.approx(params), 2)
    finally:
        first.close()
        second.close()


@pytest.mark.timeout(30)
@gen_cluster(client=True)
async def test_a_late_push_to_a_lane_is_dropped_and_counted(c, s, a, b):
    """Backup workers: a step applies the first gradient of two; the late one is dropped
    and its unit is answered at once with the step it missed."""
    rule = MeanGradientStep(1)
    shard = await c.submit(ParameterShard, np.zeros(2), optim.sgd(), rule, actor=True)
    fast, late = await lane_streams(shard, 2)
    try:
        await asyncio.to_thread(fast.send_push, 0, np.array([1.0, 2.0]), (0, 0), 1.0)
        params, version = await asyncio.to_thread(fast.receive)
        np.testing.assert_array_equal(params, [-1.0, -2.0])
        await asyncio.to_thread(late.send_push, 0, np.array([5.0, 5.0]), (0, 1), 1.0)
        late_params, late_version = await asyncio.to_thread(late.receive)
        np.testing.assert_array_equal(late_params, params)
        assert late_version == version == 1
        stats = await shard.stats()
        assert (stats.pushes, stats.dropped) == (1, 1)
    finally:
        fast.close()
        late.close()


@pytest.mark.timeout(30)
@gen_cluster(client=True)
async def test_abort_releases_a_unit_waiting_at_a_lane(c, s, a, b):
    rule = MeanGradientStep(2)
    shard = await c.submit(ParameterShard, np.zeros(2), optim.sgd(), rule, actor=True)
    (stream,) = await lane_streams(shard, 1)
    try:
        await asyncio.to_thread(stream.send_push, 0, np.array([1.0, 0.0]), (0, 0), 1.0)
        assert not await asyncio.to_thread(answered, stream)  # waits for the other unit
        await shard.abort("a training unit failed")
        with pytest.raises(TrainingAborted, match="a training unit failed"):
            await asyncio.to_thread(stream.receive)
        await asyncio.to_thread(stream.send_pull, 0)  # and every later request
        with pytest.raises(TrainingAborted):
            await asyncio.to_thread(stream.receive)
    finally:
        stream.close()


@pytest.mark.timeout(30)
@gen_cluster(client=True)
async def test_a_shards_slice_goes_out_once_the_backward_pass_reaches_it(c, s, a, b):
    """The layer-wise exchange: a gradient finished by pieces from θ's end (as the backward
    pass finishes a network's layers) goes to each shard as soon as the pieces cover its
    slice, so the last layers' shard steps while the first layers' gradient is computed."""
    shards = [
        await c.submit(ParameterShard, np.zeros(2), optim.sgd(), MeanGradientStep(1), actor=True)
        for _ in range(2)
    ]
    streams = [(await lane_streams(shard, 1))[0] for shard in shards]
    lanes = Lanes([(slice(0, 2), streams[0]), (slice(2, 4), streams[1])])
    gradient = np.full(4, np.nan)
    seen_while_computing = {}

    def backward_pass():
        gradient[2:] = [3.0, 4.0]
        yield slice(2, 4)
        # the second shard has its slice, and has stepped, before this piece is computed
        seen_while_computing["answered"] = [answered(streams[1], 5.0), answered(streams[0])]
        gradient[:2] = [1.0, 2.0]
        yield slice(0, 2)

    try:
        answers = await asyncio.to_thread(
            lanes.push_pieces, 0, gradient, backward_pass(), (0, 0), 1.0
        )
    finally:
        lanes.close()
    assert seen_while_computing["answered"] == [True, False]
    assert [(where, list(params), version) for where, (params, version) in answers] == [
        (slice(0, 2), [-1.0, -2.0], 1), (slice(2, 4), [-3.0, -4.0], 1)
    ]  # fmt: skip


@gen_cluster(client=True)
async def test_retiring_a_shard_holder_waits_until_its_shard_has_gone(c, s, a, b):
    """Adaptive scaling down names the workers to retire; the plugin resolves the names."""
    await c.register_plugin(ShardRetirement(), name=ShardRetirement.name)
    shard = c.submit(
        ParameterShard, np.zeros(2), optim.sgd(), actor=True, workers=[a.address],
        key="dask-sgd-shard-0-test",
    )  # fmt: skip
    await shard
    retiring = asyncio.ensure_future(c.retire_workers(names=[a.name]))
    await asyncio.sleep(0.3)
    assert not retiring.done()
    assert s.workers[a.address].status.name == "closing_gracefully"  # no new work goes there
    shard.release()  # the trainer moved the shard
    assert list(await retiring) == [a.address]
    assert a.address not in s.workers


@gen_cluster(client=True)
async def test_scaling_down_prefers_a_worker_without_a_shard(c, s, a, b):
    await c.register_plugin(ShardRetirement(), name=ShardRetirement.name)
    for holder, other in ((a, b), (b, a)):
        shard = c.submit(
            ParameterShard, np.zeros(2), optim.sgd(), actor=True, workers=[holder.address],
            key=f"dask-sgd-shard-0-{holder.name}",
        )  # fmt: skip
        await shard
        assert s.workers_to_close(n=1) == [other.address]
        shard.release()
        while any(ws.actors for ws in s.workers.values()):
            await asyncio.sleep(0.01)


def test_shard_ranges_cover_everything_once():
    ranges = shard_ranges(11, 4)
    covered = np.concatenate([np.arange(11)[r] for r in ranges])
    np.testing.assert_array_equal(covered, np.arange(11))
    assert all(r.stop > r.start for r in ranges)
    with pytest.raises(ValueError, match="n_shards"):
        shard_ranges(3, 4)


def test_server_spreads_shards_and_joins_them(client):
    theta = np.arange(10.0)
    server = ParameterServer.start(client, theta, optim.sgd(), n_shards=2)
    try:
        assert len(server.shards) == 2
        workers = client.who_has(server.futures)
        assert len({w for ws in workers.values() for w in ws}) == 2
        np.testing.assert_array_equal(server.state().params, theta)
        grad = np.ones(10)
        calls = [
            s.push(grad[where], 0.5, "x")
            for s, where in zip(server.shards, server.ranges, strict=True)
        ]
        [call.result() for call in calls]
        state = server.state()
        np.testing.assert_array_equal(state.params, theta - 0.5)  # each shard applied its slice
        assert server.versions() == [1, 1] and state.version == 1
        assert state.average is None and state.n_averaged == 0  # averaging was not started
    finally:
        server.close()


def push_ones(server, rate: float, token: str) -> None:
    calls = [
        shard.push(np.ones(where.stop - where.start), rate, token)
        for shard, where in zip(server.shards, server.ranges, strict=True)
    ]
    [call.result() for call in calls]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kept_on_workers", [False, True])
def test_a_large_models_snapshot_stays_on_the_workers(client, kept_on_workers):
    """Above ``dask-sgd.kept-snapshot-params`` each shard keeps its snapshot and another
    worker holds a copy; nothing comes to the client until asked, and what comes is the
    snapshot's state, not the shards' state now. A small model's comes with the statistics."""
    theta = np.arange(12.0)
    server = ParameterServer.start(client, theta, optim.sgd(), n_shards=2)
    try:
        limit = 0 if kept_on_workers else 100
        with dask.config.set({"dask-sgd.kept-snapshot-params": limit}):
            push_ones(server, 0.5, "first")
            kept, stats = server.keep_snapshot(client)
        assert [stat.version for stat in stats] == [1, 1] and kept.version == 1
        assert kept.in_client is not kept_on_workers
        if kept_on_workers:
            assert kept.shards == server.refs
            for shard, holder in zip(kept.shards, kept.holders, strict=True):
                assert holder.address != shard.address  # the replica is on another worker
        push_ones(server, 0.5, "second")  # after the snapshot
        state = kept.state(client)
        np.testing.assert_array_equal(state.params, theta - 0.5)
        assert state.version == 1
        np.testing.assert_array_equal(server.state().params, theta - 1.0)
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_a_sparse_shards_snapshots_and_their_replicas_follow_what_changed(client):
    """A sparse model's shards keep their snapshots on the workers, and the next shard on
    another worker a replica, brought up to date by what the pushes touched: at every
    snapshot, each shard's own and its replica hold the state of the snapshot, exactly,
    and not the state after later pushes. What a shard sends its replica's holder after
    the first whole copy is the touched entries alone. The shards settle on a snapshot as
    soon as its every replica is made, not at the next one."""
    size = 4_000
    setup = SparseSetup(l2=0.01, l1=0.0, penalized_stop=size - 1)
    server = ParameterServer.start(
        client, np.zeros(size), optim.adagrad(), n_shards=2, sparse=setup
    )
    rng = np.random.default_rng(0)
    kept = None
    try:
        with dask.config.set({"dask-sgd.kept-snapshot-params": 0}):
            for snapshot in range(4):
                if snapshot == 2:
                    server.start_averaging()
                for push in range(3):
                    touched = np.sort(rng.choice(size, size=20, replace=False))
                    grad = SparseVector(touched, rng.normal(size=20), size)
                    calls = [
                        shard.push(grad[where], 0.1, f"{snapshot}-{push}")
                        for shard, where in zip(server.shards, server.ranges, strict=True)
                    ]
                    [call.result() for call in calls]
                expected = server.state()
                kept, _ = server.keep_snapshot(client, None if kept is None else kept.version)
                # the shards settle on it at once (what they kept for the one before goes)
                until(lambda v=kept.version: set(kept_versions(client, server)) == {v})
                push_sparse_noise(server, size, f"after-{snapshot}")  # not in the snapshot
                for read in (read_own, read_replicas):
                    got = ServerState.join(read(server, kept))
                    assert got.version == expected.version == kept.version
                    np.testing.assert_array_equal(got.params, expected.params)
                    np.testing.assert_array_equal(got.opt_state, expected.opt_state)
                    if snapshot >= 2:
                        np.testing.assert_array_equal(got.average, expected.average)
                # the first snapshot copies whole states; the others, the one after the
                # average started too, only the entries 3 pushes and the noise touched
                whole = snapshot == 0
                assert (kept.copied > size * 8) if whole else (0 < kept.copied < 4 * 20 * 60)
        np.testing.assert_array_equal(kept.state(client).params, expected.params)
    finally:
        server.close()


@pytest.mark.timeout(10)
def test_a_snapshot_crosses_the_schedulers_comms_without_a_copy():
    """The scheduler's comms pickle with protocol 4, which copies arrays in band: a
    snapshot's arrays go as frames of their own memory instead, and come back as they were
    (the optimizer state's structure and scalars too)."""
    params = np.arange(1000.0)
    state = optim.adam().update(np.ones(1000), optim.adam().init(params), params)[1]
    snapshot = ShardSnapshot(params, state, 7, params * 2, 3)
    header, frames = serialize(
        snapshot, serializers=("dask", "pickle"), context={"pickle-protocol": 4}
    )
    views = [np.asarray(memoryview(frame).cast("B")) for frame in frames]
    arrays = [snapshot.params, snapshot.average, state.mu, state.nu]
    assert all(any(np.shares_memory(view, array) for view in views) for array in arrays)
    back = deserialize(header, frames)
    assert type(back.opt_state) is type(state) and (back.version, back.n_averaged) == (7, 3)
    leaves = [back.params, back.average, *tree_leaves(back.opt_state)]
    for got, expected in zip(leaves, [params, params * 2, *tree_leaves(state)], strict=True):
        np.testing.assert_array_equal(got, expected)


def until(condition, seconds: float = 10.0) -> None:
    """Until ``condition()`` holds (what is not waited for gets there), or fail."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def kept_versions(client, server) -> list:
    """The version of the snapshot that each sparse shard keeps, read on its worker."""

    def read(dask_worker, keys):
        actors = dask_worker.state.actors
        return [actors[key].kept_version for key in keys if key in actors]

    keys = [shard.key for shard in server.shards]
    return [version for versions in client.run(read, keys=keys).values() for version in versions]


def push_sparse_noise(server, size: int, token: str) -> None:
    grad = SparseVector(np.arange(0, size, 400), np.ones(10), size)  # 10 entries
    calls = [
        shard.push(grad[where], 0.1, token)
        for shard, where in zip(server.shards, server.ranges, strict=True)
    ]
    [call.result() for call in calls]


def read_own(server, kept):
    return [shard.kept_snapshot(kept.version).result() for shard in server.shards]


def read_replicas(server, kept):
    holders = {shard._address: shard for shard in server.shards}
    return [
        holders[holder.address].replica(shard.key, kept.version).result()
        for shard, holder in zip(kept.shards, kept.holders, strict=True)
    ]


@pytest.mark.timeout(60)
def test_with_one_worker_a_kept_snapshot_comes_to_the_client():
    """Nowhere else to copy it: the shards' kept snapshots come to the client."""
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as one,
    ):
        server = ParameterServer.start(one, np.arange(6.0), optim.sgd(), n_shards=2)
        try:
            with dask.config.set({"dask-sgd.kept-snapshot-params": 0}):
                push_ones(server, 0.5, "only")
                kept, _ = server.keep_snapshot(one)
            assert kept.in_client and kept.version == 1
            np.testing.assert_array_equal(kept.state(one).params, np.arange(6.0) - 0.5)
        finally:
            server.close()


def test_default_shards_follow_the_model_size(client):
    """A small model gets one shard (each shard is one more message per unit and exchange);
    a large one one per MIN_SHARD_SIZE parameters, at most one per worker."""
    sizes = {}
    for size in (101, 2 * defaults.MIN_SHARD_SIZE, 5 * defaults.MIN_SHARD_SIZE):
        server = ParameterServer.start(client, np.zeros(size), optim.sgd())
        try:
            sizes[size] = len(server.shards)
        finally:
            server.close()
    assert list(sizes.values()) == [1, 2, 2]


def test_server_refuses_a_global_transformation(client):
    class GlobalNorm(optim.GradientTransformation):
        elementwise = False

    with pytest.raises(ValueError, match="not elementwise"):
        ParameterServer.start(client, np.zeros(4), GlobalNorm())

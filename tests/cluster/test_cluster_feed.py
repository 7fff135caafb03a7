"""ClusterLiveFeed against a real 3x1 LocalCluster: one SSUBSCRIBE connection per primary, each
poll's snapshots in publish order, and the feed following a poll's channel when its slot moves
(a failover, or a slot migrated to another primary), naming the poll in on_resubscribed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from cluster_support import (
    FAILOVER_S,
    cluster_client,
    eventually,
    failed_over,
    local_cluster,
    poll_on,
    primaries,
)

from feed_recorder import Recorder
from tally.domain.polls import PollState
from tally.domain.snapshots import Snapshot, decode_snapshot
from tally.ports import Published
from tally.store import keys
from tally.store.cluster import ValkeyCluster, key_slot
from tally.store.cluster_pubsub import ClusterLiveFeed
from tally.store.local_cluster import LocalCluster
from tally.store.resp import Endpoint
from tally.store.snapshots import ValkeySnapshots

WAIT_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("feed-cluster")) as started:
        yield started


@dataclass
class Live:
    client: ValkeyCluster  # the publisher's client, and the one the feed routes by
    feed: ClusterLiveFeed
    recorder: Recorder

    async def publish(self, poll_id: str, payload: bytes) -> int:
        receivers: int = await self.client.call("SPUBLISH", keys.live_channel(poll_id), payload)
        return receivers


@pytest.fixture
async def live(cluster: LocalCluster) -> AsyncIterator[Live]:
    async with cluster_client(cluster) as client:
        recorder = Recorder(WAIT_S)
        feed = ClusterLiveFeed(client, connect_timeout_s=1.0, ping_interval_s=0.5)
        feed.start(recorder.on_message, recorder.on_resubscribed)
        try:
            yield Live(client, feed, recorder)
        finally:
            await feed.close()


def shard_subscribers(cluster: LocalCluster, port: int, poll_id: str) -> int:
    _, count = cluster.call(port, "PUBSUB", "SHARDNUMSUB", keys.live_channel(poll_id))
    return int(count)


def live_connections(cluster: LocalCluster, port: int) -> int:
    clients = cluster.call(port, "CLIENT", "LIST", "TYPE", "pubsub")
    return sum("name=tally-live " in line for line in clients.splitlines())


async def test_polls_on_every_primary_get_their_messages_in_order(
    cluster: LocalCluster, live: Live
) -> None:
    """Two polls per primary, one SSUBSCRIBE connection per primary; 30 messages each,
    interleaved, arrive in publish order on the right poll."""
    polls = {port: [poll_on(cluster, port), poll_on(cluster, port)] for port in primaries(cluster)}
    everyone = [p for pair in polls.values() for p in pair]
    for poll_id in everyone:
        await live.feed.subscribe(poll_id)
    for port, pair in polls.items():
        assert live_connections(cluster, port) == 1
        assert [shard_subscribers(cluster, port, p) for p in pair] == [1, 1]
    for n in range(30):
        for poll_id in everyone:
            assert await live.publish(poll_id, b"%s:%d" % (poll_id.encode(), n)) == 1
    await live.recorder.until(
        lambda: all(len(live.recorder.messages.get(p, [])) == 30 for p in everyone)
    )
    for poll_id in everyone:
        assert live.recorder.messages[poll_id] == [
            b"%s:%d" % (poll_id.encode(), n) for n in range(30)
        ]
    assert live.recorder.resubscribed == []
    assert live.feed.connected


async def test_tally_snapshot_publishes_reach_the_feed(cluster: LocalCluster, live: Live) -> None:
    """tally_snapshot (the aggregator's atomic store-and-SPUBLISH) on each primary's poll."""
    snapshots = ValkeySnapshots(live.client)
    for port in primaries(cluster):
        poll_id = poll_on(cluster, port)
        await live.feed.subscribe(poll_id)
        assert await snapshots.acquire(poll_id, "agg-1", 5000)
        for seq in (1, 2, 3):
            snapshot = Snapshot(
                poll_id, seq, PollState.OPEN, {"yes": seq, "no": 0}, seq, 1000 + seq
            )
            assert await snapshots.publish(poll_id, "agg-1", snapshot) == Published(seq)
        await live.recorder.until(lambda: len(live.recorder.messages.get(poll_id, [])) == 3)  # noqa: B023  # awaited here
        assert [decode_snapshot(d).seq for d in live.recorder.messages[poll_id]] == [1, 2, 3]


async def test_unsubscribe_releases_the_channel_on_its_primary(
    cluster: LocalCluster, live: Live
) -> None:
    port = primaries(cluster)[0]
    poll_id = poll_on(cluster, port)
    await live.feed.subscribe(poll_id)
    assert shard_subscribers(cluster, port, poll_id) == 1
    live.feed.unsubscribe(poll_id)

    async def released() -> None:
        assert shard_subscribers(cluster, port, poll_id) == 0

    await eventually(released, timeout_s=WAIT_S)
    assert await live.publish(poll_id, b"late") == 0
    await asyncio.sleep(0.1)
    assert poll_id not in live.recorder.messages


async def test_a_failover_re_homes_the_dead_primarys_polls(
    cluster: LocalCluster, live: Live
) -> None:
    """SIGKILL the primary of some polls: the other primaries' polls keep getting messages; once
    the replica is promoted the feed subscribes the dead primary's polls there, names exactly
    them in on_resubscribed, and messages published afterwards arrive."""
    ports = primaries(cluster)
    victim = ports[0]
    doomed = [poll_on(cluster, victim), poll_on(cluster, victim)]
    spared = [poll_on(cluster, port) for port in ports[1:]]
    for poll_id in doomed + spared:
        await live.feed.subscribe(poll_id)
    recorder = live.recorder
    with failed_over(cluster, victim) as heir:
        for n, poll_id in enumerate(spared):  # unaffected, during the failover
            assert await live.publish(poll_id, b"during %d" % n) == 1
        await recorder.until(lambda: all(recorder.messages.get(p) for p in spared))

        await recorder.until(lambda: set(doomed) <= recorder.resubscribed_polls(), FAILOVER_S)
        assert recorder.resubscribed_polls() == set(doomed)
        assert [shard_subscribers(cluster, heir, p) for p in doomed] == [1, 1]
        for poll_id in doomed:
            # The publisher's client may not have seen the promotion yet: it fails until then.
            delivered = await eventually(
                lambda: live.publish(poll_id, b"after"),  # noqa: B023  # awaited here
                timeout_s=WAIT_S,
            )
            assert delivered == 1
        await recorder.until(lambda: all(recorder.messages.get(p) == [b"after"] for p in doomed))
        assert live.feed.connected
    for n, poll_id in enumerate(spared):
        assert recorder.messages[poll_id] == [b"during %d" % n]


def _move_slot(cluster: LocalCluster, slot: int, source: int, target: int) -> None:
    """Migrate an empty slot from one primary to another (the steps of a resharding), and wait
    until every node agrees on its owner and on the cluster's epoch: moving it again before
    then can leave two nodes each saying the other owns it (their epochs collide)."""
    ids = {n.port: n.node_id for n in cluster.topology()}
    cluster.call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    cluster.call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    cluster.call(target, "CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    cluster.call(source, "CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    deadline = time.monotonic() + WAIT_S
    while True:
        owners, epochs = set(), set()
        for port in cluster.live_ports():
            for start, end, primary, *_ in cluster.call(port, "CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    owners.add(int(primary[1]))
            info = cluster.call(port, "CLUSTER", "INFO")
            epochs.add(info.split("cluster_current_epoch:")[1].split()[0])
        if owners == {target} and len(epochs) == 1:
            return
        assert time.monotonic() < deadline, (owners, epochs)
        time.sleep(0.02)


async def test_a_channel_dropped_by_a_slot_migration_is_followed(
    cluster: LocalCluster, live: Live
) -> None:
    """Migrate a watched poll's slot to another primary: the source drops the channel (an
    sunsubscribe push), and the feed subscribes it on the new owner (after reading the
    topology: the client has not seen the move) and names it in on_resubscribed; a poll
    subscribed afterwards through the same stale map is subscribed where its slot now is."""
    source, target = primaries(cluster)[:2]
    poll_id = poll_on(cluster, source)
    neighbour = poll_on(cluster, source)  # same primary, another slot: stays
    slot = key_slot(keys.live_channel(poll_id).encode())
    await live.feed.subscribe(poll_id)
    await live.feed.subscribe(neighbour)
    recorder = live.recorder
    _move_slot(cluster, slot, source, target)
    try:
        await recorder.until(lambda: poll_id in recorder.resubscribed_polls())
        assert recorder.resubscribed == [[poll_id]]
        assert shard_subscribers(cluster, target, poll_id) == 1
        assert shard_subscribers(cluster, source, neighbour) == 1
        assert await live.publish(poll_id, b"moved") == 1
        assert await live.publish(neighbour, b"stayed") == 1
        await recorder.until(
            lambda: (
                recorder.messages.get(poll_id) == [b"moved"]
                and recorder.messages.get(neighbour) == [b"stayed"]
            )
        )
    finally:
        _move_slot(cluster, slot, target, source)
    # Moved back: followed again.
    await recorder.until(lambda: len(recorder.resubscribed) == 2)
    assert recorder.resubscribed[1] == [poll_id]
    assert shard_subscribers(cluster, source, poll_id) == 1
    assert live.feed.connected

    # A client whose map is stale: subscribe() still lands on the slot's owner.
    async with cluster_client(cluster) as stale_client:
        other = Recorder(WAIT_S)
        feed = ClusterLiveFeed(stale_client, connect_timeout_s=1.0, ping_interval_s=0.5)
        feed.start(other.on_message, other.on_resubscribed)
        try:
            await feed.subscribe(poll_on(cluster, source))  # its feed on the source is up
            late = poll_on(cluster, source)
            late_slot = key_slot(keys.live_channel(late).encode())
            _move_slot(cluster, late_slot, source, target)
            try:
                loop = asyncio.get_running_loop()
                started = loop.time()
                await feed.subscribe(late)  # refused by the source (MOVED), then on the target
                assert loop.time() - started < 0.5
                assert shard_subscribers(cluster, target, late) == 1
                assert await live.publish(late, b"found") == 1
                await other.until(lambda: other.messages.get(late) == [b"found"])
            finally:
                _move_slot(cluster, late_slot, target, source)

            async def followed_back() -> None:
                assert shard_subscribers(cluster, source, late) == 1
                assert shard_subscribers(cluster, target, late) == 0

            await eventually(followed_back, timeout_s=WAIT_S)
            assert [late] in other.resubscribed
            assert feed.connected
        finally:
            await feed.close()


async def test_a_poll_unsubscribed_right_after_its_channel_was_dropped_stays_unsubscribed(
    cluster: LocalCluster, live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub lets go of a poll in the same tick as the server drops its channel (before any
    re-homing): the feed must not subscribe it anywhere again."""
    source, target = primaries(cluster)[:2]
    poll_id = poll_on(cluster, source)
    slot = key_slot(keys.live_channel(poll_id).encode())
    await live.feed.subscribe(poll_id)
    dropped = asyncio.Event()
    heard = live.feed._dropped

    def drop_then_leave(dropped_poll: str, endpoint: Endpoint) -> None:
        heard(dropped_poll, endpoint)
        live.feed.unsubscribe(dropped_poll)
        dropped.set()

    monkeypatch.setattr(live.feed, "_dropped", drop_then_leave)
    _move_slot(cluster, slot, source, target)
    try:
        async with asyncio.timeout(WAIT_S):
            await dropped.wait()
        await asyncio.sleep(1.2)  # a few re-homing rounds
        assert shard_subscribers(cluster, target, poll_id) == 0
        assert shard_subscribers(cluster, source, poll_id) == 0
        assert live.recorder.resubscribed == []
        assert live.feed.connected
    finally:
        _move_slot(cluster, slot, target, source)


async def test_closing_the_feed_closes_every_connection(cluster: LocalCluster, live: Live) -> None:
    for port in primaries(cluster):
        await live.feed.subscribe(poll_on(cluster, port))
    assert all(live_connections(cluster, port) == 1 for port in primaries(cluster))
    await live.feed.close()

    async def closed() -> None:
        assert all(live_connections(cluster, port) == 0 for port in primaries(cluster))

    await eventually(closed, timeout_s=WAIT_S)

"""The fan-out hub on a real valkey-server: one upstream subscription per poll, shared and
reference counted, only newer snapshots forwarded, and a re-read of the stored latest snapshot
after the subscriber reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from live_subscriber import subscribers, until_unsubscribed

from conftest import StoreUnderTest
from tally.domain.errors import PollNotFound
from tally.domain.polls import OptionSpec
from tally.gateway.live.fanout import LiveHub
from tally.gateway.live.snapshot import LiveSnapshot
from tally.service import NewPoll, VotingService
from tally.store import keys
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.snapshots import ValkeySnapshots
from tally.store.votes import ValkeyBallotBox

WAIT_S = 5.0
OWNER = "hub-test-aggregator"


@dataclass(eq=False)
class Recording:
    """A watcher that keeps every seq it is offered."""

    seqs: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, snapshot: LiveSnapshot) -> None:
        self.seqs.append(snapshot.seq)
        self.arrived.set()

    async def until_seq(self, seq: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while not self.seqs or self.seqs[-1] < seq:
                self.arrived.clear()
                await self.arrived.wait()


class Broken:
    def deliver(self, snapshot: LiveSnapshot) -> None:
        raise RuntimeError("a watcher with a bug")


@pytest.fixture
async def service(valkey: Valkey) -> VotingService:
    return VotingService(ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=b"s" * 32)


@pytest.fixture
async def hub(
    store_server: StoreUnderTest, valkey: Valkey, service: VotingService
) -> AsyncIterator[LiveHub]:
    """The hub on the store's feed: one SSUBSCRIBE connection, or one per primary on a cluster."""
    live_hub = LiveHub(store_server.live_feed(valkey), ValkeySnapshots(valkey), service)
    live_hub.start()
    yield live_hub
    await live_hub.close()


async def new_poll(service: VotingService) -> str:
    poll = await service.create_poll(NewPoll("hub", [OptionSpec("Yes"), OptionSpec("No")]))
    return poll.id


def document(poll_id: str, seq: int) -> bytes:
    return orjson.dumps(
        {"type": "snapshot", "poll_id": poll_id, "seq": seq, "state": "open",
         "counts": {"yes": seq, "no": 0}, "total": seq, "ts": "2025-01-01T00:00:00.000Z"}
    )  # fmt: skip


async def publish(valkey: Valkey, poll_id: str, seq: int) -> None:
    lease = keys.poll_lease(poll_id)
    await valkey.execute("FCALL", "tally_lease", 1, lease, OWNER, 60_000)
    await valkey.execute(
        "FCALL", "tally_snapshot", 2, keys.poll_snapshot(poll_id), lease, OWNER, seq,
        document(poll_id, seq), keys.live_channel(poll_id),
    )  # fmt: skip


async def test_watchers_of_a_poll_share_one_subscription_released_by_the_last(
    hub: LiveHub, service: VotingService, valkey: Valkey
) -> None:
    """Ten watchers, one SUBSCRIBE; each gets the stored latest on joining; the last to leave
    unsubscribes."""
    poll_id = await new_poll(service)
    await publish(valkey, poll_id, 1)
    watchers = [Recording() for _ in range(10)]
    await asyncio.gather(*(hub.join(poll_id, w) for w in watchers))
    assert [w.seqs for w in watchers] == [[1]] * 10
    assert (hub.channel_count, hub.watcher_count) == (1, 10)
    assert await subscribers(valkey, poll_id) == 1
    for w in watchers[:-1]:
        hub.leave(poll_id, w)
    assert await subscribers(valkey, poll_id) == 1
    hub.leave(poll_id, watchers[-1])
    assert hub.channel_count == 0
    await until_unsubscribed(valkey, poll_id)


async def test_only_newer_snapshots_are_forwarded(
    hub: LiveHub, service: VotingService, valkey: Valkey
) -> None:
    """Repeats and older seqs published on the channel are dropped; a broken watcher does not
    stop the others."""
    poll_id = await new_poll(service)
    watcher = Recording()
    await hub.join(poll_id, Broken())
    await hub.join(poll_id, watcher)
    channel = keys.live_channel(poll_id)
    for seq in (3, 1, 3, 2, 5, 4):
        await valkey.execute("SPUBLISH", channel, document(poll_id, seq))
    await watcher.until_seq(5)
    assert watcher.seqs == [3, 5]


async def test_after_a_reconnect_the_hub_rereads_the_stored_latest_snapshot(
    hub: LiveHub, service: VotingService, valkey: Valkey, store_server: StoreUnderTest
) -> None:
    """A snapshot stored while the subscriber was away (so never heard) reaches watchers once
    the subscriber is back."""
    poll_id = await new_poll(service)
    await publish(valkey, poll_id, 1)
    watcher = Recording()
    await hub.join(poll_id, watcher)
    # Stored but not published: as if PUBLISHed while the subscriber was disconnected.
    await valkey.execute("HSET", keys.poll_snapshot(poll_id), "seq", 2, "doc", document(poll_id, 2))
    await store_server.on_every_primary("CLIENT", "KILL", "TYPE", "pubsub")
    await watcher.until_seq(2)
    assert watcher.seqs == [1, 2]


async def test_joining_an_unknown_poll_fails_and_leaves_nothing_behind(
    hub: LiveHub, valkey: Valkey
) -> None:
    """PollNotFound for the joiner; no channel kept, no subscription made."""
    with pytest.raises(PollNotFound):
        await hub.join("no-such-poll", Recording())
    assert hub.channel_count == 0
    assert await subscribers(valkey, "no-such-poll") == 0

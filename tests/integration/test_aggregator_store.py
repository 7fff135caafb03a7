"""The snapshot store's contract (ports.SnapshotStore) on a real Valkey: the lease, publish only by
the lease holder with a seq that moves forward, and delivery of each document on the channel."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from live_subscriber import subscribed

from conftest import StoreUnderTest
from tally.domain.errors import StoreUnavailable
from tally.domain.polls import PollState
from tally.domain.snapshots import Snapshot, decode_snapshot, encode_snapshot
from tally.ports import NotLeader, Published, Stale
from tally.store import keys
from tally.store.resp import Valkey
from tally.store.snapshots import ValkeySnapshots

TTL_MS = 1500
TS = 1_750_000_000_123


@pytest.fixture
def store(valkey: Valkey) -> ValkeySnapshots:
    return ValkeySnapshots(valkey)


@pytest.fixture
def poll_id() -> str:
    return f"p{uuid.uuid4().hex[:12]}"


def snapshot(poll_id: str, seq: int, red: int = 0, state: PollState = PollState.OPEN) -> Snapshot:
    return Snapshot(poll_id, seq, state, {"red": red, "green": 1}, red + 1, TS + seq)


async def test_one_owner_holds_the_lease_and_renews_it(
    store: ValkeySnapshots, poll_id: str
) -> None:
    """The first owner takes the lease; another is refused while the first keeps renewing it."""
    assert await store.acquire(poll_id, "a", TTL_MS)
    assert not await store.acquire(poll_id, "b", TTL_MS)
    assert await store.acquire(poll_id, "a", TTL_MS)
    assert await store.holder(poll_id) == "a"


async def test_only_the_holder_releases_the_lease(store: ValkeySnapshots, poll_id: str) -> None:
    """A release by another owner changes nothing; the holder's release frees the lease at once."""
    assert await store.acquire(poll_id, "a", TTL_MS)
    assert not await store.release(poll_id, "b")
    assert await store.holder(poll_id) == "a"
    assert await store.release(poll_id, "a")
    assert await store.holder(poll_id) is None
    assert await store.acquire(poll_id, "b", TTL_MS)


async def test_a_lease_nobody_renews_expires_after_its_ttl(
    store: ValkeySnapshots, poll_id: str
) -> None:
    """Once the TTL passes without a renewal, another owner can take the lease."""
    assert await store.acquire(poll_id, "a", 100)
    assert not await store.acquire(poll_id, "b", TTL_MS)
    await asyncio.sleep(0.15)
    assert await store.acquire(poll_id, "b", TTL_MS)


async def test_publishing_stores_the_latest_and_sends_the_document_on_the_channel(
    store: ValkeySnapshots, poll_id: str, store_server: StoreUnderTest
) -> None:
    """A published snapshot is what `latest` returns, and its exact document reaches subscribers."""
    assert await store.latest(poll_id) is None
    first = snapshot(poll_id, 1, red=3)
    async with subscribed(store_server.live_endpoint(poll_id), poll_id) as channel:
        assert await store.acquire(poll_id, "a", TTL_MS)
        assert await store.publish(poll_id, "a", first) == Published(1)
        delivered = await channel.next()
    assert delivered.document == encode_snapshot(first)
    assert decode_snapshot(delivered.document) == first
    assert await store.latest(poll_id) == first


async def test_a_publisher_without_the_lease_is_refused(
    store: ValkeySnapshots, poll_id: str, store_server: StoreUnderTest
) -> None:
    """Without the lease nothing is stored and nothing is sent, whoever else holds it."""
    async with subscribed(store_server.live_endpoint(poll_id), poll_id) as channel:
        assert await store.publish(poll_id, "a", snapshot(poll_id, 1)) == NotLeader()
        assert await store.acquire(poll_id, "b", TTL_MS)
        assert await store.publish(poll_id, "a", snapshot(poll_id, 2)) == NotLeader()
        assert await channel.drain(0.1) == []
    assert await store.latest(poll_id) is None


async def test_a_seq_that_does_not_move_forward_is_stale(
    store: ValkeySnapshots, poll_id: str, store_server: StoreUnderTest
) -> None:
    """A repeated or older seq is refused with the stored seq; only a larger one is published."""
    assert await store.acquire(poll_id, "a", TTL_MS)
    async with subscribed(store_server.live_endpoint(poll_id), poll_id) as channel:
        assert await store.publish(poll_id, "a", snapshot(poll_id, 5, red=5)) == Published(5)
        assert await store.publish(poll_id, "a", snapshot(poll_id, 5, red=6)) == Stale(5)
        assert await store.publish(poll_id, "a", snapshot(poll_id, 3, red=7)) == Stale(5)
        assert await store.publish(poll_id, "a", snapshot(poll_id, 6, red=8)) == Published(6)
        seqs = [decode_snapshot(d.document).seq for d in await channel.drain(0.1)]
    assert seqs == [5, 6]
    latest = await store.latest(poll_id)
    assert latest is not None
    assert (latest.seq, latest.counts["red"]) == (6, 8)


async def test_a_snapshot_is_published_only_under_its_own_poll(
    store: ValkeySnapshots, poll_id: str
) -> None:
    """Publishing one poll's snapshot under another poll's id is a programming error."""
    with pytest.raises(ValueError, match="published for"):
        await store.publish(poll_id, "a", snapshot("someotherpoll", 1))


async def test_an_unreadable_stored_snapshot_is_a_store_error(
    store: ValkeySnapshots, poll_id: str, valkey: Valkey
) -> None:
    """A stored document that is not a snapshot raises StoreUnavailable, not a parsing error."""
    await valkey.execute("HSET", keys.poll_snapshot(poll_id), "seq", 1, "doc", b'{"type":"x"}')
    with pytest.raises(StoreUnavailable, match="unreadable"):
        await store.latest(poll_id)

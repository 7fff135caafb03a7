"""The aggregator role on a real Valkey: snapshots only on change, seq strictly increasing, a final
snapshot at close, one active aggregator per poll, failover within 2 s, catching up after a stale
publish and surviving a store that stops answering.

Each test gets its own valkey-server, so every poll and every publish in it is the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from live_subscriber import Delivery, Subscriber, subscribed

from conftest import StoreConnection, StoreUnderTest, own_store
from tally.aggregator import DEADLINE_GRACE_MS, Aggregator
from tally.domain.polls import OptionSpec, Poll, PollState
from tally.domain.snapshots import Snapshot, decode_snapshot
from tally.domain.votes import Accepted
from tally.ports import Published
from tally.service import NewPoll, Voter, VotingService, system_clock_ms
from tally.store.polls import ValkeyPolls
from tally.store.resp import Endpoint, Valkey
from tally.store.snapshots import ValkeySnapshots
from tally.store.votes import ValkeyBallotBox

ISSUER = "https://idp.aggregator.test"
SECRET = b"aggregator-pseudonym-secret-32by"
FAST_TICK_MS = 50
FAST_TTL_MS = 300


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    async with own_store(tmp_path) as store:
        yield store


@pytest.fixture
async def connect(server: StoreUnderTest) -> AsyncIterator[Callable[..., StoreConnection]]:
    """A factory of clients of the test's server (one per aggregator, as in production)."""
    clients: list[StoreConnection] = []

    def new(command_timeout_s: float = 5.0) -> StoreConnection:
        client = server.client(command_timeout_s=command_timeout_s)
        clients.append(client)
        return client

    yield new
    for client in clients:
        await client.close()


@pytest.fixture
def voting(connect: Callable[..., StoreConnection]) -> VotingService:
    client = connect()
    return VotingService(ValkeyPolls(client), ValkeyBallotBox(client), pseudonym_secret=SECRET)


def aggregator(
    client: StoreConnection,
    owner: str,
    *,
    tick_ms: int = FAST_TICK_MS,
    lease_ttl_ms: int = FAST_TTL_MS,
    clock_ms: Callable[[], int] = system_clock_ms,
) -> Aggregator:
    return Aggregator(
        ValkeyPolls(client),
        ValkeySnapshots(client),
        owner=owner,
        tick_ms=tick_ms,
        lease_ttl_ms=lease_ttl_ms,
        clock_ms=clock_ms,
    )


@contextlib.asynccontextmanager
async def running(agg: Aggregator) -> AsyncIterator[asyncio.Task[None]]:
    """`agg.run()` as a task; on exit a graceful stop (unless the test killed the task)."""
    task = asyncio.create_task(agg.run())
    try:
        yield task
    finally:
        if not task.done():
            await agg.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def open_poll(voting: VotingService, closes_at_ms: int | None = None) -> Poll:
    options = [OptionSpec("Red", "red"), OptionSpec("Green", "green")]
    poll = await voting.create_poll(NewPoll("live", options, lanes=4, closes_at_ms=closes_at_ms))
    return await voting.open_poll(poll.id)


async def vote(voting: VotingService, poll: Poll, voter: str, option: str = "red") -> None:
    outcome = await voting.vote(poll.id, Voter(ISSUER, voter), option)
    assert isinstance(outcome, Accepted), outcome


def snapshots_of(deliveries: list[Delivery]) -> list[Snapshot]:
    return [decode_snapshot(d.document) for d in deliveries]


async def ticks(agg: Aggregator, n: int) -> None:
    for _ in range(n):
        await agg.tick()


async def test_a_snapshot_is_published_once_per_change_and_never_without_one(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """An open poll gets a first snapshot; idle ticks publish nothing; a vote publishes one more."""
    poll = await open_poll(voting)
    agg = aggregator(connect(), "agg-a")
    async with subscribed(server.live_endpoint(poll.id), poll.id) as channel:
        await ticks(agg, 5)
        first = snapshots_of(await channel.drain())
        await vote(voting, poll, "v1", "green")
        await ticks(agg, 5)
        second = snapshots_of(await channel.drain())
    assert [(s.seq, s.state, s.counts) for s in first] == [
        (1, PollState.OPEN, {"red": 0, "green": 0})
    ]
    assert [(s.seq, s.counts, s.total) for s in second] == [(2, {"red": 0, "green": 1}, 1)]
    assert agg.stats.published == 2


async def test_seq_strictly_increases_and_every_document_arrives_in_order(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """Votes trickling in while the aggregator runs: seq goes 1, 2, 3... with totals never
    falling, and the last document delivered is the stored latest snapshot."""
    poll = await open_poll(voting)
    snapshots = ValkeySnapshots(connect())
    agg = aggregator(connect(), "agg-a")
    async with subscribed(server.live_endpoint(poll.id), poll.id) as channel, running(agg):
        for n in range(40):
            await vote(voting, poll, f"v{n}", ("red", "green")[n % 2])
            await asyncio.sleep(0.01)
        received = [await channel.next()]
        while decode_snapshot(received[-1].document).total < 40:
            received.append(await channel.next())
        received += await channel.drain()
    seqs = [s.seq for s in snapshots_of(received)]
    totals = [s.total for s in snapshots_of(received)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert totals == sorted(totals)
    assert len(seqs) > 3  # ticks saw the votes arrive, not just the end result
    assert await snapshots.latest(poll.id) == snapshots_of(received)[-1]


async def test_closing_publishes_a_final_snapshot_and_nothing_after(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """The tick after a close publishes 'closed' with the final counts; then the poll is no
    longer watched and its lease is released."""
    poll = await open_poll(voting)
    snapshots = ValkeySnapshots(connect())
    agg = aggregator(connect(), "agg-a")
    async with subscribed(server.live_endpoint(poll.id), poll.id) as channel:
        await agg.tick()
        await vote(voting, poll, "v1")
        # A close is noticed through the poll record's updated_at (ms): one in the very
        # millisecond of the open would only be seen at the next poll-list refresh.
        await asyncio.sleep(0.002)
        await voting.close_poll(poll.id)
        await agg.tick()
        closing = snapshots_of(await channel.drain())
        assert poll.id not in agg.leading
        assert await snapshots.holder(poll.id) is None
        await ticks(agg, 5)
        after = await channel.drain()
    assert [(s.seq, s.state, s.total) for s in closing] == [
        (1, PollState.OPEN, 0),
        (2, PollState.CLOSED, 1),
    ]
    assert after == []


async def test_a_poll_past_its_deadline_is_published_closed_then_left_after_a_grace(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """At the deadline (by the aggregator's clock) watchers get 'closed' at once; the poll stays
    watched for a grace period (late clocks), then is left even if nobody closed its record."""
    closes_at = time.time_ns() // 1_000_000 + 60_000
    now = [closes_at - 1]
    poll = await open_poll(voting, closes_at_ms=closes_at)
    agg = aggregator(connect(), "agg-a", clock_ms=lambda: now[0])
    async with subscribed(server.live_endpoint(poll.id), poll.id) as channel:
        await agg.tick()
        now[0] = closes_at
        await agg.tick()
        published = snapshots_of(await channel.drain())
        assert poll.id in agg.leading
        now[0] = closes_at + DEADLINE_GRACE_MS
        await ticks(agg, 3)
        assert poll.id not in agg.leading
        assert await channel.drain() == []
    assert [(s.seq, s.state) for s in published] == [(1, PollState.OPEN), (2, PollState.CLOSED)]


async def test_of_two_aggregators_on_one_poll_only_one_publishes(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """Both running side by side: one holds the lease and publishes everything, the other
    publishes nothing, and the channel sees each seq once."""
    poll = await open_poll(voting)
    a, b = aggregator(connect(), "agg-a"), aggregator(connect(), "agg-b")
    async with (
        subscribed(server.live_endpoint(poll.id), poll.id) as channel,
        running(a),
        running(b),
    ):
        for n in range(10):
            await vote(voting, poll, f"v{n}")
            await asyncio.sleep(0.06)
        received = snapshots_of(await channel.drain(0.3))
        leaders = [agg for agg in (a, b) if poll.id in agg.leading]
    assert len(leaders) == 1
    assert sorted([a.stats.published, b.stats.published]) == [0, len(received)]
    assert [s.seq for s in received] == list(range(1, len(received) + 1))
    assert received[-1].total == 10


async def test_when_the_active_aggregator_dies_another_resumes_within_two_seconds(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """With the default tick and lease TTL, killing the leader (no release) lets the standby
    publish again within 2 s, with seqs that continue after the dead one's and never repeat."""
    poll = await open_poll(voting)
    a = aggregator(connect(), "agg-a", tick_ms=250, lease_ttl_ms=1500)
    b = aggregator(connect(), "agg-b", tick_ms=250, lease_ttl_ms=1500)
    snapshots = ValkeySnapshots(connect())
    voters = asyncio.create_task(keep_voting(voting, poll, every_s=0.05))
    try:
        async with (
            subscribed(server.live_endpoint(poll.id), poll.id) as channel,
            running(a) as a_task,
        ):
            before = [await channel.next()]
            async with running(b):
                while len(before) < 4:
                    before.append(await channel.next())
                assert poll.id in a.leading
                a_task.cancel()  # dies holding the lease
                killed_at = asyncio.get_running_loop().time()
                await asyncio.sleep(0.05)  # a publish already sent lands now, if there was one
                stored = await snapshots.latest(poll.id)
                assert stored is not None
                after = [await channel.next(timeout_s=3.0) for _ in range(3)]
    finally:
        voters.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await voters
    resumed = next(d for d in after if decode_snapshot(d.document).seq > stored.seq)
    assert resumed.at - killed_at < 2.0
    assert b.stats.published >= 3
    seqs = [s.seq for s in snapshots_of(before + after)]
    assert seqs == sorted(set(seqs))


async def keep_voting(voting: VotingService, poll: Poll, every_s: float) -> None:
    """A vote by a new voter every `every_s`, until cancelled."""
    n = 0
    while True:
        await vote(voting, poll, f"steady-{n}")
        n += 1
        await asyncio.sleep(every_s)


async def test_after_a_stale_publish_the_aggregator_continues_after_the_stored_seq(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """Another owner published seq 10 during a lease gap this aggregator never noticed: its next
    publish is refused as stale, and the one after that is seq 11 with the true counts."""
    poll = await open_poll(voting)
    agg = aggregator(connect(), "agg-a")
    other = ValkeySnapshots(connect())
    async with subscribed(server.live_endpoint(poll.id), poll.id) as channel:
        await agg.tick()
        assert await other.release(poll.id, "agg-a")  # as if agg-a's lease had expired
        assert await other.acquire(poll.id, "agg-b", FAST_TTL_MS)
        bogus = Snapshot(poll.id, 10, PollState.OPEN, {"red": 99, "green": 0}, 99, 1)
        assert await other.publish(poll.id, "agg-b", bogus) == Published(10)
        assert await other.release(poll.id, "agg-b")
        await vote(voting, poll, "v1", "green")
        await ticks(agg, 3)
        received = snapshots_of(await channel.drain())
    assert [(s.seq, s.counts) for s in received] == [
        (1, {"red": 0, "green": 0}),
        (10, {"red": 99, "green": 0}),
        (11, {"red": 0, "green": 1}),
    ]


@pytest.mark.single_node(
    "freezes the one valkey-server with SIGSTOP; frozen cluster nodes are failed over, which "
    "the cluster's failover tests drill"
)
async def test_ticks_survive_a_store_that_stops_answering(
    voting: VotingService, connect: Callable[..., StoreConnection], server: StoreUnderTest
) -> None:
    """While Valkey is frozen every tick fails with StoreUnavailable; the aggregator keeps going
    and publishes the next change once Valkey answers again."""
    poll = await open_poll(voting)
    agg = aggregator(connect(command_timeout_s=0.3), "agg-a")
    assert server.server is not None
    pid = server.server.pid
    assert pid is not None
    async with subscribed(server.live_endpoint(poll.id), poll.id) as channel, running(agg) as task:
        first = decode_snapshot((await channel.next()).document)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(1.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert agg.stats.store_errors > 0
        await vote(voting, poll, "after-the-freeze")
        resumed = await wait_for_total(channel, 1)
        assert not task.done()
    assert resumed.seq > first.seq


async def wait_for_total(channel: Subscriber, total: int, timeout_s: float = 5.0) -> Snapshot:
    async with asyncio.timeout(timeout_s):
        while True:
            snapshot = decode_snapshot((await channel.next(timeout_s)).document)
            if snapshot.total == total:
                return snapshot


def test_a_lease_shorter_than_two_ticks_is_refused() -> None:
    """The lease is renewed once a tick, so a TTL under two ticks would flap; the error names
    both settings."""
    never_connected = Valkey(Endpoint("127.0.0.1", 1))
    with pytest.raises(ValueError, match=r"TALLY_LEASE_TTL_MS .* TALLY_TICK_MS"):
        Aggregator(
            ValkeyPolls(never_connected),
            ValkeySnapshots(never_connected),
            owner="x",
            tick_ms=250,
            lease_ttl_ms=400,
        )

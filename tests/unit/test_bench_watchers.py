"""The fan-out benchmark's parts: latency matching and percentiles (pure), the watcher client
against a real WebSocket server on loopback, paced load and completion times in the load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tally.bench.loadgen import build_request, run_requests
from tally.bench.processes import rss_bytes
from tally.bench.visibility import (
    Arrival,
    Vote,
    broadcasts,
    sample_ranks,
    summary_ms,
    thresholds,
    vote_to_visible,
)
from tally.bench.watcher_pool import WatcherPool
from tally.bench.watchers import WatcherFleet, raise_open_files

HOST = "127.0.0.1"
PATH = "/v1/polls/p1/live"


def arrival(seq: int, total: int, at: float) -> Arrival:
    return Arrival(seq, total, read_at=at, received_at=at - 0.001)


def snapshot(seq: int, total: int, ts: str = "2026-01-01T00:00:00.250Z") -> str:
    return orjson.dumps(
        {"type": "snapshot", "poll_id": "p1", "seq": seq, "state": "open",
         "counts": {"a": total}, "total": total, "ts": ts}
    ).decode()  # fmt: skip


# sample_ranks and summary_ms


def test_sample_ranks_keeps_every_rank_within_the_limit() -> None:
    """With no more votes than the limit, every rank is measured."""
    assert sample_ranks(5, 10) == [1, 2, 3, 4, 5]


def test_sample_ranks_spreads_evenly_and_keeps_both_ends() -> None:
    """Beyond the limit, ranks are evenly spaced, ascending, from the first to the last."""
    ranks = sample_ranks(1001, 11)
    assert ranks == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901, 1001]
    assert sample_ranks(7, 1) == [7]


def test_sample_ranks_rejects_a_limit_below_one() -> None:
    """A limit of zero would measure nothing and is refused."""
    with pytest.raises(ValueError, match="limit"):
        sample_ranks(10, 0)


def test_summary_ms_gives_count_percentiles_and_max_in_milliseconds() -> None:
    """Durations in seconds become n, p50, p99 and max in ms, interpolated like numpy."""
    summary = summary_ms([i / 1000 for i in range(1, 101)])
    assert summary == {"n": 100, "p50": 50.5, "p99": 99.01, "max": 100.0}
    assert summary_ms([0.002, 0.001], 90) == {"n": 2, "p90": 1.9, "max": 2.0}


def test_summary_ms_of_nothing_is_only_a_zero_count() -> None:
    """No values, no made-up percentiles."""
    assert summary_ms([]) == {"n": 0}


# thresholds and vote_to_visible


def test_rank_thresholds_are_the_ranks_in_201_order() -> None:
    """Under the estimate, the k-th 201 needs a snapshot total of k."""
    votes = [Vote(0.0, 3.0), Vote(0.0, 1.0), Vote(0.0, 2.0)]
    assert thresholds(votes, "rank") == [1, 2, 3]


def test_bound_thresholds_exceed_the_votes_written_before_each_201() -> None:
    """Under the bound, a vote needs one more than the votes written before its 201, capped at
    the final total."""
    votes = [Vote(0.0, 1.0), Vote(0.5, 1.5), Vote(1.2, 2.0), Vote(1.9, 3.0)]
    # Written before 1.0: two (0.0, 0.5); before 1.5: three; before 2.0 and 3.0: four (cap 4).
    assert thresholds(votes, "bound") == [3, 4, 4, 4]


def test_each_vote_is_visible_at_the_first_snapshot_after_its_201_that_counts_it() -> None:
    """Votes are matched by rank to the first later snapshot whose total reaches the rank."""
    votes = [Vote(0.0, 0.10), Vote(0.0, 0.12), Vote(0.0, 0.30)]
    watcher = [arrival(1, 0, 0.05), arrival(2, 2, 0.25), arrival(3, 3, 0.55)]
    result = vote_to_visible(votes, [watcher], rule="rank")
    assert result.latencies_s == pytest.approx([0.15, 0.13, 0.25])
    assert result.unseen == 0


def test_a_snapshot_read_before_the_201_does_not_count_as_seeing_the_vote() -> None:
    """Latency is measured from the 201: a snapshot that came earlier is skipped, even if its
    total is high enough, so no latency is negative."""
    votes = [Vote(0.0, 0.20)]
    watcher = [arrival(1, 1, 0.18), arrival(2, 1, 0.40)]
    assert vote_to_visible(votes, [watcher], rule="rank").latencies_s == pytest.approx([0.20])


def test_a_watcher_that_skipped_snapshots_sees_votes_at_its_next_one() -> None:
    """With conflation a watcher may miss a seq; its votes are visible at the next one it got."""
    votes = [Vote(0.0, 0.1), Vote(0.0, 0.2)]
    fast = [arrival(2, 1, 0.15), arrival(3, 2, 0.35)]
    slow = [arrival(3, 2, 0.50)]
    result = vote_to_visible(votes, [fast, slow], rule="rank")
    assert result.latencies_s == pytest.approx([0.05, 0.15, 0.40, 0.30])


def test_votes_no_snapshot_included_are_counted_as_unseen() -> None:
    """A (vote, watcher) pair with no including snapshot is counted, not given a latency."""
    votes = [Vote(0.0, 0.1), Vote(0.0, 0.2)]
    result = vote_to_visible(votes, [[arrival(1, 1, 0.3)], []], rule="rank")
    assert result.latencies_s == pytest.approx([0.2])
    assert result.unseen == 3


def test_the_bound_never_reports_an_earlier_snapshot_than_the_estimate() -> None:
    """With votes in flight across a snapshot, the bound waits for one that certainly counts it."""
    # Vote B (written 0.05) was counted by the seq-2 snapshot but its 201 came late, at 0.22;
    # vote A's 201 came at 0.2. The seq-2 snapshot (total 2) arrives at 0.25.
    votes = [Vote(0.0, 0.20), Vote(0.05, 0.22), Vote(0.21, 0.40)]
    watcher = [arrival(2, 2, 0.25), arrival(3, 3, 0.50)]
    estimate = vote_to_visible(votes, [watcher], rule="rank")
    bound = vote_to_visible(votes, [watcher], rule="bound")
    assert estimate.latencies_s == pytest.approx([0.05, 0.03, 0.10])
    # At 0.2 three votes had been written, so only a total of 3 proves vote A is counted.
    assert bound.latencies_s == pytest.approx([0.30, 0.28, 0.10])
    assert all(b >= e for b, e in zip(bound.latencies_s, estimate.latencies_s, strict=True))


def test_sampled_ranks_measure_only_those_votes() -> None:
    """`ranks` picks which votes (by 201 order) are measured."""
    votes = [Vote(0.0, t) for t in (0.1, 0.2, 0.3)]
    watcher = [arrival(1, 3, 0.5)]
    result = vote_to_visible(votes, [watcher], rule="rank", ranks=[1, 3])
    assert result.latencies_s == pytest.approx([0.4, 0.2])


# broadcasts


def test_broadcasts_give_each_seq_its_first_and_last_arrival() -> None:
    """Per seq: how many watchers got it, and the spread of receive and read times."""
    w1 = [Arrival(1, 0, 1.000, 0.999), Arrival(2, 5, 2.000, 1.990)]
    w2 = [Arrival(1, 0, 1.100, 1.050), Arrival(2, 5, 2.300, 2.010)]
    w3 = [Arrival(2, 5, 2.100, 2.000)]
    first, second = broadcasts([w1, w2, w3])
    assert (first.seq, first.total, first.watchers) == (1, 0, 2)
    assert first.spread_s == pytest.approx(0.051)
    assert first.read_spread_s == pytest.approx(0.100)
    assert (second.seq, second.total, second.watchers) == (2, 5, 3)
    assert second.spread_s == pytest.approx(0.020)
    assert second.read_spread_s == pytest.approx(0.300)


# the watcher client against a real WebSocket server


class LiveServer:
    """A websockets server that sends snapshot 1 on connect and `broadcast`s the others."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.peers: list[str] = []
        self.refuse_with: int | None = None
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.peers.append(ws.remote_address[0])
        self.clients.add(ws)
        try:
            await ws.send(snapshot(1, 0))
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.refuse_with is not None:
            return Response(self.refuse_with, "Refused", Headers(), b"")
        return None

    async def broadcast(self, message: str) -> None:
        for ws in list(self.clients):
            await ws.send(message)


@contextlib.asynccontextmanager
async def live_server(ping_interval_s: float | None = None) -> AsyncIterator[LiveServer]:
    live = LiveServer()
    async with serve(
        live.handler,
        HOST,
        0,
        process_request=live.process_request,
        ping_interval=ping_interval_s,
        ping_timeout=ping_interval_s,
        compression=None,
    ) as server:
        live.port = server.sockets[0].getsockname()[1]
        yield live


async def eventually(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110  # nothing to wait on but the watchers' state
            await asyncio.sleep(0.01)


async def test_watchers_connect_and_record_every_snapshot_in_order() -> None:
    """Each watcher gets the snapshot sent on connect and every broadcast, with both times."""
    async with live_server() as live:
        fleet = WatcherFleet(HOST, live.port, PATH)
        assert await fleet.connect(20, concurrency=8) == 20
        assert await fleet.wait_total(0, 2.0) == 0
        await live.broadcast(snapshot(2, 3, ts="2026-01-01T00:00:01.500Z"))
        assert await fleet.wait_total(3, 2.0) == 0
        fleet.close()
        await eventually(lambda: not live.clients)
    for arrivals in fleet.arrivals():
        assert [(a.seq, a.total) for a in arrivals] == [(1, 0), (2, 3)]
        for a in arrivals:
            # The kernel queued the bytes before this process read them.
            assert a.received_at <= a.read_at
            assert a.read_at - a.received_at < 1.0
    assert fleet.ts_ms[2] == 1_767_225_601_500
    assert fleet.failures == {}
    assert fleet.lost_by == {}


async def test_a_refused_handshake_is_counted_by_its_status() -> None:
    """A 429 (or any non-101) answer is a failure named after the status, not an exception."""
    async with live_server() as live:
        live.refuse_with = 429
        fleet = WatcherFleet(HOST, live.port, PATH)
        assert await fleet.connect(3) == 0
    assert fleet.failures == {"status-429": 3}


async def test_a_refused_connection_is_counted_by_its_error() -> None:
    """Nobody listening: the connect error's name is the failure."""
    async with live_server() as live:
        port = live.port
    fleet = WatcherFleet(HOST, port, PATH)
    assert await fleet.connect(2) == 0
    assert fleet.failures == {"ConnectionRefusedError": 2}


async def test_watchers_answer_pings_so_the_server_keeps_them() -> None:
    """Server pings are answered with pongs: a short ping timeout does not close anyone."""
    async with live_server(ping_interval_s=0.05) as live:
        fleet = WatcherFleet(HOST, live.port, PATH)
        await fleet.connect(5)
        await asyncio.sleep(0.3)
        assert len(live.clients) == 5
        fleet.close()
    assert fleet.lost_by == {}


async def test_a_server_close_is_counted_by_its_close_code() -> None:
    """A watcher the server closes is counted under its close code and stops being waited for."""
    async with live_server() as live:
        fleet = WatcherFleet(HOST, live.port, PATH)
        await fleet.connect(4)
        await fleet.wait_total(0, 2.0)
        victim = next(iter(live.clients))
        await victim.close(1008, "go away")
        await eventually(lambda: fleet.open_count == 3)
        await live.broadcast(snapshot(2, 1))
        assert await fleet.wait_total(1, 2.0) == 0
        fleet.close()
    assert fleet.lost_by == {"close-1008": 1}


async def test_frames_with_extended_lengths_and_fragments_are_reassembled() -> None:
    """A 70 kB message (64-bit length) and a fragmented one each arrive as one document."""
    big = orjson.loads(snapshot(2, 7))
    big["padding"] = "x" * 70_000
    async with live_server() as live:
        fleet = WatcherFleet(HOST, live.port, PATH)
        await fleet.connect(2)
        await live.broadcast(orjson.dumps(big).decode())
        text = snapshot(3, 9)
        for ws in list(live.clients):
            await ws.send([text[:10], text[10:40], text[40:]])
        assert await fleet.wait_total(9, 2.0) == 0
        fleet.close()
    assert [[a.seq for a in w] for w in fleet.arrivals()] == [[1, 2, 3], [1, 2, 3]]
    assert fleet.other_documents == 0


async def test_watchers_connect_from_the_source_address_given() -> None:
    """With `source`, every watcher connects from that loopback address."""
    async with live_server() as live:
        fleet = WatcherFleet(HOST, live.port, PATH, source="127.0.0.9")
        assert await fleet.connect(3) == 3
        fleet.close()
    assert live.peers == ["127.0.0.9"] * 3


async def test_a_pool_spreads_watchers_over_processes_and_merges_what_they_saw() -> None:
    """Watchers in child processes: shares add up, waits cover all, reports merge."""
    async with live_server() as live:
        async with WatcherPool.start(HOST, live.port, PATH, processes=2) as pool:
            assert await pool.connect(5) == 5
            assert await pool.wait_total(0, 5.0) == 0
            await live.broadcast(snapshot(2, 4, ts="2026-01-01T00:00:02.000Z"))
            assert await pool.wait_total(4, 5.0) == 0
            report = await pool.report()
        await eventually(lambda: not live.clients)
    assert sorted(set(live.peers)) == ["127.0.0.2", "127.0.0.3"]
    assert [[a.seq for a in w] for w in report.arrivals] == [[1, 2]] * 5
    assert report.ts_ms[2] == 1_767_225_602_000
    assert pool.failures == {}
    assert report.lost == {}


# the process helpers and the load generator's pacing


def test_raise_open_files_never_passes_the_hard_limit() -> None:
    """The soft limit rises at most to the hard one, and a lower wish leaves it as it is."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_open_files(16) == soft
    assert raise_open_files(soft) == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_rss_bytes_reads_a_live_process() -> None:
    """Our own resident memory is a plausible number of bytes."""
    assert 1 << 20 < rss_bytes(os.getpid()) < 1 << 36


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    writer.close()


async def test_paced_requests_are_not_written_before_their_time() -> None:
    """With rate_per_s, request i is written no earlier than i / rate after the start, and each
    reply records when it completed."""
    server = await asyncio.start_server(answer_ok, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        requests = [build_request("POST", "/v", host=HOST)] * 20
        started = time.perf_counter()
        result = await run_requests(HOST, port, requests, concurrency=4, rate_per_s=100.0)
    finally:
        server.close()
        await server.wait_closed()
    assert result.transport_errors == {}
    for i, reply in enumerate(result.replies):
        assert reply is not None
        written_at = reply.completed_at - reply.latency_s
        assert written_at >= started + i / 100.0 - 1e-3
        assert reply.completed_at <= time.perf_counter()
    assert result.elapsed_s >= 0.19  # the last one waited for its time


async def test_rate_must_be_positive() -> None:
    """A zero or negative rate is a caller's mistake, refused at once."""
    with pytest.raises(ValueError, match="rate_per_s"):
        await run_requests(HOST, 1, [b"x"], concurrency=1, rate_per_s=0.0)

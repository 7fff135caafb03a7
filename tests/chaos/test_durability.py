"""Durability of acknowledged votes through a real `tally serve`: a 201 is a promise that survives
a `kill -9` of its valkey-server mid-stream, and a SIGTERM and restart of the whole server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from conftest import ON_CLUSTER, OPTIONS, RunningTally, StartTally, is_running, vote_requests
from tally.bench.loadgen import Reply, build_request, run_requests
from tally.client import ApiError

VOTERS = 3000
IN_FLIGHT = 50
CHUNK = 100  # the stream goes out in chunks, so it can pace itself
KILL_AFTER = 1000
# After a chunk with refusals the client waits, as a real one would, so the stream outlasts the
# outage and resumes against the restarted valkey-server.
BACKOFF_S = 0.2
READY_WITHIN_S = 30.0


async def stream(t: RunningTally, requests: list[bytes]) -> list[Reply | None]:
    """Send the requests chunk by chunk, IN_FLIGHT at a time, backing off after a chunk that met
    an outage. Returns a reply per request (None: transport error)."""
    replies: list[Reply | None] = []
    for first in range(0, len(requests), CHUNK):
        chunk = requests[first : first + CHUNK]
        result = await run_requests(t.host, t.port, chunk, concurrency=IN_FLIGHT)
        replies += result.replies
        if any(status(reply) in (0, 503) for reply in result.replies):
            await asyncio.sleep(BACKOFF_S)
    return replies


async def kill_valkey_once_counted(t: RunningTally, poll_id: str, votes: int) -> int:
    """SIGKILL the valkey-server as soon as the poll has counted `votes`; returns its pid."""
    results = build_request("GET", f"/v1/polls/{poll_id}/results", host=f"{t.host}:{t.port}")
    async with asyncio.timeout(READY_WITHIN_S):
        while True:
            reply = (await run_requests(t.host, t.port, [results], concurrency=1)).replies[0]
            if reply is not None and document(reply)["total"] >= votes:
                pid = t.valkey_pid()
                os.kill(pid, signal.SIGKILL)
                return pid
            await asyncio.sleep(0.002)


def status(reply: Reply | None) -> int:
    return 0 if reply is None else reply.status


def document(reply: Reply | None) -> dict[str, Any]:
    assert reply is not None
    parsed: dict[str, Any] = orjson.loads(reply.body)
    return parsed


async def wait_ready(t: RunningTally) -> None:
    """Return once /readyz answers 200: Valkey is back and Tally's functions are loaded."""
    readyz = build_request("GET", "/readyz", host=f"{t.host}:{t.port}")
    async with asyncio.timeout(READY_WITHIN_S):
        # Polling is all there is: nothing notifies a client that another process is ready.
        while True:
            reply = (await run_requests(t.host, t.port, [readyz], concurrency=1)).replies[0]
            if status(reply) == 200:
                return
            await asyncio.sleep(0.05)


@pytest.mark.single_node(
    "kills the server's embedded valkey-server by its pid file and waits for the supervised "
    "restart (a killed cluster primary is failed over instead: the cluster's failover tests)"
)
async def test_every_acknowledged_vote_survives_a_kill_9_of_valkey(
    start_tally: StartTally,
) -> None:
    """After a mid-stream kill -9 of valkey-server every 201 keeps its receipt and total = recorded."""
    t = start_tally()
    poll_id = str(t.open_poll(*OPTIONS, lanes=4)["id"])
    tokens = list(t.issuer.mint_many(f"durable-{i}" for i in range(VOTERS)))

    first, killed = await asyncio.gather(
        stream(t, vote_requests(t, poll_id, tokens, 0)),
        kill_valkey_once_counted(t, poll_id, KILL_AFTER),
    )
    await wait_ready(t)
    recorded_total = t.results(poll_id)["total"]
    again = await stream(t, vote_requests(t, poll_id, tokens, 1))
    final_total = t.results(poll_id)["total"]

    statuses = Counter(status(reply) for reply in first)
    assert set(statuses) <= {201, 503, 0}, statuses
    refused = [i for i, reply in enumerate(first) if status(reply) != 201]
    assert refused, "no vote noticed the kill"
    assert 201 in {status(reply) for reply in first[max(refused) :]}, "no vote after the restart"
    assert {document(r)["code"] for r in first if status(r) == 503} == {"store-unavailable"}
    assert is_running(t.valkey_pid())
    assert t.valkey_pid() != killed

    assert {status(reply) for reply in again} <= {201, 409}
    recorded = {i for i, reply in enumerate(again) if status(reply) == 409}
    assert {document(again[i])["code"] for i in recorded} == {"already-voted"}
    acknowledged = {i for i, reply in enumerate(first) if status(reply) == 201}
    assert acknowledged <= recorded
    for i in acknowledged:
        assert document(again[i])["receipt"] == document(first[i])["receipt"]
    assert recorded_total == len(recorded)
    assert final_total == VOTERS


@pytest.mark.single_node(
    "kills the server's embedded valkey-server by its pid file and waits for the supervised "
    "restart (a killed cluster primary is failed over instead: the cluster's failover tests)"
)
def test_votes_while_a_restarted_valkey_loads_its_data_are_refused_with_503(
    start_tally: StartTally,
) -> None:
    """Until the restarted valkey-server has loaded its data, votes get 503 store-unavailable."""
    t = start_tally()
    admin = t.admin()
    for n in range(40):  # enough data that loading it back takes a noticeable while
        admin.post("/v1/polls", {"title": f"bulk {n}", "options": ["A", "B"], "lanes": 1024})
    poll_id = str(t.open_poll(*OPTIONS)["id"])
    os.kill(t.valkey_pid(), signal.SIGKILL)

    refusals: Counter[tuple[int, str]] = Counter()
    deadline = time.monotonic() + READY_WITHIN_S
    for n in range(100_000):
        voter = t.client(t.voter_token(f"loading-{n}"))
        try:
            voter.post(f"/v1/polls/{poll_id}/votes", {"option": "red"})
            break
        except ApiError as refused:
            refusals[refused.status, refused.code] += 1
        assert time.monotonic() < deadline, refusals
        time.sleep(0.005)
    assert refusals
    assert set(refusals) <= {(503, "store-unavailable"), (0, "unreachable")}, refusals


async def test_a_sigterm_stops_valkey_and_a_restart_keeps_polls_and_votes(
    start_tally: StartTally,
) -> None:
    """SIGTERM stops tally and its valkey-server; a restart keeps every poll, state and receipt.
    (On a cluster, an external store, the store keeps running: only the server restarts.)"""
    t = start_tally()
    open_poll = str(t.open_poll(*OPTIONS, lanes=4)["id"])
    closed_poll = str(t.open_poll(*OPTIONS, lanes=2)["id"])
    tokens = list(t.issuer.mint_many(f"restart-{i}" for i in range(300)))
    first = await stream(t, vote_requests(t, open_poll, tokens, 0))
    await stream(t, vote_requests(t, closed_poll, tokens[:100], 0))
    t.admin().post(f"/v1/polls/{closed_poll}/close")
    before = {
        open_poll: t.results(open_poll, total=300),
        closed_poll: t.results(closed_poll, total=100, state="closed"),
    }
    assert [status(reply) for reply in first] == [201] * len(tokens)
    valkey_pid = None if ON_CLUSTER else t.valkey_pid()

    t.process.send_signal(signal.SIGTERM)
    assert t.process.wait(timeout=20) == 0
    if valkey_pid is not None:
        assert not is_running(valkey_pid)

    again = start_tally(data_dir=t.data_dir)
    after = {
        open_poll: again.results(open_poll, total=300),
        closed_poll: again.results(closed_poll, total=100, state="closed"),
    }
    assert after == before
    assert (after[open_poll]["total"], after[closed_poll]["total"]) == (300, 100)
    assert after[closed_poll]["state"] == "closed"
    repeats = await stream(again, vote_requests(again, open_poll, tokens, 1))
    assert [status(reply) for reply in repeats] == [409] * len(tokens)
    assert [document(r)["receipt"] for r in repeats] == [document(r)["receipt"] for r in first]

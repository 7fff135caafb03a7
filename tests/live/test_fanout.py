"""200 live watchers over WebSocket and SSE while votes come in: everyone ends with the same final
snapshot, equal to the accepted votes, and every client sees seq strictly increase."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

import httpx
import orjson
from live_clients import EventStream, receive, ws_connect
from live_server import LiveServer, live_server
from websockets.asyncio.client import ClientConnection

WATCHERS_PER_KIND = 100


async def watch_ws(ws: ClientConnection, final: asyncio.Event) -> list[dict[str, Any]]:
    """Every snapshot until the final one (state closed)."""
    seen = []
    while True:
        snapshot = await receive(ws, timeout_s=20)
        seen.append(snapshot)
        if snapshot["state"] == "closed":
            return seen


async def watch_sse(events: EventStream) -> list[dict[str, Any]]:
    seen = []
    while True:
        event = await events.next_event(timeout_s=20)
        snapshot = orjson.loads(event.data)
        assert event.id == str(snapshot["seq"])
        seen.append(snapshot)
        if snapshot["state"] == "closed":
            return seen


async def vote_and_publish(server: LiveServer, poll_id: str, voters: int) -> dict[str, int]:
    """Cast votes over HTTP while publishing the running counts every 20 ms (the aggregator's
    job); close the poll and publish the final snapshot. Returns the accepted votes per option."""
    rng = random.Random(3)
    accepted = {"red": 0, "green": 0, "blue": 0}
    seq = 1
    async with httpx.AsyncClient(base_url=server.url) as http:
        for start in range(0, voters, 25):
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"/v1/polls/{poll_id}/votes",
                        json={"option": option},
                        headers={"Authorization": f"Bearer {server.token(f'v{i}')}"},
                    )
                    for i in range(start, min(voters, start + 25))
                    for option in [rng.choice(list(accepted))]
                )
            )
            for answer in answers:
                assert answer.status_code == 201
                accepted[answer.json()["receipt"]["option"]] += 1
            seq += 1
            await server.publish_results(poll_id, seq)
            await asyncio.sleep(0.02)
    await server.runtime.service.close_poll(poll_id)
    await server.publish_results(poll_id, seq + 1)
    return accepted


async def test_200_watchers_over_websocket_and_sse_end_with_the_same_final_snapshot(
    tmp_path: Path,
) -> None:
    """100 WebSocket and 100 SSE watchers: all end with the final snapshot, whose counts equal
    the accepted votes; seq strictly increases on every one of them."""
    async with live_server(tmp_path) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1, {"red": 0, "green": 0, "blue": 0})
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            sockets = [ws_connect(server.ws_url(poll_id)) for _ in range(WATCHERS_PER_KIND)]
            streams = [http.stream("GET", server.events_url(poll_id)) for _ in sockets]
            connections = [await s.__aenter__() for s in sockets]
            responses = [await s.__aenter__() for s in streams]
            readers = [EventStream(r) for r in responses]
            for reader in readers:
                await reader.__aenter__()
            try:
                final = asyncio.Event()
                watching = [asyncio.ensure_future(watch_ws(ws, final)) for ws in connections]
                watching += [asyncio.ensure_future(watch_sse(r)) for r in readers]
                accepted = await vote_and_publish(server, poll_id, voters=300)
                histories = await asyncio.gather(*watching)
            finally:
                for reader in readers:
                    await reader.__aexit__(None, None, None)
                for stream in streams:
                    await stream.__aexit__(None, None, None)
                for opened in sockets:
                    await opened.__aexit__(None, None, None)
        finals = {orjson.dumps(history[-1]) for history in histories}
        assert len(finals) == 1
        last = histories[0][-1]
        assert last["counts"] == accepted
        assert last["total"] == 300
        for history in histories:
            seqs = [snapshot["seq"] for snapshot in history]
            assert all(a < b for a, b in itertools.pairwise(seqs))

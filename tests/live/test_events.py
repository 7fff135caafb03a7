"""GET /v1/polls/{poll_id}/events: the same snapshots as Server-Sent Events over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from live_clients import Event, EventStream
from live_server import live_server

from tally.store import keys


async def test_events_carry_the_snapshot_document_with_its_seq_as_the_id(tmp_path: Path) -> None:
    """`id:` is the seq, `event: snapshot`, `data:` the stored document byte for byte."""
    async with live_server(tmp_path) as server, httpx.AsyncClient() as http:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1, {"red": 1})
        async with (
            http.stream("GET", server.events_url(poll_id)) as response,
            EventStream(response) as events,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            first = await events.next_event()
            stored = await server.runtime.client.execute("HGET", keys.poll_snapshot(poll_id), "doc")
            assert first == Event("1", "snapshot", stored.decode())
            await server.publish(poll_id, 2, {"red": 2})
            second = await events.next_event()
            assert (second.id, orjson.loads(second.data)["counts"]) == ("2", {"red": 2})


async def test_a_reconnect_with_last_event_id_gets_the_latest_at_once_only_if_newer(
    tmp_path: Path,
) -> None:
    """Last-Event-ID naming the latest: nothing until a newer one; naming an older: the latest."""
    async with live_server(tmp_path) as server, httpx.AsyncClient() as http:
        poll_id = await server.open_poll()
        for seq in (1, 2, 3):
            await server.publish(poll_id, seq, {"red": seq})
        url = server.events_url(poll_id)
        async with (
            http.stream("GET", url, headers={"Last-Event-ID": "1"}) as behind,
            EventStream(behind) as events,
        ):
            assert (await events.next_event(timeout_s=1.0)).id == "3"
        async with (
            http.stream("GET", url, headers={"Last-Event-ID": "3"}) as current,
            EventStream(current) as events,
        ):
            with pytest.raises(TimeoutError):
                await events.next_event(timeout_s=0.3)
            await server.publish(poll_id, 4, {"red": 4})
            assert (await events.next_event()).id == "4"


async def test_an_idle_stream_carries_keepalive_comments(tmp_path: Path) -> None:
    """With nothing to send, a comment line goes out every sse_keepalive_s."""
    async with live_server(tmp_path, sse_keepalive_s=0.1) as server, httpx.AsyncClient() as http:
        poll_id = await server.open_poll()
        async with (
            http.stream("GET", server.events_url(poll_id)) as response,
            EventStream(response) as events,
        ):
            assert await events.next(timeout_s=2) == "keepalive"


@pytest.mark.parametrize(
    ("poll_id", "status", "code"),
    [("no-such-poll", 404, "poll-not-found"), ("Not_Valid!", 400, "invalid-poll-id")],
)
async def test_a_stream_for_no_poll_is_refused_with_a_problem(
    tmp_path: Path, poll_id: str, status: int, code: str
) -> None:
    """Before the stream starts, a refusal is a problem document like any other route's."""
    async with live_server(tmp_path) as server, httpx.AsyncClient() as http:
        answer = await http.get(server.events_url(poll_id))
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == code

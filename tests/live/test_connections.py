"""Connection limits (per IP and in total, WebSocket and SSE together) and graceful shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from live_clients import TIMEOUT_S, Event, EventStream, eventually, receive, ws_connect
from live_server import live_server
from websockets.exceptions import InvalidStatus

ROUTES = [pytest.param(True, id="native"), pytest.param(False, id="asgi")]


@pytest.mark.parametrize("native", ROUTES)
@pytest.mark.parametrize("limit", ["per_ip", "total"])
async def test_connections_over_a_limit_are_refused_with_429_until_one_leaves(
    tmp_path: Path, native: bool, limit: str
) -> None:
    """With a limit of 3, a fourth WebSocket and an SSE stream get 429 too-many-connections
    (Retry-After: 1); once one watcher leaves, a new one is admitted."""
    options = {"max_connections": 3} if limit == "total" else {"max_connections_per_ip": 3}
    async with live_server(tmp_path, native=native, **options) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1)
        held = [ws_connect(server.ws_url(poll_id)) for _ in range(3)]
        watchers = [await c.__aenter__() for c in held]
        try:
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(server.ws_url(poll_id)):
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"] == "1"
            async with httpx.AsyncClient() as http:
                answer = await http.get(server.events_url(poll_id))
            assert answer.status_code == 429
            assert answer.json()["code"] == "too-many-connections"
            await held.pop().__aexit__(None, None, None)
            await eventually(lambda: _below(server.live.limits.total, 3))
            async with ws_connect(server.ws_url(poll_id)) as newcomer:
                assert (await receive(newcomer))["seq"] == 1
        finally:
            for c in held:
                await c.__aexit__(None, None, None)
            del watchers


@pytest.mark.parametrize("native", ROUTES)
async def test_shutdown_closes_websockets_with_1012_and_ends_event_streams(
    tmp_path: Path, native: bool
) -> None:
    """Within the shutdown timeout every WebSocket gets close 1012 and every SSE stream ends;
    new live connections are refused with 503 shutting-down."""
    async with live_server(tmp_path, native=native) as server, httpx.AsyncClient() as http:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1)
        async with (
            ws_connect(server.ws_url(poll_id)) as a,
            ws_connect(server.ws_url(poll_id)) as b,
            http.stream("GET", server.events_url(poll_id)) as stream,
            EventStream(stream) as events,
        ):
            assert (await events.next_event()).id == "1"
            for ws in (a, b):
                assert (await receive(ws))["seq"] == 1
            started = time.monotonic()
            await server.live.shutdown(3.0)
            assert time.monotonic() - started < 3.0
            for ws in (a, b):
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
                assert ws.close_code == 1012
            while (item := await events.next()) is not None:  # it ends rather than hangs
                assert not isinstance(item, Event)
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(server.ws_url(poll_id)):
                    pass
            assert refused.value.response.status_code == 503
            answer = await http.get(server.events_url(poll_id))
            assert (answer.status_code, answer.json()["code"]) == (503, "shutting-down")


async def _below(value: int, limit: int) -> bool:
    return value < limit

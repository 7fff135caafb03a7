"""GET /v1/polls/{poll_id}/live: snapshots over a real WebSocket, on the native route and on the
ASGI fallback route alike (one suite, both implementations)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from pathlib import Path

import orjson
import pytest
from live_clients import TIMEOUT_S, eventually, receive, snapshot_until, ws_connect
from live_server import live_server
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tally.store import keys

ROUTES = [pytest.param(True, id="native"), pytest.param(False, id="asgi")]


@pytest.mark.parametrize("native", ROUTES)
async def test_a_watcher_first_gets_the_latest_snapshot_then_every_newer_one(
    tmp_path: Path, native: bool
) -> None:
    """On connect the latest stored snapshot arrives first, then each newer one, in order."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        for seq in (1, 2, 3):
            await server.publish(poll_id, seq, {"red": seq})
        async with ws_connect(server.ws_url(poll_id)) as ws:
            first = await receive(ws)
            stored = await server.runtime.client.execute("HGET", keys.poll_snapshot(poll_id), "doc")
            assert first == orjson.loads(stored)
            assert (first["seq"], first["counts"], first["total"]) == (3, {"red": 3}, 3)
            await server.publish(poll_id, 4, {"red": 4})
            await server.publish(poll_id, 5, {"red": 5})
            assert (await receive(ws))["seq"] == 4
            assert (await receive(ws))["seq"] == 5


@pytest.mark.parametrize("native", ROUTES)
async def test_permessage_deflate_is_off_even_when_the_client_offers_it(
    tmp_path: Path, native: bool
) -> None:
    """The client offers permessage-deflate; the server accepts without any extension."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        async with ws_connect(server.ws_url(poll_id), compression="deflate") as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_a_poll_without_snapshots_sends_nothing_until_its_first(tmp_path: Path) -> None:
    """Before the aggregator's first snapshot a watcher waits; the first one then arrives."""
    async with live_server(tmp_path) as server:
        poll_id = await server.open_poll()
        async with ws_connect(server.ws_url(poll_id)) as ws:
            with pytest.raises(TimeoutError):
                await receive(ws, timeout_s=0.3)
            await server.publish(poll_id, 1, {"red": 1})
            assert (await receive(ws))["seq"] == 1


async def test_stale_malformed_and_foreign_publications_are_never_forwarded(
    tmp_path: Path,
) -> None:
    """Only a snapshot of this poll with a seq above the latest reaches watchers."""
    async with live_server(tmp_path) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 5, {"red": 5})
        async with ws_connect(server.ws_url(poll_id)) as ws:
            assert (await receive(ws))["seq"] == 5
            channel = keys.live_channel(poll_id)
            stale = {"type": "snapshot", "poll_id": poll_id, "seq": 4, "counts": {}}
            foreign = {"type": "snapshot", "poll_id": "someone-else", "seq": 9, "counts": {}}
            for payload in (orjson.dumps(stale), orjson.dumps(foreign), b"{not json", b"[]"):
                await server.aggregator.execute("SPUBLISH", channel, payload)
            await server.publish(poll_id, 6, {"red": 6})
            assert (await receive(ws))["seq"] == 6


@pytest.mark.parametrize("native", ROUTES)
async def test_an_unknown_poll_gets_an_error_frame_then_close_4404(
    tmp_path: Path, native: bool
) -> None:
    """The upgrade succeeds; a poll-not-found problem frame follows, then close code 4404."""
    async with live_server(tmp_path, native=native) as server:
        async with ws_connect(server.ws_url("no-such-poll")) as ws:
            frame = await receive(ws)
            assert frame["type"] == "error"
            assert frame["status"] == 404
            assert frame["error"]["type"] == "urn:tally:problem:poll-not-found"
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
        assert ws.close_code == 4404


@pytest.mark.parametrize("native", ROUTES)
async def test_an_invalid_poll_id_gets_an_error_frame_then_close_4400(
    tmp_path: Path, native: bool
) -> None:
    """A poll id outside the allowed alphabet is refused with invalid-poll-id and 4400."""
    async with live_server(tmp_path, native=native) as server:
        async with ws_connect(server.ws_url("NOT_VALID!")) as ws:
            frame = await receive(ws)
            assert frame["error"]["code"] == "invalid-poll-id"
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
        assert ws.close_code == 4400


@pytest.mark.parametrize("native", ROUTES)
async def test_a_token_in_the_url_is_refused_at_the_handshake(tmp_path: Path, native: bool) -> None:
    """Tokens never travel in URLs: an upgrade carrying one gets 400 invalid-request."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server.ws_url(poll_id, "?access_token=abc")):
                pass
        assert refused.value.response.status_code == 400
        assert orjson.loads(refused.value.response.body)["code"] == "invalid-request"


@pytest.mark.parametrize("native", ROUTES)
async def test_a_reconnecting_client_gets_the_latest_snapshot_at_once(
    tmp_path: Path, native: bool
) -> None:
    """Snapshots published while a client was away are skipped: it gets the latest at once."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1, {"red": 1})
        async with ws_connect(server.ws_url(poll_id)) as ws:
            assert (await receive(ws))["seq"] == 1
        for seq in (2, 3, 4):
            await server.publish(poll_id, seq, {"red": seq})
        async with ws_connect(server.ws_url(poll_id)) as ws:
            assert (await receive(ws, timeout_s=1.0))["seq"] == 4


async def test_a_poll_has_one_upstream_subscription_released_by_its_last_watcher(
    tmp_path: Path,
) -> None:
    """20 watchers of a poll share one SUBSCRIBE; when the last leaves, the channel is released."""
    async with live_server(tmp_path) as server:
        poll_id, other = await server.open_poll(), await server.open_poll()
        await server.publish(poll_id, 1)
        await server.publish(other, 1)
        sockets = [ws_connect(server.ws_url(poll_id)) for _ in range(20)]
        watchers = [await s.__aenter__() for s in sockets]
        async with ws_connect(server.ws_url(other)) as lone:
            for ws in [*watchers, lone]:
                assert (await receive(ws))["seq"] == 1
            assert await server.subscriptions(poll_id) == 1
            assert await server.subscriptions(other) == 1
            assert server.live.hub.channel_count == 2
            for s in sockets:
                await s.__aexit__(None, None, None)
            await eventually(lambda: _none(server.subscriptions(poll_id)))
            assert await server.subscriptions(other) == 1
            await server.publish(other, 2)
            assert (await receive(lone))["seq"] == 2


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0


def _stalling_socket(host: str, port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer, so a client that stops reading stalls fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.setblocking(False)
    return sock


async def test_a_stalled_client_never_delays_the_others_and_is_closed_with_4408(
    tmp_path: Path,
) -> None:
    """While one client stops reading, the others get every snapshot promptly; the stalled one
    skips snapshots and, after slow_client_s, is closed with 4408."""
    async with live_server(tmp_path, slow_client_s=1.0) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1)
        sock = _stalling_socket(server.host, server.port)
        async with (
            ws_connect(server.ws_url(poll_id), sock=sock, max_queue=1) as stalled,
            ws_connect(server.ws_url(poll_id)) as a,
            ws_connect(server.ws_url(poll_id)) as b,
        ):
            for ws in (stalled, a, b):
                assert (await receive(ws))["seq"] == 1
            loop = asyncio.get_running_loop()
            for seq in range(2, 12):  # 32 KB each: the stalled client's buffers fill at once
                published = loop.time()
                await server.publish(poll_id, seq, {"red": seq}, padding=32_000)
                for ws in (a, b):
                    assert (await receive(ws))["seq"] == seq
                assert loop.time() - published < 0.5
            await asyncio.sleep(1.5)  # past slow_client_s, within the close timeout
            seen: list[int] = []
            with pytest.raises(ConnectionClosed) as closed:
                await snapshot_until(stalled, 10**9, seen)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4408
            assert seen == sorted(set(seen))
            assert len(seen) < 10  # it skipped snapshots rather than queueing them all


async def test_a_client_that_answers_no_ping_is_closed_by_the_keepalive(tmp_path: Path) -> None:
    """A peer silent for a whole ping interval gets close 1011; a responsive one stays open."""
    async with live_server(tmp_path, ping_interval_s=0.2) as server:
        poll_id = await server.open_poll()
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            f"GET /v1/polls/{poll_id}/live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with ws_connect(server.ws_url(poll_id)) as responsive:
            async with asyncio.timeout(TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                opcodes, close = [], b""
                while not close:
                    first, length = await reader.readexactly(2)
                    payload = await reader.readexactly(length & 0x7F)
                    opcodes.append(first & 0x0F)
                    if first & 0x0F == 0x8:
                        close = payload
            assert 0x9 in opcodes  # it was pinged first
            assert int.from_bytes(close[:2], "big") == 1011
            await asyncio.sleep(0.5)  # two more intervals: the client library answered them
            await responsive.send(b'{"type": "auth", "token": "x"}'.decode())
            assert (await receive(responsive))["type"] == "auth_result"
        writer.close()


async def test_a_message_over_the_size_limit_closes_with_1009_and_stops_snapshots(
    tmp_path: Path,
) -> None:
    """A frame over 16 KiB is refused by the protocol core (1009); no snapshot follows its close."""
    async with live_server(tmp_path) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1)
        async with ws_connect(server.ws_url(poll_id)) as ws:
            assert (await receive(ws))["seq"] == 1
            await ws.send("x" * 20_000)
            await server.publish(poll_id, 2)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
        assert server.live.hub.watcher_count == 0


async def test_other_websocket_paths_still_reach_the_asgi_app(tmp_path: Path) -> None:
    """The native hook takes only /v1/polls/{id}/live; another upgrade is the ASGI app's to
    answer (it has no such WebSocket route: uvicorn refuses with 403)."""
    async with live_server(tmp_path) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(f"ws://{server.host}:{server.port}/v1/polls"):
                pass
        assert refused.value.response.status_code == 403

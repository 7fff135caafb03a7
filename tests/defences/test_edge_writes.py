"""The edge writes a response of known length as one write, head and body together (one TCP
segment and one syscall where uvicorn makes two); streamed responses and HEAD keep uvicorn's order.

A real uvicorn server with the edge's protocol (gateway/edge.py) serves a small Starlette app on
a free port; a raw socket sends the requests. The writes are counted on the connection's real
transport, seen through a subclass of the edge's protocol that only records them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tally.gateway.client_address import ClientAddresses
from tally.gateway.edge import Edge, EdgeLimits
from tally.gateway.server import server_config

WRITES: list[bytes] = []
RELEASE = asyncio.Event()


class _Recording:
    """The real transport, with each write recorded before it goes out."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def _json(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


async def _stream(request: Request) -> Response:
    async def events() -> AsyncIterator[bytes]:
        await RELEASE.wait()  # the head must reach the client before the first event
        yield b"data: one\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _broken(request: Request) -> Response:
    class Broken(Response):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"5")]})  # fmt: skip
            raise RuntimeError("the app fails between head and body")

    return Broken()


APP = Starlette(
    routes=[
        Route("/json", _json, methods=["GET", "HEAD"]),
        Route("/stream", _stream),
        Route("/broken", _broken),
    ]
)


async def _serve() -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    edge = Edge(EdgeLimits(rate=0), ClientAddresses())

    class Recorded(edge.protocol):  # type: ignore[misc,name-defined]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(_Recording(transport))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = server_config(APP, "127.0.0.1", port)
    config.http = Recorded
    config.loop = "none"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    return server, task, port


async def _exchange(port: int, request: bytes, until: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = b""
    while until not in data:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    writer.close()
    return data


async def test_known_length_responses_go_out_in_one_write_and_streams_keep_their_order() -> None:
    server, task, port = await _serve()
    try:
        WRITES.clear()
        answer = await _exchange(port, b"GET /json HTTP/1.1\r\nhost: x\r\n\r\n", b"world")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b'{"hello":"world"}')
        assert [answer] == WRITES  # head and body in one write

        WRITES.clear()
        answer = await _exchange(port, b"HEAD /json HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\n")
        assert [answer] == WRITES

        # A stream's head goes out at once, before its first event.
        WRITES.clear()
        RELEASE.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"text/event-stream" in head
        assert b"transfer-encoding: chunked" in head
        RELEASE.set()
        event = await asyncio.wait_for(reader.readuntil(b"one\n\n\r\n"), 5)
        assert event.endswith(b"data: one\n\n\r\n")
        assert WRITES[0] == head  # written alone, before the app had an event
        writer.close()

        # An app that fails between the head and the body: uvicorn's 500, not a cut response.
        answer = await _exchange(port, b"GET /broken HTTP/1.1\r\nhost: x\r\n\r\n", b"Error")
        assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert answer.endswith(b"Internal Server Error")
    finally:
        server.should_exit = True
        await task

"""Real clients for the live tests: the `websockets` client and an SSE reader on httpx streaming."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

TIMEOUT_S = 5.0


def ws_connect(url: str, **options: Any) -> connect:
    """A WebSocket client as a browser would be: it offers permessage-deflate; pings off."""
    return connect(url, open_timeout=TIMEOUT_S, ping_interval=None, proxy=None, **options)


async def receive(ws: ClientConnection, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The next message, as JSON."""
    async with asyncio.timeout(timeout_s):
        data = await ws.recv()
    message: dict[str, Any] = orjson.loads(data)
    return message


async def snapshot_until(ws: ClientConnection, seq: int, seen: list[int]) -> dict[str, Any]:
    """Read snapshots (recording every seq in `seen`) until one with at least `seq`."""
    while True:
        message = await receive(ws)
        if message.get("type") == "snapshot":
            seen.append(message["seq"])
            if message["seq"] >= seq:
                return message


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = TIMEOUT_S) -> None:
    """Wait until `check()` holds, by asking again: the state lives in Valkey or in the server,
    which notify nobody."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110  # nothing to wait on but the answer itself
            await asyncio.sleep(0.01)


@dataclass
class Event:
    id: str | None
    event: str | None
    data: str


class EventStream:
    """Reads a text/event-stream in a task of its own, so a test may wait for the next event
    with a timeout without breaking the stream. Use as `async with EventStream(response)`."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._items: asyncio.Queue[Event | str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def next(self, timeout_s: float = TIMEOUT_S) -> Event | str | None:
        """The next event or comment; None once the stream has ended."""
        async with asyncio.timeout(timeout_s):
            return await self._items.get()

    async def next_event(self, timeout_s: float = TIMEOUT_S) -> Event:
        """The next event, skipping comments; AssertionError if the stream ends first."""
        async with asyncio.timeout(timeout_s):
            while True:
                item = await self._items.get()
                if item is None:
                    raise AssertionError("the event stream ended")
                if isinstance(item, Event):
                    return item

    async def _read(self) -> None:
        event_id: str | None = None
        event: str | None = None
        data: list[str] = []
        try:
            async for line in self._response.aiter_lines():
                if line == "":
                    if data:
                        self._items.put_nowait(Event(event_id, event, "\n".join(data)))
                    event_id, event, data = None, None, []
                elif line.startswith(":"):
                    self._items.put_nowait(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "id":
                        event_id = value
                    elif name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
        finally:
            self._items.put_nowait(None)

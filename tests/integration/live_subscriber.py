"""A live-channel subscriber on a raw RESP connection (asyncio.open_connection + SSUBSCRIBE), so
tests see exactly what Valkey delivers, with no Tally code in between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import hiredis

from conftest import channel_subscribers
from tally.store import keys
from tally.store.cluster import ValkeyCluster
from tally.store.resp import Endpoint, Valkey, encode


@dataclass
class Delivery:
    """One published document and when it arrived (event-loop time, seconds)."""

    document: bytes
    at: float


@dataclass
class Subscriber:
    reader: asyncio.StreamReader
    parser: Any = field(default_factory=hiredis.Reader)

    async def reply(self) -> Any:
        while (reply := self.parser.gets()) is False:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("Valkey closed the subscription")
            self.parser.feed(data)
        return reply

    async def next(self, timeout_s: float = 5.0) -> Delivery:
        """The next message on the channel; TimeoutError if none comes in time."""
        async with asyncio.timeout(timeout_s):
            kind, _, payload = await self.reply()
        assert kind == b"smessage", kind
        return Delivery(payload, asyncio.get_running_loop().time())

    async def drain(self, quiet_s: float = 0.2) -> list[Delivery]:
        """Every message until none has come for `quiet_s`."""
        received: list[Delivery] = []
        while True:
            try:
                received.append(await self.next(quiet_s))
            except TimeoutError:
                return received


@contextlib.asynccontextmanager
async def subscribed(endpoint: Endpoint, poll_id: str) -> AsyncIterator[Subscriber]:
    """A subscription to the poll's live channel, confirmed by the server before it is yielded."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        subscriber = Subscriber(reader)
        if endpoint.password is not None:
            user = [endpoint.username] if endpoint.username else []
            writer.write(encode(["AUTH", *user, endpoint.password]))
            assert await subscriber.reply() == b"OK"
        writer.write(encode(["SSUBSCRIBE", keys.live_channel(poll_id)]))
        assert (await subscriber.reply())[0] == b"ssubscribe"
        yield subscriber
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


UNSUBSCRIBE_WAIT_S = 5.0


async def subscribers(valkey: Valkey | ValkeyCluster, poll_id: str) -> int:
    """How many connections Valkey counts on the poll's live channel."""
    return await channel_subscribers(valkey, poll_id)


async def until_unsubscribed(valkey: Valkey | ValkeyCluster, poll_id: str) -> None:
    """Wait until Valkey counts no subscriber of the poll's channel (it notifies nobody)."""
    async with asyncio.timeout(UNSUBSCRIBE_WAIT_S):
        while await subscribers(valkey, poll_id):  # noqa: ASYNC110  # Valkey must be asked
            await asyncio.sleep(0.01)

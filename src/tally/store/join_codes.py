"""Join codes in Valkey (ports.JoinCodeStore): `SET NX` on both sides, each write durable.

Two keys, in two slots on a cluster (a code's and its poll's), so no one atomic call takes both;
the port's contract is built so that none is needed: a code is claimed before it is bound, and
a claimed code that lost the poll's binding still leads to its poll. Nothing is ever deleted
(the gateway's Valkey user has no DEL).
"""

from __future__ import annotations

from collections.abc import Sequence

from tally.domain.errors import StoreUnavailable
from tally.ports import StoreClient
from tally.store import keys


class ValkeyJoinCodes:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def claim(self, code: str, poll_id: str) -> bool:
        # SET NX answers OK when it set the key and nil when it was there already.
        return await self._durable("SET", keys.join_code(code), poll_id, "NX") is not None

    async def bind(self, poll_id: str, code: str) -> str:
        # SET NX GET: the code already there (nil if ours was set), in one step.
        before = await self._durable("SET", keys.poll_join_code(poll_id), code, "NX", "GET")
        return code if before is None else _text(before)

    async def code_of(self, poll_ids: Sequence[str]) -> list[str | None]:
        if not poll_ids:
            return []
        replies = await self._client.pipeline([("GET", keys.poll_join_code(p)) for p in poll_ids])
        return [None if reply is None else _text(reply) for reply in replies]

    async def poll_of(self, code: str) -> str | None:
        reply = await self._client.call("GET", keys.join_code(code))
        return None if reply is None else _text(reply)

    async def _durable(self, *args: str) -> object:
        reply = await self._client.durable(args)
        if isinstance(reply, Exception):
            raise StoreUnavailable(f"join code write refused: {reply}")
        return reply


def _text(reply: object) -> str:
    if isinstance(reply, Exception):
        raise StoreUnavailable(f"join code read refused: {reply}")
    return reply.decode() if isinstance(reply, bytes) else str(reply)

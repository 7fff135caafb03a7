"""Ballots per minute in Valkey (implements ports.TurnoutStore): one hash per poll, minute start
(epoch ms, decimal) -> ballots. The archiver writes whole counts (HSET), so a repeat or a
takeover's full rewrite leaves the same hash; gateways read it whole (HGETALL) for turnout.csv."""

from __future__ import annotations

from collections.abc import Mapping

from tally.ports import StoreClient
from tally.store import keys

# Minutes per HSET: a poll open for days writes its rebuilt buckets in a few round trips.
SAVE_BATCH = 1024


class ValkeyTurnout:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def save(self, poll_id: str, minutes: Mapping[int, int]) -> None:
        key = keys.poll_turnout(poll_id)
        items = sorted(minutes.items())
        for start in range(0, len(items), SAVE_BATCH):
            fields: list[int] = []
            for minute, ballots in items[start : start + SAVE_BATCH]:
                fields += (minute, ballots)
            await self._client.call("HSET", key, *fields)

    async def minutes(self, poll_id: str) -> dict[int, int]:
        flat = await self._client.call("HGETALL", keys.poll_turnout(poll_id))
        return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

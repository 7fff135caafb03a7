"""Spent proof-of-work challenges in Valkey: one `SET NX PX` per answer (ports.SpentChallenges).

The key (tally.store.keys.spent_challenge) lives only until its challenge expires, when the
stateless check refuses the challenge by itself; so the store holds at most one small key per
challenge answered within its lifetime, and nothing for challenges merely issued.
"""

from __future__ import annotations

from tally.ports import StoreClient
from tally.store import keys


class ValkeySpentChallenges:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def spend(self, spend_id: str, ttl_ms: int) -> bool:
        # SET answers OK when it set the key and nil when NX found it there already.
        reply = await self._client.call(
            "SET", keys.spent_challenge(spend_id), b"1", "NX", "PX", max(1, ttl_ms)
        )
        return reply is not None

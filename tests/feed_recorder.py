"""A live feed's listener for tests (the pub/sub feed on one node and on a cluster): every
message per poll, each on_resubscribed call's poll ids, and a wait for a condition on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Recorder:
    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.messages: dict[str, list[bytes]] = {}
        self.resubscribed: list[list[str]] = []
        self.changed = asyncio.Event()

    def on_message(self, poll_id: str, payload: bytes) -> None:
        self.messages.setdefault(poll_id, []).append(payload)
        self.changed.set()

    def on_resubscribed(self, poll_ids: list[str]) -> None:
        self.resubscribed.append(sorted(poll_ids))
        self.changed.set()

    def resubscribed_polls(self) -> set[str]:
        return {p for call in self.resubscribed for p in call}

    async def until(self, done: Callable[[], object], timeout_s: float | None = None) -> None:
        """Wait (at most `timeout_s`, else the recorder's wait_s) until `done()` holds."""
        async with asyncio.timeout(self.wait_s if timeout_s is None else timeout_s):
            while not done():
                self.changed.clear()
                await self.changed.wait()

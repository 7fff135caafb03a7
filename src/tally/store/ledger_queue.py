"""The ledger's queues in Valkey (implements ports.LedgerQueue): each lane's ledger stream and the
poll's admin stream, read in seq order by the archiver and trimmed once archived."""

from __future__ import annotations

from typing import Any

from tally.domain.errors import StoreUnavailable
from tally.ports import QueuedEntry
from tally.store import keys, leases
from tally.store.resp import Valkey, raise_first_error


def _stream(poll_id: str, log: int | None) -> str:
    return keys.poll_admin(poll_id) if log is None else keys.lane_ledger(poll_id, log)


class ValkeyLedgerQueue:
    def __init__(self, client: Valkey) -> None:
        self._client = client

    async def read(
        self, poll_id: str, logs: list[int | None], first_seqs: list[int], count: int
    ) -> list[list[QueuedEntry]]:
        replies = await self._client.pipeline(
            [
                ("XRANGE", _stream(poll_id, log), f"{seq}-0", "+", "COUNT", count)
                for log, seq in zip(logs, first_seqs, strict=True)
            ]
        )
        raise_first_error(replies)
        return [_entries(reply) for reply in replies]

    async def trim(self, poll_id: str, logs: list[int | None], below_seqs: list[int]) -> None:
        replies = await self._client.pipeline(
            [
                ("XTRIM", _stream(poll_id, log), "MINID", f"{seq}-0")
                for log, seq in zip(logs, below_seqs, strict=True)
            ]
        )
        raise_first_error(replies)

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        return await leases.take(self._client, keys.poll_archiver_lease(poll_id), owner, ttl_ms)

    async def release(self, poll_id: str, owner: str) -> None:
        await leases.release(self._client, keys.poll_archiver_lease(poll_id), owner)


def _entries(reply: list[Any]) -> list[QueuedEntry]:
    entries = []
    for entry_id, flat in reply:
        seq, _, sub = entry_id.partition(b"-")
        if sub != b"0":
            raise StoreUnavailable(f"ledger stream entry {entry_id!r} is not <seq>-0")
        entries.append(QueuedEntry(int(seq), dict(zip(flat[::2], flat[1::2], strict=True))))
    return entries

"""Snapshots and the aggregator lease in Valkey (implements ports.SnapshotStore).

The wire document is `tally.domain.snapshots`' codec. Publishing goes through `tally_snapshot`
(tally.lua), which checks the lease and the seq, stores and PUBLISHes in one atomic call.
"""

from __future__ import annotations

from tally.domain.errors import StoreUnavailable
from tally.domain.snapshots import Snapshot, decode_snapshot, encode_snapshot
from tally.ports import NotLeader, Published, PublishOutcome, Stale, StoreClient
from tally.store import keys, leases


class ValkeySnapshots:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        return await leases.take(self._client, keys.poll_lease(poll_id), owner, ttl_ms)

    async def release(self, poll_id: str, owner: str) -> bool:
        return await leases.release(self._client, keys.poll_lease(poll_id), owner)

    async def holder(self, poll_id: str) -> str | None:
        reply = await self._client.call("GET", keys.poll_lease(poll_id))
        return None if reply is None else bytes(reply).decode()

    async def latest(self, poll_id: str) -> Snapshot | None:
        document = await self._client.call("HGET", keys.poll_snapshot(poll_id), "doc")
        if document is None:
            return None
        try:
            return decode_snapshot(document)
        except ValueError as exc:
            raise StoreUnavailable(
                f"stored snapshot of poll {poll_id} is unreadable: {exc}"
            ) from exc

    async def latest_doc(self, poll_id: str) -> bytes | None:
        """The latest snapshot exactly as published (the live fan-out forwards these bytes)."""
        doc: bytes | None = await self._client.call("HGET", keys.poll_snapshot(poll_id), "doc")
        return doc

    async def publish(self, poll_id: str, owner: str, snapshot: Snapshot) -> PublishOutcome:
        if snapshot.poll_id != poll_id:
            raise ValueError(f"a snapshot of poll {snapshot.poll_id!r} published for {poll_id!r}")
        status, seq = await self._client.call(
            "FCALL", "tally_snapshot", 2,
            keys.poll_snapshot(poll_id), keys.poll_lease(poll_id),
            owner, snapshot.seq, encode_snapshot(snapshot), keys.live_channel(poll_id),
        )  # fmt: skip
        if status == b"published":
            return Published(int(seq))
        if status == b"stale":
            return Stale(int(seq))
        if status == b"not-leader":
            return NotLeader()
        raise StoreUnavailable(f"tally_snapshot answered {status!r}")

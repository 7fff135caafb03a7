"""Snapshots and the aggregator lease in Valkey (implements ports.SnapshotStore).

The wire format is one JSON document, stored as the poll's latest snapshot and published on its
live channel; WebSocket and SSE clients receive it verbatim:

    {"type": "snapshot", "poll_id": "...", "seq": 7, "state": "open|closed|draft",
     "counts": {"<option id>": 12, ...}, "total": 12, "ts": "2025-01-01T12:00:00.250Z"}

`ts` is RFC 3339 UTC with milliseconds. Publishing goes through `tally_snapshot` (tally.lua), which
checks the lease and the seq, stores and PUBLISHes in one atomic call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import PollState
from tally.domain.snapshots import Snapshot
from tally.gateway.render import iso_ms
from tally.ports import NotLeader, Published, PublishOutcome, Stale
from tally.store import keys, leases
from tally.store.resp import Valkey

SNAPSHOT_TYPE = "snapshot"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return orjson.dumps(
        {
            "type": SNAPSHOT_TYPE,
            "poll_id": snapshot.poll_id,
            "seq": snapshot.seq,
            "state": snapshot.state.value,
            "counts": snapshot.counts,
            "total": snapshot.total,
            "ts": iso_ms(snapshot.ts_ms),
        }
    )


def decode_snapshot(document: bytes) -> Snapshot:
    """The Snapshot a document describes; ValueError if it is not a snapshot document."""
    try:
        d = orjson.loads(document)
        if d["type"] != SNAPSHOT_TYPE:
            raise ValueError(f"not a snapshot document: type {d['type']!r}")
        counts = {str(option): int(n) for option, n in d["counts"].items()}
        moment = datetime.fromisoformat(d["ts"])
        if moment.tzinfo is None:
            raise ValueError("ts has no time zone")
        return Snapshot(
            poll_id=str(d["poll_id"]),
            seq=int(d["seq"]),
            state=PollState(d["state"]),
            counts=counts,
            total=int(d["total"]),
            ts_ms=(moment - _EPOCH) // _MS,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed snapshot document: {exc!r}") from None


class ValkeySnapshots:
    def __init__(self, client: Valkey) -> None:
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

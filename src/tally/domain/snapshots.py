"""Snapshots: the versioned results a poll's watchers see, published only when something changed.

`seq` strictly increases per poll, across aggregator failovers too (the store refuses a seq that
does not move forward; a new aggregator continues from the stored one).

The wire format is one JSON document, stored as the poll's latest snapshot and published on its
live channel; WebSocket and SSE clients receive it verbatim:

    {"type": "snapshot", "poll_id": "...", "seq": 7, "state": "open|closed|draft",
     "counts": {"<option id>": 12, ...}, "total": 12, "under_review": 0,
     "ts": "2025-01-01T12:00:00.250Z"}

`under_review` counts the votes held for review (not in `counts` until released); a document
stored before it existed reads as 0.

`ts` is RFC 3339 UTC with milliseconds. The document is compact (no spaces) UTF-8 JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tally.domain.polls import PollState
from tally.domain.results import Results
from tally.domain.timestamps import iso_ms, parse_iso_ms

SNAPSHOT_TYPE = "snapshot"


@dataclass(frozen=True, slots=True)
class Snapshot:
    poll_id: str
    seq: int
    state: PollState
    counts: dict[str, int]
    total: int
    ts_ms: int
    under_review: int = 0

    @property
    def final(self) -> bool:
        return self.state is PollState.CLOSED


def next_snapshot(
    previous: Snapshot | None, results: Results, now_ms: int, stored_seq: int = 0
) -> Snapshot | None:
    """The snapshot to publish after `previous`, or None when state and counts are unchanged.

    `stored_seq` is the highest seq the store has seen (it may be ahead of `previous` after a
    failover); the new seq is one past the larger of the two."""
    if (
        previous is not None
        and previous.state is results.state
        and previous.counts == results.counts
        and previous.under_review == results.under_review
    ):
        return None
    seq = max(previous.seq if previous is not None else 0, stored_seq) + 1
    return Snapshot(
        results.poll_id,
        seq,
        results.state,
        dict(results.counts),
        results.total,
        now_ms,
        results.under_review,
    )


def encode_snapshot(snapshot: Snapshot) -> bytes:
    document = {
        "type": SNAPSHOT_TYPE,
        "poll_id": snapshot.poll_id,
        "seq": snapshot.seq,
        "state": snapshot.state.value,
        "counts": snapshot.counts,
        "total": snapshot.total,
        "under_review": snapshot.under_review,
        "ts": iso_ms(snapshot.ts_ms),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_snapshot(document: bytes) -> Snapshot:
    """The Snapshot a document describes; ValueError if it is not a snapshot document."""
    try:
        d = json.loads(document)
        if d["type"] != SNAPSHOT_TYPE:
            raise ValueError(f"not a snapshot document: type {d['type']!r}")
        counts = {str(option): int(n) for option, n in d["counts"].items()}
        return Snapshot(
            poll_id=str(d["poll_id"]),
            seq=int(d["seq"]),
            state=PollState(d["state"]),
            counts=counts,
            total=int(d["total"]),
            ts_ms=parse_iso_ms(d["ts"]),
            under_review=int(d.get("under_review", 0)),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed snapshot document: {exc!r}") from None

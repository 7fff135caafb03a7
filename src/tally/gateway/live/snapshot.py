"""A published snapshot as the gateway forwards it: the document byte for byte, its seq, and its
WebSocket frame and SSE event, each encoded once per process rather than once per watcher."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from websockets.frames import Frame, Opcode


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    poll_id: str
    seq: int
    doc: bytes
    ws_frame: bytes
    sse_event: bytes


def live_snapshot(poll_id: str, doc: bytes) -> LiveSnapshot:
    """Wrap a stored or published snapshot document; ValueError if it is not one of this poll."""
    try:
        parsed = orjson.loads(doc)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"snapshot of poll {poll_id!r} is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("type") != "snapshot":
        raise ValueError(f"not a snapshot document on poll {poll_id!r}'s channel")
    if parsed.get("poll_id") != poll_id:
        raise ValueError(
            f"snapshot of poll {parsed.get('poll_id')!r} on poll {poll_id!r}'s channel"
        )
    seq = parsed.get("seq")
    if type(seq) is not int or seq < 1:
        raise ValueError(f"snapshot of poll {poll_id!r} has no positive integer seq")
    return LiveSnapshot(poll_id, seq, doc, text_frame(doc), sse_event(seq, doc))


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (server to client, no extensions)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def sse_event(seq: int, doc: bytes) -> bytes:
    """An `event: snapshot` whose id is the seq (what a browser sends back as Last-Event-ID)."""
    data = b"".join(b"data: " + line + b"\n" for line in doc.splitlines() or [b""])
    return b"id: %d\nevent: snapshot\n%b\n" % (seq, data)

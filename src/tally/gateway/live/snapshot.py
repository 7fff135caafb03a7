"""A published snapshot as the gateway forwards it: the document byte for byte, its seq, and its
WebSocket frame and SSE event, each encoded once per process rather than once per watcher.

Result visibility (domain.visibility): where the poll hides its counts from some viewers, the
snapshot is also encoded once redacted (`counts` null, `hidden` saying why), and each watcher is
sent one of the two encodings: still one write of a ready frame per watcher, and no extra work at
all for a live poll (or a closed one), whose redacted encodings are None."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from websockets.frames import Frame, Opcode

from tally.domain.polls import PollState, Visibility
from tally.domain.visibility import hidden_from_others


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    poll_id: str
    seq: int
    doc: bytes
    ws_frame: bytes
    sse_event: bytes
    # The redacted encodings, for viewers who may not see the counts yet; None: everyone may.
    hidden_doc: bytes | None = None
    hidden_ws_frame: bytes | None = None
    hidden_sse_event: bytes | None = None

    def doc_for(self, sees_counts: bool) -> bytes:
        hidden = self.hidden_doc
        return self.doc if sees_counts or hidden is None else hidden

    def ws_frame_for(self, sees_counts: bool) -> bytes:
        hidden = self.hidden_ws_frame
        return self.ws_frame if sees_counts or hidden is None else hidden

    def sse_event_for(self, sees_counts: bool) -> bytes:
        hidden = self.hidden_sse_event
        return self.sse_event if sees_counts or hidden is None else hidden


_STATES = {s.value: s for s in PollState}


def live_snapshot(
    poll_id: str, doc: bytes, visibility: Visibility = Visibility.LIVE
) -> LiveSnapshot:
    """Wrap a stored or published snapshot document; ValueError if it is not one of this poll.
    `visibility`: the poll's, which decides whether a redacted encoding is made too."""
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
    # An unknown state is taken as open: where the poll hides its counts, it hides them.
    state = _STATES.get(str(parsed.get("state")), PollState.OPEN)
    hidden = hidden_from_others(visibility, state)
    if hidden is None:
        return LiveSnapshot(poll_id, seq, doc, text_frame(doc), sse_event(seq, doc))
    redacted = orjson.dumps({**parsed, "counts": None, "hidden": hidden.value})
    return LiveSnapshot(
        poll_id,
        seq,
        doc,
        text_frame(doc),
        sse_event(seq, doc),
        redacted,
        text_frame(redacted),
        sse_event(seq, redacted),
    )


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (server to client, no extensions)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def sse_event(seq: int, doc: bytes) -> bytes:
    """An `event: snapshot` whose id is the seq (what a browser sends back as Last-Event-ID)."""
    data = b"".join(b"data: " + line + b"\n" for line in doc.splitlines() or [b""])
    return b"id: %d\nevent: snapshot\n%b\n" % (seq, data)

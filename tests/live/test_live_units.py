"""The live path's pure pieces: the watcher lifecycle table, connection limits, snapshot framing."""

from __future__ import annotations

import orjson
import pytest
from websockets.frames import Frame, Opcode

from tally.gateway.live.limits import ConnectionLimits, carries_token
from tally.gateway.live.snapshot import live_snapshot, sse_event
from tally.gateway.live.state import (
    TRANSITIONS,
    IllegalWatcherTransition,
    WatcherState,
    moved,
)


@pytest.mark.parametrize("current", list(WatcherState))
@pytest.mark.parametrize("target", list(WatcherState))
def test_a_watcher_moves_only_as_the_table_allows(
    current: WatcherState, target: WatcherState
) -> None:
    """Every pair of states: allowed moves return the target, the rest raise."""
    if target in TRANSITIONS[current]:
        assert moved(current, target) is target
    else:
        with pytest.raises(IllegalWatcherTransition):
            moved(current, target)


def test_every_state_but_closed_can_end_in_closed_and_closed_is_final() -> None:
    """No watcher is ever stuck: CLOSED is reachable from anywhere, and nothing leaves it."""
    assert all(WatcherState.CLOSED in TRANSITIONS[s] for s in WatcherState if s.value != "closed")
    assert TRANSITIONS[WatcherState.CLOSED] == frozenset()


def test_limits_count_per_ip_and_in_total_and_give_slots_back() -> None:
    """A full address is refused while others are admitted, until the total is reached."""
    limits = ConnectionLimits(max_total=3, max_per_ip=2)
    assert limits.admit("a")
    assert limits.admit("a")
    assert not limits.admit("a")
    assert limits.admit("b")
    assert not limits.admit("c")  # the total
    limits.release("a")
    assert limits.held_by("a") == 1
    assert limits.admit("c")
    for ip in ("a", "b", "c"):
        limits.release(ip)
    assert (limits.total, limits.held_by("a")) == (0, 0)


def doc(**fields: object) -> bytes:
    base: dict[str, object] = {"type": "snapshot", "poll_id": "p", "seq": 7, "counts": {}}
    return orjson.dumps({**base, **fields})


def test_a_snapshot_is_framed_once_for_websocket_and_sse() -> None:
    """The document travels untouched in a text frame and in an event whose id is the seq."""
    snapshot = live_snapshot("p", doc())
    assert snapshot.seq == 7
    frame = snapshot.ws_frame
    assert frame[0] == 0x80 | Opcode.TEXT.value  # FIN + text, unmasked, no extension bits
    assert frame == Frame(Opcode.TEXT, snapshot.doc).serialize(mask=False)
    assert snapshot.sse_event == b"id: 7\nevent: snapshot\ndata: " + snapshot.doc + b"\n\n"


def test_a_document_spanning_lines_becomes_one_data_line_each() -> None:
    """SSE data lines cannot hold a newline; each line of the document gets its own."""
    assert sse_event(3, b"{\n}") == b"id: 3\nevent: snapshot\ndata: {\ndata: }\n\n"


@pytest.mark.parametrize(
    "document",
    [
        b"{not json",
        b"[]",
        doc(type="results"),
        doc(poll_id="other"),
        doc(seq=0),
        doc(seq="7"),
        doc(seq=True),
        doc(seq=None),
    ],
)
def test_what_is_not_a_snapshot_of_this_poll_is_refused(document: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # one error type for every malformed document
        live_snapshot("p", document)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (None, False),
        ("", False),
        ("lang=en", False),
        ("token=abc", True),
        ("Access_Token=abc", True),
        ("a=1&jwt=", True),
    ],
)
def test_a_credential_in_the_query_string_is_recognised(query: str | None, expected: bool) -> None:
    assert carries_token(query) is expected

"""The snapshot wire document (what the live channel, WebSocket and SSE carry) and the rules for
when a new snapshot is due."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.domain.polls import PollState
from tally.domain.results import Results
from tally.domain.snapshots import Snapshot, decode_snapshot, encode_snapshot, next_snapshot

OPEN = PollState.OPEN


def results(red: int, green: int, state: PollState = OPEN, at: int = 1000) -> Results:
    return Results("p1", state, {"red": red, "green": green}, red + green, at)


def test_the_document_has_exactly_the_wire_fields_in_order() -> None:
    """type, poll_id, seq, state, counts (poll order), total, under_review, ts as RFC 3339
    UTC with ms."""
    snapshot = Snapshot("p1", 7, OPEN, {"red": 2, "green": 0}, 2, 1_750_000_000_250, 3)
    assert encode_snapshot(snapshot) == (
        b'{"type":"snapshot","poll_id":"p1","seq":7,"state":"open",'
        b'"counts":{"red":2,"green":0},"total":2,"under_review":3,'
        b'"ts":"2025-06-15T15:06:40.250Z"}'
    )


def test_a_document_from_before_under_review_reads_as_none_under_review() -> None:
    """Snapshots stored by an older Tally lack the field: 0 votes under review."""
    old = (
        b'{"type":"snapshot","poll_id":"p1","seq":7,"state":"open",'
        b'"counts":{"red":2},"total":2,"ts":"2025-06-15T15:06:40.250Z"}'
    )
    assert decode_snapshot(old).under_review == 0


timestamps = st.integers(min_value=0, max_value=4_102_444_800_000)  # up to 2100
option_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)


@given(
    seq=st.integers(min_value=1, max_value=2**53),
    state=st.sampled_from(PollState),
    counts=st.dictionaries(option_ids, st.integers(min_value=0, max_value=2**40), max_size=64),
    ts_ms=timestamps,
    held=st.integers(min_value=0, max_value=2**40),
)
def test_decoding_an_encoded_snapshot_gives_it_back(
    seq: int, state: PollState, counts: dict[str, int], ts_ms: int, held: int
) -> None:
    """Every snapshot survives the round trip exactly, ts to the millisecond."""
    snapshot = Snapshot("poll-x", seq, state, counts, sum(counts.values()), ts_ms, held)
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"type":"vote_result"}',
        b'{"type":"snapshot","poll_id":"p1","seq":1}',
        b'{"type":"snapshot","poll_id":"p1","seq":1,"state":"gone","counts":{},"total":0,'
        b'"ts":"2025-01-01T00:00:00.000Z"}',
        b'{"type":"snapshot","poll_id":"p1","seq":1,"state":"open","counts":{},"total":0,'
        b'"ts":"2025-01-01T00:00:00.000"}',
    ],
)
def test_anything_but_a_snapshot_document_is_refused(document: bytes) -> None:
    """Malformed JSON, another message type, missing fields, an unknown state or a ts without
    zone raise ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011  # ValueError is the whole contract here
        decode_snapshot(document)


def test_the_first_snapshot_of_a_poll_has_seq_one() -> None:
    """With nothing published before, the results are due as seq 1, stamped with the given time."""
    first = next_snapshot(None, results(0, 0), 5000)
    assert first == Snapshot("p1", 1, OPEN, {"red": 0, "green": 0}, 0, 5000)


def test_nothing_is_due_while_state_and_counts_are_unchanged() -> None:
    """The same counts and state again (even at a later time) publish nothing."""
    previous = next_snapshot(None, results(1, 2), 5000)
    assert next_snapshot(previous, results(1, 2, at=9000), 9000) is None


def test_a_change_of_counts_or_of_state_alone_is_due() -> None:
    """A new vote, or a close with the same counts, each make a snapshot with the next seq."""
    previous = next_snapshot(None, results(1, 2), 5000)
    voted = next_snapshot(previous, results(2, 2), 6000)
    closed = next_snapshot(previous, results(1, 2, PollState.CLOSED), 6000)
    assert voted is not None
    assert closed is not None
    assert (voted.seq, voted.counts) == (2, {"red": 2, "green": 2})
    assert (closed.seq, closed.final) == (2, True)


def test_seq_continues_after_the_stored_one_when_the_store_is_ahead() -> None:
    """After a failover the new seq is one past the larger of ours and the store's."""
    previous = next_snapshot(None, results(1, 2), 5000)
    ahead = next_snapshot(previous, results(3, 2), 6000, stored_seq=41)
    behind = next_snapshot(ahead, results(4, 2), 7000, stored_seq=3)
    assert ahead is not None
    assert behind is not None
    assert (ahead.seq, behind.seq) == (42, 43)


def test_counts_keep_the_polls_option_order_on_the_wire() -> None:
    """Option order survives encoding, so clients can render counts without the poll."""
    snapshot = Snapshot("p1", 1, OPEN, {"zebra": 1, "apple": 2, "mango": 0}, 3, 0)
    assert list(orjson.loads(encode_snapshot(snapshot))["counts"]) == ["zebra", "apple", "mango"]

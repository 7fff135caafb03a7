"""The ledger queues' stream format, decoded strictly by the store (tally.store.ledger_queue):
what the archiver receives is a typed vote or admin action, or nothing at all."""

from __future__ import annotations

import pytest

from tally.domain.polls import PollState
from tally.ports import MalformedEntry, QueuedAdminAction, QueuedVote
from tally.store.ledger_queue import decode_admin_entry, decode_vote_entry

PSEUDONYM = bytes.fromhex("00112233445566778899aabbccddee03")


def flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [item for pair in fields.items() for item in pair]


def test_a_stream_entry_becomes_a_queued_vote() -> None:
    """A lane stream entry id <seq>-0 with fields p, o, t is that vote."""
    fields = {b"p": PSEUDONYM, b"o": b"alice", b"t": b"1767225600000"}
    assert decode_vote_entry(b"1-0", flat(fields)) == QueuedVote(
        1, PSEUDONYM, "alice", 1_767_225_600_000
    )


@pytest.mark.parametrize(
    ("entry_id", "fields"),
    [
        (b"0-0", {}),
        (b"01-0", {}),
        (b"1-1", {}),
        (b"1", {}),
        (b"1-0-0", {}),
        (b"-0", {}),
        (b"1-0", {b"p": bytes(16), b"o": b"a"}),  # missing t
        (b"1-0", {b"p": bytes(16), b"o": b"a", b"t": b"1", b"x": b""}),  # extra field
        (b"1-0", {b"p": bytes(16), b"o": b"a", b"t": b"01"}),
        (b"1-0", {b"p": bytes(16), b"o": b"a", b"t": b"-1"}),
        (b"1-0", {b"p": bytes(16), b"o": b"a", b"t": b""}),
        (b"1-0", {b"p": bytes(16), b"o": b"\xff", b"t": b"1"}),
        (b"1-0", {b"p": bytes(16), b"o": b"", b"t": b"1"}),
        (b"1-0", {b"p": bytes(15), b"o": b"a", b"t": b"1"}),
    ],
)
def test_malformed_stream_entries_are_refused(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
    """Nothing half-read reaches the ledger: bad ids, missing, extra or bad fields all fail."""
    with pytest.raises(MalformedEntry):
        decode_vote_entry(entry_id, flat(fields))


def test_a_duplicated_field_is_refused() -> None:
    """A field given twice is not silently collapsed into one."""
    items = [b"p", bytes(16), b"o", b"a", b"t", b"1", b"o", b"b"]
    with pytest.raises(MalformedEntry):
        decode_vote_entry(b"1-0", items)


def test_admin_entries_become_the_moves_they_record() -> None:
    """created / open / closed are the states the poll entered, with time and actor."""
    created = decode_admin_entry(b"1-0", flat({b"a": b"created", b"t": b"5", b"u": b""}))
    opened = decode_admin_entry(b"2-0", flat({b"a": b"open", b"t": b"6", b"u": b"ops"}))
    assert created == QueuedAdminAction(1, PollState.DRAFT, 5, b"")
    assert opened == QueuedAdminAction(2, PollState.OPEN, 6, b"ops")


@pytest.mark.parametrize(
    "fields",
    [
        {b"a": b"reopened", b"t": b"5", b"u": b""},
        {b"a": b"open", b"t": b"x", b"u": b""},
        {b"a": b"open", b"t": b"5"},
        {b"a": b"open", b"t": b"5", b"u": b"", b"p": b""},
    ],
)
def test_malformed_admin_entries_are_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedEntry):
        decode_admin_entry(b"2-0", flat(fields))

"""The result-visibility rule (domain.visibility), case by case: every mode, state and viewer; and
the mode as the stored definition keeps it (old polls read as live)."""

from __future__ import annotations

import orjson
import pytest

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import OptionSpec, PollState, Visibility, new_poll
from tally.domain.visibility import (
    Hidden,
    closed_state,
    hidden_from_others,
    hidden_reason,
    may_see_counts,
    needs_vote_lookup,
)
from tally.store.polls import decode_poll, encode_definition

NOW = 1_767_225_000_000
LIVE, AFTER_VOTE, AFTER_CLOSE = Visibility.LIVE, Visibility.AFTER_VOTE, Visibility.AFTER_CLOSE
DRAFT, OPEN, CLOSED = PollState.DRAFT, PollState.OPEN, PollState.CLOSED

# (mode, state, admin, voted) -> why hidden (None: the counts are shown)
CASES = [
    (LIVE, OPEN, False, False, None),
    (LIVE, DRAFT, False, False, None),
    (LIVE, CLOSED, False, False, None),
    (AFTER_VOTE, OPEN, False, False, Hidden.UNTIL_VOTE),
    (AFTER_VOTE, DRAFT, False, False, Hidden.UNTIL_VOTE),
    (AFTER_VOTE, OPEN, False, True, None),
    (AFTER_VOTE, OPEN, True, False, None),
    (AFTER_VOTE, CLOSED, False, False, None),
    (AFTER_CLOSE, OPEN, False, False, Hidden.UNTIL_CLOSE),
    (AFTER_CLOSE, OPEN, False, True, Hidden.UNTIL_CLOSE),  # having voted changes nothing
    (AFTER_CLOSE, DRAFT, False, False, Hidden.UNTIL_CLOSE),
    (AFTER_CLOSE, OPEN, True, False, None),
    (AFTER_CLOSE, CLOSED, False, False, None),
]


@pytest.mark.parametrize(("mode", "state", "admin", "voted", "expected"), CASES)
def test_hidden_reason(
    mode: Visibility, state: PollState, admin: bool, voted: bool, expected: Hidden | None
) -> None:
    assert hidden_reason(mode, state, viewer_is_admin=admin, viewer_has_voted=voted) is expected


def test_hidden_from_others_is_the_reason_of_a_viewer_without_privilege() -> None:
    for mode in Visibility:
        for state in PollState:
            plain = hidden_reason(mode, state, viewer_is_admin=False, viewer_has_voted=False)
            assert hidden_from_others(mode, state) is plain


def test_the_store_is_asked_only_where_having_voted_decides() -> None:
    asked = {
        (mode, state, admin)
        for mode in Visibility
        for state in PollState
        for admin in (False, True)
        if needs_vote_lookup(mode, state, admin)
    }
    assert asked == {(AFTER_VOTE, DRAFT, False), (AFTER_VOTE, OPEN, False)}


def test_new_poll_defaults_to_live_and_keeps_the_mode() -> None:
    plain = new_poll(poll_id="p", title="t", options=[OptionSpec("a"), OptionSpec("b")], now_ms=NOW)
    assert plain.visibility is LIVE
    chosen = new_poll(
        poll_id="p",
        title="t",
        options=[OptionSpec("a"), OptionSpec("b")],
        now_ms=NOW,
        visibility=AFTER_CLOSE,
    )
    assert chosen.visibility is AFTER_CLOSE


def test_the_deadline_closes_the_poll_for_visibility_before_the_aggregator_says_so() -> None:
    poll = new_poll(
        poll_id="p",
        title="t",
        options=[OptionSpec("a"), OptionSpec("b")],
        now_ms=NOW,
        closes_at_ms=NOW + 60_000,
        visibility=AFTER_CLOSE,
    ).moved_to(OPEN, NOW)
    assert closed_state(poll, OPEN, NOW + 59_999) is OPEN
    assert closed_state(poll, OPEN, NOW + 60_000) is CLOSED
    assert closed_state(poll, DRAFT, NOW + 60_000) is DRAFT  # a draft never opened stays one
    assert not may_see_counts(poll, False, True, NOW + 59_999)
    assert may_see_counts(poll, False, False, NOW + 60_000)
    assert may_see_counts(poll, True, False, NOW)


def test_may_see_counts_follows_the_polls_state() -> None:
    draft = new_poll(
        poll_id="p",
        title="t",
        options=[OptionSpec("a"), OptionSpec("b")],
        now_ms=NOW,
        visibility=AFTER_VOTE,
    )
    opened = draft.moved_to(OPEN, NOW)
    closed = opened.moved_to(CLOSED, NOW)
    assert not may_see_counts(opened, False, False, NOW)
    assert may_see_counts(opened, False, True, NOW)
    assert may_see_counts(closed, False, False, NOW)


def _definition(version: int, **extra: object) -> bytes:
    return orjson.dumps(
        {
            "v": version, "id": "old", "title": "t",
            "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
            "lanes": 1, "closes_at_ms": None, "created_at_ms": NOW, "bucket_bits": 0, **extra,
        }
    )  # fmt: skip


@pytest.mark.parametrize("version", [1, 2])
def test_a_poll_stored_before_visibility_reads_as_live(version: int) -> None:
    assert decode_poll(_definition(version), b"open").visibility is LIVE


def test_the_stored_definition_keeps_the_mode_and_a_newer_format_is_refused() -> None:
    poll = new_poll(
        poll_id="p",
        title="t",
        options=[OptionSpec("a"), OptionSpec("b")],
        now_ms=NOW,
        visibility=AFTER_VOTE,
    )
    stored = encode_definition(poll)
    assert orjson.loads(stored)["v"] == 3
    assert decode_poll(stored, b"draft") == poll
    with pytest.raises(StoreUnavailable):
        decode_poll(_definition(4, visibility="after-vote"), b"open")

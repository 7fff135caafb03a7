"""Turnout per minute (domain.turnout) and the recount's minute buckets (archive.poll_logs), with
the clock controlled through the votes' own accepted times."""

from __future__ import annotations

import pytest

from tally.archive.poll_logs import PollReview
from tally.domain.turnout import MAX_FILLED_MINUTES, MINUTE_MS, TurnoutRow, minute_of, turnout_rows
from tally.ledger.leaf import VoteRecord, VoteStatus

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a minute start


def test_minute_of_is_the_start_of_the_utc_minute() -> None:
    assert minute_of(T0) == T0
    assert minute_of(T0 + 59_999) == T0
    assert minute_of(T0 + 60_000) == T0 + MINUTE_MS
    assert minute_of(T0 - 1) == T0 - MINUTE_MS


def test_rows_fill_the_empty_minutes_between_and_add_up() -> None:
    rows = turnout_rows({T0: 3, T0 + 3 * MINUTE_MS: 2, T0 + MINUTE_MS: 0})
    assert rows == [
        TurnoutRow(T0, 3, 3),
        TurnoutRow(T0 + MINUTE_MS, 0, 3),
        TurnoutRow(T0 + 2 * MINUTE_MS, 0, 3),
        TurnoutRow(T0 + 3 * MINUTE_MS, 2, 5),
    ]
    assert turnout_rows({}) == []
    assert turnout_rows({T0: 0}) == []


def test_a_very_long_poll_lists_only_the_minutes_with_ballots() -> None:
    far = T0 + MAX_FILLED_MINUTES * MINUTE_MS
    assert turnout_rows({T0: 1, far: 1}) == [TurnoutRow(T0, 1, 1), TurnoutRow(far, 1, 2)]


def test_a_bucket_off_a_minute_start_is_a_bug() -> None:
    with pytest.raises(ValueError, match="minute starts"):
        turnout_rows({T0 + 1: 1})


def vote(seq: int, at_ms: int, status: VoteStatus = VoteStatus.ACCEPTED) -> VoteRecord:
    return VoteRecord("p", 0, seq, seq.to_bytes(16, "big"), "red", at_ms, status)


def test_the_recount_buckets_every_ballot_by_its_accepted_minute() -> None:
    review = PollReview(lanes=1)
    times = [T0 + 5, T0 + 59_999, T0 + 60_000, T0 + 3 * MINUTE_MS + 1]
    for seq, at in enumerate(times, start=1):
        review.add("p", vote(seq, at))
    review.add("p", vote(5, T0 + 10, VoteStatus.HELD))  # a held ballot was cast too
    assert dict(review.turnout) == {T0: 3, T0 + MINUTE_MS: 1, T0 + 3 * MINUTE_MS: 1}
    assert review.turnout_changed == {T0, T0 + MINUTE_MS, T0 + 3 * MINUTE_MS}
    assert [r.cumulative for r in turnout_rows(review.turnout)] == [3, 4, 4, 5]


def test_a_ballot_the_admission_check_refuses_is_not_counted() -> None:
    review = PollReview(lanes=1)
    review.add("p", vote(1, T0), admission="admission-unsigned")
    review.add("p", vote(2, T0), admission=None)
    assert dict(review.turnout) == {T0: 1}

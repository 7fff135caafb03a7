"""Result visibility: who may see a poll's counts, and why not. The one rule every transport
(REST /results and its CSV, the live WebSocket, SSE) applies; none has a rule of its own.

Pure: no clock, no I/O. Times are integer milliseconds since the Unix epoch, passed in.

    live         everyone sees the counts, all the time
    after-vote   a voter sees them once they have voted (a held vote counts: it was cast)
    after-close  nobody but the organisers until the poll closes
    closed       everyone, whatever the mode: the result is announced
    admins       always (they run the show: console, presenter rehearsal, integrity alarms)

A draft is shown to nobody but the organisers (poll_shown): not even that it exists.

What stays visible when the counts are hidden: the total, the state and the votes under review
(turnout is no secret and the organisers' presenter shows it), never a count per option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum

from tally.domain.integrity import IntegrityAlarm
from tally.domain.polls import Poll, PollState, Visibility

HIDDEN_DETAILS = "details hidden with the counts until they are shown"


class Hidden(StrEnum):
    """Why a viewer does not see the counts yet: the `hidden` field of a results document."""

    UNTIL_VOTE = "until-vote"
    UNTIL_CLOSE = "until-close"


def poll_shown(state: PollState, *, viewer_is_admin: bool) -> bool:
    """Whether a viewer may learn that a poll in `state` exists at all: a draft is the organisers'
    work in progress, so to everyone else it is exactly an unknown poll (every public surface:
    the list, the poll, its results and exports, QR and join code, the live feeds, a vote)."""
    return viewer_is_admin or state is not PollState.DRAFT


def hidden_from_others(visibility: Visibility, state: PollState) -> Hidden | None:
    """Why a viewer with no privilege (anonymous, or not yet voted) does not see the counts of a
    poll in `state`; None when everyone sees them. It is also the reason a live frame is redacted
    for: a snapshot is encoded once in full and once as this (gateway.live.snapshot)."""
    if visibility is Visibility.LIVE or state is PollState.CLOSED:
        return None
    if visibility is Visibility.AFTER_VOTE:
        return Hidden.UNTIL_VOTE
    return Hidden.UNTIL_CLOSE


def hidden_reason(
    visibility: Visibility, state: PollState, *, viewer_is_admin: bool, viewer_has_voted: bool
) -> Hidden | None:
    """Why this viewer does not see the counts of a poll in `state`; None when they do."""
    if viewer_is_admin:
        return None
    reason = hidden_from_others(visibility, state)
    if reason is Hidden.UNTIL_VOTE and viewer_has_voted:
        return None
    return reason


def needs_vote_lookup(visibility: Visibility, state: PollState, viewer_is_admin: bool) -> bool:
    """Whether the viewer's having voted decides what they see, so the store must be asked: only
    for a non-admin viewer of an after-vote poll not yet closed (every other case skips the read)."""
    return not viewer_is_admin and hidden_from_others(visibility, state) is Hidden.UNTIL_VOTE


def closed_state(poll: Poll, state: PollState, now_ms: int) -> PollState:
    """`state` (what a results document or snapshot says, or the poll's own), made closed once
    the poll's deadline has passed: votes stop at the deadline, so the result is final then,
    before the aggregator publishes its closed snapshot."""
    deadline = poll.closes_at_ms
    if state is PollState.OPEN and deadline is not None and now_ms >= deadline:
        return PollState.CLOSED
    return state


def may_see_counts(poll: Poll, viewer_is_admin: bool, viewer_has_voted: bool, now_ms: int) -> bool:
    """Whether a viewer sees the counts of `poll` now (its state and deadline as they stand)."""
    state = closed_state(poll, poll.state, now_ms)
    return (
        hidden_reason(
            poll.visibility,
            state,
            viewer_is_admin=viewer_is_admin,
            viewer_has_voted=viewer_has_voted,
        )
        is None
    )


def redacted_alarms(alarms: Sequence[IntegrityAlarm]) -> list[IntegrityAlarm]:
    """The alarms as a viewer who may not see the counts sees them: that there is an alarm, of
    which kind and on which log, but not its details (a counter mismatch quotes counts)."""
    return [replace(alarm, details=HIDDEN_DETAILS) for alarm in alarms]

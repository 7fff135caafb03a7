"""Results: the counts of a poll, as summed from its lanes, and the votes still under review
(held: recorded, not counted until a reviewer releases them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tally.domain.polls import Poll, PollState


@dataclass(frozen=True, slots=True)
class LaneTally:
    counts: Mapping[str, int]
    last_vote_at_ms: int
    held: int = 0


@dataclass(frozen=True, slots=True)
class Results:
    poll_id: str
    state: PollState
    counts: dict[str, int]
    total: int
    updated_at_ms: int
    # The snapshot these results come from (None: summed from the lanes just now).
    seq: int | None = None
    under_review: int = 0


def sum_lanes(
    poll: Poll, state: PollState, lanes: Iterable[LaneTally], state_changed_at_ms: int
) -> Results:
    """Sum lane counters, keeping every option of the poll (in poll order) even at zero."""
    counts = dict.fromkeys((o.id for o in poll.options), 0)
    updated = state_changed_at_ms
    held = 0
    for lane in lanes:
        for option, n in lane.counts.items():
            if option in counts:
                counts[option] += n
        updated = max(updated, lane.last_vote_at_ms)
        held += lane.held
    return Results(poll.id, state, counts, sum(counts.values()), updated, under_review=held)

"""Results: the counts of a poll, as summed from its lanes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tally.domain.polls import Poll, PollState


@dataclass(frozen=True, slots=True)
class LaneTally:
    counts: Mapping[str, int]
    last_vote_at_ms: int


@dataclass(frozen=True, slots=True)
class Results:
    poll_id: str
    state: PollState
    counts: dict[str, int]
    total: int
    updated_at_ms: int
    # The snapshot these results come from (None: summed from the lanes just now).
    seq: int | None = None


def sum_lanes(
    poll: Poll, state: PollState, lanes: Iterable[LaneTally], state_changed_at_ms: int
) -> Results:
    """Sum lane counters, keeping every option of the poll (in poll order) even at zero."""
    counts = dict.fromkeys((o.id for o in poll.options), 0)
    updated = state_changed_at_ms
    for lane in lanes:
        for option, n in lane.counts.items():
            if option in counts:
                counts[option] += n
        updated = max(updated, lane.last_vote_at_ms)
    return Results(poll.id, state, counts, sum(counts.values()), updated)

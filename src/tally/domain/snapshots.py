"""Snapshots: the versioned results a poll's watchers see, published only when something changed.

`seq` strictly increases per poll, across aggregator failovers too (the store refuses a seq that
does not move forward; a new aggregator continues from the stored one).
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.domain.polls import PollState
from tally.domain.results import Results


@dataclass(frozen=True, slots=True)
class Snapshot:
    poll_id: str
    seq: int
    state: PollState
    counts: dict[str, int]
    total: int
    ts_ms: int

    @property
    def final(self) -> bool:
        return self.state is PollState.CLOSED


def next_snapshot(
    previous: Snapshot | None, results: Results, now_ms: int, stored_seq: int = 0
) -> Snapshot | None:
    """The snapshot to publish after `previous`, or None when state and counts are unchanged.

    `stored_seq` is the highest seq the store has seen (it may be ahead of `previous` after a
    failover); the new seq is one past the larger of the two."""
    if (
        previous is not None
        and previous.state is results.state
        and previous.counts == results.counts
    ):
        return None
    seq = max(previous.seq if previous is not None else 0, stored_seq) + 1
    return Snapshot(
        results.poll_id, seq, results.state, dict(results.counts), results.total, now_ms
    )

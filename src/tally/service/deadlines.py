"""Closing polls at their deadline: the vote function already refuses votes past a lane's
`closes_at` (by the store's clock); this makes the poll's state say so too, which seals its
ledger (the archiver certifies closed polls). Idempotent: any number may sweep at once."""

from __future__ import annotations

from collections.abc import Callable

from tally.domain.polls import PollState
from tally.ports import PollStore

MAX_POLLS = 10_000


async def close_expired(polls: PollStore, now_ms: Callable[[], int]) -> list[str]:
    """Formally close every open poll whose deadline has passed; returns their ids."""
    now = now_ms()
    closed = []
    for poll in await polls.recent(MAX_POLLS):
        if poll.state is PollState.OPEN and poll.effective_state(now) is PollState.CLOSED:
            await polls.move(poll, PollState.CLOSED)
            closed.append(poll.id)
    return closed

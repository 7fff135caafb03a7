"""The small interfaces the service needs from storage, with the guarantees it relies on.

Only wiring.py knows the concrete classes (today: Valkey, in tally.store).
"""

from __future__ import annotations

from typing import Protocol

from tally.domain.polls import Poll, PollState
from tally.domain.results import LaneTally
from tally.domain.votes import VoteOutcome


class PollStore(Protocol):
    """Poll definitions and their lifecycle state.

    A definition never changes once created. `move` changes every lane and then the poll record;
    each lane moves atomically with respect to votes on it, so a vote racing with a close is
    either counted or refused, never half-applied. Moves are idempotent, so a move interrupted
    part-way is finished by repeating it.
    """

    async def create(self, poll: Poll) -> None:
        """Store a new poll and its lanes (state draft). Raises InvalidInput('id') if it exists."""

    async def get(self, poll_id: str) -> Poll | None: ...

    async def recent(self, limit: int) -> list[Poll]:
        """Newest first."""

    async def move(self, poll: Poll, target: PollState) -> PollState:
        """Move every lane, then the poll, to `target` from any earlier state; returns the state
        the poll record had before (already `target` if the move was a repeat)."""

    async def lane_states(self, poll: Poll) -> list[PollState | None]:
        """Each lane's state in lane order (None for a lane that does not exist)."""

    async def tallies(self, poll: Poll) -> tuple[list[LaneTally], int]:
        """Each lane's counters, and when the poll's state last changed (ms)."""


class BallotBox(Protocol):
    """Casting votes.

    `cast` is one atomic step on the voter's lane: the vote is recorded in the lane's ledger,
    voter index and counter together or not at all, at most once per pseudonym and poll. It
    returns only once the vote is durable (fsynced, and on replicas if so configured); if that
    cannot be confirmed it raises StoreUnavailable, and a retry is safe: it returns the same
    receipt as AlreadyVoted.
    """

    async def cast(self, poll: Poll, pseudonym: bytes, option: str) -> VoteOutcome: ...

"""The small interfaces the service needs from storage, with the guarantees it relies on.

Only wiring.py knows the concrete classes (today: Valkey, in tally.store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tally.domain.polls import Poll, PollState
from tally.domain.results import LaneTally
from tally.domain.snapshots import Snapshot
from tally.domain.votes import VoteOutcome


class PollStore(Protocol):
    """Poll definitions and their lifecycle state.

    A definition never changes once created. `move` changes every lane and then the poll record;
    each lane moves atomically with respect to votes on it, so a vote racing with a close is
    either counted or refused, never half-applied. Moves are idempotent, so a move interrupted
    part-way is finished by repeating it.
    """

    async def create(self, poll: Poll, actor: str = "") -> None:
        """Store a new poll and its lanes (state draft), and record 'created' by `actor` in its
        admin log. Raises InvalidInput('id') if it exists."""

    async def get(self, poll_id: str) -> Poll | None: ...

    async def recent(self, limit: int) -> list[Poll]:
        """Newest first."""

    async def move(self, poll: Poll, target: PollState, actor: str = "") -> PollState:
        """Move every lane, then the poll, to `target` from any earlier state, recording the
        poll's move by `actor` ("" for the system) in its admin log atomically with it; returns
        the state the poll record had before (already `target` if the move was a repeat)."""

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


@dataclass(frozen=True, slots=True)
class Published:
    """The snapshot is stored as the poll's latest and was sent to its live channel."""

    seq: int


@dataclass(frozen=True, slots=True)
class NotLeader:
    """Refused: the publisher does not hold the poll's lease (it expired, or another took it)."""


@dataclass(frozen=True, slots=True)
class Stale:
    """Refused: the store already holds `stored_seq` >= the snapshot's seq; continue after it."""

    stored_seq: int


PublishOutcome = Published | NotLeader | Stale


class SnapshotStore(Protocol):
    """Each poll's latest snapshot, its live channel, and the lease that lets one aggregator
    publish for the poll.

    - Lease: `acquire` takes or renews it atomically; at most one owner holds a poll's lease at
      any moment, until `ttl_ms` passes without a renewal or the owner releases it.
    - `publish` is one atomic step: only the lease holder, and only with a seq above the stored
      one, stores the snapshot as the latest and sends its document to the poll's live channel.
      So the stored seq never goes back, and the documents on a channel carry strictly
      increasing seqs, in the order they were published, even across a failover.
    - Delivery on the channel is at most once (pub/sub): a subscriber that was disconnected has
      missed snapshots and must read `latest`, which returns the last one stored.
    """

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the poll's lease for `ttl_ms`; False while another owner holds it."""

    async def release(self, poll_id: str, owner: str) -> bool:
        """Give the lease up, if `owner` holds it (so a successor need not wait for the TTL)."""

    async def holder(self, poll_id: str) -> str | None:
        """Who holds the poll's lease now (None: no live aggregator leads the poll)."""

    async def latest(self, poll_id: str) -> Snapshot | None:
        """The last snapshot stored for the poll, in one read; None if none was published."""

    async def publish(self, poll_id: str, owner: str, snapshot: Snapshot) -> PublishOutcome:
        """Store and broadcast `snapshot` if `owner` holds the lease and its seq moves forward."""


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    """One entry of a log's queue in the store: its seq (leaf index + 1) and its fields."""

    seq: int
    fields: dict[bytes, bytes]


class LedgerQueue(Protocol):
    """The store's side of the ledger: each log's entries not yet archived, in order, and the
    lease that lets one archiver write a poll's logs.

    `log` is None for the poll's admin log, else a lane. Entries carry seqs 1, 2, 3, ... with no
    gap; `trim` drops those below `seq` and is called only once they are durable in the archive.
    """

    async def read(
        self, poll_id: str, logs: list[int | None], first_seqs: list[int], count: int
    ) -> list[list[QueuedEntry]]:
        """Up to `count` entries of each log, from the given seq on, in one round trip."""

    async def trim(self, poll_id: str, logs: list[int | None], below_seqs: list[int]) -> None:
        """Drop each log's entries whose seq is below the given one."""

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the poll's archiver lease; False while another archiver holds it."""

    async def release(self, poll_id: str, owner: str) -> None: ...

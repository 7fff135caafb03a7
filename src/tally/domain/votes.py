"""A vote's outcome is a value, never a magic number: Accepted | AlreadyVoted | NotOpen | UnknownOption."""

from __future__ import annotations

from dataclasses import dataclass

from tally.domain.polls import PollState


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a voter keeps: where their vote sits in the ledger. `entry_id` is the vote's 1-based
    position in its lane's ledger (its Merkle leaf index + 1); `leaf_hash` is the Merkle leaf
    hash of its ledger record, which lets the voter check later that the published log holds it."""

    poll_id: str
    lane: int
    entry_id: int
    option: str
    accepted_at_ms: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class AlreadyVoted:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class NotOpen:
    state: PollState


@dataclass(frozen=True, slots=True)
class UnknownOption:
    option: str


VoteOutcome = Accepted | AlreadyVoted | NotOpen | UnknownOption

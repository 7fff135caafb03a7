"""A vote's outcome is a value, never a magic number.

VoteOutcome
 ├── Accepted            cast now; the receipt says where it sits in the ledger
 ├── AlreadyVoted        this voter's vote was cast before; its original receipt
 ├── HeldForReview       an admission check held it: recorded (it has a receipt) but not
 │                       counted unless a reviewer releases it
 └── Refusal             not cast, and nothing was written
      ├── NotOpen            the poll is a draft or closed (by state or deadline)
      ├── UnknownOption      the poll has no such option
      ├── Unauthenticated    the voter's credential is not (or no longer) valid
      ├── ChallengeRequired  a proof-of-work answer must come with the vote
      ├── ChallengeInvalid   the answer sent is forged, expired, spent, for another poll...
      └── RateLimited        too many requests; retry after the given seconds
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tally.domain.polls import Option, PollState

ADMISSION_BYTES = 76  # u64 admitted ms || u32 key id || 64-byte Ed25519 signature
_ADMISSION = struct.Struct(">QI64s")


@dataclass(frozen=True, slots=True)
class AdmissionSignature:
    """The admitting gateway's signature of a vote (tally.ledger.admission says what it covers):
    when it admitted it (its clock, ms), under which admission key (the key's id) and the 64
    signature bytes. The store keeps it beside the vote as 76 bytes (`to_bytes`), opaque to it;
    the archiver puts it in the vote's ledger record and the voter's receipt carries it."""

    admitted_ms: int
    key_id: int
    signature: bytes

    def to_bytes(self) -> bytes:
        return _ADMISSION.pack(self.admitted_ms, self.key_id, self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> AdmissionSignature:
        """The inverse of `to_bytes`; ValueError unless `data` is exactly 76 bytes."""
        if len(data) != ADMISSION_BYTES:
            raise ValueError(f"an admission signature is {ADMISSION_BYTES} bytes, got {len(data)}")
        return cls(*_ADMISSION.unpack(data))


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a voter keeps: where their vote sits in the ledger. `entry_id` is the vote's 1-based
    position in its lane's ledger (its Merkle leaf index + 1); `leaf_hash` is the Merkle leaf
    hash of its ledger record, which lets the voter check later that the published log holds it.
    `pseudonym` and the gateway's `admission` signature let anyone holding the published
    admission key check that a gateway admitted this vote (None: a vote from before admission
    signatures, or read back where they were not kept)."""

    poll_id: str
    lane: int
    entry_id: int
    option: str
    accepted_at_ms: int
    leaf_hash: bytes
    pseudonym: bytes | None = None
    admission: AdmissionSignature | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class AlreadyVoted:
    """`status`: accepted, or for a vote cast held: held, then released or voided by a
    reviewer."""

    receipt: Receipt
    status: str = "accepted"


@dataclass(frozen=True, slots=True)
class HeldForReview:
    """Recorded with status held: `receipt` says where; `reason` is the check's."""

    reason: str
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class NotOpen:
    state: PollState


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """`option`: as sent; `options`: the poll's, so the refusal can list the valid ones (from the
    definition the intake already holds: no store read)."""

    option: str
    options: tuple[Option, ...] = ()


@dataclass(frozen=True, slots=True)
class Unauthenticated:
    """`reason` is a stable code (token-missing, token-expired, ...); `detail` is for people."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ChallengeRequired:
    challenge: str
    reason: str


@dataclass(frozen=True, slots=True)
class RateLimited:
    retry_after_s: int
    scope: str


@dataclass(frozen=True, slots=True)
class ChallengeInvalid:
    """`reason` is a stable code (tally.security.pow.Invalid: forged, expired, replayed, ...)."""

    reason: str


Refusal = (
    NotOpen | UnknownOption | Unauthenticated | ChallengeRequired | ChallengeInvalid | RateLimited
)
VoteOutcome = Accepted | AlreadyVoted | HeldForReview | Refusal

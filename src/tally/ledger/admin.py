"""The admin record: one leaf of a poll's admin log (poll created, opened, closed; a held vote
reviewed).

Pure: no I/O, no clock. Layout (docs/ledger-format.md, "Admin record"); integers big-endian::

    size  field
    1     format version         0x01
    1     record type            0x02 (admin)
    1     P = poll id length     1..255
    P     poll id                UTF-8
    1     action                 0x01 created, 0x02 opened, 0x03 closed, 0x04 reviewed,
                                 0x05 admission-key
    8     time                   uint64, ms since the Unix epoch (server clock)
    1     A = actor length       0..255
    A     actor                  opaque bytes naming who acted (empty: the system, e.g. a deadline)
    -- only when action is 0x01 created: the poll definition an auditor recounts against --
    2     lanes                  uint16, a power of two from 1 to 32768
    8     closes at              uint64 ms, 0 for no deadline
    2     T = title length       1..65535
    T     title                  UTF-8
    1     K = option count       1..255
    K times:
      1   I = option id length   1..255
      I   option id              UTF-8, unique within the poll
      2   L = label length       1..65535
      L   label                  UTF-8
    -- only when action is 0x04 reviewed: the decision, as the lane's review record states it --
    2     lane                   uint16
    8     held seq               uint64, >= 1: the entry seq of the held vote in that lane
    1     decision               0x01 released, 0x02 voided
    -- only when action is 0x05 admission-key: a gateway admission key and its validity --
    1     N = key name length    1..255
    N     key name               UTF-8, a signed-note key name (no spaces, no '+')
    32    public key             Ed25519
    8     not before             uint64 ms
    8     not after              uint64 ms, 0 for no end; else >= not before

The actor of a reviewed record is the reviewer; of an admission-key record, who registered or
retired the key. The key's id is its note key ID (tally.ledger.note.key_id over name and public
key); a later record of the same name and key restates its validity. Decoding is strict, as for vote records (:mod:`tally.ledger.leaf`); LeafError otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

from tally.ledger import merkle, note
from tally.ledger._wire import LeafError, Reader, RecordType, Writer, check_text
from tally.ledger.review import Decision

__all__ = [
    "MAX_LANES",
    "AdminAction",
    "AdminRecord",
    "AdmissionKey",
    "LeafError",
    "PollDefinition",
    "PollOption",
    "ReviewedVote",
    "admin_leaf_hash",
    "decode_admin",
    "encode_admin",
]

MAX_LANES = 1 << 15  # the largest power of two a uint16 holds
_MAX_UINT64 = 2**64 - 1
_MAX_ACTOR = 255
_MAX_OPTIONS = 255
_ED25519_PUBLIC_SIZE = 32


class AdminAction(IntEnum):
    """What an admin record says happened to the poll."""

    CREATED = 0x01
    OPENED = 0x02
    CLOSED = 0x03
    REVIEWED = 0x04  # a reviewer released or voided a held vote (ReviewedVote says which)
    ADMISSION_KEY = 0x05  # a gateway admission key valid for the poll's votes (AdmissionKey)


@dataclass(frozen=True, slots=True)
class PollOption:
    """One option of a poll: its id (what votes name) and its label."""

    id: str
    label: str

    def __post_init__(self) -> None:
        check_text("option id", self.id, 255)
        check_text("option label", self.label, 0xFFFF)


@dataclass(frozen=True, slots=True)
class PollDefinition:
    """What a poll was created as: title, lane count, deadline and options."""

    title: str
    lanes: int
    closes_at_ms: int | None
    options: tuple[PollOption, ...]

    def __post_init__(self) -> None:
        check_text("title", self.title, 0xFFFF)
        if not 1 <= self.lanes <= MAX_LANES or self.lanes & (self.lanes - 1):
            raise LeafError(f"lanes must be a power of two from 1 to {MAX_LANES}, got {self.lanes}")
        if self.closes_at_ms is not None and not 1 <= self.closes_at_ms <= _MAX_UINT64:
            raise LeafError(f"closes at must be 1 to {_MAX_UINT64} ms, got {self.closes_at_ms}")
        if not 1 <= len(self.options) <= _MAX_OPTIONS:
            raise LeafError(f"a poll has 1 to {_MAX_OPTIONS} options, got {len(self.options)}")
        if len({o.id for o in self.options}) != len(self.options):
            raise LeafError("option ids must be unique")


@dataclass(frozen=True, slots=True)
class ReviewedVote:
    """Which held vote a reviewed record decides, and how: the signed twin of the lane's review
    record (tally.ledger.review), so that no decision enters a lane without the admin log."""

    lane: int
    held_seq: int
    decision: Decision

    def __post_init__(self) -> None:
        if not 0 <= self.lane <= 0xFFFF:
            raise LeafError(f"lane must be 0 to 65535, got {self.lane}")
        if not 1 <= self.held_seq <= _MAX_UINT64:
            raise LeafError(f"held seq must be 1 to {_MAX_UINT64}, got {self.held_seq}")
        if not isinstance(self.decision, Decision):
            raise LeafError(f"unknown review decision {self.decision!r}")


@dataclass(frozen=True)
class AdmissionKey:
    """A gateway deployment's Ed25519 admission public key under its name, valid for votes
    admitted from ``not_before_ms`` up to, not including, ``not_after_ms`` (0: no end).

    Not slotted, so that the key id and the parsed public key are worked out once per key
    (cached_property) however many votes an auditor checks against it."""

    name: str
    public_key: bytes
    not_before_ms: int = 0
    not_after_ms: int = 0

    def __post_init__(self) -> None:
        check_text("admission key name", self.name, 255)
        if not note.is_valid_name(self.name):
            raise LeafError(f"invalid admission key name {self.name!r}: no spaces, '+' or controls")
        if len(self.public_key) != _ED25519_PUBLIC_SIZE:
            raise LeafError(
                f"an admission public key is {_ED25519_PUBLIC_SIZE} bytes, got {len(self.public_key)}"
            )
        for field, value in (("not before", self.not_before_ms), ("not after", self.not_after_ms)):
            if not 0 <= value <= _MAX_UINT64:
                raise LeafError(f"{field} must be 0 to {_MAX_UINT64} ms, got {value}")
        if self.not_after_ms and self.not_after_ms < self.not_before_ms:
            raise LeafError(
                f"not after ({self.not_after_ms}) is before not before ({self.not_before_ms})"
            )

    @cached_property
    def key_id(self) -> int:
        """The note key ID: SHA-256(name || 0x0A || 0x01 || public key)[0:4], big-endian."""
        return note.key_id(self.name, self.public_key)

    @cached_property
    def verifier(self) -> note.Verifier:
        """The key as a signed-note verifier (its ``str`` is the published verifier key)."""
        return note.Verifier(self.name, self.public_key)

    def valid_at(self, ms: int) -> bool:
        """Whether a vote admitted at ``ms`` falls in the key's validity period."""
        return self.not_before_ms <= ms and (not self.not_after_ms or ms < self.not_after_ms)


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """One admin action; ``definition`` is present exactly when the action is CREATED,
    ``review`` exactly when it is REVIEWED, and ``admission_key`` exactly when it is
    ADMISSION_KEY."""

    poll_id: str
    action: AdminAction
    at_ms: int
    actor: bytes = b""
    definition: PollDefinition | None = None
    review: ReviewedVote | None = None
    admission_key: AdmissionKey | None = None

    def __post_init__(self) -> None:
        check_text("poll id", self.poll_id, 255)
        if not isinstance(self.action, AdminAction):
            raise LeafError(f"unknown admin action {self.action!r}")
        if not 0 <= self.at_ms <= _MAX_UINT64:
            raise LeafError(f"time must be 0 to {_MAX_UINT64} ms, got {self.at_ms}")
        if len(self.actor) > _MAX_ACTOR:
            raise LeafError(f"actor must be at most {_MAX_ACTOR} bytes, got {len(self.actor)}")
        if (self.action is AdminAction.CREATED) != (self.definition is not None):
            raise LeafError("a poll definition goes with the created action, and only with it")
        if (self.action is AdminAction.REVIEWED) != (self.review is not None):
            raise LeafError("a reviewed vote goes with the reviewed action, and only with it")
        if (self.action is AdminAction.ADMISSION_KEY) != (self.admission_key is not None):
            raise LeafError("an admission key goes with the admission-key action, and only with it")


def encode_admin(record: AdminRecord) -> bytes:
    """Return the canonical encoding of ``record`` (the leaf's data)."""
    out = Writer(RecordType.ADMIN)
    out.text(record.poll_id, 1, "poll id")
    out.uint(record.action, 1, "action")
    out.uint(record.at_ms, 8, "time")
    out.blob(record.actor, 1, "actor")
    poll = record.definition
    if poll is not None:
        out.uint(poll.lanes, 2, "lanes")
        out.uint(poll.closes_at_ms or 0, 8, "closes at")
        out.text(poll.title, 2, "title")
        out.uint(len(poll.options), 1, "option count")
        for option in poll.options:
            out.text(option.id, 1, "option id")
            out.text(option.label, 2, "option label")
    review = record.review
    if review is not None:
        out.uint(review.lane, 2, "lane")
        out.uint(review.held_seq, 8, "held seq")
        out.uint(review.decision, 1, "decision")
    key = record.admission_key
    if key is not None:
        out.text(key.name, 1, "admission key name")
        out.fixed(key.public_key, _ED25519_PUBLIC_SIZE, "admission public key")
        out.uint(key.not_before_ms, 8, "not before")
        out.uint(key.not_after_ms, 8, "not after")
    return out.build()


def decode_admin(data: bytes) -> AdminRecord:
    """Decode an admin leaf strictly; raise LeafError on any deviation from the format."""
    src = Reader(data, RecordType.ADMIN)
    poll_id = src.text(1, "poll id")
    code = src.uint(1, "action")
    try:
        action = AdminAction(code)
    except ValueError:
        raise LeafError(f"unknown admin action 0x{code:02x}") from None
    at_ms = src.uint(8, "time")
    actor = src.blob(1, "actor")
    poll = _read_definition(src) if action is AdminAction.CREATED else None
    review = _read_review(src) if action is AdminAction.REVIEWED else None
    key = _read_admission_key(src) if action is AdminAction.ADMISSION_KEY else None
    src.end()
    return AdminRecord(poll_id, action, at_ms, actor, poll, review, key)


def _read_definition(src: Reader) -> PollDefinition:
    lanes = src.uint(2, "lanes")
    closes_at = src.uint(8, "closes at")
    title = src.text(2, "title")
    count = src.uint(1, "option count")
    options = tuple(
        PollOption(src.text(1, "option id"), src.text(2, "option label")) for _ in range(count)
    )
    return PollDefinition(title, lanes, closes_at or None, options)


def _read_review(src: Reader) -> ReviewedVote:
    lane = src.uint(2, "lane")
    held_seq = src.uint(8, "held seq")
    code = src.uint(1, "decision")
    try:
        decision = Decision(code)
    except ValueError:
        raise LeafError(f"unknown review decision 0x{code:02x}") from None
    return ReviewedVote(lane, held_seq, decision)


def _read_admission_key(src: Reader) -> AdmissionKey:
    name = src.text(1, "admission key name")
    public_key = src.fixed(_ED25519_PUBLIC_SIZE, "admission public key")
    not_before = src.uint(8, "not before")
    not_after = src.uint(8, "not after")
    return AdmissionKey(name, public_key, not_before, not_after)


def admin_leaf_hash(record: AdminRecord) -> bytes:
    """Return the Merkle leaf hash of ``record``: SHA-256(0x00 || encode_admin(record))."""
    return merkle.leaf_hash(encode_admin(record))

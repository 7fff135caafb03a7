"""The review record: a reviewer's decision on a held vote, one leaf of the vote's lane log.

Pure: no I/O, no clock. A vote held for review is a vote record with status HELD
(:mod:`tally.ledger.leaf`); it is counted only once a review record of the same lane, later in
the log, releases it. Records are immutable, so a decision is its own leaf, at its own seq, and
never an edit of the vote. Layout (docs/ledger-format.md, "Review record"); integers big-endian::

    offset  size  field
    0       1     format version        0x01
    1       1     record type           0x03 (review)
    2       1     P = poll id length    1..255
    3       P     poll id               UTF-8
    3+P     2     lane                  uint16
    5+P     8     entry seq             uint64, >= 1: the record's own position in its lane
    13+P    8     held seq              uint64, >= 1: the entry seq of the held vote it decides
    21+P    1     decision              0x01 released, 0x02 voided
    22+P    8     decision time         uint64, ms since the Unix epoch (server clock)

Total ``30 + P`` bytes. Decoding is strict, as for vote records; LeafError otherwise. Whether the
held seq names a held vote of the lane, earlier in it and not decided before, is the meaning of
the log, not of one record: :class:`LaneReview` follows it, for the archiver and the auditor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum

from tally.ledger import merkle
from tally.ledger._wire import LeafError, Reader, RecordType, Writer, check_text
from tally.ledger.leaf import VoteRecord, VoteStatus, _decode_fast, decode_leaf

__all__ = [
    "Decision",
    "LaneReview",
    "LeafError",
    "ReviewRecord",
    "decode_lane_record",
    "decode_review",
    "encode_review",
    "review_leaf_hash",
]

_MAX_UINT16 = 0xFFFF
_MAX_UINT64 = 2**64 - 1
_REVIEW_TYPE = bytes((RecordType.REVIEW,))


class Decision(IntEnum):
    """What a reviewer decided about a held vote."""

    RELEASED = 0x01  # counted from now on, as if accepted
    VOIDED = 0x02  # never counted


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """One decision as the ledger holds it; construction checks every field's range."""

    poll_id: str
    lane: int
    seq: int
    held_seq: int
    decision: Decision
    at_ms: int

    def __post_init__(self) -> None:
        check_text("poll id", self.poll_id, 255)
        if not 0 <= self.lane <= _MAX_UINT16:
            raise LeafError(f"lane must be 0 to {_MAX_UINT16}, got {self.lane}")
        for name, value in (("entry seq", self.seq), ("held seq", self.held_seq)):
            if not 1 <= value <= _MAX_UINT64:
                raise LeafError(f"{name} must be 1 to {_MAX_UINT64}, got {value}")
        if not isinstance(self.decision, Decision):
            raise LeafError(f"unknown review decision {self.decision!r}")
        if not 0 <= self.at_ms <= _MAX_UINT64:
            raise LeafError(f"decision time must be 0 to {_MAX_UINT64}, got {self.at_ms}")

    @property
    def leaf_index(self) -> int:
        """The record's index in its lane's log: seq - 1."""
        return self.seq - 1


def encode_review(record: ReviewRecord) -> bytes:
    """Return the canonical encoding of ``record`` (the leaf's data)."""
    out = Writer(RecordType.REVIEW)
    out.text(record.poll_id, 1, "poll id")
    out.uint(record.lane, 2, "lane")
    out.uint(record.seq, 8, "entry seq")
    out.uint(record.held_seq, 8, "held seq")
    out.uint(record.decision, 1, "decision")
    out.uint(record.at_ms, 8, "decision time")
    return out.build()


def decode_review(data: bytes) -> ReviewRecord:
    """Decode a review leaf strictly; raise LeafError on any deviation from the format."""
    src = Reader(data, RecordType.REVIEW)
    poll_id = src.text(1, "poll id")
    lane = src.uint(2, "lane")
    seq = src.uint(8, "entry seq")
    held_seq = src.uint(8, "held seq")
    code = src.uint(1, "decision")
    at_ms = src.uint(8, "decision time")
    src.end()
    try:
        decision = Decision(code)
    except ValueError:
        raise LeafError(f"unknown review decision 0x{code:02x}") from None
    return ReviewRecord(poll_id, lane, seq, held_seq, decision, at_ms)


def decode_lane_record(data: bytes) -> VoteRecord | ReviewRecord:
    """Decode a lane log's leaf, a vote or a review record, by its record type byte. A
    well-formed vote costs what decode_leaf costs (the auditor decodes every lane leaf with it)."""
    vote = _decode_fast(data)
    if vote is not None:
        return vote
    if data[1:2] == _REVIEW_TYPE:
        return decode_review(data)
    return decode_leaf(data)


def review_leaf_hash(record: ReviewRecord) -> bytes:
    """Return the Merkle leaf hash of ``record``: SHA-256(0x00 || encode_review(record))."""
    return merkle.leaf_hash(encode_review(record))


@dataclass(slots=True)
class LaneReview:
    """The review state of one lane, its records fed in log order: held votes, decisions, the
    votes releases add to each option, and the held votes no decision has reached yet.

    The rules (docs/ledger-format.md, "Hold for review"): a review record decides a HELD vote of
    the same lane with a lower seq, and each held vote is decided at most once. ``decide`` names
    the rule a record breaks and then ignores it, so that the totals count valid decisions only.
    Memory: a few dozen bytes per held vote, none per accepted one."""

    held: int = 0  # held vote records seen
    released: int = 0
    voided: int = 0
    released_counts: Counter[str] = field(default_factory=Counter)  # option -> votes released
    pending: dict[int, str] = field(default_factory=dict)  # seq of an undecided held vote -> option
    decided: dict[int, Decision] = field(default_factory=dict)  # held seq -> its decision

    def vote(self, record: VoteRecord) -> None:
        if record.status is VoteStatus.HELD:
            self.held += 1
            self.pending[record.seq] = record.option_id

    def decide(self, record: ReviewRecord) -> str | None:
        """Apply a decision; None if valid, else the finding code of the rule it breaks
        (``review-duplicate``, ``review-target-not-held``) and the decision is ignored."""
        target = record.held_seq
        if target in self.decided:
            return "review-duplicate"
        option = self.pending.pop(target, None) if target < record.seq else None
        if option is None:
            return "review-target-not-held"
        self.decided[target] = record.decision
        if record.decision is Decision.RELEASED:
            self.released += 1
            self.released_counts[option] += 1
        else:
            self.voided += 1
        return None

"""The vote record: one leaf of a lane's log, in a canonical, versioned binary encoding.

Pure: no I/O, no clock. Layout (docs/ledger-format.md, "Vote record"); integers big-endian::

    offset  size  field
    0       1     format version        0x01, or 0x02 when the gateway's admission signature follows
    1       1     record type           0x01 (vote)
    2       1     P = poll id length    1..255
    3       P     poll id               UTF-8
    3+P     2     lane                  uint16
    5+P     8     entry seq             uint64, >= 1: the vote's position in its lane (leaf index + 1)
    13+P    16    pseudonym             raw bytes
    29+P    1     O = option id length  1..255
    30+P    O     option id             UTF-8
    30+P+O  8     accepted time         uint64, ms since the Unix epoch (server clock)
    38+P+O  1     status                0x01 accepted, 0x02 held (0x03 reserved, never written)
    -- version 0x02 only: the admission (tally.ledger.admission says what is signed) --
    39+P+O  8     admitted time         uint64 ms, the admitting gateway's clock
    47+P+O  4     key id                uint32, the admission key's note key ID
    51+P+O  64    signature             Ed25519

Total ``39 + P + O`` bytes (version 0x01) or ``115 + P + O`` (version 0x02). The version follows
from whether the record carries an admission; version 0x01 records (polls from before admission
signatures) still decode. The leaf hash is RFC 6962's ``SHA-256(0x00 || record)``. A vote with
seq s is leaf s - 1 of its lane's log. Decoding is strict: known version and type, exact length,
valid UTF-8, every field in range; LeafError otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from tally.ledger import merkle
from tally.ledger._wire import (
    ADMITTED_VOTE_VERSION,
    FORMAT_VERSION,
    LeafError,
    Reader,
    RecordType,
    check_text,
)

__all__ = [
    "ADMISSION_SIZE",
    "PSEUDONYM_SIZE",
    "SIGNATURE_SIZE",
    "Admission",
    "LeafError",
    "VoteRecord",
    "VoteStatus",
    "decode_leaf",
    "encode_leaf",
    "vote_leaf_hash",
]

PSEUDONYM_SIZE = 16
SIGNATURE_SIZE = 64
_MAX_UINT16 = 0xFFFF
_MAX_UINT32 = 0xFFFF_FFFF
_MAX_UINT64 = 2**64 - 1
_MID = struct.Struct(">HQ16s")  # lane, seq, pseudonym: between the poll id and the option id
_TAIL = struct.Struct(">QB")  # accepted time, status
_ADMISSION = struct.Struct(">QI64s")  # admitted time, key id, signature: version 0x02's tail
ADMISSION_SIZE = _ADMISSION.size  # 76: also the admission blob the store keeps beside a vote
_MIN_SIZE = 3 + _MID.size + 1 + _TAIL.size
_HEAD = bytes((FORMAT_VERSION, RecordType.VOTE))
_HEAD_ADMITTED = bytes((ADMITTED_VOTE_VERSION, RecordType.VOTE))
_VERSIONS = (FORMAT_VERSION, ADMITTED_VOTE_VERSION)


class VoteStatus(IntEnum):
    """How the vote was recorded: counted at once (ACCEPTED), or HELD for review and counted only
    if a later review record of its lane (:mod:`tally.ledger.review`) releases it.

    VOIDED is reserved and never written: a record is immutable once logged, so a voided vote
    stays a HELD leaf followed by a ``voided`` review record. It still decodes (the format keeps
    the value), and the auditor reports a vote carrying it."""

    ACCEPTED = 0x01
    HELD = 0x02
    VOIDED = 0x03


_STATUSES = {status.value: status for status in VoteStatus}


@dataclass(frozen=True, slots=True)
class Admission:
    """A gateway's signature that it admitted a vote: when (its clock, ms), under which admission
    key (the key's note key ID) and the Ed25519 signature (tally.ledger.admission says over what).

    ``to_bytes``/``from_bytes`` give the 76-byte form the record's tail and the store share."""

    admitted_ms: int
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.admitted_ms <= _MAX_UINT64:
            raise LeafError(f"admitted time must be 0 to {_MAX_UINT64}, got {self.admitted_ms}")
        if not 0 <= self.key_id <= _MAX_UINT32:
            raise LeafError(f"admission key id must be 0 to {_MAX_UINT32}, got {self.key_id}")
        if len(self.signature) != SIGNATURE_SIZE:
            raise LeafError(
                f"admission signature must be {SIGNATURE_SIZE} bytes, got {len(self.signature)}"
            )

    def to_bytes(self) -> bytes:
        """``u64 admitted_ms || u32 key_id || 64-byte signature``."""
        return _ADMISSION.pack(self.admitted_ms, self.key_id, self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> Admission:
        """The inverse of :meth:`to_bytes`; LeafError unless ``data`` is exactly 76 bytes."""
        if len(data) != ADMISSION_SIZE:
            raise LeafError(f"an admission is {ADMISSION_SIZE} bytes, got {len(data)}")
        return cls(*_ADMISSION.unpack(data))


@dataclass(frozen=True, slots=True)
class VoteRecord:
    """One vote as the ledger holds it; construction checks every field's range.

    ``admission`` is the admitting gateway's signature (a version 0x02 record), None for a
    version 0x01 record (a poll from before admission signatures)."""

    poll_id: str
    lane: int
    seq: int
    pseudonym: bytes
    option_id: str
    accepted_ms: int
    status: VoteStatus = VoteStatus.ACCEPTED
    admission: Admission | None = None

    def __post_init__(self) -> None:
        check_text("poll id", self.poll_id, 255)
        check_text("option id", self.option_id, 255)
        if not 0 <= self.lane <= _MAX_UINT16:
            raise LeafError(f"lane must be 0 to {_MAX_UINT16}, got {self.lane}")
        if not 1 <= self.seq <= _MAX_UINT64:
            raise LeafError(f"entry seq must be 1 to {_MAX_UINT64}, got {self.seq}")
        if len(self.pseudonym) != PSEUDONYM_SIZE:
            raise LeafError(f"pseudonym must be {PSEUDONYM_SIZE} bytes, got {len(self.pseudonym)}")
        if not 0 <= self.accepted_ms <= _MAX_UINT64:
            raise LeafError(f"accepted time must be 0 to {_MAX_UINT64}, got {self.accepted_ms}")
        if not isinstance(self.status, VoteStatus):
            raise LeafError(f"unknown vote status {self.status!r}")
        if self.admission is not None and not isinstance(self.admission, Admission):
            raise LeafError(f"admission must be an Admission, got {type(self.admission).__name__}")

    @property
    def entry_id(self) -> str:
        """The lane stream entry id: ``<seq>-0``."""
        return f"{self.seq}-0"

    @property
    def leaf_index(self) -> int:
        """The vote's index in its lane's log: seq - 1."""
        return self.seq - 1


def encode_leaf(record: VoteRecord) -> bytes:
    """Return the canonical encoding of ``record`` (the leaf's data).

    Every field was range-checked when the record was made, so this only lays the bytes out: it
    runs once per vote on the gateway (the receipt's leaf hash) and once in the archiver."""
    poll_id = record.poll_id.encode()
    option_id = record.option_id.encode()
    admission = record.admission
    parts = [
        _HEAD if admission is None else _HEAD_ADMITTED,
        len(poll_id).to_bytes(1, "big"),
        poll_id,
        _MID.pack(record.lane, record.seq, record.pseudonym),
        len(option_id).to_bytes(1, "big"),
        option_id,
        _TAIL.pack(record.accepted_ms, record.status),
    ]
    if admission is not None:
        parts.append(_ADMISSION.pack(admission.admitted_ms, admission.key_id, admission.signature))
    return b"".join(parts)


def decode_leaf(data: bytes) -> VoteRecord:
    """Decode a vote leaf strictly; raise LeafError on any deviation from the format."""
    return _decode_fast(data) or _decode_checked(data)


def _decode_fast(data: bytes) -> VoteRecord | None:
    """Decode a well-formed leaf in few steps (the auditor reads millions); None if in doubt."""
    size = len(data)
    if size < _MIN_SIZE or data[1] != RecordType.VOTE:
        return None
    version = data[0]
    if version == FORMAT_VERSION:
        end = size
    elif version == ADMITTED_VOTE_VERSION:
        end = size - ADMISSION_SIZE
    else:
        return None
    option_at = 3 + data[2] + _MID.size
    if option_at >= end or end != option_at + 1 + data[option_at] + _TAIL.size:
        return None
    lane, seq, pseudonym = _MID.unpack_from(data, option_at - _MID.size)
    accepted_ms, status = _TAIL.unpack_from(data, end - _TAIL.size)
    if not data[2] or not data[option_at] or not seq or status not in _STATUSES:
        return None
    try:
        poll_id = data[3 : option_at - _MID.size].decode("utf-8")
        option_id = data[option_at + 1 : end - _TAIL.size].decode("utf-8")
    except UnicodeDecodeError:
        return None
    admission = Admission(*_ADMISSION.unpack_from(data, end)) if end != size else None
    return _trusted_record(poll_id, lane, seq, pseudonym, option_id, accepted_ms, status, admission)


def _trusted_record(
    poll_id: str,
    lane: int,
    seq: int,
    pseudonym: bytes,
    option_id: str,
    accepted_ms: int,
    status: int,
    admission: Admission | None,
) -> VoteRecord:
    """A VoteRecord whose fields the fast decoder has just checked: skips __post_init__'s checks
    of the same ranges (a third of the auditor's time per leaf)."""
    record = object.__new__(VoteRecord)
    set_field = object.__setattr__
    set_field(record, "poll_id", poll_id)
    set_field(record, "lane", lane)
    set_field(record, "seq", seq)
    set_field(record, "pseudonym", pseudonym)
    set_field(record, "option_id", option_id)
    set_field(record, "accepted_ms", accepted_ms)
    set_field(record, "status", _STATUSES[status])
    set_field(record, "admission", admission)
    return record


def _decode_checked(data: bytes) -> VoteRecord:
    """Decode field by field, so that an error names the field and offset at fault."""
    src = Reader(data, RecordType.VOTE, _VERSIONS)
    poll_id = src.text(1, "poll id")
    lane = src.uint(2, "lane")
    seq = src.uint(8, "entry seq")
    pseudonym = src.fixed(PSEUDONYM_SIZE, "pseudonym")
    option_id = src.text(1, "option id")
    accepted_ms = src.uint(8, "accepted time")
    status = src.uint(1, "status")
    admission = None
    if src.version == ADMITTED_VOTE_VERSION:
        admitted_ms = src.uint(8, "admitted time")
        key_id = src.uint(4, "admission key id")
        signature = src.fixed(SIGNATURE_SIZE, "admission signature")
        admission = Admission(admitted_ms, key_id, signature)
    src.end()
    try:
        known = VoteStatus(status)
    except ValueError:
        raise LeafError(f"unknown vote status 0x{status:02x}") from None
    return VoteRecord(poll_id, lane, seq, pseudonym, option_id, accepted_ms, known, admission)


def vote_leaf_hash(record: VoteRecord) -> bytes:
    """Return the Merkle leaf hash of ``record``: SHA-256(0x00 || encode_leaf(record))."""
    return merkle.leaf_hash(encode_leaf(record))

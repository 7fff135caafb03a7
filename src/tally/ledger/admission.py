"""Admission signatures: a gateway's Ed25519 signature that it admitted a vote.

Pure: no I/O, no clock. Each gateway deployment holds an admission key and signs every vote it
admits, before the store casts it; the signature travels in the version 0x02 vote record
(:mod:`tally.ledger.leaf`) and in the voter's receipt. Someone who can write to the store but
holds no gateway key cannot add a vote that carries a valid signature. The signed message::

    b"tally-admission/v1\\n"
    u8 P || poll id (UTF-8)
    pseudonym (16 bytes)
    u8 O || option id (UTF-8)
    u8 status           0x01 accepted, 0x02 held (the verdict is known before the cast)
    u64 admitted_ms     the gateway's clock, ms since the Unix epoch
    u32 key_id          the admission key's note key ID

Lane and seq are not signed: the store picks them after the signature (the lane follows from
the pseudonym anyway). Admission keys are signed-note keys (:mod:`tally.ledger.note`) named
``<ledger origin prefix>/admission/<gateway name>``; their validity periods are in each poll's
admin log (action 0x05 admission-key, :class:`tally.ledger.admin.AdmissionKey`).

A vote checks (:func:`check_admission`) when it carries a signature by a key of its poll, valid
at the admitted time, and was accepted by the store no earlier than 5 s before and no later
than :data:`MAX_ADMISSION_AGE_MS` after the gateway admitted it: a signature cannot be kept back
and replayed into the log much later.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from itertools import repeat

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tally.ledger.admin import AdminAction, AdminRecord, AdmissionKey
from tally.ledger.leaf import PSEUDONYM_SIZE, Admission, LeafError, VoteRecord

__all__ = [
    "ADMISSION_CONTEXT",
    "MAX_ADMISSION_AGE_MS",
    "MAX_CLOCK_SKEW_MS",
    "REASONS",
    "Admission",
    "AdmissionKey",
    "AdmissionSigner",
    "admission_message",
    "check_admission",
    "check_admissions",
    "keys_from_admin",
]

ADMISSION_CONTEXT = b"tally-admission/v1\n"
# accepted_ms - admitted_ms must lie in [-MAX_CLOCK_SKEW_MS, MAX_ADMISSION_AGE_MS]: the gateway's
# and the store's clocks may differ a little, and a vote waits at most a request's lifetime.
MAX_ADMISSION_AGE_MS = 300_000
MAX_CLOCK_SKEW_MS = 5_000
# Every reason check_admission can give, in the order it checks them.
REASONS = (
    "unsigned",
    "unknown-key",
    "key-not-valid-then",
    "bad-signature",
    "admitted-too-early",
    "admitted-too-late",
)
_TAIL = struct.Struct(">BQI")  # status, admitted time, key id


def admission_message(
    poll_id: str, pseudonym: bytes, option_id: str, status: int, admitted_ms: int, key_id: int
) -> bytes:
    """Return the bytes an admission signature covers (the module docstring lays them out)."""
    poll = poll_id.encode()
    option = option_id.encode()
    if not 1 <= len(poll) <= 255 or not 1 <= len(option) <= 255:
        raise LeafError("poll and option ids must be 1 to 255 bytes of UTF-8")
    if len(pseudonym) != PSEUDONYM_SIZE:
        raise LeafError(f"pseudonym must be {PSEUDONYM_SIZE} bytes, got {len(pseudonym)}")
    try:
        tail = _TAIL.pack(status, admitted_ms, key_id)
    except struct.error:
        raise LeafError("status, admitted time or key id out of range") from None
    return b"".join(
        (
            ADMISSION_CONTEXT,
            bytes((len(poll),)),
            poll,
            pseudonym,
            bytes((len(option),)),
            option,
            tail,
        )
    )


class AdmissionSigner:
    """A gateway's admission key: signs what it admits. Its ``repr`` never shows the key."""

    __slots__ = ("_key", "_private", "key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._private = private_key
        self.key = AdmissionKey(name, public)  # not before 0: the registry says when it is valid
        self._key = self.key.key_id

    def sign(
        self, poll_id: str, pseudonym: bytes, option_id: str, status: int, admitted_ms: int
    ) -> Admission:
        """Sign the admission of a vote with ``status`` (accepted or held) at ``admitted_ms``."""
        message = admission_message(poll_id, pseudonym, option_id, status, admitted_ms, self._key)
        return Admission(admitted_ms, self._key, self._private.sign(message))

    def __repr__(self) -> str:
        return f"AdmissionSigner({self.key.name!r}, key_id={self._key:08x})"


def check_admission(record: VoteRecord, keys: Mapping[int, AdmissionKey]) -> str | None:
    """None when ``record`` carries a valid signature by a key of ``keys`` (by key id) valid at
    its admitted time, and the store accepted it in time; else the first failing reason of
    :data:`REASONS`."""
    admission = record.admission
    if admission is None:
        return "unsigned"
    key = keys.get(admission.key_id)
    if key is None:
        return "unknown-key"
    if not key.valid_at(admission.admitted_ms):
        return "key-not-valid-then"
    message = admission_message(
        record.poll_id,
        record.pseudonym,
        record.option_id,
        record.status,
        admission.admitted_ms,
        admission.key_id,
    )
    if not key.verifier.verify(message, admission.signature):
        return "bad-signature"
    lag = record.accepted_ms - admission.admitted_ms
    if lag > MAX_ADMISSION_AGE_MS:
        return "admitted-too-early"
    if lag < -MAX_CLOCK_SKEW_MS:
        return "admitted-too-late"
    return None


def check_admissions(
    records: Sequence[VoteRecord],
    keys: Mapping[int, AdmissionKey],
    executor: Executor | None = None,
    *,
    chunk: int = 512,
) -> list[str | None]:
    """:func:`check_admission` of each record, in order. With an ``executor`` (of threads),
    chunks of ``chunk`` records are checked on it side by side: pyca/cryptography releases the
    interpreter lock while it verifies an Ed25519 signature (benchmarks/admission_verify.py
    shows it), so N threads verify on up to N cores. The caller owns the executor."""
    if executor is None or len(records) <= chunk:
        return [check_admission(record, keys) for record in records]
    parts = [records[start : start + chunk] for start in range(0, len(records), chunk)]
    return [reason for part in executor.map(_check_part, parts, repeat(keys)) for reason in part]


def _check_part(
    records: Sequence[VoteRecord], keys: Mapping[int, AdmissionKey]
) -> list[str | None]:
    return [check_admission(record, keys) for record in records]


def keys_from_admin(records: Iterable[AdminRecord]) -> dict[int, AdmissionKey]:
    """The admission keys a poll's admin log names, by key id; a key restated later (same name
    and public key) takes the later validity. Two different keys sharing a key id make the log
    ambiguous: LeafError."""
    keys: dict[int, AdmissionKey] = {}
    for record in records:
        key = record.admission_key
        if record.action is not AdminAction.ADMISSION_KEY or key is None:
            continue
        known = keys.get(key.key_id)
        if known is not None and (known.name, known.public_key) != (key.name, key.public_key):
            raise LeafError(
                f"admission keys {known.name} and {key.name} share key id {key.key_id:08x}"
            )
        keys[key.key_id] = key
    return keys

"""The receipt document ``tally audit receipt`` checks: parsed strictly, as the voter keeps it.

A receipt (what ``POST /v1/polls/{id}/votes`` answers, bare or as ``{"receipt": {...}}``) names a
vote's poll, lane, entry seq, option, accepted time and leaf hash (docs/ledger-format.md §10.1);
a vote cast held for review also says its ``status`` (held, released or voided). A vote admitted
with an admission signature (a version 0x02 record) also carries its ``pseudonym`` and its
``admission``: the gateway's key id, the admitted time and the Ed25519 signature, so that the
receipt alone shows which gateway admitted the vote (docs/ledger-format.md §14.4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tally.audit.receipt_review import RECEIPT_STATUSES
from tally.ledger import merkle
from tally.ledger.leaf import (
    PSEUDONYM_SIZE,
    Admission,
    LeafError,
    VoteRecord,
    VoteStatus,
    encode_leaf,
)

__all__ = ["Receipt", "ReceiptError", "iso_ms", "parse_receipt"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX_HASH_RE = re.compile(r"[0-9a-f]{64}")
_HEX_PSEUDONYM_RE = re.compile(r"[0-9a-f]{32}")
_HEX_KEY_ID_RE = re.compile(r"[0-9a-f]{8}")
_HEX_SIGNATURE_RE = re.compile(r"[0-9a-f]{128}")
_ADMISSION_FIELDS = ("key_id", "admitted_at", "signature")
_FIELDS = ("poll_id", "lane", "entry_id", "option", "accepted_at", "leaf_hash")


class ReceiptError(ValueError):
    """The receipt file is not a receipt."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A vote's receipt, as the voter keeps it."""

    poll_id: str
    lane: int
    entry_id: int
    option: str
    accepted_at: str
    accepted_ms: int
    leaf_hash: bytes
    status: str | None = None  # accepted, held, released or voided, if the receipt says
    pseudonym: bytes | None = None  # a signed vote's receipt carries it
    admission: Admission | None = None  # the gateway's signature; None: an unsigned vote
    admitted_at: str | None = None  # the admission's time as the receipt spells it

    @property
    def index(self) -> int:
        """The vote's leaf index in its lane's log."""
        return self.entry_id - 1

    @property
    def record_status(self) -> VoteStatus:
        """The status its record carries (and its admission signs): a vote cast held stays
        held in its record, whatever a reviewer decided later."""
        return VoteStatus.ACCEPTED if self.status in (None, "accepted") else VoteStatus.HELD

    def record(self) -> VoteRecord | None:
        """The vote record the receipt describes, rebuilt from its fields; None without the
        pseudonym (an older receipt)."""
        if self.pseudonym is None:
            return None
        return VoteRecord(
            self.poll_id,
            self.lane,
            self.entry_id,
            self.pseudonym,
            self.option,
            self.accepted_ms,
            self.record_status,
            self.admission,
        )

    def rebuilt_leaf_hash(self) -> bytes | None:
        """The leaf hash of :meth:`record`: equal to ``leaf_hash`` for a receipt whose fields
        are the signed vote's (None without the pseudonym)."""
        record = self.record()
        return None if record is None else merkle.leaf_hash(encode_leaf(record))


def parse_receipt(data: bytes) -> Receipt:
    """Parse a receipt document, bare or as a vote reply's ``{"receipt": {...}}``."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReceiptError(f"not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("receipt"), dict):
        doc = doc["receipt"]
    if not isinstance(doc, dict):
        raise ReceiptError("a receipt is a JSON object")
    missing = [name for name in _FIELDS if name not in doc]
    if missing:
        raise ReceiptError(f"the receipt lacks {', '.join(missing)}")
    poll_id, lane, entry_id = doc["poll_id"], doc["lane"], doc["entry_id"]
    option, accepted_at, leaf_hash = doc["option"], doc["accepted_at"], doc["leaf_hash"]
    if not isinstance(poll_id, str) or not poll_id or "/" in poll_id:
        raise ReceiptError("poll_id must be a poll id")
    if not _is_int(lane) or not 0 <= lane <= 0xFFFF:
        raise ReceiptError("lane must be an integer from 0 to 65535")
    if not _is_int(entry_id) or not 1 <= entry_id < 2**64:
        raise ReceiptError("entry_id must be an integer from 1")
    if not isinstance(option, str) or not option:
        raise ReceiptError("option must be an option id")
    if not isinstance(leaf_hash, str) or not _HEX_HASH_RE.fullmatch(leaf_hash):
        raise ReceiptError("leaf_hash must be 64 lowercase hex digits")
    if not isinstance(accepted_at, str):
        raise ReceiptError("accepted_at must be an ISO 8601 time")
    status = doc.get("status")
    if status is not None and status not in RECEIPT_STATUSES:
        raise ReceiptError(f"status must be one of {', '.join(sorted(RECEIPT_STATUSES))}")
    pseudonym = doc.get("pseudonym")
    if pseudonym is not None and (
        not isinstance(pseudonym, str) or not _HEX_PSEUDONYM_RE.fullmatch(pseudonym)
    ):
        raise ReceiptError(f"pseudonym must be {2 * PSEUDONYM_SIZE} lowercase hex digits")
    admission, admitted_at = _admission(doc.get("admission"))
    if admission is not None and pseudonym is None:
        raise ReceiptError("a receipt with an admission must carry its pseudonym")
    receipt = Receipt(
        poll_id,
        lane,
        entry_id,
        option,
        accepted_at,
        _ms(accepted_at, "accepted_at"),
        bytes.fromhex(leaf_hash),
        status,
        None if pseudonym is None else bytes.fromhex(pseudonym),
        admission,
        admitted_at,
    )
    try:
        receipt.record()  # every field in the record's range (poll id and option lengths...)
    except LeafError as exc:
        raise ReceiptError(str(exc)) from None
    return receipt


def _admission(value: object) -> tuple[Admission | None, str | None]:
    """The receipt's ``admission`` member: key id, admitted time and signature, all required."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise ReceiptError("admission must be an object")
    missing = [name for name in _ADMISSION_FIELDS if name not in value]
    if missing:
        raise ReceiptError(f"the admission lacks {', '.join(missing)}")
    key_id, admitted_at, signature = (value[name] for name in _ADMISSION_FIELDS)
    if not isinstance(key_id, str) or not _HEX_KEY_ID_RE.fullmatch(key_id):
        raise ReceiptError("admission.key_id must be 8 lowercase hex digits")
    if not isinstance(signature, str) or not _HEX_SIGNATURE_RE.fullmatch(signature):
        raise ReceiptError("admission.signature must be 128 lowercase hex digits")
    if not isinstance(admitted_at, str):
        raise ReceiptError("admission.admitted_at must be an ISO 8601 time")
    admitted_ms = _ms(admitted_at, "admission.admitted_at")
    try:
        admission = Admission(admitted_ms, int(key_id, 16), bytes.fromhex(signature))
    except LeafError as exc:
        raise ReceiptError(f"admission: {exc}") from None
    return admission, admitted_at


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ms(text: str, name: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time with a zone, e.g. ...T00:00:00.000Z."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ReceiptError(f"{name} is not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise ReceiptError(f"{name} must carry its time zone (Z for UTC): {text!r}")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    when = _EPOCH + timedelta(milliseconds=ms)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

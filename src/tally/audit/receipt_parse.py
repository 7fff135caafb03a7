"""The receipt document ``tally audit receipt`` checks: parsed strictly, as the voter keeps it.

A receipt (what ``POST /v1/polls/{id}/votes`` answers, bare or as ``{"receipt": {...}}``) names a
vote's poll, lane, entry seq, option, accepted time and leaf hash (docs/ledger-format.md §10.1);
a vote cast held for review also says its ``status`` (held, released or voided).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tally.audit.receipt_review import RECEIPT_STATUSES

__all__ = ["Receipt", "ReceiptError", "iso_ms", "parse_receipt"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX_HASH_RE = re.compile(r"[0-9a-f]{64}")
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

    @property
    def index(self) -> int:
        """The vote's leaf index in its lane's log."""
        return self.entry_id - 1


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
    return Receipt(
        poll_id,
        lane,
        entry_id,
        option,
        accepted_at,
        _ms(accepted_at),
        bytes.fromhex(leaf_hash),
        status,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time with a zone, e.g. ...T00:00:00.000Z."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ReceiptError(f"accepted_at is not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise ReceiptError(f"accepted_at must carry its time zone (Z for UTC): {text!r}")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    when = _EPOCH + timedelta(milliseconds=ms)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

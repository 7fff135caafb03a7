"""Domain values as JSON documents (the API's response shapes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tally.domain.defences import to_document
from tally.domain.integrity import IntegrityAlarm
from tally.domain.polls import Poll
from tally.domain.results import Results
from tally.domain.timestamps import iso_ms
from tally.domain.visibility import Hidden
from tally.domain.votes import Receipt

__all__ = ["integrity_doc", "iso_ms", "poll_doc", "receipt_doc", "results_doc"]


def poll_doc(
    poll: Poll, alarms: Sequence[IntegrityAlarm] = (), *, join_code: str | None = None
) -> dict[str, Any]:
    """`alarms`: the poll's integrity alarms, shown as `integrity` only when there are some;
    `join_code`: its join code (`/j/<code>`), shown when known."""
    doc: dict[str, Any] = {
        "id": poll.id,
        "title": poll.title,
        "options": [{"id": o.id, "label": o.label} for o in poll.options],
        "state": poll.state.value,
        "lanes": poll.lanes,
        "closes_at": None if poll.closes_at_ms is None else iso_ms(poll.closes_at_ms),
        "created_at": iso_ms(poll.created_at_ms),
        # Published, not hidden: the rules that admit votes are part of what auditors check.
        "defences": to_document(poll.defences),
        "visibility": poll.visibility.value,
    }
    if join_code is not None:
        doc["join_code"] = join_code
    if alarms:
        doc["integrity"] = integrity_doc(alarms)
    return doc


def integrity_doc(alarms: Sequence[IntegrityAlarm]) -> list[dict[str, Any]]:
    """What the archiver found wrong with the poll's counts or ledger (domain.integrity)."""
    return [
        {
            "kind": alarm.kind.value,
            "lane": alarm.lane,
            "details": alarm.details,
            "first_seen": iso_ms(alarm.first_seen_ms),
        }
        for alarm in alarms
    ]


def receipt_doc(receipt: Receipt, status: str = "accepted") -> dict[str, Any]:
    """`status` (held, released, voided) is stated only for a vote cast held."""
    doc: dict[str, Any] = {
        "poll_id": receipt.poll_id,
        "lane": receipt.lane,
        "entry_id": receipt.entry_id,
        "option": receipt.option,
        "accepted_at": iso_ms(receipt.accepted_at_ms),
        "leaf_hash": receipt.leaf_hash.hex(),
    }
    # What lets anyone holding the published admission key check that a gateway admitted the
    # vote (docs/ledger-format.md): the pseudonym the signature covers, and the signature.
    if receipt.pseudonym is not None:
        doc["pseudonym"] = receipt.pseudonym.hex()
    admission = receipt.admission
    if admission is not None:
        doc["admission"] = {
            "key_id": f"{admission.key_id:08x}",
            "admitted_at": iso_ms(admission.admitted_ms),
            "signature": admission.signature.hex(),
        }
    if status != "accepted":
        doc["status"] = status
    return doc


def results_doc(
    results: Results, alarms: Sequence[IntegrityAlarm] = (), hidden: Hidden | None = None
) -> dict[str, Any]:
    """`hidden`: why the caller may not see the counts yet (domain.visibility): `counts` is then
    null and `hidden` says why; total, state and under_review stay."""
    doc: dict[str, Any] = {
        "poll_id": results.poll_id,
        "state": results.state.value,
        "counts": None if hidden is not None else results.counts,
        "total": results.total,
        "under_review": results.under_review,
        "updated_at": iso_ms(results.updated_at_ms),
    }
    if hidden is not None:
        doc["hidden"] = hidden.value
    if alarms:
        doc["integrity"] = integrity_doc(alarms)
    return doc

"""What became of a held vote, for ``tally audit receipt``: the lane's review record deciding it.

A vote held for review is a vote record with status ``held`` (docs/ledger-format.md §13); a
reviewer's decision is a later review record of the same lane naming its seq. The receipt of a
vote cast held says ``"status": "held"``, or, asked again after the decision, ``released`` or
``voided``. Online, the lane's bundles after the vote are read for that decision (a lane is read
only for a held vote, and only from the vote's bundle on); a tlog-proof alone shows the record.
"""

from __future__ import annotations

from tally.audit.source import Source
from tally.ledger.review import Decision, LeafError, decode_review
from tally.ledger.tiles import TILE_WIDTH, Bundle, TileError, bundles_for_size, decode_bundle

__all__ = ["RECEIPT_STATUSES", "STATUS_TEXT", "decision_of"]

_REVIEW_TYPE = 0x03

# What a receipt's optional "status" may say: the record's status, or what became of a held vote.
RECEIPT_STATUSES = frozenset({"accepted", "held", "released", "voided"})

STATUS_TEXT = {
    "accepted": "accepted: counted",
    "held": "held for review: not counted unless a reviewer releases it (no decision published)",
    "released": "held for review, then released by a reviewer: counted",
    "voided": "held for review, then voided by a reviewer: not counted",
}


def decision_of(source: Source, log: str, size: int, index: int) -> Decision | None:
    """The decision on the held vote at leaf ``index`` among the first ``size`` leaves of the
    lane's log, None if none is published (or a bundle cannot be read: the other checks of the
    receipt report those files)."""
    seq = index + 1
    first = index // TILE_WIDTH
    bundles = [b for b in bundles_for_size(size) if b.index >= first]
    for bundle, data in zip(
        bundles, source.read_many([_path(log, b) for b in bundles]), strict=True
    ):
        if data is None:
            return None
        try:
            entries = decode_bundle(data, bundle.width)
        except TileError:
            return None
        for entry in entries:
            if len(entry) > 1 and entry[1] == _REVIEW_TYPE:
                try:
                    record = decode_review(entry)
                except LeafError:
                    continue  # a bad record: `tally audit verify` reports it
                if record.held_seq == seq:
                    return record.decision
    return None


def _path(log: str, bundle: Bundle) -> str:
    return f"{log}/{bundle.path}"

"""What every leaf of one lane must be, prepared once per lane for step 3's bundle-wide checks
(:mod:`~tally.audit.verify_meaning`): its poll, its lane, the poll's options and deadline, and the
byte values that may end a pseudonym of the lane; and where a pseudonym that voted twice voted
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tally.audit.verify_findings import Findings
from tally.ledger.admin import PollDefinition

__all__ = ["LaneContext", "report_duplicates"]


@dataclass(slots=True)
class LaneContext:
    """What every leaf of one lane must be, prepared once for the bundle-wide checks."""

    lane: int
    lane_set: frozenset[int]
    poll_set: frozenset[str]
    options: frozenset[str] | None  # None: the poll's definition is unknown
    deadline: int | None
    mask: int | None  # lanes - 1
    # Byte values that may end a pseudonym of this lane: its lane is the low bits of the last
    # two bytes (lanes is a power of two up to 32768).
    last_byte_ok: bytes
    second_last_ok: bytes
    # (first leaf index, bundle path, pseudonyms) of each bundle, to find where a pseudonym
    # that votes twice voted first; None for a leaf that did not decode.
    pseudonyms: list[tuple[int, str, Sequence[bytes | None]]] = field(default_factory=list)

    @classmethod
    def of(cls, lane: int, poll: str, definition: PollDefinition | None) -> LaneContext:
        if definition is None:
            return cls(lane, frozenset({lane}), frozenset({poll}), None, None, None, b"", b"")
        mask = definition.lanes - 1
        return cls(
            lane,
            frozenset({lane}),
            frozenset({poll}),
            frozenset(o.id for o in definition.options),
            definition.closes_at_ms,
            mask,
            bytes(b for b in range(256) if b & mask & 0xFF == lane & 0xFF),
            bytes(b for b in range(256) if b & (mask >> 8) == (lane >> 8) & 0xFF),
        )

    def placed(self, pseudonyms: list[bytes]) -> bool:
        """Whether every pseudonym maps to this lane (True when the lane count is unknown)."""
        if self.mask is None:
            return True
        joined = b"".join(pseudonyms)
        last, second_last = joined[15::16], joined[14::16]
        return not last.translate(None, self.last_byte_ok) and not second_last.translate(
            None, self.second_last_ok
        )

    def lane_of(self, pseudonym: bytes) -> int | None:
        """The lane the pseudonym maps to (docs/ledger-format.md §2.1); None if unknown."""
        if self.mask is None:
            return None
        return int.from_bytes(pseudonym[-4:], "big") & self.mask


def report_duplicates(
    findings: Findings,
    duplicates: Sequence[tuple[bytes, int, str]],
    contexts: Sequence[LaneContext],
) -> None:
    """For each (pseudonym, leaf index, bundle) that voted again, a ``duplicate-pseudonym``
    finding naming where it voted first (from each lane's recorded pseudonyms)."""
    wanted = {pseudonym for pseudonym, _, _ in duplicates}
    first: dict[bytes, tuple[int, str]] = {}
    for context in contexts:
        for start, path, pseudonyms in context.pseudonyms:
            for offset, pseudonym in enumerate(pseudonyms):
                if pseudonym in wanted and pseudonym not in first:
                    first[pseudonym] = (start + offset, path)
    for pseudonym, index, path in duplicates:
        where = first.get(pseudonym)
        earlier = f"{where[1]} leaf {where[0]}" if where else "an earlier leaf"
        findings.add(
            "duplicate-pseudonym",
            path,
            f"leaf {index}: pseudonym {pseudonym.hex()} already voted at {earlier}",
            index=index,
            expected="one vote per pseudonym",
            found=earlier,
        )

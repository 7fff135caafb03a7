"""Integrity alarms: what the archiver found when it held a poll's live counters against its
recount of the ledger, and the ledger's queue against itself.

The live counters are what /results shows; the ledger is what auditors recount. They must agree:
each lane's counters change in the same atomic step as the ledger entry that explains the change
(a vote counted at once, or a held vote released). So a disagreement means something wrote to
the store outside the vote path, and it is raised, never silently repaired:

- ``counter-mismatch``: a lane's counters differ from the recount of its ledger at the same seq
  (someone changed a counter), or claim fewer entries than the ledger already holds.
- ``ledger-gap``: a log's queue skips entries (one was deleted), or ends before the lane's seq.
  The archive stops that log at the gap; the rest of the poll goes on.
- ``unsigned-vote``: a vote whose admission signature does not verify (or is absent in a poll
  whose votes must be signed): archived as it is (the ledger is what was queued), never counted.

Pure: no I/O. An alarm is kept once per kind and log (the first time it was seen), so a poll can
hold at most three per log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "AlarmKind",
    "IntegrityAlarm",
    "LaneCounters",
    "alarm_from_document",
    "alarm_to_document",
]

# Details are for people; bounded so a stored alarm stays small whatever the found values were.
MAX_DETAILS = 500


class AlarmKind(StrEnum):
    COUNTER_MISMATCH = "counter-mismatch"
    LEDGER_GAP = "ledger-gap"
    UNSIGNED_VOTE = "unsigned-vote"


@dataclass(frozen=True, slots=True)
class IntegrityAlarm:
    """One alarm of a poll: `lane` is the lane at fault, None for the admin log."""

    kind: AlarmKind
    lane: int | None
    details: str
    first_seen_ms: int

    @property
    def slot(self) -> str:
        """Where the poll keeps it: one per kind and log (``<kind>:<lane>`` or ``<kind>:admin``)."""
        return f"{self.kind.value}:{'admin' if self.lane is None else self.lane}"

    @property
    def log(self) -> str:
        """The log at fault as the ledger names it: ``admin`` or the lane number."""
        return "admin" if self.lane is None else str(self.lane)


@dataclass(frozen=True, slots=True)
class LaneCounters:
    """A lane's live counters and the seq of the last ledger entry they include, read in one
    atomic step (every change to them comes with the entry that explains it)."""

    seq: int
    held: int  # votes held for review, not decided yet
    counts: dict[str, int]  # option -> accepted + released votes


def alarm_to_document(alarm: IntegrityAlarm) -> dict[str, Any]:
    return {
        "kind": alarm.kind.value,
        "lane": alarm.lane,
        "details": alarm.details[:MAX_DETAILS],
        "first_seen_ms": alarm.first_seen_ms,
    }


def alarm_from_document(document: dict[str, Any]) -> IntegrityAlarm:
    """Raises ValueError (KeyError, TypeError) if the document is not an alarm."""
    lane = document["lane"]
    if lane is not None and not (isinstance(lane, int) and lane >= 0):
        raise ValueError(f"an alarm's lane is a lane number or null, got {lane!r}")
    seen = document["first_seen_ms"]
    if not isinstance(seen, int):
        raise ValueError(f"an alarm's first_seen_ms is an integer, got {seen!r}")
    return IntegrityAlarm(AlarmKind(document["kind"]), lane, str(document["details"]), seen)

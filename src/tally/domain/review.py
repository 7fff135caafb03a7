"""Held votes and reviewers' decisions on them, as values.

A vote an admission check holds is recorded (in the ledger, with status held) but not counted.
A reviewer later releases it (it is counted from then on) or voids it (it never is). Only held
votes can be decided, each at most once: no decision can change an accepted vote or undo
another decision.

Pure: no clock, no I/O. Reviewers see votes grouped by why they were held and where they came
from (the subnet), since bot farms show up as large groups of one reason from few subnets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from tally.domain.errors import InvalidInput


class Decision(StrEnum):
    """What a reviewer decided; the values are the ledger's (`d` of a decision entry)."""

    RELEASED = "released"
    VOIDED = "voided"


# What the API and the CLI call the two decisions (verbs) -> the decision.
DECISION_VERBS = {"release": Decision.RELEASED, "void": Decision.VOIDED}


@dataclass(frozen=True, slots=True, order=True)
class EntryRef:
    """A vote by its place in the ledger: lane `lane`, entry `entry_id` (its seq, from 1)."""

    lane: int
    entry_id: int


class EvidenceStatus(StrEnum):
    """What is known of a held vote's network evidence (kept sealed at rest)."""

    KEPT = "kept"  # sealed at rest, opened for the reviewer
    NONE = "none"  # the request showed none (or it could not be kept)
    DELETED = "deleted"  # deleted with the poll's retention
    UNREADABLE = "unreadable"  # does not open: its key was dropped, or it was altered or moved
    CLEAR = "clear"  # kept in clear by an older version, until `tally evidence reencrypt`


@dataclass(frozen=True, slots=True)
class HeldVote:
    """A vote still waiting for a decision. `reason` is the admission check's. The network
    evidence, once opened: `subnet` is the request's /24 (IPv4) or /48 (IPv6), "" when the vote
    carried no address (or its evidence is not readable), `address` and `user_agent` the
    request's. `sealed` is the evidence as stored (opaque here: tally.security.evidence)."""

    lane: int
    entry_id: int
    option: str
    reason: str
    subnet: str
    held_at_ms: int
    address: str = ""
    user_agent: str = ""
    evidence: EvidenceStatus = EvidenceStatus.NONE
    sealed: str = ""

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.lane, self.entry_id)


@dataclass(frozen=True, slots=True)
class HeldGroup:
    reason: str
    subnet: str
    votes: tuple[HeldVote, ...]


@dataclass(frozen=True, slots=True)
class Selector:
    """Which held votes a decision is about: the listed entries, or every held vote matching
    the given reason and/or subnet (a group). Exactly one of the two forms."""

    entries: tuple[EntryRef, ...] = ()
    reason: str | None = None
    subnet: str | None = None

    def check(self, lanes: int) -> Selector:
        """Raise InvalidInput naming the first field that cannot select anything; return self."""
        group = self.reason is not None or self.subnet is not None
        if group == bool(self.entries):
            raise InvalidInput("entries", "give either entries or a group (reason and/or subnet)")
        for i, ref in enumerate(self.entries):
            if not 0 <= ref.lane < lanes:
                raise InvalidInput(f"entries[{i}].lane", f"must be 0 to {lanes - 1}")
            if ref.entry_id < 1:
                raise InvalidInput(f"entries[{i}].entry_id", "must be 1 or more")
        return self

    def matches(self, vote: HeldVote) -> bool:
        return (self.reason is None or vote.reason == self.reason) and (
            self.subnet is None or vote.subnet == self.subnet
        )


class EntryOutcome(StrEnum):
    """What a decision did to one entry."""

    RELEASED = "released"  # was held, released now
    VOIDED = "voided"  # was held, voided now
    ALREADY = "already-decided"  # the same decision was taken before: nothing to do
    CONFLICT = "conflict"  # the other decision was taken before: refused, nothing changed
    NOT_HELD = "not-held"  # no held vote there (accepted, or no such entry): refused


@dataclass(frozen=True, slots=True)
class DecisionReport:
    decision: Decision
    outcomes: dict[EntryRef, EntryOutcome] = field(default_factory=dict)

    def count(self, outcome: EntryOutcome) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)


def outcome_of(decision: Decision, applied_now: bool, before: Decision | None) -> EntryOutcome:
    """One entry's outcome: decided now, or what an earlier decision means for this one."""
    if applied_now:
        return EntryOutcome.RELEASED if decision is Decision.RELEASED else EntryOutcome.VOIDED
    if before is None:
        return EntryOutcome.NOT_HELD
    return EntryOutcome.ALREADY if before is decision else EntryOutcome.CONFLICT


def group_held(votes: Iterable[HeldVote]) -> list[HeldGroup]:
    """Held votes by (reason, subnet), biggest group first, entries in ledger order."""
    groups: dict[tuple[str, str], list[HeldVote]] = {}
    for vote in votes:
        groups.setdefault((vote.reason, vote.subnet), []).append(vote)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        HeldGroup(reason, subnet, tuple(sorted(members, key=lambda v: (v.lane, v.entry_id))))
        for (reason, subnet), members in ordered
    ]

"""Step 3 of ``tally audit verify``, hold for review: held votes, review records and their twins
in the signed admin log (docs/ledger-format.md, "Hold for review").

A held vote is a vote record with status ``held``; it counts only once a review record of its
lane releases it. A review record must decide a held vote of the same lane with a lower seq, and
each held vote is decided at most once (:class:`tally.ledger.review.LaneReview`). Every review
record has exactly one ``reviewed`` admin record naming the same lane, held seq and decision, and
every ``reviewed`` admin record has its review record: a decision written into a lane without the
admin log (a forged review) and one the admin log signs but no lane applied are both findings.
Whether votes are still held when a certificate is published is step 4's
(:mod:`~tally.audit.verify_result`), from :attr:`ReviewChecks.undecided`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tally.audit.verify_findings import Findings
from tally.ledger.admin import AdminRecord
from tally.ledger.certificate import ReviewTotals
from tally.ledger.leaf import VoteRecord
from tally.ledger.review import Decision, LaneReview, ReviewRecord

__all__ = ["ReviewChecks"]

# A decision as both logs state it: (lane, held vote's seq, decision).
_Key = tuple[int, int, Decision]


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a record is: its bundle's path and its leaf index."""

    path: str
    index: int


def _describe(key: _Key) -> str:
    lane, seq, decision = key
    return f"{decision.name.lower()} of lane {lane} entry {seq}"


class ReviewChecks:
    """The poll's review records and held votes, lane by lane, and the admin log's twins."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.lanes: dict[int, LaneReview] = {}
        self.in_lanes: dict[_Key, list[_Where]] = {}
        self.in_admin: dict[_Key, list[_Where]] = {}

    def lane(self, lane: int) -> LaneReview:
        review = self.lanes.get(lane)
        if review is None:
            review = self.lanes[lane] = LaneReview()
        return review

    def vote(self, lane: int, record: VoteRecord) -> None:
        self.lane(lane).vote(record)

    def decision(self, lane: int, index: int, record: ReviewRecord, path: str) -> None:
        """A review record at leaf ``index`` of ``lane`` (its place was checked by the caller)."""
        review = self.lane(lane)
        earlier = review.decided.get(record.held_seq)
        problem = review.decide(record)
        key = (lane, record.held_seq, record.decision)
        self.in_lanes.setdefault(key, []).append(_Where(path, index))
        if problem == "review-duplicate":
            self.findings.add(
                problem,
                path,
                f"leaf {index}: a second decision ({record.decision.name.lower()}) on entry "
                f"{record.held_seq}, already {earlier.name.lower() if earlier else 'decided'}",
                index=index,
                expected="one decision per held vote",
                found=f"entry {record.held_seq} decided again",
            )
        elif problem is not None:
            self.findings.add(
                problem,
                path,
                f"leaf {index}: decides entry {record.held_seq}, which is not a held vote earlier "
                f"in lane {lane} waiting for a decision",
                index=index,
                expected=f"a held vote of lane {lane} before seq {record.seq}",
                found=f"entry {record.held_seq}",
            )

    def admin(self, index: int, record: AdminRecord, path: str) -> None:
        """A ``reviewed`` admin record at leaf ``index`` of the admin log."""
        reviewed = record.review
        if reviewed is not None:
            key = (reviewed.lane, reviewed.held_seq, reviewed.decision)
            self.in_admin.setdefault(key, []).append(_Where(path, index))

    @property
    def released(self) -> Counter[str]:
        """Votes per option that reviewers released: counted, as accepted votes are."""
        total: Counter[str] = Counter()
        for review in self.lanes.values():
            total.update(review.released_counts)
        return total

    @property
    def undecided(self) -> int:
        return sum(len(review.pending) for review in self.lanes.values())

    def totals(self) -> ReviewTotals:
        reviews = self.lanes.values()
        return ReviewTotals(
            sum(r.held for r in reviews),
            sum(r.released for r in reviews),
            sum(r.voided for r in reviews),
        )

    def check_twins(self) -> None:
        """Each review record has exactly one admin twin, and each admin twin its record."""
        for key in sorted(set(self.in_lanes) | set(self.in_admin)):
            lanes, admin = self.in_lanes.get(key, []), self.in_admin.get(key, [])
            for where in lanes[len(admin) :]:
                self.findings.add(
                    "review-unsigned",
                    where.path,
                    f"leaf {where.index}: the {_describe(key)} is not signed into the admin "
                    "log (a review decision without its reviewed admin record)",
                    index=where.index,
                    expected="a reviewed admin record",
                    found="none",
                )
            for where in admin[len(lanes) :]:
                self.findings.add(
                    "review-unlogged",
                    where.path,
                    f"leaf {where.index}: the admin log signs the {_describe(key)}, but that "
                    "lane's log holds no such review record",
                    index=where.index,
                    expected=f"a review record in lane {key[0]}",
                    found="none",
                )

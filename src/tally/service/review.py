"""ReviewService: reviewers list the votes held for review and release or void them in bulk.

A decision on one held vote, in this order (ports.ReviewStore):

    1. is it held?          the lane's held votes, or a decision its lane already applied
    2. the admin log        `reviewed` by the actor, on the poll's slot; once per vote
    3. the lane             out of the held votes, counted on release, the decision in its ledger

Step 1 refuses what no reviewer may decide (an accepted vote, an entry that does not exist)
without writing anything; step 2 makes the first decision on a vote win (a conflicting later one
is refused); step 3 applies only while the vote is still held. Every step is idempotent, so a
retry of a whole request is safe and a crash between 2 and 3 is finished by retrying it, or by
`recover()` at the next start. Open and closed polls alike: reviewers decide after the close.

Held votes are listed with their network evidence opened (tally.service.evidence.reveal): it is
sealed at rest, and a group's subnet is read from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tally.domain.errors import InvalidInput
from tally.domain.polls import Poll
from tally.domain.review import (
    Decision,
    DecisionReport,
    EntryOutcome,
    EntryRef,
    HeldGroup,
    HeldVote,
    Selector,
    group_held,
    outcome_of,
)
from tally.ports import PollStore, ReviewStore
from tally.security.evidence import EvidenceKeys
from tally.service.evidence import reveal
from tally.service.intake import load_poll

MAX_ACTOR_BYTES = 255
MAX_ENTRIES = 10_000  # per request naming entries one by one (a group has no such cap)


@dataclass(frozen=True, slots=True)
class HeldListing:
    poll_id: str
    under_review: int
    groups: list[HeldGroup]


class ReviewService:
    def __init__(
        self, polls: PollStore, reviews: ReviewStore, evidence: EvidenceKeys | None = None
    ) -> None:
        """`evidence`: the key ring that opens held votes' evidence (without it, sealed evidence
        is listed as unreadable)."""
        self._polls = polls
        self._reviews = reviews
        self._evidence = evidence

    async def held(self, poll_id: str) -> HeldListing:
        """The poll's held votes, grouped by reason and subnet; PollNotFound if none such."""
        poll = await load_poll(self._polls, poll_id)
        votes = await self._held(poll)
        return HeldListing(poll.id, len(votes), group_held(votes))

    async def _held(self, poll: Poll) -> list[HeldVote]:
        return [reveal(poll, vote, self._evidence) for vote in await self._reviews.held(poll)]

    async def decide(
        self, poll_id: str, actor: str, decision: Decision, selector: Selector
    ) -> DecisionReport:
        """Release or void the selected held votes as `actor` (named in the admin log); the
        outcome of each entry. InvalidInput for a selector that cannot select, PollNotFound."""
        if not actor or len(actor.encode()) > MAX_ACTOR_BYTES:
            raise InvalidInput("actor", f"must be 1 to {MAX_ACTOR_BYTES} bytes")
        if len(selector.entries) > MAX_ENTRIES:
            raise InvalidInput("entries", f"at most {MAX_ENTRIES} per request")
        poll = await load_poll(self._polls, poll_id)
        selector.check(poll.lanes)
        if selector.entries:
            refs = sorted(set(selector.entries))
            flags = await self._reviews.still_held(poll, refs)
            held = {ref for ref, still in zip(refs, flags, strict=True) if still}
        else:
            refs = [v.ref for v in await self._held(poll) if selector.matches(v)]
            held = set(refs)
        report = DecisionReport(decision)
        # 1. Not held now: decided before (same or other decision), or never held at all.
        settled = [ref for ref in refs if ref not in held]
        for ref, before in zip(settled, await self._reviews.decided(poll, settled), strict=True):
            report.outcomes[ref] = outcome_of(decision, False, before)
        pending = [ref for ref in refs if ref in held]
        await self._settle(poll, actor, decision, pending, report)
        return report

    async def recover(self) -> list[str]:
        """Finish decisions a crash left half-done (in the admin log, not yet on their lane).
        Returns the ids of the polls it repaired."""
        repaired = []
        for poll in await self._polls.recent(10_000):
            by_decision: dict[Decision, list[EntryRef]] = {}
            for ref, decision in (await self._reviews.recorded(poll)).items():
                by_decision.setdefault(decision, []).append(ref)
            applied = False
            for decision, refs in by_decision.items():
                for done, _ in await self._reviews.apply(poll, decision, refs):
                    applied = applied or done
            if applied:
                repaired.append(poll.id)
        return repaired

    async def _settle(
        self,
        poll: Poll,
        actor: str,
        decision: Decision,
        refs: Sequence[EntryRef],
        report: DecisionReport,
    ) -> None:
        """Steps 2 and 3 for votes that were held when step 1 looked."""
        if not refs:
            return
        recorded = await self._reviews.record(poll, actor, decision, refs)
        # A vote whose admin entry holds this decision (now, or from a half-done earlier try)
        # goes on to its lane; one holding the other decision is refused here, and that other
        # decision, which the vote is still held for, is finished on its lane meanwhile.
        ours, theirs = [], []
        for ref, before in zip(refs, recorded, strict=True):
            if before is None or before is decision:
                ours.append(ref)
            else:
                report.outcomes[ref] = EntryOutcome.CONFLICT
                theirs.append(ref)
        for ref, (now, before) in zip(
            ours, await self._reviews.apply(poll, decision, ours), strict=True
        ):
            report.outcomes[ref] = outcome_of(decision, now, before)
        if theirs:
            other = Decision.VOIDED if decision is Decision.RELEASED else Decision.RELEASED
            await self._reviews.apply(poll, other, theirs)


__all__ = ["DecisionReport", "EntryOutcome", "HeldListing", "ReviewService"]

"""VotingService: polls (create, list, open, close, results, recovery) and the vote entry point.

Handlers call one method here each; this module holds no transport and no Valkey detail. Votes
go through the one intake (tally.service.intake).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tally.domain.admission import INTERNAL, Voter, VoteRequest
from tally.domain.defences import DEFAULT_DEFENCES, Defences, from_document
from tally.domain.errors import PollNotFound
from tally.domain.polls import (
    DEFAULT_EXPECTED_VOTERS,
    DEFAULT_LANES,
    STATE_RANK,
    OptionSpec,
    Poll,
    PollState,
    Visibility,
    is_poll_id,
    new_poll,
)
from tally.domain.pseudonyms import pseudonym
from tally.domain.results import Results, sum_lanes
from tally.domain.snapshots import Snapshot
from tally.domain.visibility import (
    Hidden,
    closed_state,
    hidden_reason,
    needs_vote_lookup,
    poll_shown,
)
from tally.domain.votes import VoteOutcome
from tally.ledger.admission import AdmissionSigner
from tally.ports import BallotBox, LedgerReader, PollStore, SnapshotStore
from tally.service.admission import AdmissionCheck, default_checks
from tally.service.deadlines import close_expired
from tally.service.intake import VoteIntake, load_poll

# How far back the public poll list looks past drafts: pages of its limit (100 polls each).
MAX_LIST_PAGES = 100


def system_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def new_poll_id() -> str:
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()


@dataclass(frozen=True, slots=True)
class NewPoll:
    title: str
    options: list[OptionSpec]
    lanes: int | None = None  # None: the service's default (it follows the store's primaries)
    closes_at_ms: int | None = None
    expected_voters: int = DEFAULT_EXPECTED_VOTERS
    # Over the service's default defences (domain.defences.from_document); None: those defaults.
    defences: dict[str, Any] | None = None
    visibility: Visibility = Visibility.LIVE  # who sees the counts before it closes


class VotingService:
    def __init__(
        self,
        polls: PollStore,
        ballots: BallotBox,
        *,
        pseudonym_secret: bytes,
        snapshots: SnapshotStore | None = None,
        ledger: LedgerReader | None = None,
        checks: Sequence[AdmissionCheck] | None = None,
        clock_ms: Callable[[], int] = system_clock_ms,
        new_id: Callable[[], str] = new_poll_id,
        default_lanes: int = DEFAULT_LANES,
        default_defences: Defences = DEFAULT_DEFENCES,
        signer: AdmissionSigner | None = None,
    ) -> None:
        """`ledger`: where archived votes are read back for repeat voters (none: such a repeat
        is StoreUnavailable); `checks`: the admission chain (default_checks() if None);
        `default_lanes`: for a poll created without a lane count (domain.polls.lanes_for);
        `signer`: the gateway's admission key (VoteIntake; None: unsigned votes)."""
        self._polls = polls
        self._ballots = ballots
        self._pseudonym_secret = pseudonym_secret
        self._snapshots = snapshots
        self._clock_ms = clock_ms
        self._new_id = new_id
        self.default_lanes = default_lanes
        self.default_defences = default_defences
        self.intake = VoteIntake(
            polls,
            ballots,
            pseudonym_secret=pseudonym_secret,
            checks=default_checks() if checks is None else checks,
            clock_ms=clock_ms,
            ledger=ledger,
            signer=signer,
        )

    async def create_poll(self, spec: NewPoll, actor: str = "") -> Poll:
        poll = new_poll(
            poll_id=self._new_id(),
            title=spec.title,
            options=spec.options,
            now_ms=self._clock_ms(),
            lanes=self.default_lanes if spec.lanes is None else spec.lanes,
            closes_at_ms=spec.closes_at_ms,
            expected_voters=spec.expected_voters,
            defences=self.default_defences
            if spec.defences is None
            else from_document(spec.defences, self.default_defences),
            visibility=spec.visibility,
        )
        await self._polls.create(poll, actor)
        return poll

    async def get_poll(self, poll_id: str) -> Poll:
        poll = await self._load(poll_id)
        return replace(poll, state=poll.effective_state(self._clock_ms()))

    async def list_polls(self, limit: int = 100, *, drafts: bool = False) -> list[Poll]:
        """The `limit` most recent polls; drafts only with `drafts` (an organiser's list): a
        draft is work in progress, shown to the public only once it opens. Drafts are skipped
        before the limit, so newer drafts do not push the open and closed polls out of the list
        (it reads page after page of the index, at most MAX_LIST_PAGES)."""
        now = self._clock_ms()
        shown: list[Poll] = []
        for page_number in range(MAX_LIST_PAGES):
            page = await self._polls.recent(limit, page_number * limit)
            shown += [p for p in page if poll_shown(p.state, viewer_is_admin=drafts)]
            if not page or len(shown) >= limit:
                break
        return [replace(p, state=p.effective_state(now)) for p in shown[:limit]]

    async def ensure_shown(
        self, poll_id: str, *, is_admin: bool, state: PollState | None = None
    ) -> None:
        """PollNotFound, exactly as for an unknown poll, where this viewer may not learn that the
        poll exists (a draft to anyone but an admin: domain.visibility.poll_shown). The one check
        of every public surface of a poll. `state`: the poll's as the caller has just read it;
        None: the cached definition's, read again only while that says draft (a state only ever
        moves forward, so a poll cached open or closed is not a draft now)."""
        if is_admin:
            return
        if state is None:
            state = (await self.definition(poll_id)).state
            if state is PollState.DRAFT:
                poll = await self._load(poll_id)
                self.intake.remember(poll)  # opened since: later checks need no read
                state = poll.state
        if not poll_shown(state, viewer_is_admin=is_admin):
            raise PollNotFound(poll_id)

    async def open_poll(self, poll_id: str, actor: str = "") -> Poll:
        """`actor` names who acts in the public admin log ("" for the system)."""
        return await self._move(poll_id, PollState.OPEN, actor)

    async def close_poll(self, poll_id: str, actor: str = "") -> Poll:
        return await self._move(poll_id, PollState.CLOSED, actor)

    def submit(self, request: VoteRequest) -> Coroutine[Any, Any, VoteOutcome]:
        """The one service function every transport's vote calls: the intake's submit itself
        (tally.service.intake), handed on without a coroutine of its own on the hot path."""
        return self.intake.submit(request)

    async def vote(self, poll_id: str, voter: Voter, option: str) -> VoteOutcome:
        """A vote from an in-process caller (the demo, tests, benchmarks): no network evidence."""
        return await self.intake.submit(VoteRequest(poll_id, voter, option, INTERNAL))

    async def results(self, poll_id: str) -> Results:
        """The poll's latest snapshot, if it is current: a final one, or one an aggregator still
        maintains (its lease is held). Otherwise (a draft, no snapshot yet, no aggregator
        running) the lanes summed now, which costs two reads per lane instead of one round trip."""
        if self._snapshots is not None and is_poll_id(poll_id):
            snapshot, holder = await asyncio.gather(
                self._snapshots.latest(poll_id), self._snapshots.holder(poll_id)
            )
            if snapshot is not None and (snapshot.final or holder is not None):
                return _from_snapshot(snapshot)
        poll = await self._load(poll_id)
        lanes, state_changed_at = await self._polls.tallies(poll)
        return sum_lanes(poll, poll.effective_state(self._clock_ms()), lanes, state_changed_at)

    async def visible_results(
        self, poll_id: str, voter: Voter | None, *, is_admin: bool
    ) -> tuple[Results, Hidden | None]:
        """The poll's results as this viewer may see them (domain.visibility): the results, and
        why their counts are hidden from the viewer (None: they are not). `voter`: the caller's
        identity, None for an anonymous one; the store is asked whether they voted only where
        that decides."""
        poll = await self.definition(poll_id)  # cached: no read after the poll's first
        results = await self.results(poll_id)
        state = closed_state(poll, results.state, self._clock_ms())
        voted = False
        if voter is not None and needs_vote_lookup(poll.visibility, state, is_admin):
            voted = await self.has_voted(poll, voter)
        hidden = hidden_reason(
            poll.visibility, state, viewer_is_admin=is_admin, viewer_has_voted=voted
        )
        return results, hidden

    async def definition(self, poll_id: str) -> Poll:
        """The poll's definition, cached (it never changes; its `state` may be stale)."""
        return await self.intake.definition(poll_id)

    async def has_voted(self, poll: Poll, voter: Voter) -> bool:
        """Whether `voter` has a vote (accepted or held) in `poll`: one read of its voter index."""
        voter_pseudonym = pseudonym(self._pseudonym_secret, poll.id, voter.issuer, voter.subject)
        return await self._ballots.has_voted(poll, voter_pseudonym)

    async def close_expired(self) -> list[str]:
        """Formally close every open poll whose deadline has passed (votes already stopped)."""
        return await close_expired(self._polls, self._clock_ms)

    async def recover(self) -> list[str]:
        """Finish transitions a crash interrupted: bring every lane and the poll record to the
        furthest state any of them reached. Returns the ids of the polls it repaired."""
        repaired = []
        for poll in await self._polls.recent(10_000):
            lane_states = await self._polls.lane_states(poll)
            reached = [s for s in lane_states if s is not None] + [poll.state]
            furthest = max(reached, key=STATE_RANK.__getitem__)
            if any(s is not furthest for s in lane_states) or poll.state is not furthest:
                await self._polls.move(poll, furthest)
                repaired.append(poll.id)
        return repaired

    async def _move(self, poll_id: str, target: PollState, actor: str) -> Poll:
        poll = await self._load(poll_id)
        moved = poll.moved_to(target, self._clock_ms())  # raises IllegalTransition
        await self._polls.move(poll, target, actor)
        return moved

    async def _load(self, poll_id: str) -> Poll:
        return await load_poll(self._polls, poll_id)


def _from_snapshot(snapshot: Snapshot) -> Results:
    return Results(
        snapshot.poll_id,
        snapshot.state,
        dict(snapshot.counts),
        snapshot.total,
        snapshot.ts_ms,
        seq=snapshot.seq,
        under_review=snapshot.under_review,
    )

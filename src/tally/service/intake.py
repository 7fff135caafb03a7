"""The one vote intake: every vote, whatever carried it (HTTP, the live WebSocket, an in-process
caller), gets in through `VoteIntake.submit`.

    definition (cached) -> admission checks, in order -> pseudonym -> admission signature
    -> cast on the lane -> receipt

The first check whose verdict is not Admit decides the outcome: Challenge, Limit and Refuse
become refusals and nothing is cast; Hold casts the vote held (recorded, not counted, waiting for
a reviewer: tally.service.review) and becomes HeldForReview with its receipt. A vote is cast in
one atomic, idempotent step (ports.BallotBox), so a retry of any request is safe: a repeat of a
held vote gets its original receipt, as any repeat does.

Once every check has passed, the gateway signs the admission (tally.ledger.admission: poll,
pseudonym, option, verdict accepted or held, the time, its key id) and the signature is cast with
the vote: it goes into the vote's ledger record and the voter's receipt, so an auditor can tell a
vote a gateway admitted from one written into the store by anyone else. A repeat gets back the
signature stored with the first vote, never a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tally.domain.admission import Admit, Challenge, Hold, Limit, Refuse, Verdict, VoteRequest
from tally.domain.errors import PollNotFound, StoreUnavailable
from tally.domain.polls import Poll, is_poll_id
from tally.domain.pseudonyms import pseudonym
from tally.domain.votes import (
    Accepted,
    AdmissionSignature,
    AlreadyVoted,
    ChallengeRequired,
    HeldForReview,
    RateLimited,
    UnknownOption,
    VoteOutcome,
)
from tally.ledger.admission import AdmissionSigner
from tally.ledger.leaf import VoteStatus
from tally.ports import (
    AlreadyRecorded,
    BallotBox,
    HoldAs,
    LedgerReader,
    PollStore,
    Recorded,
    RecordedHeld,
)
from tally.service.admission import AdmissionCheck
from tally.service.receipts import archived_receipt, receipt

MAX_CACHED_POLLS = 10_000


class VoteIntake:
    def __init__(
        self,
        polls: PollStore,
        ballots: BallotBox,
        *,
        pseudonym_secret: bytes,
        checks: Sequence[AdmissionCheck],
        clock_ms: Callable[[], int],
        ledger: LedgerReader | None = None,
        signer: AdmissionSigner | None = None,
    ) -> None:
        """`signer`: the gateway's admission key; None casts unsigned votes, which the auditor
        rejects (TALLY_ADMISSION_SIGNING=off, to measure what signing costs)."""
        self._polls = polls
        self._ballots = ballots
        self._secret = pseudonym_secret
        self._checks = tuple(checks)
        self._clock_ms = clock_ms
        self._ledger = ledger
        self._signer = signer
        # Definitions are immutable, so the vote path caches them forever, bounded.
        self._definitions: dict[str, Poll] = {}

    async def submit(self, request: VoteRequest) -> VoteOutcome:
        """Admit and cast one vote; raises PollNotFound, or StoreUnavailable (safe to retry)."""
        poll = await self.definition(request.poll_id)
        hold = None
        now_ms = 0
        if self._checks:
            now_ms = self._clock_ms()
            for check in self._checks:
                verdict = await check.check(request, poll, now_ms)
                if not isinstance(verdict, Admit):
                    if not isinstance(verdict, Hold):
                        return _outcome_of(verdict)
                    # The network evidence is kept for reviewers only sealed, beside the lane
                    # and out of the ledger (ports.EvidenceKeeper).
                    evidence = request.evidence
                    hold = HoldAs(verdict.reason, evidence.client, evidence.user_agent)
                    break
        voter = request.voter
        voter_pseudonym = pseudonym(self._secret, poll.id, voter.issuer, voter.subject)
        admission = None
        if self._signer is not None:
            signed = self._signer.sign(
                poll.id,
                voter_pseudonym,
                request.option,
                VoteStatus.ACCEPTED if hold is None else VoteStatus.HELD,
                now_ms or self._clock_ms(),
            )
            admission = AdmissionSignature(signed.admitted_ms, signed.key_id, signed.signature)
        cast = await self._ballots.cast(poll, voter_pseudonym, request.option, hold, admission)
        if isinstance(cast, Recorded | RecordedHeld):
            held = isinstance(cast, RecordedHeld)
            made = receipt(
                poll.id,
                cast.lane,
                cast.seq,
                voter_pseudonym,
                request.option,
                cast.accepted_ms,
                admission,
                held=held,
            )
            if not held:
                return Accepted(made)
            if hold is None:  # tally_vote holds only when asked to: a store out of contract
                raise StoreUnavailable(f"the store held a vote of poll {poll.id} unasked")
            return HeldForReview(hold.reason, made)
        if isinstance(cast, AlreadyRecorded):
            if cast.option is None or cast.accepted_ms is None:
                archived = await archived_receipt(self._ledger, poll.id, cast.lane, cast.seq)
                return AlreadyVoted(archived, cast.status)
            # A vote cast held keeps the receipt of its held record, whatever was decided.
            return AlreadyVoted(
                receipt(
                    poll.id,
                    cast.lane,
                    cast.seq,
                    voter_pseudonym,
                    cast.option,
                    cast.accepted_ms,
                    cast.admission,
                    held=cast.status != "accepted",
                ),
                cast.status,
            )
        if isinstance(cast, UnknownOption):  # the lane knows ids only: name them all
            return UnknownOption(cast.option, poll.options)
        return cast  # NotOpen: refused by the lane itself

    async def definition(self, poll_id: str) -> Poll:
        """The poll's definition (defences included), read once and cached: it never changes;
        PollNotFound for an unknown poll."""
        poll = self._definitions.get(poll_id)
        if poll is None:
            found = await load_poll(self._polls, poll_id)
            if len(self._definitions) >= MAX_CACHED_POLLS:
                self._definitions.clear()
            poll = self._definitions[poll_id] = found
        return poll

    def remember(self, poll: Poll) -> None:
        """Cache `poll` (read just now) as its definition: the same definition, in a later state
        than one cached while it was a draft (VotingService.ensure_shown reads a draft again)."""
        if poll.id in self._definitions:
            self._definitions[poll.id] = poll


async def load_poll(polls: PollStore, poll_id: str) -> Poll:
    """The poll as stored; PollNotFound for an id that cannot exist or does not."""
    poll = await polls.get(poll_id) if is_poll_id(poll_id) else None
    if poll is None:
        raise PollNotFound(poll_id)
    return poll


def _outcome_of(verdict: Verdict) -> VoteOutcome:
    """What the voter is told when a check decided against the cast."""
    if isinstance(verdict, Refuse):
        return verdict.refusal
    if isinstance(verdict, Challenge):
        return ChallengeRequired(verdict.challenge, verdict.reason)
    if isinstance(verdict, Limit):
        return RateLimited(verdict.retry_after_s, verdict.scope)
    raise AssertionError(f"unhandled verdict {verdict!r}")

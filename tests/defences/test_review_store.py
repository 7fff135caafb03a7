"""Review decisions at the store, on a real Valkey (single node or, with TALLY_TEST_STORE=cluster,
a local cluster): a decision interrupted between its admin entry and its lane is finished by
recovery, racing decisions on one vote let exactly one win, and only held votes move.

Votes are held by the real intake with a hold-everything admission check written here (an
implementation of the AdmissionCheck port, as the risk scorer is one)."""

from __future__ import annotations

import asyncio
import secrets

from tally.domain.admission import ADMIT, Evidence, Hold, Transport, Verdict, Voter, VoteRequest
from tally.domain.polls import OptionSpec, Poll
from tally.domain.review import Decision, EntryOutcome, EntryRef, Selector
from tally.domain.votes import Accepted, HeldForReview
from tally.ports import StoreClient
from tally.service import NewPoll, VotingService
from tally.service.review import ReviewService
from tally.store import keys
from tally.store.polls import ValkeyPolls
from tally.store.review import ValkeyReviews
from tally.store.votes import ValkeyBallotBox

SECRET = b"review-store-pseudonym-secret-01"


class HoldEverything:
    """Holds every vote whose voter's subject starts with "held-", for `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        return Hold(self.reason) if request.voter.subject.startswith("held-") else ADMIT


async def setup(valkey: StoreClient) -> tuple[VotingService, ReviewService, Poll]:
    polls = ValkeyPolls(valkey)
    service = VotingService(
        polls, ValkeyBallotBox(valkey), pseudonym_secret=SECRET, checks=[HoldEverything("bot")]
    )
    options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
    poll = await service.create_poll(NewPoll(f"review {secrets.token_hex(3)}", options, lanes=4))
    await service.open_poll(poll.id)
    return service, ReviewService(polls, ValkeyReviews(valkey)), poll


async def cast(service: VotingService, poll: Poll, subject: str, option: str = "red") -> EntryRef:
    evidence = Evidence(Transport.HTTP, "198.51.100.77", "agent")
    outcome = await service.submit(VoteRequest(poll.id, Voter("idp", subject), option, evidence))
    assert isinstance(outcome, HeldForReview | Accepted)
    return EntryRef(outcome.receipt.lane, outcome.receipt.entry_id)


async def test_recovery_finishes_a_decision_whose_lane_was_not_updated(
    valkey: StoreClient,
) -> None:
    """The admin entry alone (a crash before the lane's step) leaves the vote held; recover()
    applies it, once: a second recovery finds nothing to do."""
    service, reviews, poll = await setup(valkey)
    ref = await cast(service, poll, "held-1")
    # Step 2 of a decision, as ValkeyReviews writes it, and then the process dies.
    assert await ValkeyReviews(valkey).record(poll, "rita", Decision.RELEASED, [ref]) == [None]
    assert (await service.results(poll.id)).under_review == 1
    assert await reviews.recover() == [poll.id]
    results = await service.results(poll.id)
    assert (results.counts, results.under_review) == ({"red": 1, "blue": 0}, 0)
    assert await reviews.recover() == []
    assert (await service.results(poll.id)).counts == {"red": 1, "blue": 0}


async def test_a_decision_appends_one_admin_entry_and_one_lane_entry(valkey: StoreClient) -> None:
    """In the agreed format: admin `a=reviewed, u, l, r, d` and lane `r, d, t` under the lane's
    next seq; a repeat appends nothing."""
    service, reviews, poll = await setup(valkey)
    ref = await cast(service, poll, "held-2", "blue")
    for _ in range(2):
        report = await reviews.decide(poll.id, "rita", Decision.VOIDED, Selector(entries=(ref,)))
    assert report.outcomes == {ref: EntryOutcome.ALREADY}
    admin = await valkey.call("XRANGE", keys.poll_admin(poll.id), "-", "+")
    reviewed = [dict(zip(f[::2], f[1::2], strict=True)) for _, f in admin if b"l" in f[::2]]
    assert len(reviewed) == 1
    assert {k: v for k, v in reviewed[0].items() if k != b"t"} == {
        b"a": b"reviewed", b"u": b"rita", b"l": str(ref.lane).encode(),
        b"r": str(ref.entry_id).encode(), b"d": b"voided",
    }  # fmt: skip
    lane = await valkey.call("XRANGE", keys.lane_ledger(poll.id, ref.lane), "-", "+")
    assert [entry_id for entry_id, _ in lane] == [b"1-0", b"2-0"]
    vote_fields, decision_fields = (dict(zip(f[::2], f[1::2], strict=True)) for _, f in lane)
    assert vote_fields[b"s"] == b"held"
    assert (decision_fields[b"r"], decision_fields[b"d"]) == (b"1", b"voided")


async def test_racing_decisions_on_one_vote_let_exactly_one_win(valkey: StoreClient) -> None:
    """Release and void of the same held votes at once: each vote gets exactly one decision,
    the other request sees a conflict, and the counts hold exactly the released ones."""
    service, reviews, poll = await setup(valkey)
    refs = tuple([await cast(service, poll, f"held-r{i}") for i in range(12)])
    release, void = await asyncio.gather(
        reviews.decide(poll.id, "ann", Decision.RELEASED, Selector(entries=refs)),
        reviews.decide(poll.id, "bob", Decision.VOIDED, Selector(entries=refs)),
    )
    for ref in refs:
        assert {release.outcomes[ref], void.outcomes[ref]} in (
            {EntryOutcome.RELEASED, EntryOutcome.CONFLICT},
            {EntryOutcome.VOIDED, EntryOutcome.CONFLICT},
        )
    results = await service.results(poll.id)
    assert results.counts["red"] == release.count(EntryOutcome.RELEASED)
    assert results.under_review == 0


async def test_an_accepted_vote_cannot_be_decided(valkey: StoreClient) -> None:
    """Not even by an admin: an accepted vote is not-held, nothing is logged, no count moves."""
    service, reviews, poll = await setup(valkey)
    ref = await cast(service, poll, "human-1")
    report = await reviews.decide(poll.id, "root", Decision.VOIDED, Selector(entries=(ref,)))
    assert report.outcomes == {ref: EntryOutcome.NOT_HELD}
    assert (await service.results(poll.id)).counts == {"red": 1, "blue": 0}
    assert await ValkeyReviews(valkey).recorded(poll) == {}


async def test_a_conflicting_decision_finishes_the_half_done_first_one(
    valkey: StoreClient,
) -> None:
    """The admin log says released but the lane never heard: a later void is refused as a
    conflict, and the release it ran into is applied to the lane on the way."""
    service, reviews, poll = await setup(valkey)
    ref = await cast(service, poll, "held-3", "blue")
    await ValkeyReviews(valkey).record(poll, "ann", Decision.RELEASED, [ref])
    report = await reviews.decide(poll.id, "bob", Decision.VOIDED, Selector(entries=(ref,)))
    assert report.outcomes == {ref: EntryOutcome.CONFLICT}
    results = await service.results(poll.id)
    assert (results.counts, results.under_review) == ({"red": 0, "blue": 1}, 0)
    assert await ValkeyReviews(valkey).recorded(poll) == {ref: Decision.RELEASED}

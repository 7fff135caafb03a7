"""The vote intake's admission chain, on a real Valkey: checks run in order, the first verdict
that is not Admit decides the outcome, and a vote a check stopped is not cast (nothing is
written). The checks below are the chain's own Protocol implemented by the test: the defences
that will return Challenge, Limit and Hold plug in exactly this way."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from tally.domain.admission import (
    ADMIT,
    Challenge,
    Evidence,
    Hold,
    Limit,
    Transport,
    Verdict,
    Voter,
    VoteRequest,
)
from tally.domain.polls import Option, OptionSpec, Poll
from tally.domain.votes import (
    Accepted,
    ChallengeRequired,
    HeldForReview,
    RateLimited,
    Unauthenticated,
    UnknownOption,
)
from tally.gateway.auth import Authenticator
from tally.gateway.live.votes import LiveVoting, VoteMessage
from tally.gateway.metrics import Metrics
from tally.gateway.votes import HotPathRouter, VoteEndpoint
from tally.gateway.voting import Voting
from tally.security.dev_issuer import DevIssuer
from tally.security.tokens import TokenVerifier
from tally.service import NewPoll, VotingService
from tally.service.admission import AdmissionCheck, OptionCheck, TokenCheck, default_checks
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox

SECRET = b"k" * 32


class Fixed:
    """A check that always returns the same verdict, and records what it saw."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.seen: list[VoteRequest] = []

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        self.seen.append(request)
        return self.verdict


async def open_poll(valkey: Valkey, checks: list[AdmissionCheck]) -> tuple[VotingService, str]:
    service = VotingService(
        ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=SECRET, checks=checks
    )
    options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
    poll = await service.create_poll(NewPoll(f"intake {secrets.token_hex(3)}", options, lanes=2))
    await service.open_poll(poll.id)
    return service, poll.id


def request(poll_id: str, option: str = "red", **voter: int) -> VoteRequest:
    evidence = Evidence(Transport.HTTP, "192.0.2.7", "test-agent")
    return VoteRequest(poll_id, Voter("idp", secrets.token_hex(4), **voter), option, evidence)


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        (Challenge("c:1", "new address"), ChallengeRequired("c:1", "new address")),
        (Limit(7, "address"), RateLimited(7, "address")),
    ],
)
async def test_a_check_that_does_not_admit_decides_and_nothing_is_cast(
    valkey: Valkey, verdict: Verdict, outcome: object
) -> None:
    """Challenge and Limit become their outcomes; the counters stay at zero."""
    service, poll_id = await open_poll(valkey, [Fixed(verdict)])
    assert await service.submit(request(poll_id)) == outcome
    assert (await service.results(poll_id)).total == 0


async def test_a_hold_records_the_vote_with_a_receipt_but_does_not_count_it(
    valkey: Valkey,
) -> None:
    """Hold casts the vote held: HeldForReview with a held receipt, under review, not counted;
    a check after the hold is never asked."""
    after = Fixed(ADMIT)
    service, poll_id = await open_poll(valkey, [Fixed(Hold("velocity")), after])
    outcome = await service.submit(request(poll_id))
    assert isinstance(outcome, HeldForReview)
    assert (outcome.reason, outcome.receipt.entry_id) == ("velocity", 1)
    results = await service.results(poll_id)
    assert (results.total, results.under_review) == (0, 1)
    assert after.seen == []


async def test_checks_run_in_order_and_stop_at_the_first_verdict(valkey: Valkey) -> None:
    """A limit before a challenge wins; the challenge is never asked; the request with its
    evidence reaches the checks unchanged."""
    first, second, third = Fixed(ADMIT), Fixed(Limit(3, "subnet")), Fixed(Challenge("x", "y"))
    service, poll_id = await open_poll(valkey, [first, second, third])
    sent = request(poll_id)
    assert await service.submit(sent) == RateLimited(3, "subnet")
    assert first.seen == [sent]
    assert second.seen == [sent]
    assert third.seen == []


async def test_with_every_check_admitting_the_vote_is_cast(valkey: Valkey) -> None:
    """The default chain (token, option) admits a current token and a known option."""
    service, poll_id = await open_poll(valkey, default_checks())
    now_s = int(time.time())
    outcome = await service.submit(request(poll_id, issued_at=now_s, expires_at=now_s + 60))
    assert isinstance(outcome, Accepted)
    assert (await service.results(poll_id)).total == 1


async def test_the_token_check_refuses_a_token_that_expired_before_admission(
    valkey: Valkey,
) -> None:
    """Past exp plus the leeway: 401 token-expired, nothing cast; within the leeway: cast."""
    service, poll_id = await open_poll(valkey, [TokenCheck(leeway_s=30)])
    now_s = int(time.time())
    stale = request(poll_id, issued_at=now_s - 600, expires_at=now_s - 60)
    assert await service.submit(stale) == Unauthenticated("token-expired", "token has expired")
    future = request(poll_id, issued_at=now_s + 600, expires_at=now_s + 900)
    refused = await service.submit(future)
    assert isinstance(refused, Unauthenticated)
    assert refused.reason == "token-not-yet-valid"
    assert (await service.results(poll_id)).total == 0
    lenient = request(poll_id, issued_at=now_s - 600, expires_at=now_s - 10)
    assert isinstance(await service.submit(lenient), Accepted)


OPTIONS = (Option("red", "Red"), Option("blue", "Blue"))


async def test_the_option_check_refuses_an_option_the_poll_lacks(valkey: Valkey) -> None:
    """The refusal names the poll's options, for the voter to choose from."""
    service, poll_id = await open_poll(valkey, [OptionCheck()])
    assert await service.submit(request(poll_id, "green")) == UnknownOption("green", OPTIONS)
    assert (await service.results(poll_id)).total == 0


async def test_the_lanes_refusal_of_an_unknown_option_names_the_options_too(
    valkey: Valkey,
) -> None:
    """Without the option check the lane itself refuses (it knows ids only); the intake adds
    the options from the definition it holds."""
    service, poll_id = await open_poll(valkey, [])
    assert await service.submit(request(poll_id, "green")) == UnknownOption("green", OPTIONS)
    assert (await service.results(poll_id)).total == 0


async def test_both_transports_answer_a_limit_alike_with_when_to_retry(
    valkey: Valkey, tmp_path: Path
) -> None:
    """A Limit verdict over HTTP is 429 rate-limited with Retry-After; over the WebSocket the
    vote_result frame carries the same problem and the same delay as `retry_after`."""
    service, poll_id = await open_poll(valkey, [Fixed(Limit(7, "address"))])
    issuer = DevIssuer.load_or_create(tmp_path / "keys")
    verifier = TokenVerifier(issuer.key_set(), issuer="tally-dev", audience="tally")
    voting = Voting(service, Authenticator(verifier), Metrics())
    token = issuer.mint("limited-voter")

    frame = orjson.loads(
        await LiveVoting(voting).vote(
            poll_id,
            token,
            VoteMessage(request_id="r1", option="red"),
            Evidence(Transport.WEBSOCKET, "192.0.2.9"),
        )
    )
    app = HotPathRouter(Starlette(), VoteEndpoint(voting))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        reply = await http.post(
            f"/v1/polls/{poll_id}/votes",
            json={"option": "red"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert (reply.status_code, reply.headers["Retry-After"]) == (429, "7")
    assert (frame["status"], frame["retry_after"]) == (429, 7)
    assert frame["error"] == reply.json()
    assert reply.json()["code"] == "rate-limited"
    assert (await service.results(poll_id)).total == 0

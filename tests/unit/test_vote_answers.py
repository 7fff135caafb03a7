"""The one mapping of a vote's outcome to what the voter is told (gateway.problems.vote_answer),
used by HTTP and the WebSocket alike: every outcome the intake can produce has its status, its
stable problem code and, where the client must wait, a Retry-After."""

from __future__ import annotations

import orjson
import pytest

from tally.domain.polls import PollState
from tally.domain.votes import (
    Accepted,
    AlreadyVoted,
    ChallengeRequired,
    HeldForReview,
    NotOpen,
    RateLimited,
    Receipt,
    Unauthenticated,
    UnknownOption,
    VoteOutcome,
)
from tally.gateway.problems import problem_body, vote_answer

RECEIPT = Receipt("p1", 2, 7, "red", 1_750_000_000_250, bytes(32))


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        (AlreadyVoted(RECEIPT), 409, "already-voted"),
        (NotOpen(PollState.CLOSED), 409, "poll-not-open"),
        (UnknownOption("purple"), 422, "unknown-option"),
        (Unauthenticated("token-expired", "token has expired"), 401, "unauthorized"),
        (ChallengeRequired("c:1", "new address"), 428, "challenge-required"),
        (RateLimited(7, "address"), 429, "rate-limited"),
    ],
)
def test_every_refusal_has_its_status_and_code(
    outcome: VoteOutcome, status: int, code: str
) -> None:
    answered, document, problem = vote_answer(outcome)
    assert document is None
    assert problem is not None
    assert (answered, problem.status, problem.code) == (status, status, code)
    assert orjson.loads(problem_body(problem))["type"] == f"urn:tally:problem:{code}"


def test_accepted_answers_201_with_the_receipt() -> None:
    status, document, problem = vote_answer(Accepted(RECEIPT))
    assert (status, problem) == (201, None)
    assert document is not None
    assert document["receipt"]["entry_id"] == 7


def test_held_for_review_answers_202_with_the_receipt_and_says_why() -> None:
    """A held vote is recorded: its receipt (status held) comes with the reason."""
    status, document, problem = vote_answer(HeldForReview("velocity", RECEIPT))
    assert (status, problem) == (202, None)
    assert document is not None
    assert document["held"] == {"reason": "velocity"}
    assert (document["receipt"]["entry_id"], document["receipt"]["status"]) == (7, "held")


def test_a_rate_limit_says_when_to_retry_and_a_challenge_carries_the_challenge() -> None:
    _, _, limited = vote_answer(RateLimited(7, "subnet"))
    _, _, challenged = vote_answer(ChallengeRequired("c:1", "new address"))
    assert limited is not None
    assert challenged is not None
    assert limited.headers["Retry-After"] == "7"
    assert orjson.loads(problem_body(challenged))["challenge"] == "c:1"


def test_an_expired_token_at_admission_is_the_same_401_as_at_the_door() -> None:
    """The reason travels as the token verifier's codes do, with WWW-Authenticate."""
    _, _, problem = vote_answer(Unauthenticated("token-expired", "token has expired"))
    assert problem is not None
    assert problem.extensions["reason"] == "token-expired"
    assert problem.headers["WWW-Authenticate"] == 'Bearer realm="tally"'

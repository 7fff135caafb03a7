"""One error format for every endpoint: RFC 9457 problem details, each with a stable `type`.

Every domain error and vote refusal maps to a problem here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response

from tally.domain.errors import (
    IllegalTransition,
    InvalidInput,
    PollNotFound,
    StoreUnavailable,
    TallyError,
)
from tally.domain.polls import POLL_ID_PATTERN
from tally.domain.votes import (
    Accepted,
    AlreadyVoted,
    ChallengeInvalid,
    ChallengeRequired,
    HeldForReview,
    NotOpen,
    RateLimited,
    Unauthenticated,
    UnknownOption,
    VoteOutcome,
)
from tally.gateway.render import iso_ms, receipt_doc
from tally.security.pow import ALGORITHM, difficulty_of, expires_at_ms

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:tally:problem:"

TITLES: dict[str, str] = {
    "malformed-json": "The body is not valid JSON",
    "validation-failed": "The request breaks a rule",
    "unsupported-media-type": "The body must be application/json",
    "body-too-large": "The body is too large",
    "invalid-poll-id": "That is not a poll id",
    "poll-not-found": "No such poll",
    "join-code-not-found": "No poll has that join code",
    "invalid-transition": "The poll cannot make that move",
    "poll-not-open": "The poll is not open for votes",
    "already-voted": "This voter has already voted in this poll",
    "unknown-option": "The poll has no such option",
    "challenge-required": "Solve the challenge and send its answer with the vote",
    "challenge-invalid": "The proof-of-work answer is not valid; get a new challenge",
    "rate-limited": "Too many requests; retry later",
    "unauthorized": "A valid bearer token is required",
    "duplicate-authorization": "The request carries more than one Authorization header",
    "forbidden": "The token does not allow this",
    "not-found": "No such resource",
    "results-hidden": "The poll does not show its counts to you yet",
    "not-archived": "Not in a published checkpoint yet; retry later",
    "invalid-ledger-path": "That is not a ledger file path",
    "method-not-allowed": "Method not allowed",
    "upgrade-required": "Connect with a WebSocket (Upgrade: websocket)",
    "store-unavailable": "The vote store is unavailable; retry",
    "invalid-request": "The request cannot be served as sent",
    "too-many-connections": "Too many open connections from this address; retry later",
    "headers-too-large": "The request line and headers are too large",
    "request-timeout": "The request did not arrive in time",
    "shutting-down": "The server is shutting down; reconnect",
    "internal-error": "Internal error",
    "signin-state": "This sign-in is not the one this browser started; sign in again",
    "signin-refused": "The identity provider did not sign you in",
    "signin-token": "The identity provider's ID token did not pass the checks",
    "signin-provider": "The identity provider cannot be reached or is misconfigured",
    "invalid-next": "The return address is not a path on this site",
}


class Problem(Exception):
    """Raised anywhere in a handler to answer with a problem document."""

    def __init__(
        self, status: int, code: str, detail: str | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail or TITLES[code])
        self.status = status
        self.code = code
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        problem_body(problem, instance),
        problem.status,
        headers=problem.headers,
        media_type=MEDIA_TYPE,
    )


def problem_body(problem: Problem, instance: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + problem.code,
        "title": TITLES[problem.code],
        "status": problem.status,
        "code": problem.code,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    body.update(problem.extensions)
    return orjson.dumps(body)


# The one wording of a 503 whose outcome is unknown (a write the store did not confirm: WAITAOF
# not met, a reply lost), for HTTP and the WebSocket's vote_result alike; `outcome: "unknown"`
# says the same to a program.
OUTCOME_UNKNOWN = (
    "the vote store did not confirm this request, so its outcome is unknown: "
    "retry to learn the outcome; a retry never counts twice"
)


def from_error(error: TallyError) -> Problem:
    """The single mapping from the domain error tree to problems."""
    if isinstance(error, InvalidInput):
        return Problem(
            422,
            "validation-failed",
            str(error),
            errors=[{"field": error.field, "message": error.reason}],
        )
    if isinstance(error, PollNotFound):
        return Problem(404, "poll-not-found", f"no poll {error.poll_id!r}")
    if isinstance(error, IllegalTransition):
        return Problem(409, "invalid-transition", str(error), state=error.current)
    if isinstance(error, StoreUnavailable):
        unavailable = Problem(503, "store-unavailable", OUTCOME_UNKNOWN, outcome="unknown")
        unavailable.headers["Retry-After"] = "1"
        return unavailable
    return Problem(500, "internal-error")


def as_problem(exc: Exception, log: logging.Logger) -> Problem:
    """Any failure of a handler as the problem to answer; unexpected ones are logged as such."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, TallyError):
        return from_error(exc)
    log.exception("unexpected failure", exc_info=exc)
    return Problem(500, "internal-error")


def invalid_poll_id() -> Problem:
    """A poll id that cannot exist (routes, the vote path, WebSocket and SSE alike)."""
    return Problem(400, "invalid-poll-id", f"a poll id must match {POLL_ID_PATTERN}")


def unauthorized(detail: str, reason: str) -> Problem:
    """401, with the token's refusal code as `reason` (token-missing, token-expired, ...)."""
    problem = Problem(401, "unauthorized", detail, reason=reason)
    problem.headers["WWW-Authenticate"] = 'Bearer realm="tally"'
    return problem


def vote_answer(outcome: VoteOutcome) -> tuple[int, dict[str, Any] | None, Problem | None]:
    """The single mapping of a vote's outcome to what the voter is told, over HTTP and the
    WebSocket alike: (status, success document, None) or (status, None, problem)."""
    if isinstance(outcome, Accepted):
        return 201, {"receipt": receipt_doc(outcome.receipt)}, None
    if isinstance(outcome, HeldForReview):
        receipt = receipt_doc(outcome.receipt, "held")
        return 202, {"receipt": receipt, "held": {"reason": outcome.reason}}, None
    refusal = vote_refusal(outcome)
    return refusal.status, None, refusal


def vote_refusal(outcome: VoteOutcome) -> Problem:
    """The problem for a vote that was not cast (every outcome but Accepted and HeldForReview)."""
    if isinstance(outcome, AlreadyVoted):
        return Problem(409, "already-voted", receipt=receipt_doc(outcome.receipt, outcome.status))
    if isinstance(outcome, NotOpen):
        return Problem(
            409, "poll-not-open", f"the poll is {outcome.state.value}", state=outcome.state.value
        )
    if isinstance(outcome, UnknownOption):
        valid = ", ".join(f"{o.id} ({o.label})" for o in outcome.options)  # as the CLI says
        return Problem(
            422,
            "unknown-option",
            f"no option {outcome.option!r}; the options are: {valid}",
            option=outcome.option,
            options=[{"id": o.id, "label": o.label} for o in outcome.options],
        )
    if isinstance(outcome, Unauthenticated):
        return unauthorized(outcome.detail, outcome.reason)
    if isinstance(outcome, ChallengeRequired):
        return Problem(
            428, "challenge-required", outcome.reason, **challenge_doc(outcome.challenge)
        )
    if isinstance(outcome, ChallengeInvalid):
        return Problem(
            403,
            "challenge-invalid",
            f"the proof-of-work answer is {outcome.reason}",
            reason=outcome.reason,
        )
    if isinstance(outcome, RateLimited):
        limited = Problem(
            429,
            "rate-limited",
            f"too many requests from this {outcome.scope}",
            scope=outcome.scope,
        )
        limited.headers["Retry-After"] = str(outcome.retry_after_s)
        return limited
    raise AssertionError(f"no problem for outcome {outcome!r}")


def challenge_doc(challenge: str) -> dict[str, Any]:
    """What a client needs to solve a challenge (the 428's fields, GET .../challenge's body):
    find a nonce such that SHA-256(challenge ":" nonce) starts with `difficulty` zero bits, then
    send `challenge:nonce` as the vote's `proof` before `expires_at`."""
    expires = expires_at_ms(challenge)
    return {
        "challenge": challenge,
        "algorithm": ALGORITHM,
        "difficulty": difficulty_of(challenge),
        "expires_at": None if expires is None else iso_ms(expires),
    }

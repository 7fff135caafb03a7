"""HTTP handlers: parse, call one service method, render. No Valkey, no rules of the domain."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import POLL_ID_RE
from tally.domain.votes import Accepted, AlreadyVoted, NotOpen, UnknownOption, VoteOutcome
from tally.gateway.bodies import CreatePollBody, VoteBody, read_json, to_new_poll
from tally.gateway.metrics import Metrics
from tally.gateway.problems import Problem, from_error
from tally.gateway.render import poll_doc, receipt_doc, results_doc
from tally.security.tokens import Principal, TokenError, TokenVerifier
from tally.service import Voter, VotingService

JSON = "application/json"
VOTE_BODY_LIMIT = 1024


def json_response(
    document: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(document), status, headers=headers, media_type=JSON)


def vote_refusal(outcome: VoteOutcome) -> Problem | None:
    """The problem for a refused vote (None for Accepted). Shared by HTTP and WebSocket voting."""
    if isinstance(outcome, Accepted):
        return None
    if isinstance(outcome, AlreadyVoted):
        return Problem(409, "already-voted", receipt=receipt_doc(outcome.receipt))
    if isinstance(outcome, NotOpen):
        return Problem(
            409, "poll-not-open", f"the poll is {outcome.state.value}", state=outcome.state.value
        )
    if isinstance(outcome, UnknownOption):
        return Problem(
            422, "unknown-option", f"no option {outcome.option!r}", option=outcome.option
        )
    raise AssertionError(f"unhandled outcome {outcome!r}")


class Handlers:
    def __init__(
        self,
        service: VotingService,
        verifier: TokenVerifier,
        metrics: Metrics,
        *,
        ready: Callable[[], Awaitable[bool]],
        max_body_bytes: int,
    ) -> None:
        self._service = service
        self._verifier = verifier
        self._metrics = metrics
        self._ready = ready
        self._max_body = max_body_bytes

    async def create_poll(self, request: Request) -> Response:
        self._admin(request)
        body = await read_json(request, CreatePollBody, self._max_body)
        poll = await self._service.create_poll(to_new_poll(body))
        return json_response(poll_doc(poll), 201, {"Location": f"/v1/polls/{poll.id}"})

    async def list_polls(self, request: Request) -> Response:
        return json_response({"polls": [poll_doc(p) for p in await self._service.list_polls()]})

    async def get_poll(self, request: Request) -> Response:
        return json_response(poll_doc(await self._service.get_poll(_poll_id(request))))

    async def open_poll(self, request: Request) -> Response:
        self._admin(request)
        return json_response(poll_doc(await self._service.open_poll(_poll_id(request))))

    async def close_poll(self, request: Request) -> Response:
        self._admin(request)
        return json_response(poll_doc(await self._service.close_poll(_poll_id(request))))

    async def vote(self, request: Request) -> Response:
        started = time.perf_counter()
        outcome_label = "error"
        try:
            principal = self._principal(request)
            poll_id = _poll_id(request)
            body = await read_json(request, VoteBody, VOTE_BODY_LIMIT)
            outcome = await self._service.vote(
                poll_id, Voter(principal.issuer, principal.subject), body.option
            )
            refusal = vote_refusal(outcome)
            if refusal is not None:
                outcome_label = refusal.code
                raise refusal
            assert isinstance(outcome, Accepted)
            outcome_label = "accepted"
            return json_response({"receipt": receipt_doc(outcome.receipt)}, 201)
        except Problem as problem:
            outcome_label = problem.code
            raise
        except StoreUnavailable:
            outcome_label = "store-unavailable"
            raise
        finally:
            self._metrics.votes.inc(outcome_label)
            self._metrics.vote_seconds.observe(time.perf_counter() - started)

    async def results(self, request: Request) -> Response:
        results = await self._service.results(_poll_id(request))
        body = orjson.dumps(results_doc(results))
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
        if etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(body, 200, headers=headers, media_type=JSON)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            ready = await self._ready()
        except StoreUnavailable as exc:
            raise from_error(exc) from exc
        if not ready:
            raise Problem(
                503, "store-unavailable", "Valkey is up but Tally's functions are not loaded"
            )
        return json_response({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    def _principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("missing bearer token", "token-missing")
        try:
            return self._verifier.verify(token.strip())
        except TokenError as exc:
            raise _unauthorized(str(exc), exc.code) from None

    def _admin(self, request: Request) -> Principal:
        principal = self._principal(request)
        if not principal.is_admin:
            raise Problem(403, "forbidden", "this needs the admin role")
        return principal


def _unauthorized(detail: str, reason: str) -> Problem:
    problem = Problem(401, "unauthorized", detail, reason=reason)
    problem.headers["WWW-Authenticate"] = 'Bearer realm="tally"'
    return problem


def _poll_id(request: Request) -> str:
    poll_id: str = request.path_params["poll_id"]
    if not POLL_ID_RE.fullmatch(poll_id):
        raise Problem(400, "invalid-poll-id", "a poll id is 1-64 of a-z, 0-9, '_' and '-'")
    return poll_id


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}

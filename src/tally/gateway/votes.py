"""POST /v1/polls/{poll_id}/votes as a bare ASGI app: the one hot route.

It skips Starlette's Request/Response objects, middleware stack and exception-handler wrapping
(together ~45% of the gateway's CPU per vote in a profile) but keeps the same contract: the same
validation, the same problem documents (via problems.py), the same metrics.
"""

from __future__ import annotations

import logging
import time

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import POLL_ID_RE
from tally.domain.votes import Accepted
from tally.gateway.auth import Authenticator
from tally.gateway.bodies import VoteBody, check_content_type, check_declared_length, decode
from tally.gateway.metrics import Metrics
from tally.gateway.problems import (
    MEDIA_TYPE,
    Problem,
    as_problem,
    invalid_poll_id,
    problem_body,
    vote_refusal,
)
from tally.gateway.render import receipt_doc
from tally.service import Voter, VotingService

log = logging.getLogger("tally.gateway")

VOTE_BODY_LIMIT = 1024
PREFIX = "/v1/polls/"
SUFFIX = "/votes"
_JSON = b"application/json"
_PROBLEM = MEDIA_TYPE.encode()


class VoteEndpoint:
    def __init__(self, service: VotingService, auth: Authenticator, metrics: Metrics) -> None:
        self._service = service
        self._auth = auth
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send, poll_id: str) -> None:
        started = time.perf_counter()
        try:
            body = await self._vote(scope, receive, poll_id)
            outcome, status, content_type, headers = "accepted", 201, _JSON, []
        except Exception as exc:  # every failure becomes a problem document, as in app.py
            problem = as_problem(exc, log)
            outcome, status, content_type = problem.code, problem.status, _PROBLEM
            body = problem_body(problem, scope["path"])
            headers = [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
        self._metrics.votes.inc(outcome)
        self._metrics.vote_seconds.observe(time.perf_counter() - started)
        headers += [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _vote(self, scope: Scope, receive: Receive, poll_id: str) -> bytes:
        authorization = content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        principal = self._auth.principal(authorization)
        if not POLL_ID_RE.fullmatch(poll_id):
            raise invalid_poll_id()
        check_content_type(content_type)
        check_declared_length(content_length, VOTE_BODY_LIMIT)
        vote = decode(await _read_body(receive, VOTE_BODY_LIMIT), VoteBody)
        outcome = await self._service.vote(
            poll_id, Voter(principal.issuer, principal.subject), vote.option
        )
        refusal = vote_refusal(outcome)
        if refusal is not None:
            raise refusal
        assert isinstance(outcome, Accepted)
        return orjson.dumps({"receipt": receipt_doc(outcome.receipt)})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise StoreUnavailable("client went away")  # nothing was written; nobody to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", f"at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class VoteRoute:
    """The same endpoint as a Starlette route: what the fast dispatch does not take (other
    methods) gets Starlette's 405 with a correct Allow header."""

    def __init__(self, votes: VoteEndpoint) -> None:
        self._votes = votes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._votes(scope, receive, send, scope["path_params"]["poll_id"])


class HotPathRouter:
    """Sends POST /v1/polls/{id}/votes to the VoteEndpoint and everything else to the app."""

    def __init__(self, app: ASGIApp, votes: VoteEndpoint) -> None:
        self._app = app
        self._votes = votes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Poll ids and sub-resources never need percent-encoding; a %2F would otherwise be
        # decoded into a path separator before routing and reach another route.
        if (
            scope["type"] == "http"
            and scope["path"].startswith(PREFIX)
            and b"%" in scope.get("raw_path", b"")
        ):
            problem = invalid_poll_id()
            response = Response(problem_body(problem, scope["path"]), 400, media_type=MEDIA_TYPE)
            await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX):
                poll_id = path[len(PREFIX) : -len(SUFFIX)]
                if "/" not in poll_id:
                    await self._votes(scope, receive, send, poll_id)
                    return
        await self._app(scope, receive, send)

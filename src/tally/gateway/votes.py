"""POST /v1/polls/{poll_id}/votes as a bare ASGI app: the one hot route.

It skips Starlette's Request/Response objects, middleware stack and exception-handler wrapping
(together ~45% of the gateway's CPU per vote in a profile) but keeps the same contract: the same
validation and problem documents (problems.py). Authentication, the intake, the outcome mapping
and the metrics are the shared `Voting` (voting.py), as on the live WebSocket; this module only
reads the HTTP request and writes the response.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tally.domain.admission import Evidence, Transport
from tally.domain.errors import StoreUnavailable
from tally.domain.polls import is_poll_id
from tally.gateway.bodies import VoteBody, check_content_type, check_declared_length, decode
from tally.gateway.client_address import ClientAddresses
from tally.gateway.problems import MEDIA_TYPE, Problem, invalid_poll_id, problem_body
from tally.gateway.voting import Ballot, Voting

VOTE_BODY_LIMIT = 1024
PREFIX = "/v1/polls/"
SUFFIX = "/votes"
_JSON_TYPE = (b"content-type", b"application/json")
_PROBLEM_TYPE = (b"content-type", MEDIA_TYPE.encode())


class VoteEndpoint:
    def __init__(self, voting: Voting, addresses: ClientAddresses | None = None) -> None:
        self._voting = voting
        self._addresses = ClientAddresses() if addresses is None else addresses

    async def __call__(self, scope: Scope, receive: Receive, send: Send, poll_id: str) -> None:
        authorization = content_type = content_length = None
        user_agent = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")

        async def ballot() -> Ballot:
            if not is_poll_id(poll_id):
                raise invalid_poll_id()
            check_content_type(content_type)
            check_declared_length(content_length, VOTE_BODY_LIMIT)
            body = decode(await _read_body(receive, VOTE_BODY_LIMIT), VoteBody)
            return Ballot(body.option, body.proof)

        evidence = Evidence(Transport.HTTP, self._addresses.of_scope(scope), user_agent)
        answer = await self._voting.vote(poll_id, authorization, ballot, evidence)
        if answer.problem is None:
            body = orjson.dumps(answer.document)
            headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
        else:
            body = problem_body(answer.problem, scope["path"])
            headers = [(k.lower().encode(), v.encode()) for k, v in answer.problem.headers.items()]
            headers += [_PROBLEM_TYPE, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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

"""HTTP handlers of the poll API (the hot vote route is votes.py; /healthz, /readyz and /metrics
are ops.py, as on every role): parse, call one service method, render. No Valkey, no rules of
the domain."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from email.utils import formatdate
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tally.domain.integrity import IntegrityAlarm
from tally.domain.polls import Poll, is_poll_id
from tally.domain.visibility import hidden_from_others, redacted_alarms
from tally.gateway.auth import Authenticator
from tally.gateway.bodies import CreatePollBody, read_json, to_new_poll
from tally.gateway.problems import Problem, invalid_poll_id
from tally.gateway.render import poll_doc, results_doc
from tally.gateway.viewer import cache_headers, ensure_shown_to, is_admin, viewer_of
from tally.ports import IntegrityStore
from tally.security.tokens import Principal
from tally.service import VotingService
from tally.service.join_codes import JoinCodes

JSON = "application/json"
INCLUDE_DRAFTS = "drafts"  # GET /v1/polls?include=drafts: the organiser's list


def json_response(
    document: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(document), status, headers=headers, media_type=JSON)


class Handlers:
    def __init__(
        self,
        service: VotingService,
        auth: Authenticator,
        *,
        max_body_bytes: int,
        integrity: IntegrityStore | None = None,
        join_codes: JoinCodes | None = None,
    ) -> None:
        """`integrity`: where the poll's integrity alarms are read (shown on it and its results);
        `join_codes`: each poll's join code, shown on it (given at creation, or when first asked
        for a poll made before join codes existed)."""
        self._service = service
        self._auth = auth
        self._max_body = max_body_bytes
        self._integrity = integrity
        self._join_codes = join_codes

    async def polls(self, request: Request) -> Response:
        """One route per path, so a 405 lists every allowed method."""
        if request.method == "POST":
            return await self.create_poll(request)
        return await self.list_polls(request)

    async def create_poll(self, request: Request) -> Response:
        admin = self._admin(request)
        body = await read_json(request, CreatePollBody, self._max_body)
        poll = await self._service.create_poll(to_new_poll(body), actor_of(admin))
        return json_response(await self._doc(poll), 201, {"Location": f"/v1/polls/{poll.id}"})

    async def list_polls(self, request: Request) -> Response:
        """Open and closed polls; `?include=drafts` (admin only) adds the drafts, for the
        organiser console."""
        drafts = self._include_drafts(request)
        polls = await self._service.list_polls(drafts=drafts)
        return json_response({"polls": await self._docs(polls)})

    async def get_poll(self, request: Request) -> Response:
        poll_id = poll_id_param(request)
        poll, alarms = await asyncio.gather(self._service.get_poll(poll_id), self._alarms(poll_id))
        authorization = request.headers.get("authorization")
        await ensure_shown_to(self._service, self._auth, authorization, poll_id, poll.state)
        if (
            alarms
            and hidden_from_others(poll.visibility, poll.state) is not None
            and not self._is_admin(request)
        ):
            alarms = redacted_alarms(alarms)  # as on its results: details may quote counts
        # The server's clock, which the presenter's countdown to the deadline runs on (a hall's
        # laptop may be minutes off); uvicorn's own Date header is off for the vote path's sake.
        return json_response(
            await self._doc(poll, alarms), headers={"Date": formatdate(usegmt=True)}
        )

    async def open_poll(self, request: Request) -> Response:
        actor = actor_of(self._admin(request))
        return json_response(
            await self._doc(await self._service.open_poll(poll_id_param(request), actor))
        )

    async def close_poll(self, request: Request) -> Response:
        actor = actor_of(self._admin(request))
        return json_response(
            await self._doc(await self._service.close_poll(poll_id_param(request), actor))
        )

    async def results(self, request: Request) -> Response:
        poll_id = poll_id_param(request)
        viewer = viewer_of(self._auth, request.headers.get("authorization"))
        (results, hidden), alarms = await asyncio.gather(
            self._service.visible_results(poll_id, viewer.voter, is_admin=viewer.is_admin),
            self._alarms(poll_id),
        )
        await self._service.ensure_shown(poll_id, is_admin=viewer.is_admin, state=results.state)
        if hidden is not None:
            alarms = redacted_alarms(alarms)  # a counter-mismatch alarm's details quote counts
        body = orjson.dumps(results_doc(results, alarms, hidden))
        if results.seq is not None:
            # A snapshot's seq names its content: the store never accepts one seq twice. Alarms
            # are only ever added, so their number completes the name; a hidden answer is
            # another representation of the same snapshot, so it gets its own name.
            etag = f'"{results.poll_id}.{results.seq}{f".i{len(alarms)}" if alarms else ""}'
            etag += f'{f".{hidden.value}" if hidden is not None else ""}"'
        else:
            etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        poll = await self._service.definition(poll_id)  # cached
        varies = hidden_from_others(poll.visibility, results.state) is not None
        headers = {"ETag": etag, **cache_headers(viewer, varies=varies)}
        wanted = _etags(request.headers.get("if-none-match", ""))
        if etag in wanted or "*" in wanted:
            return Response(status_code=304, headers=headers)
        return Response(body, 200, headers=headers, media_type=JSON)

    async def _doc(self, poll: Poll, alarms: Sequence[IntegrityAlarm] = ()) -> dict[str, Any]:
        (doc,) = await self._docs([poll], alarms)
        return doc

    async def _docs(
        self, polls: Sequence[Poll], alarms: Sequence[IntegrityAlarm] = ()
    ) -> list[dict[str, Any]]:
        """The polls' documents with their join codes (one store round trip for all)."""
        if self._join_codes is None:
            return [poll_doc(p, alarms) for p in polls]
        codes = await self._join_codes.codes_for([p.id for p in polls])
        return [poll_doc(p, alarms, join_code=c) for p, c in zip(polls, codes, strict=True)]

    async def _alarms(self, poll_id: str) -> list[IntegrityAlarm]:
        return [] if self._integrity is None else await self._integrity.alarms(poll_id)

    def _admin(self, request: Request) -> Principal:
        return self._auth.admin(request.headers.get("authorization"))

    def _is_admin(self, request: Request) -> bool:
        """Whether the request carries a valid admin credential (no credential: not an admin)."""
        return is_admin(self._auth, request.headers.get("authorization"))

    def _include_drafts(self, request: Request) -> bool:
        include = request.query_params.getlist("include")
        if not include:
            return False
        if include != [INCLUDE_DRAFTS]:
            raise Problem(
                422,
                "validation-failed",
                f"include: the only value is {INCLUDE_DRAFTS!r}",
                errors=[{"field": "include", "message": f"the only value is {INCLUDE_DRAFTS!r}"}],
            )
        self._admin(request)  # 401 without a credential, 403 without the admin role
        return True


def actor_of(admin: Principal) -> str:
    """How an admin is named in the public admin log: the token's subject (at most 255 bytes)."""
    return admin.subject.encode()[:255].decode(errors="ignore")


def poll_id_param(request: Request) -> str:
    """The `{poll_id}` of the path, or a 400 invalid-poll-id problem."""
    poll_id: str = request.path_params["poll_id"]
    if not is_poll_id(poll_id):
        raise invalid_poll_id()
    return poll_id


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}

"""Review of held votes over HTTP (reviewer or admin role): parse, call ReviewService, render.

    GET  /v1/polls/{poll_id}/held              the held votes, grouped by reason and subnet
    POST /v1/polls/{poll_id}/held/decisions    release or void listed entries, or a whole group

A decision body is {"decision": "release" | "void", "entries": [{"lane": L, "entry_id": N}, ...]}
or {"decision": ..., "group": {"reason": R, "subnet": S}} (either or both of reason and subnet).
The answer lists each entry's outcome; entries that are not held votes are refused one by one
(`not-held`, or `conflict` when the other decision was taken) and nothing changes for them.

Each listed vote says what is known of its network evidence (`evidence`: kept, none, deleted,
unreadable, clear) and its subnet; the client's address and user agent are shown to the
reviewer role only (an admin without it sees the subnets they are grouped by, not who voted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tally.domain.errors import InvalidInput
from tally.domain.review import (
    DECISION_VERBS,
    DecisionReport,
    EntryOutcome,
    EntryRef,
    EvidenceStatus,
    HeldVote,
    Selector,
)
from tally.domain.timestamps import iso_ms
from tally.gateway.auth import Authenticator
from tally.gateway.bodies import read_json
from tally.gateway.routes import actor_of, json_response, poll_id_param
from tally.service.review import HeldListing, ReviewService

# Entries listed per group; `count` is always exact and `truncated` says when more were held.
MAX_LISTED = 1000
_Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Subnet = Annotated[str, msgspec.Meta(max_length=64)]  # "": votes that came with no address
_UINT = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

__all__ = ["ReviewRoutes"]


class EntryBody(msgspec.Struct, forbid_unknown_fields=True):
    lane: _UINT
    entry_id: _UINT


class GroupBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: _Code | None = None
    subnet: _Subnet | None = None


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["release", "void"]
    entries: Annotated[list[EntryBody], msgspec.Meta(min_length=1)] | None = None
    group: GroupBody | None = None


class ReviewRoutes:
    def __init__(
        self,
        reviews: ReviewService,
        auth: Authenticator,
        *,
        max_body_bytes: int,
        count: Callable[[str, int], None] = lambda outcome, n: None,
    ) -> None:
        """`count(outcome, n)`: n entries of a decision had that outcome (for metrics)."""
        self._reviews = reviews
        self._auth = auth
        self._max_body = max_body_bytes
        self._count = count

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/polls/{poll_id}/held", self.held, methods=["GET"]),
            Route("/v1/polls/{poll_id}/held/decisions", self.decide, methods=["POST"]),
        ]

    async def held(self, request: Request) -> Response:
        principal = self._auth.reviewer(request.headers.get("authorization"))
        listing = await self._reviews.held(poll_id_param(request))
        return json_response(held_doc(listing, network="reviewer" in principal.roles))

    async def decide(self, request: Request) -> Response:
        reviewer = self._auth.reviewer(request.headers.get("authorization"))
        poll_id = poll_id_param(request)
        body = await read_json(request, DecisionBody, self._max_body)
        report = await self._reviews.decide(
            poll_id, actor_of(reviewer), DECISION_VERBS[body.decision], selector_of(body)
        )
        for outcome in EntryOutcome:
            if n := report.count(outcome):
                self._count(outcome.value, n)
        return json_response(decision_doc(poll_id, body.decision, report))


def selector_of(body: DecisionBody) -> Selector:
    """The votes a body selects; InvalidInput (422) unless it names entries or a group, not
    both."""
    group = body.group
    if (body.entries is None) == (group is None):
        raise InvalidInput("entries", "give either entries or group")
    if group is not None:
        if group.reason is None and group.subnet is None:
            raise InvalidInput("group", "name a reason, a subnet or both")
        return Selector(reason=group.reason, subnet=group.subnet)
    assert body.entries is not None
    return Selector(entries=tuple(EntryRef(e.lane, e.entry_id) for e in body.entries))


def held_doc(listing: HeldListing, *, network: bool = False) -> dict[str, Any]:
    """The listing; with `network`, each vote's client address and user agent too."""
    return {
        "poll_id": listing.poll_id,
        "under_review": listing.under_review,
        "groups": [
            {
                "reason": group.reason,
                "subnet": group.subnet,
                "count": len(group.votes),
                "truncated": len(group.votes) > MAX_LISTED,
                "entries": [_entry_doc(v, network) for v in group.votes[:MAX_LISTED]],
            }
            for group in listing.groups
        ],
    }


def _entry_doc(vote: HeldVote, network: bool) -> dict[str, Any]:
    entry = {
        "lane": vote.lane,
        "entry_id": vote.entry_id,
        "option": vote.option,
        "reason": vote.reason,
        "subnet": vote.subnet,
        "held_at": iso_ms(vote.held_at_ms),
        "evidence": vote.evidence.value,
    }
    if network and vote.evidence is EvidenceStatus.KEPT:
        entry["address"] = vote.address
        entry["user_agent"] = vote.user_agent
    return entry


def decision_doc(poll_id: str, verb: str, report: DecisionReport) -> dict[str, Any]:
    refused = report.count(EntryOutcome.NOT_HELD) + report.count(EntryOutcome.CONFLICT)
    return {
        "poll_id": poll_id,
        "decision": verb,
        "released": report.count(EntryOutcome.RELEASED),
        "voided": report.count(EntryOutcome.VOIDED),
        "already_decided": report.count(EntryOutcome.ALREADY),
        "refused": refused,
        "entries": [
            {"lane": ref.lane, "entry_id": ref.entry_id, "outcome": outcome.value}
            for ref, outcome in sorted(report.outcomes.items())
        ],
    }

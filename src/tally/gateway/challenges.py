"""GET /v1/polls/{poll_id}/challenge: a proof-of-work challenge for the authenticated voter.

Answers 200 with the document of problems.challenge_doc (challenge, algorithm, difficulty,
expires_at), at the poll's difficulty; `Cache-Control: no-store`, since every challenge is for
one voter and is spent once. 401 without a valid token, 404 for an unknown poll (and for a
draft, but to an admin).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tally.domain.admission import Voter
from tally.gateway.auth import Authenticator
from tally.gateway.problems import challenge_doc
from tally.gateway.routes import json_response, poll_id_param
from tally.service import VotingService
from tally.service.challenges import ChallengeDesk


class ChallengeRoutes:
    def __init__(
        self, desk: ChallengeDesk, auth: Authenticator, service: VotingService | None = None
    ) -> None:
        """`service`: where a draft is told apart from a public poll (None: no such check)."""
        self._desk = desk
        self._auth = auth
        self._service = service

    def routes(self) -> list[BaseRoute]:
        return [Route("/v1/polls/{poll_id}/challenge", self.challenge, methods=["GET"])]

    async def challenge(self, request: Request) -> Response:
        principal = self._auth.principal(request.headers.get("authorization"))
        voter = Voter(
            principal.issuer, principal.subject, principal.issued_at, principal.expires_at
        )
        poll_id = poll_id_param(request)
        if self._service is not None:  # a draft's: an unknown poll's 404 but for an admin
            await self._service.ensure_shown(poll_id, is_admin=principal.is_admin)
        challenge = await self._desk.challenge_for(poll_id, voter)
        return json_response(challenge_doc(challenge), headers={"Cache-Control": "no-store"})

"""A vote as every transport answers it: the one path from a bearer token and an option to an
answer, shared by `POST /v1/polls/{id}/votes` (votes.py) and the live WebSocket (live/votes.py).

    authenticate -> VoteRequest -> VotingService.submit (the one intake) -> answer -> metrics

Each transport only parses its own framing and wraps the VoteAnswer in its own envelope (an HTTP
response, a `vote_result` frame); the outcome -> status/problem mapping is problems.vote_answer,
done once here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from tally.domain.admission import Evidence, Voter, VoteRequest
from tally.domain.votes import Accepted, HeldForReview
from tally.gateway.auth import Authenticator
from tally.gateway.metrics import Metrics
from tally.gateway.problems import Problem, as_problem, vote_answer
from tally.gateway.viewer import ensure_shown_to
from tally.service import VotingService
from tally.service.risk import Traffic

log = logging.getLogger("tally.gateway")


class VoteAnswer(NamedTuple):
    """What the voter is told: `status`, and either `document` (the success body's fields:
    `receipt` for 201, `held` for 202) or `problem`. `label` is the outcome in metrics."""

    status: int
    label: str
    document: dict[str, Any] | None = None
    problem: Problem | None = None


class Ballot(NamedTuple):
    """What a vote request asks for: the option, and the proof-of-work answer if it has one
    (`challenge:nonce`, tally.security.pow)."""

    option: str
    proof: str | None = None


class Voting:
    def __init__(
        self,
        service: VotingService,
        auth: Authenticator,
        metrics: Metrics,
        traffic: Traffic | None = None,
    ) -> None:
        """`traffic`: where every answer is counted for the fraud scorer's velocity and
        failure signals (service.risk); None counts nothing."""
        self._service = service
        self._auth = auth
        self._metrics = metrics
        self._traffic = traffic

    def authenticate(self, authorization: str | None) -> Voter:
        """The voter behind an `Authorization: Bearer <jwt>` value, or a 401 Problem."""
        principal = self._auth.principal(authorization)
        return Voter(principal.issuer, principal.subject, principal.issued_at, principal.expires_at)

    async def vote(
        self,
        poll_id: str,
        authorization: str | None,
        ballot: Callable[[], Awaitable[Ballot]],
        evidence: Evidence,
    ) -> VoteAnswer:
        """Authenticate, then read the ballot (`ballot` raises a Problem for a malformed
        request: HTTP reads and checks its body only once the caller is known), submit, answer,
        count. Never raises: every failure is an answer."""
        started = time.perf_counter()
        try:
            voter = self.authenticate(authorization)
            option, proof = await ballot()
            if proof is not None:
                evidence = evidence._replace(challenge=proof)
            request = VoteRequest(poll_id, voter, option, evidence)
            outcome = await self._service.submit(request)
            if not isinstance(outcome, Accepted | HeldForReview):
                # A refusal tells the poll's state or options: a draft's only to an admin, to
                # anyone else it is an unknown poll. The cached definition decides (no read
                # unless it says draft); the credential is checked again only on a draft, never
                # for a flood of refusals of a public poll.
                await ensure_shown_to(self._service, self._auth, authorization, poll_id)
            status, document, problem = vote_answer(outcome)
            label = "accepted" if status == 201 else "held" if problem is None else problem.code
            answer = VoteAnswer(status, label, document, problem)
        except Exception as exc:  # every failure becomes a problem document
            problem = as_problem(exc, log)
            answer = VoteAnswer(problem.status, problem.code, problem=problem)
        self._metrics.votes.inc(answer.label)
        if self._traffic is not None:
            self._traffic.answered(evidence, answer.status)
        self._metrics.vote_seconds.observe(time.perf_counter() - started)
        return answer

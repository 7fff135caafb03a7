"""The fraud-scoring check, last in the admission chain, and the traffic it measures.

    RiskCheck: signals of the request -> security.risk.assess(poll's rules) -> Admit | Challenge
    (harder) | Hold

The velocity and failure signals are counted in-process, per gateway process (`Traffic`), not in
Valkey. Why: every vote already pays the distributed GCRA limits (tally.service.ratelimits), which
are the exact, cluster-wide bound on a subnet; the score is a heuristic on top that only needs to
see a flood, and a shared counter would add two more store calls per vote (subnet and agent
live in different slots) to the scarce resource of the vote path. Scoring and counting in the
process cost 7.7 µs a vote (benchmarks/risk_cost.py, BENCHMARKS.md). The price: with N gateways
behind a balancer each sees about 1/N of a farm's requests, so a velocity threshold is per
gateway process (divide a deployment-wide figure by the number of gateway processes).
"""

from __future__ import annotations

from collections.abc import Callable

from tally.domain.admission import (
    ADMIT,
    Challenge,
    Evidence,
    Hold,
    Transport,
    Verdict,
    VoteRequest,
)
from tally.domain.defences import Signal
from tally.domain.polls import Poll
from tally.domain.pseudonyms import pseudonym
from tally.security.addresses import address_key, subnet_key
from tally.security.pow import Challenges, Solved, issued_at_ms
from tally.security.risk import Assessment, RiskVerdict, WindowCounter, assess

WINDOW_MS = 60_000  # the signals count "a minute"
# Keys per counter and window. Measured: 100k keys a window cost 3.8 MB of dict and 6.5 MB of
# subnet strings, so the three counters' two windows stay under ~50 MB per gateway process.
MAX_KEYS = 100_000


class Traffic:
    """What this gateway process has answered in the last minute: vote requests per subnet and
    per user agent, and refused ones per address. Fed with every vote answer (gateway.voting),
    read by RiskCheck. In memory, bounded (security.risk.WindowCounter)."""

    def __init__(self, clock_ms: Callable[[], int], max_keys: int = MAX_KEYS) -> None:
        self._clock_ms = clock_ms
        self.subnets = WindowCounter(WINDOW_MS, max_keys)
        self.agents = WindowCounter(WINDOW_MS, max_keys)
        self.failures = WindowCounter(WINDOW_MS, max_keys)

    def answered(self, evidence: Evidence, status: int) -> None:
        """Count one answered vote request. A refusal (4xx) counts as a failure of its address,
        except the 428 that asks a client without an answer for one: that is the normal first
        step of the challenge flow, not a failure."""
        now_ms = self._clock_ms()
        # The user agent is counted by its hash: a key of bounded size whatever the header holds.
        self.agents.add(hash(evidence.user_agent), now_ms)
        subnet = subnet_key(evidence.client) if evidence.client else ""
        if not subnet:
            return
        self.subnets.add(subnet, now_ms)
        if 400 <= status < 500 and not (status == 428 and evidence.challenge is None):
            self.failures.add(address_key(evidence.client), now_ms)


class RiskCheck:
    """Scores the request against the poll's risk rules (security.risk.assess): at `hold_at` the
    vote is held for review; at `challenge_at` it must come with an answer at least `harder_by`
    bits above the poll's difficulty (else 428 with such a challenge, capped at the poll's
    max_difficulty); below, admitted. Every verdict is counted by `count(verdict, reason)`.

    It writes nothing but its counts; the signals come from `traffic` (this process's last
    minute), the token's iat and the answer's issue time. Runs after ChallengeCheck, so an
    answer it reads has been verified."""

    def __init__(
        self,
        traffic: Traffic,
        challenges: Challenges,
        pseudonym_secret: bytes,
        count: Callable[[str, str], None],
        issued: Callable[[str], None] = lambda via: None,
    ) -> None:
        """`issued(via)` counts each harder challenge handed out (via "risk"), beside
        ChallengeCheck's in the same metric."""
        self._traffic = traffic
        self._challenges = challenges
        self._secret = pseudonym_secret
        self._count = count
        self._issued = issued

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        risk = poll.defences.risk
        # In-process callers (the demo, tests, benchmarks) show no network evidence and could
        # not answer a challenge: as for ChallengeCheck, they are not scored.
        if not risk.rules or request.evidence.transport is Transport.INTERNAL:
            return ADMIT
        assessment = assess(risk, self.signals(request, now_ms))
        verdict = assessment.verdict
        if verdict is RiskVerdict.HOLD:
            self._count(verdict.value, assessment.reason)
            return Hold(assessment.reason)
        if verdict is RiskVerdict.CHALLENGE:
            return self._challenge(request, poll, now_ms, assessment)
        self._count(verdict.value, assessment.reason)
        return ADMIT

    def signals(self, request: VoteRequest, now_ms: int) -> dict[Signal, float]:
        """The request's measured signals; the velocities include the request itself."""
        evidence, traffic = request.evidence, self._traffic
        agent = traffic.agents.count(hash(evidence.user_agent), now_ms) + 1
        signals = {Signal.AGENT_VELOCITY: agent}
        if evidence.client:
            subnet = subnet_key(evidence.client)
            if subnet:
                signals[Signal.SUBNET_VELOCITY] = traffic.subnets.count(subnet, now_ms) + 1
                address = address_key(evidence.client)
                signals[Signal.FAILURES] = traffic.failures.count(address, now_ms)
        issued_at = request.voter.issued_at
        if issued_at is not None:
            signals[Signal.TOKEN_AGE_S] = max(0.0, now_ms / 1000 - issued_at)
        if evidence.challenge is not None:
            challenged_at = issued_at_ms(evidence.challenge)
            if challenged_at is not None:
                signals[Signal.SOLVE_MS] = float(max(0, now_ms - challenged_at))
        return signals

    def _challenge(
        self, request: VoteRequest, poll: Poll, now_ms: int, assessment: Assessment
    ) -> Verdict:
        pow_ = poll.defences.pow
        harder = min(pow_.difficulty + poll.defences.risk.harder_by, pow_.max_difficulty)
        voter = request.voter
        voter_pseudonym = pseudonym(self._secret, poll.id, voter.issuer, voter.subject)
        answer = request.evidence.challenge
        if harder == 0 or (
            answer is not None
            # Verified here too (one HMAC and one SHA-256, only for the few challenged votes):
            # the answer's claimed difficulty must not be taken on trust.
            and isinstance(
                self._challenges.verify(answer, poll.id, voter_pseudonym, harder, now_ms), Solved
            )
        ):
            # Solved hard enough already (or nothing harder to ask): the price is paid.
            self._count(RiskVerdict.ADMIT.value, assessment.reason)
            return ADMIT
        self._count(RiskVerdict.CHALLENGE.value, assessment.reason)
        challenge = self._challenges.issue(poll.id, voter_pseudonym, harder, now_ms, pow_.ttl_s)
        self._issued("risk")
        return Challenge(challenge, f"risk: {', '.join(assessment.reasons)}")

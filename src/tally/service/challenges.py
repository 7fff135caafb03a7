"""The proof-of-work check in the admission chain, and the challenges handed out ahead of a vote.

    ChallengeCheck: evidence.challenge (the answer) -> security.pow verify -> spend once -> Admit
                    no answer, poll difficulty > 0  -> Challenge (a fresh challenge: 428)
                    an answer that fails            -> Refuse(ChallengeInvalid(reason))

It runs after the rate limits (a flood is refused before it costs a hash) and before the risk
scorer, which may ask for a harder challenge by returning its own Challenge verdict; the scorer
reads the answer this check verified and spent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tally.domain.admission import ADMIT, Challenge, Refuse, Transport, Verdict, Voter, VoteRequest
from tally.domain.polls import Poll
from tally.domain.pseudonyms import pseudonym
from tally.domain.votes import ChallengeInvalid
from tally.ports import SpentChallenges
from tally.security.pow import Challenges, Invalid

SOLVED = "solved"


def _uncounted(label: str) -> None:
    pass


class ChallengeCheck:
    """A vote over the network to a poll with `defences.pow.difficulty` above 0 must carry an
    answer to a challenge issued for this poll and voter, at least that difficulty, unexpired and
    never spent before; an answer sent to a poll that needs none is checked all the same (the
    risk scorer relies on any answer it sees being genuine). In-process callers (transport
    INTERNAL: the demo, tests, benchmarks) are exempt.

    It writes one key per answer that passes the stateless checks (SpentChallenges.spend), so a
    replay is refused even on another gateway. `issued(via)` counts every challenge handed out
    ("vote": with a 428, "endpoint": by `challenge_for`); `answered(result)` counts every answer
    checked ("solved", or the Invalid reason)."""

    def __init__(
        self,
        challenges: Challenges,
        spent: SpentChallenges,
        pseudonym_secret: bytes,
        *,
        issued: Callable[[str], None] = _uncounted,
        answered: Callable[[str], None] = _uncounted,
    ) -> None:
        self._challenges = challenges
        self._spent = spent
        self._secret = pseudonym_secret
        self._issued = issued
        self._answered = answered

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        evidence = request.evidence
        if evidence.transport is Transport.INTERNAL:
            return ADMIT
        required = poll.defences.pow.difficulty
        answer = evidence.challenge
        if answer is None:
            if required == 0:
                return ADMIT
            challenge = self.issue(poll, request.voter, required, now_ms, "vote")
            return Challenge(challenge, f"this poll asks for a proof of work of {required} bits")
        voter = request.voter
        voter_pseudonym = pseudonym(self._secret, poll.id, voter.issuer, voter.subject)
        verified = self._challenges.verify(answer, poll.id, voter_pseudonym, required, now_ms)
        if isinstance(verified, Invalid):
            return self._refuse(verified)
        if not await self._spent.spend(verified.spend_id, verified.expires_ms - now_ms):
            return self._refuse(Invalid.REPLAYED)
        self._answered(SOLVED)
        return ADMIT

    def issue(self, poll: Poll, voter: Voter, difficulty: int, now_ms: int, via: str) -> str:
        """A challenge of `difficulty` bits for this voter in this poll, valid the poll's ttl_s."""
        voter_pseudonym = pseudonym(self._secret, poll.id, voter.issuer, voter.subject)
        self._issued(via)
        return self._challenges.issue(
            poll.id, voter_pseudonym, difficulty, now_ms, poll.defences.pow.ttl_s
        )

    def _refuse(self, reason: Invalid) -> Verdict:
        self._answered(reason.value)
        return Refuse(ChallengeInvalid(reason.value))


class ChallengeDesk:
    """`GET /v1/polls/{id}/challenge`: a challenge at the poll's difficulty, before the vote, so
    a client can solve it and vote in one request. A poll with difficulty 0 still answers, with a
    challenge that any nonce solves (clients need no special case)."""

    def __init__(
        self,
        definition: Callable[[str], Awaitable[Poll]],
        check: ChallengeCheck,
        clock_ms: Callable[[], int],
    ) -> None:
        """`definition`: the vote intake's cached poll definitions (VoteIntake.definition)."""
        self._definition = definition
        self._check = check
        self._clock_ms = clock_ms

    async def challenge_for(self, poll_id: str, voter: Voter) -> str:
        """A fresh challenge for `voter`; PollNotFound for an unknown poll."""
        poll = await self._definition(poll_id)
        now_ms = self._clock_ms()
        return self._check.issue(poll, voter, poll.defences.pow.difficulty, now_ms, "endpoint")

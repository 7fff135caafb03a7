"""Admission: the ordered checks a vote passes before it is cast.

Each check is small, states its guarantee in its docstring, and returns one Verdict
(tally.domain.admission). The intake runs them in order and stops at the first verdict that is
not Admit, so put the cheapest first. Checks read and may write only their own state (rate-limit
buckets, spent challenges): never the ballot box, which only the cast touches.
"""

from __future__ import annotations

from typing import Protocol

from tally.domain.admission import ADMIT, Refuse, Verdict, VoteRequest
from tally.domain.polls import Poll
from tally.domain.votes import Unauthenticated, UnknownOption
from tally.security.tokens import DEFAULT_LEEWAY_S


class AdmissionCheck(Protocol):
    """One check in front of the cast.

    `check` sees the request, the poll's (immutable, cached) definition and the time of
    admission (ms); it returns Admit to let the next check decide, or the verdict that decides
    the vote. It must not cast, and a retry of the same request must be safe (a limit may count
    it again; it must not admit a vote it refused)."""

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict: ...


class TokenCheck:
    """The voter's token is valid when the vote is admitted: not expired (beyond `leeway_s`),
    not issued in the future. Transports verify the token's signature when they read it; this
    keeps a token that expired in between (a WebSocket session, a request that waited) from
    casting. Requests without token times (in-process callers) carry none to check."""

    def __init__(self, leeway_s: float) -> None:
        self._leeway_ms = int(leeway_s * 1000)

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        voter = request.voter
        if voter.expires_at is not None and now_ms >= voter.expires_at * 1000 + self._leeway_ms:
            return Refuse(Unauthenticated("token-expired", "token has expired"))
        if voter.issued_at is not None and voter.issued_at * 1000 > now_ms + self._leeway_ms:
            return Refuse(Unauthenticated("token-not-yet-valid", "iat is in the future"))
        return ADMIT


class OptionCheck:
    """The option is one of the poll's. (The vote function checks it again, atomically, on the
    lane; this refuses a typo without a store round trip.)"""

    MAX_CACHED_POLLS = 10_000

    def __init__(self) -> None:
        # Definitions never change, so each poll's option ids are computed once (bounded).
        self._option_ids: dict[str, frozenset[str]] = {}

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        option_ids = self._option_ids.get(poll.id)
        if option_ids is None:
            if len(self._option_ids) >= self.MAX_CACHED_POLLS:
                self._option_ids.clear()
            option_ids = self._option_ids[poll.id] = poll.option_ids
        if request.option not in option_ids:
            return Refuse(UnknownOption(request.option, poll.options))
        return ADMIT


def default_checks(token_leeway_s: float = DEFAULT_LEEWAY_S) -> list[AdmissionCheck]:
    """The chain as it stands: the token, then the option (the defences go in between)."""
    return [TokenCheck(token_leeway_s), OptionCheck()]

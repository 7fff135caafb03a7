"""Who asks to vote, with what evidence, and what the admission checks decide about it.

A `VoteRequest` is what every transport (HTTP, the live WebSocket, the CLI's in-process callers)
hands to the one vote intake (`tally.service.intake`). The checks in front of the cast each return
one `Verdict`; the first that is not `Admit` decides the vote's outcome (`tally.domain.votes`).

Pure values: no clock, no I/O. Times are integer seconds (token claims) or milliseconds (votes)
since the Unix epoch, passed in. The three values built for every vote (Voter, Evidence,
VoteRequest) are NamedTuples: as immutable as a frozen dataclass, at under half its cost to build
(a frozen dataclass sets each field through object.__setattr__; measured in BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from tally.domain.votes import Refusal


class Transport(StrEnum):
    HTTP = "http"
    WEBSOCKET = "websocket"
    INTERNAL = "internal"  # an in-process caller (the demo, tests, benchmarks): no network


class Voter(NamedTuple):
    """Who votes, as the identity provider said: never stored, only turned into a pseudonym.

    `issued_at` and `expires_at` are the token's iat and exp (unix seconds); None when the caller
    is in-process and holds no token."""

    issuer: str
    subject: str
    issued_at: int | None = None
    expires_at: int | None = None


class Evidence(NamedTuple):
    """What the request itself shows, for the checks that judge it (rate limits, scoring).

    `client` is the client's address after trusted-proxy resolution ("" when unknown);
    `challenge` is the answer to a proof-of-work challenge, if the client sent one."""

    transport: Transport
    client: str = ""
    user_agent: str = ""
    challenge: str | None = None


INTERNAL = Evidence(Transport.INTERNAL)


class VoteRequest(NamedTuple):
    poll_id: str
    voter: Voter
    option: str
    evidence: Evidence = INTERNAL


@dataclass(frozen=True, slots=True)
class Admit:
    """Nothing against the vote: the next check, or the cast."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """Admit only with a solved challenge: `challenge` is what the client must solve."""

    challenge: str
    reason: str


@dataclass(frozen=True, slots=True)
class Limit:
    """Too many requests on `scope` (an address, a subnet, a voter, the poll): retry later."""

    retry_after_s: int
    scope: str


@dataclass(frozen=True, slots=True)
class Hold:
    """Suspicious: not counted now; the vote waits for a reviewer's decision."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """The vote cannot be cast as asked; `refusal` is the outcome the voter is told."""

    refusal: Refusal


Verdict = Admit | Challenge | Limit | Hold | Refuse

ADMIT = Admit()

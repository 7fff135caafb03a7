"""Who may open a live connection (WebSocket or SSE): the connection limits, a bound and never a
queue, and the refusals the WebSocket handshake and the SSE request share.

A connection over either limit is refused at once (HTTP 429 at the WebSocket handshake or on the
SSE request), so an address flooding the gateway cannot crowd out everyone else. An IPv6 client
counts by its /64 (security/addresses.py), since one customer holds a whole /64.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from tally.gateway.problems import Problem
from tally.security.addresses import address_key

_TOKEN_PARAMETERS = frozenset({"token", "access_token", "jwt", "authorization"})


class ConnectionLimits:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        if max_total < 1 or max_per_ip < 1:
            raise ValueError("connection limits must be positive")
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """Count one more connection from `ip`, or return False if either limit is reached."""
        key = address_key(ip) or ip
        held = self._per_ip.get(key, 0)
        if self.total >= self.max_total or held >= self.max_per_ip:
            return False
        self._per_ip[key] = held + 1
        self.total += 1
        return True

    def release(self, ip: str) -> None:
        """Forget one admitted connection from `ip` (exactly once per successful `admit`)."""
        key = address_key(ip) or ip
        held = self._per_ip[key] - 1
        if held:
            self._per_ip[key] = held
        else:
            del self._per_ip[key]
        self.total -= 1

    def held_by(self, ip: str) -> int:
        return self._per_ip.get(address_key(ip) or ip, 0)


def too_many_connections() -> Problem:
    problem = Problem(429, "too-many-connections")
    problem.headers["Retry-After"] = "1"
    return problem


def shutting_down() -> Problem:
    problem = Problem(503, "shutting-down")
    problem.headers["Retry-After"] = "1"
    return problem


def token_in_url() -> Problem:
    return Problem(400, "invalid-request", "tokens never travel in the URL: send an auth message")


def carries_token(query: str | None) -> bool:
    """Whether a query string holds something that looks like a credential."""
    if not query:
        return False
    names = {name.lower() for name in parse_qs(query, keep_blank_values=True)}
    return not names.isdisjoint(_TOKEN_PARAMETERS)

"""The distributed rate limits in the admission chain: after the token and the option, before the
proof-of-work challenge and the risk scorer (ARCHITECTURE.md section 6).

Each vote request counts against the limits of its poll's `defences.limits` that are on: per
address and per subnet (IPv4 /24, IPv6 /48; an IPv6 address counts by its /64), when the request
has a network address; per voter, across every poll; per poll. The buckets live in the store
(ports.RateLimiter), so every gateway process shares them.

What reaches the store are keyed hashes, never an address or an identity: HMAC-SHA256 under a key
derived from the pseudonym secret (which every gateway of a deployment shares, so they name the
same buckets), truncated to 96 bits. A plain hash of an IPv4 address could be reversed by trying
all 2**32; the voter's id is the same in every poll on purpose (a per-poll pseudonym would let a
bot farm spread over polls), and it is not the pseudonym, so it links no ballot.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from hashlib import sha256

from tally.domain.admission import ADMIT, Limit, Verdict, VoteRequest
from tally.domain.polls import Poll
from tally.ports import RateLimiter
from tally.security.addresses import address_key, subnet_key

ID_BYTES = 12
MAX_CACHED_ADDRESSES = 65_536
_KEY_LABEL = b"tally rate-limit ids v1"


class RateLimitCheck:
    """Refuses a request that one of its poll's rate limits refuses, as Limit(seconds to wait,
    scope): the store's wait rounded up to whole seconds, so a retry after that is not refused
    by the same bucket. `on_limited(scope)` is told of every refusal (the metrics)."""

    def __init__(
        self,
        limiter: RateLimiter,
        pseudonym_secret: bytes,
        on_limited: Callable[[str], object] | None = None,
    ) -> None:
        self._limiter = limiter
        # A key of its own, so these ids can never be matched with pseudonyms or other MACs.
        self._key = hmac.digest(pseudonym_secret, _KEY_LABEL, sha256)
        self._on_limited = on_limited
        self._network: dict[str, tuple[str, str]] = {}

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        limits = poll.defences.limits
        voter_id = ""
        if limits.voter is not None:
            voter = request.voter
            voter_id = self._id(b"v", voter.issuer.encode(), voter.subject.encode())
        address_id = subnet_id = ""
        client = request.evidence.client
        if client and (limits.address is not None or limits.subnet is not None):
            address_id, subnet_id = self._network_ids(client)
        if not voter_id and not subnet_id and limits.poll is None:
            return ADMIT
        limited = await self._limiter.take(poll, voter_id, address_id, subnet_id)
        if limited is None:
            return ADMIT
        scope = limited.scope.value
        if self._on_limited is not None:
            self._on_limited(scope)
        return Limit(-(-limited.retry_after_ms // 1000), scope)

    def _network_ids(self, client: str) -> tuple[str, str]:
        """(address id, subnet id) of a client address; ("", "") when it has no network
        identity. Cached: a busy address or NAT sends many requests."""
        ids = self._network.get(client)
        if ids is None:
            subnet = subnet_key(client)
            ids = (
                (self._id(b"a", address_key(client).encode()), self._id(b"s", subnet.encode()))
                if subnet
                else ("", "")
            )
            if len(self._network) >= MAX_CACHED_ADDRESSES:
                self._network.clear()
            self._network[client] = ids
        return ids

    def _id(self, kind: bytes, *parts: bytes) -> str:
        # Length-prefixed parts: ("ab", "c") and ("a", "bc") never share an id.
        message = kind + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
        return hmac.digest(self._key, message, sha256)[:ID_BYTES].hex()

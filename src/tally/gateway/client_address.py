"""Who the client is, in one place: the socket's peer, or, only when that peer is a trusted proxy
(TALLY_TRUSTED_PROXIES), the address the proxies say they forwarded for in X-Forwarded-For.

Every per-address defence reads its address from here: the vote's `Evidence.client` (HTTP and
WebSocket), the live connection limits, and the edge's connection cap and token bucket.

Anyone can send an X-Forwarded-For header, so it is believed only as far as the chain of trusted
proxies reaches. Each proxy appends the address it received the request from, so the header is
read from the right: the right-most entry that is not itself a trusted proxy is the client (the
entries left of it were written by the client or by proxies nobody vouches for). If every entry is
a trusted proxy, the left-most one counts; an entry that is not an address ends the walk at the
hop that forwarded it. uvicorn's own `proxy_headers` stays off, so `scope["client"]` is always the
socket's peer and this module is the only reader of the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR = b"x-forwarded-for"


class ClientAddresses:
    """Resolves a request's client address; immutable once built (one per gateway process)."""

    def __init__(self, trusted_proxies: Iterable[Network] = ()) -> None:
        self.trusted_proxies: tuple[Network, ...] = tuple(trusted_proxies)
        # Bounded: peers are proxies (few) and forwarded addresses are walked only up to the
        # first untrusted one, so the cache mostly holds the proxies' own addresses.
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    @property
    def any_trusted(self) -> bool:
        return bool(self.trusted_proxies)

    def of_scope(self, scope: Scope) -> str:
        """The client of an ASGI HTTP or WebSocket scope ("" when the server knows no peer)."""
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        if not self.trusted_proxies or not self.is_trusted(peer):
            return peer  # the hot path without proxies: no header is looked at
        return self.resolve(peer, [v for k, v in scope["headers"] if k == FORWARDED_FOR])

    def resolve(self, peer: str, forwarded_for: Sequence[bytes | str]) -> str:
        """The client behind `peer`, given the X-Forwarded-For header lines in the order they
        arrived (several lines read as one comma-separated list)."""
        if not self.trusted_proxies or not self.is_trusted(peer):
            return peer
        client = peer
        for line in reversed(forwarded_for):
            text = line.decode("latin-1") if isinstance(line, bytes) else line
            for entry in reversed(text.split(",")):
                address = _address(entry)
                if address is None:
                    return client  # garbage: the hop that passed it on is all we know
                if not self.is_trusted(address):
                    return address
                client = address
        return client

    def _is_trusted(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.trusted_proxies)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 host a.b.c.d
    return ip


def _address(entry: str) -> str | None:
    """One X-Forwarded-For entry as a canonical address: `a.b.c.d`, an IPv6 address, or either
    with a port some proxies add (`a.b.c.d:p`, `[v6]:p`); None if it is none of these."""
    text = entry.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    ip = _ip(text)
    return None if ip is None else str(ip)

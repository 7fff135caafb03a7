"""Who the client is (tally.gateway.client_address): X-Forwarded-For is believed only from a
trusted proxy, read from the right, and never past the first hop nobody vouches for."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from tally.gateway.client_address import ClientAddresses
from tally.gateway.live.limits import ConnectionLimits

PROXIES = ClientAddresses([ip_network("10.0.0.0/8"), ip_network("2001:db8:ff::/48")])


def test_without_trusted_proxies_the_peer_counts_whatever_the_header_says() -> None:
    """No TALLY_TRUSTED_PROXIES (the default): the header is ignored, even from loopback."""
    addresses = ClientAddresses()
    assert addresses.resolve("127.0.0.1", [b"203.0.113.9"]) == "127.0.0.1"
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert addresses.of_scope(scope) == "127.0.0.1"


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    """A client outside the trusted networks is its socket address, header or not."""
    assert PROXIES.resolve("198.51.100.7", [b"203.0.113.9"]) == "198.51.100.7"


@pytest.mark.parametrize(
    ("lines", "client"),
    [
        ([b"203.0.113.9"], "203.0.113.9"),
        ([b"203.0.113.9, 10.1.1.1"], "203.0.113.9"),  # through two of our proxies
        ([b"1.1.1.1, 203.0.113.9, 10.1.1.1"], "203.0.113.9"),  # 1.1.1.1 is the client's claim
        ([b"1.1.1.1", b"203.0.113.9"], "203.0.113.9"),  # several lines read as one list
        ([b"10.2.2.2, 10.1.1.1"], "10.2.2.2"),  # only proxies: the left-most counts
        ([b"not-an-ip, 10.1.1.1"], "10.1.1.1"),  # garbage: the hop that passed it on
        ([b""], "10.0.0.5"),
        ([], "10.0.0.5"),
        ([b"203.0.113.9:4711"], "203.0.113.9"),  # proxies that add the client's port
        ([b"[2001:db8:1::5]:443"], "2001:db8:1::5"),
        ([b" 2001:DB8:1::5 "], "2001:db8:1::5"),  # canonical text, so limits count it once
        ([b"::ffff:203.0.113.9"], "203.0.113.9"),
    ],
)
def test_the_right_most_untrusted_forwarded_address_is_the_client(
    lines: list[bytes], client: str
) -> None:
    """From a trusted peer, the header is walked right to left past the trusted proxies."""
    assert PROXIES.resolve("10.0.0.5", lines) == client


def test_trusted_ipv6_and_ipv4_mapped_peers() -> None:
    """A proxy is recognised by network, in IPv6 too, and as an IPv4-mapped IPv6 peer."""
    assert PROXIES.resolve("2001:db8:ff:1::2", [b"203.0.113.9"]) == "203.0.113.9"
    assert PROXIES.resolve("::ffff:10.9.9.9", [b"203.0.113.9"]) == "203.0.113.9"
    assert PROXIES.resolve("2001:db8:fe::1", [b"203.0.113.9"]) == "2001:db8:fe::1"


def test_the_scope_reader_matches_resolve() -> None:
    """An ASGI scope resolves as its peer and its X-Forwarded-For lines do."""
    scope = {
        "client": ("10.0.0.5", 5000),
        "headers": [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"203.0.113.9")],
    }
    assert PROXIES.of_scope(scope) == "203.0.113.9"
    assert PROXIES.of_scope({"client": None, "headers": []}) == ""


def test_live_connection_limits_count_ipv6_by_slash_64() -> None:
    """Two addresses in one /64 share a per-address slot count; another /64 has its own."""
    limits = ConnectionLimits(max_total=10, max_per_ip=2)
    assert limits.admit("2001:db8:1:2::1")
    assert limits.admit("2001:db8:1:2::ffff")
    assert not limits.admit("2001:db8:1:2:abcd::9")
    assert limits.admit("2001:db8:1:3::1")
    assert limits.held_by("2001:db8:1:2::77") == 2
    limits.release("2001:db8:1:2::ffff")  # released under another address of the same /64
    assert limits.admit("2001:db8:1:2::42")
    assert limits.admit("192.0.2.1")
    assert limits.admit("192.0.2.1")
    assert not limits.admit("192.0.2.1")
    assert limits.admit("192.0.2.2")  # IPv4 counts per address

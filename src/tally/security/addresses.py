"""Client addresses as the defences count them.

One IPv6 customer usually holds a whole /64 (and a site a /48), so counting IPv6 per address would
give each attacker 2**64 fresh buckets. Every per-address limit therefore counts an IPv6 client by
its /64 and every per-subnet limit by its /48; IPv4 counts per address and per /24.

Pure functions, stdlib only. An address that does not parse (a Unix socket peer, "") has no
network identity: `address_key` and `subnet_key` return "" and the network limits skip it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPV6_ADDRESS_PREFIX = 64
IPV6_SUBNET_PREFIX = 48
IPV4_SUBNET_PREFIX = 24


@lru_cache(maxsize=65_536)
def address_key(address: str) -> str:
    """What a per-address limit counts: the IPv4 address, or the IPv6 /64 (as `net/64`)."""
    return _grouped(address, 32, IPV6_ADDRESS_PREFIX)


@lru_cache(maxsize=65_536)
def subnet_key(address: str) -> str:
    """What a per-subnet limit counts: the IPv4 /24 or the IPv6 /48 (as `net/len`)."""
    return _grouped(address, IPV4_SUBNET_PREFIX, IPV6_SUBNET_PREFIX)


def _grouped(address: str, v4_prefix: int, v6_prefix: int) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
    if isinstance(ip, ipaddress.IPv4Address):
        if v4_prefix == 32:
            return str(ip)
        return str(ipaddress.ip_network(f"{ip}/{v4_prefix}", strict=False))
    return str(ipaddress.ip_network(f"{ip}/{v6_prefix}", strict=False))

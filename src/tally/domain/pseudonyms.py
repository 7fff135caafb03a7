"""Voter pseudonyms and where they live: lane and voter-index bucket.

pseudonym = HMAC-SHA256(secret, len-prefixed(poll id) || len-prefixed(issuer) || len-prefixed(subject)),
truncated to 16 bytes. Length prefixes make the encoding unambiguous ("ab"+"c" != "a"+"bc").
Per-poll pseudonyms make a voter's votes unlinkable across polls; the raw subject never leaves
the gateway's memory.
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import sha256
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash

PSEUDONYM_BYTES = 16
# The voter index stores the pseudonym minus the two leading bytes that choose its bucket.
INDEX_FIELD_OFFSET = 2


def pseudonym(secret: bytes, poll_id: str, issuer: str, subject: str) -> bytes:
    poll, iss, sub = poll_id.encode(), issuer.encode(), subject.encode()
    message = b"".join((_length(poll), poll, _length(iss), iss, _length(sub), sub))
    # HMAC-SHA256 (RFC 2104) from the key's pads hashed once: once per vote (more with the
    # defences on), where hmac.digest's key set-up (an OpenSSL 3 fetch) runs on every call.
    inner_pad, outer_pad = _pads(secret)
    inner = inner_pad.copy()
    inner.update(message)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.digest()[:PSEUDONYM_BYTES]


@lru_cache(maxsize=16)  # a process knows one pseudonym secret (tests make a few)
def _pads(secret: bytes) -> tuple[_Hash, _Hash]:
    """SHA-256 states after HMAC's inner and outer key blocks."""
    block = (sha256(secret).digest() if len(secret) > 64 else secret).ljust(64, b"\0")
    return sha256(bytes(b ^ 0x36 for b in block)), sha256(bytes(b ^ 0x5C for b in block))


def _length(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big")


def lane_of(pseudonym: bytes, lanes: int) -> int:
    """pseudonym mod lanes (lanes is a power of two, so: the low bits of the last bytes)."""
    return int.from_bytes(pseudonym[-4:], "big") & (lanes - 1)


def bucket_of(pseudonym: bytes, bucket_bits: int) -> int:
    """The voter-index bucket inside the lane: the top `bucket_bits` bits of the pseudonym."""
    return int.from_bytes(pseudonym[:INDEX_FIELD_OFFSET], "big") >> (16 - bucket_bits)


def index_field(pseudonym: bytes) -> bytes:
    return pseudonym[INDEX_FIELD_OFFSET:]

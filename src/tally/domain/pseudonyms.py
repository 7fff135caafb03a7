"""Voter pseudonyms and where they live: lane and voter-index bucket.

pseudonym = HMAC-SHA256(secret, len-prefixed(poll id) || len-prefixed(issuer) || len-prefixed(subject)),
truncated to 16 bytes. Length prefixes make the encoding unambiguous ("ab"+"c" != "a"+"bc").
Per-poll pseudonyms make a voter's votes unlinkable across polls; the raw subject never leaves
the gateway's memory.
"""

from __future__ import annotations

import hmac
from hashlib import sha256

PSEUDONYM_BYTES = 16
# The voter index stores the pseudonym minus the two leading bytes that choose its bucket.
INDEX_FIELD_OFFSET = 2


def pseudonym(secret: bytes, poll_id: str, issuer: str, subject: str) -> bytes:
    message = b"".join(_framed(part.encode()) for part in (poll_id, issuer, subject))
    return hmac.digest(secret, message, sha256)[:PSEUDONYM_BYTES]


def lane_of(pseudonym: bytes, lanes: int) -> int:
    """pseudonym mod lanes (lanes is a power of two, so: the low bits of the last bytes)."""
    return int.from_bytes(pseudonym[-4:], "big") & (lanes - 1)


def bucket_of(pseudonym: bytes, bucket_bits: int) -> int:
    """The voter-index bucket inside the lane: the top `bucket_bits` bits of the pseudonym."""
    return int.from_bytes(pseudonym[:INDEX_FIELD_OFFSET], "big") >> (16 - bucket_bits)


def index_field(pseudonym: bytes) -> bytes:
    return pseudonym[INDEX_FIELD_OFFSET:]


def _framed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data

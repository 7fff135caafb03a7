"""pseudonym() computes HMAC-SHA256 from the secret's key pads hashed once (a cache per
secret): the same bytes as the standard library's HMAC for any secret length, the long ones
(hashed first, RFC 2104) and several secrets in turn included."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from tally.domain.pseudonyms import pseudonym


def standard(secret: bytes, poll_id: str, issuer: str, subject: str) -> bytes:
    parts = [part.encode() for part in (poll_id, issuer, subject)]
    message = b"".join(len(part).to_bytes(4, "big") + part for part in parts)
    return hmac.new(secret, message, hashlib.sha256).digest()[:16]


@given(
    st.lists(st.binary(max_size=130), min_size=1, max_size=20),
    st.text(max_size=12),
    st.text(max_size=12),
    st.text(max_size=12),
)
def test_pseudonym_is_hmac_sha256_for_any_secret(
    secrets: list[bytes], poll_id: str, issuer: str, subject: str
) -> None:
    for secret in secrets:  # more secrets than the cache holds, in turn
        assert pseudonym(secret, poll_id, issuer, subject) == standard(
            secret, poll_id, issuer, subject
        )

"""What a vote's credential check costs: a Tally voting session (security/sessions.py) against an
RS256 bearer JWT (security/tokens.py), each uncached as on a voter's first vote, and a session
again from the verifier's cache (a voter's retries and WebSocket votes).

Run: `.venv/bin/python benchmarks/session_check.py` (a few seconds). Best of 9 rounds of 2000
checks each, so load from other processes inflates the figures less; compare the lines with each
other, from one run.
"""

from __future__ import annotations

import time
import timeit

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tally.security.jwks import KeySet, verification_key
from tally.security.sessions import SessionKeys, Sessions
from tally.security.tokens import TokenVerifier

ROUNDS, CHECKS = 9, 2000


def main() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = KeySet([verification_key("rs", private.public_key())])
    verifier = TokenVerifier(keys, issuer="iss", audience="tally", cache_size=0)
    now = int(time.time())
    claims = {"iss": "iss", "aud": "tally", "sub": "hal", "iat": now, "exp": now + 600}
    token = pyjwt.encode(claims, private, algorithm="RS256", headers={"kid": "rs"})
    # A realistic issuer and subject (a Keycloak realm and a UUID), as sign-in mints them.
    issuer, subject = "https://id.example/realms/tally", "0f8c2a9e-5b1d-4c77-9a3e-2d4b6f8a1c3e"
    uncached = Sessions(SessionKeys({"k1": b"a" * 32}), cache_size=0)
    session, _ = uncached.mint(issuer, subject, ())
    cached = Sessions(SessionKeys({"k1": b"a" * 32}))
    cached.verify(session)
    for name, check in [
        ("RS256 JWT, uncached", lambda: verifier.verify(token)),
        ("session, uncached", lambda: uncached.verify(session)),
        ("session, cached", lambda: cached.verify(session)),
    ]:
        best = min(timeit.repeat(check, number=CHECKS, repeat=ROUNDS)) / CHECKS
        print(f"{name:22} {best * 1e6:7.2f} us")
    print(f"session credential: {len(session)} characters; the JWT: {len(token)}")


if __name__ == "__main__":
    main()

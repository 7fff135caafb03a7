"""Voting session credentials (security/sessions.py): what they carry, and every way they fail."""

from __future__ import annotations

import base64
import hmac
import stat
import time
import timeit
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tally.gateway.auth import Authenticator
from tally.gateway.problems import Problem
from tally.security.dev_issuer import DevIssuer
from tally.security.jwks import KeySet, verification_key
from tally.security.sessions import (
    SessionKeys,
    Sessions,
    is_session,
    parse_env_keys,
    session_key_file,
)
from tally.security.tokens import TokenError, TokenVerifier


def _key(fill: bytes) -> str:
    return base64.urlsafe_b64encode(fill * 32).rstrip(b"=").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_carries_the_voter_and_roles() -> None:
    sessions = Sessions(SessionKeys({"k1": b"a" * 32}), ttl_s=600)
    token, minted = sessions.mint("https://id.example", "alice", {"admin"})
    assert is_session(token)
    assert token.startswith("tsv1.k1.")
    principal = sessions.verify(token)
    assert principal == minted
    assert (principal.issuer, principal.subject) == ("https://id.example", "alice")
    assert principal.roles == {"admin", "voter"}
    assert principal.is_admin
    assert principal.issued_at is not None
    assert principal.expires_at - principal.issued_at == 600


def test_the_mac_is_plain_hmac_sha256_of_the_text_before_it() -> None:
    """Anyone holding the key can check a session with a stock HMAC: nothing Tally-specific."""
    key = bytes(range(32))
    token, _ = Sessions(SessionKeys({"k7": key})).mint("https://id.example", "ivy", ())
    signed, _, mac = token.rpartition(".")
    expected = hmac.digest(key, signed.encode(), "sha256")
    assert base64.urlsafe_b64decode(mac + "=") == expected


def test_a_subject_with_any_printable_text_round_trips() -> None:
    """The payload is split, not parsed: dots, commas and non-ASCII in a subject survive."""
    sessions = Sessions(SessionKeys({"k1": b"a" * 32}), cache_size=0)
    token, _ = sessions.mint("https://id.example/realms/a.b", "Groß,user.1|x", ())
    principal = sessions.verify(token)
    assert principal.subject == "Groß,user.1|x"
    assert principal.roles == {"voter"}


@pytest.mark.parametrize("subject", ["", "a\x1fb", "line\nbreak", "x" * 257])
def test_a_subject_that_cannot_be_carried_is_refused_at_minting(subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        Sessions(SessionKeys({"k1": b"a" * 32})).mint("iss", subject, ())


def test_expired_sessions_are_refused_even_from_the_cache() -> None:
    clock = Clock()
    sessions = Sessions(SessionKeys({"k1": b"a" * 32}), ttl_s=60, leeway_s=5, clock=clock)
    token, _ = sessions.mint("iss", "bob", ())
    sessions.verify(token)  # cached now
    clock.now += 64
    sessions.verify(token)  # within the leeway
    clock.now += 2
    with pytest.raises(TokenError) as refused:
        sessions.verify(token)
    assert refused.value.code == "token-expired"
    fresh = Sessions(SessionKeys({"k1": b"a" * 32}), ttl_s=60, leeway_s=5, clock=clock)
    with pytest.raises(TokenError) as uncached:
        fresh.verify(token)
    assert uncached.value.code == "token-expired"


def test_forged_sessions_are_refused() -> None:
    sessions = Sessions(SessionKeys({"k1": b"a" * 32}), cache_size=0)
    token, _ = sessions.mint("iss", "carol", ())
    prefix, key_id, payload, mac = token.split(".")
    # Another payload (admin roles) under the old MAC.
    other, _ = sessions.mint("iss", "carol", {"admin"})
    forged = ".".join([prefix, key_id, other.split(".")[2], mac])
    # The same layout made with a key the server does not have.
    outsider, _ = Sessions(SessionKeys({"k1": b"b" * 32})).mint("iss", "carol", {"admin"})
    for bad, code in [
        (forged, "token-signature"),
        (outsider, "token-signature"),
        (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "token-signature"),
        (f"tsv1.k9.{payload}.{mac}", "token-unknown-key"),
        (f"tsv1.k1.{payload}", "token-malformed"),
        ("tsv1.k1.a+b.c", "token-malformed"),
        ("tsv1." + "a" * 3000, "token-malformed"),
    ]:
        with pytest.raises(TokenError) as refused:
            sessions.verify(bad)
        assert refused.value.code == code, bad


def test_rotation_accepts_the_previous_key_and_signs_with_the_new() -> None:
    old = Sessions(SessionKeys.from_env(f"k1:{_key(b'a')}"))
    token, _ = old.mint("iss", "dave", ())
    rotated = Sessions(SessionKeys.from_env(f"k2:{_key(b'c')},k1:{_key(b'a')}"))
    assert rotated.verify(token).subject == "dave"
    assert rotated.mint("iss", "erin", ())[0].startswith("tsv1.k2.")
    dropped = Sessions(SessionKeys.from_env(f"k2:{_key(b'c')}"))
    with pytest.raises(TokenError) as refused:
        dropped.verify(token)
    assert refused.value.code == "token-unknown-key"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nokey", "entry 1"),
        ("k1:" + _key(b"a") + ",k 2:" + _key(b"b"), "entry 2"),
        ("k1:!!", "not base64url"),
        ("k1:" + _key(b"a")[:20], "not 32"),
        ("k1:" + _key(b"a") + ",k1:" + _key(b"b"), "twice"),
        (" , ", "names no key"),
    ],
)
def test_bad_env_keys_say_what_is_wrong_without_the_key(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_env_keys(raw)
    assert _key(b"a") not in str(refused.value)


def test_the_key_file_is_made_once_private_and_shared(tmp_path: Path) -> None:
    first = Sessions(SessionKeys.load_or_create(tmp_path))
    token, _ = first.mint("iss", "fay", ())
    path = session_key_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = Sessions(SessionKeys.load_or_create(tmp_path))  # another gateway, same data dir
    assert second.verify(token).subject == "fay"
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="base64url 32-byte key"):
        SessionKeys.load_or_create(tmp_path)


def test_the_authenticator_takes_sessions_and_bearer_jwts(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path / "keys")
    verifier = TokenVerifier(issuer.key_set(), issuer="tally-dev", audience="tally")
    sessions = Sessions(SessionKeys({"k1": b"a" * 32}))
    auth = Authenticator(verifier, sessions)
    session, _ = sessions.mint("tally-dev", "gus", ())
    jwt = issuer.mint("gus", ttl_s=600)
    by_session = auth.principal(f"Bearer {session}")
    by_jwt = auth.principal(f"Bearer {jwt}")
    # The same voter either way: the pseudonym (and one vote per voter) cannot tell them apart.
    assert (by_session.issuer, by_session.subject) == (by_jwt.issuer, by_jwt.subject)
    with pytest.raises(Problem) as refused:
        auth.principal(f"Bearer {session[:-3]}")
    assert refused.value.status == 401
    assert refused.value.extensions["reason"] in (
        "token-signature",
        "token-malformed",
    )


def test_a_session_check_costs_a_fraction_of_an_rs256_check() -> None:
    """The point of sessions: a vote's credential check is an HMAC, not an RS256 signature
    check. Both measured here, best of five rounds each (the machine may be busy), uncached."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = KeySet([verification_key("rs", private.public_key())])
    verifier = TokenVerifier(keys, issuer="iss", audience="tally", cache_size=0)
    now = int(time.time())
    claims = {"iss": "iss", "aud": "tally", "sub": "hal", "iat": now, "exp": now + 600}
    jwt = pyjwt.encode(claims, private, algorithm="RS256", headers={"kid": "rs"})
    sessions = Sessions(SessionKeys({"k1": b"a" * 32}), cache_size=0)
    session, _ = sessions.mint("iss", "hal", ())
    assert verifier.verify(jwt).subject == sessions.verify(session).subject
    rs256 = min(timeit.repeat(lambda: verifier.verify(jwt), number=300, repeat=5)) / 300
    hmac_check = min(timeit.repeat(lambda: sessions.verify(session), number=300, repeat=5)) / 300
    assert hmac_check * 3 < rs256, (hmac_check, rs256)  # ~2 us against ~30 us when idle

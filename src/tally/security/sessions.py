"""Tally voting sessions: the short-lived credential a voter holds after signing in.

Signing in (gateway/signin.py) checks the identity provider's ID token once, with its asymmetric
signature, and exchanges it for a session credential signed with HMAC-SHA256 under a server key.
Every vote after that costs one HMAC (about a microsecond), not an RS256 check (~40 % of a vote's
CPU with bearer JWTs), so a burst of votes when a poll opens does not pay for the sign-in again.

A credential is sent exactly like a bearer JWT (`Authorization: Bearer <credential>`) and is told
apart by its prefix:

    tsv1.<key id>.<payload>.<mac>

- key id: which server key made the MAC ([A-Za-z0-9_-]{1,16}); keys rotate by adding a new first
  key to TALLY_SESSION_KEYS and keeping the old one listed until its sessions have expired;
- payload: base64url (no padding) of `iss`, `sub`, roles (comma separated), `iat`, `exp` joined by
  the unit separator 0x1F: a split, not a JSON parse, on the first use of a credential;
- mac: base64url HMAC-SHA256(key, "tsv1.<key id>.<payload>"), compared in constant time.

The principal is the ID token's issuer and subject, exactly as a bearer JWT from that provider
gives them, so a voter's pseudonym (and the one-vote-per-voter rule) is the same whichever way they
signed in. Errors reuse TokenError and its stable codes, so a bad session gets the same 401
problem as a bad JWT.

The server key: TALLY_SESSION_KEYS (`<id>:<base64url 32-byte key>,...`, the first signs, every one
verifies; all gateways of a deployment must share it), or else `data/keys/session.key`, made once
by keys.read_or_create (0600), which the gateways sharing a data dir share.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

from tally.security.jwks import b64url_decode, b64url_encode
from tally.security.keys import keys_dir, parse_key_ring, read_or_create
from tally.security.tokens import MAX_SUBJECT_CHARS, Principal, TokenError

__all__ = [
    "PREFIX",
    "SessionKeys",
    "Sessions",
    "is_session",
    "parse_env_keys",
    "session_key_file",
]

PREFIX: Final = "tsv1."
KEY_BYTES: Final = 32
DEFAULT_TTL_S: Final = 12 * 3600
MAX_CREDENTIAL_CHARS: Final = 2048
MAX_ISSUER_CHARS: Final = 512
KNOWN_ROLES: Final = frozenset({"voter", "reviewer", "admin"})
_SEPARATOR: Final = "\x1f"
_KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,16}")
_B64: Final = re.compile(r"[A-Za-z0-9_-]+")
_CREDENTIAL: Final = re.compile(
    r"tsv1\.([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})"
)
# Text that could break the field split or a log line is refused when a session is made.
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f]")


def is_session(credential: str) -> bool:
    """Whether a bearer credential is a Tally session (not a JWT, which starts with `ey`)."""
    return credential.startswith(PREFIX)


def session_key_file(data_dir: Path) -> Path:
    return keys_dir(data_dir) / "session.key"


def parse_env_keys(raw: str) -> dict[str, bytes]:
    """TALLY_SESSION_KEYS: `<id>:<base64url 32-byte key>` entries separated by commas, the first
    signing; ValueError naming the entry at fault (never the key)."""
    keys = parse_key_ring(
        raw,
        key_id=lambda text: text if _KEY_ID.fullmatch(text) else None,
        id_rule="an id of 1-16 letters, digits, '-' or '_'",
        decode=_b64decode,
        key_bytes=KEY_BYTES,
        skip_empty=True,
    )
    if not keys:
        raise ValueError("names no key")
    return keys


class SessionKeys:
    """The server keys: the first signs new sessions, every one verifies (rotation)."""

    __slots__ = ("current", "keys")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is needed")
        self.keys: dict[str, bytes] = dict(keys)
        self.current: str = next(iter(self.keys))

    @classmethod
    def from_env(cls, raw: str) -> SessionKeys:
        return cls(parse_env_keys(raw))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SessionKeys:
        """The data dir's key file, made on first use; its id is derived from the key, so every
        gateway reading the file agrees on it and a rotated file gets a new id."""
        path = session_key_file(data_dir)
        try:
            secret = _b64decode(read_or_create(path, _generate).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            secret = b""
        if len(secret) != KEY_BYTES:
            raise ValueError(f"{path} does not hold a base64url {KEY_BYTES}-byte key")
        return cls({_derived_id(secret): secret})


class Sessions:
    """Makes and checks session credentials under one key ring.

    Checked credentials are cached by their exact text (a voter resends the same one on every
    vote and on the WebSocket); a hit re-checks expiry only. Refusals are never cached. Meant for
    one event loop thread, like TokenVerifier's cache."""

    __slots__ = ("_cache", "_cache_size", "_clock", "_keys", "_leeway", "_macs", "ttl_s")

    def __init__(
        self,
        keys: SessionKeys,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        leeway_s: int = 30,
        cache_size: int = 65536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0 or leeway_s < 0 or cache_size < 0:
            raise ValueError("ttl_s must be positive, leeway_s and cache_size not negative")
        self._keys = keys
        self._macs = {key_id: _Mac(key) for key_id, key in keys.keys.items()}
        self.ttl_s = ttl_s
        self._leeway = leeway_s
        self._cache_size = cache_size
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    @property
    def state_key(self) -> bytes:
        """The current key, for sealing sign-ins in flight (oidc.StateSeal derives its own)."""
        return self._keys.keys[self._keys.current]

    def mint(self, issuer: str, subject: str, roles: Iterable[str]) -> tuple[str, Principal]:
        """A new credential for the voter `issuer`/`subject`, living `ttl_s`; and its principal."""
        role_set = frozenset(roles) | {"voter"}
        if not 0 < len(issuer) <= MAX_ISSUER_CHARS or _UNSAFE.search(issuer):
            raise ValueError(f"issuer must be 1..{MAX_ISSUER_CHARS} printable chars")
        if not 0 < len(subject) <= MAX_SUBJECT_CHARS or _UNSAFE.search(subject):
            raise ValueError(f"subject must be 1..{MAX_SUBJECT_CHARS} printable chars")
        if not role_set <= KNOWN_ROLES:
            raise ValueError(f"roles must be among {sorted(KNOWN_ROLES)}")
        now = int(self._clock())
        expires = now + self.ttl_s
        fields = (issuer, subject, ",".join(sorted(role_set)), str(now), str(expires))
        payload = _b64encode(_SEPARATOR.join(fields).encode("utf-8"))
        key_id = self._keys.current
        signed = f"{PREFIX}{key_id}.{payload}"
        credential = f"{signed}.{self._macs[key_id].of(signed)}"
        return credential, Principal(issuer, subject, role_set, expires, now)

    def verify(self, credential: str) -> Principal:
        """The principal a credential speaks for; TokenError saying why it is refused."""
        cached = self._cache.get(credential)
        if cached is not None:
            deadline, principal = cached
            if self._clock() < deadline:
                return principal
            self._cache.pop(credential, None)
            raise TokenError("token-expired", "session has expired")
        deadline, principal = self._verify_uncached(credential)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            self._cache[credential] = (deadline, principal)
        return principal

    def _verify_uncached(self, credential: str) -> tuple[float, Principal]:
        # One regex for the shape and alphabet: then the MAC input is ASCII, and the payload is
        # base64url that binascii decodes without another check (the vote path runs this).
        shape = (
            _CREDENTIAL.fullmatch(credential) if len(credential) <= MAX_CREDENTIAL_CHARS else None
        )
        if shape is None:
            raise TokenError("token-malformed", "a session is tsv1.<key id>.<payload>.<mac>")
        key_id, payload, mac = shape.groups()
        macs = self._macs.get(key_id)
        if macs is None:
            raise TokenError("token-unknown-key", f"no session key with id {key_id!r}")
        if not hmac.compare_digest(mac, macs.of(credential[: shape.start(3) - 1])):
            raise TokenError("token-signature", f"session MAC does not verify ({key_id})")
        try:
            fields = b64url_decode(payload).decode("utf-8").split(_SEPARATOR)
            issuer, subject, roles, iat, exp = fields
            issued_at, expires_at = int(iat), int(exp)
        except ValueError:  # only a key holder could sign such a payload; refuse it all the same
            raise TokenError("token-claims", "session payload is not five fields") from None
        if self._clock() >= expires_at + self._leeway:
            raise TokenError("token-expired", "session has expired")
        principal = Principal(issuer, subject, frozenset(roles.split(",")), expires_at, issued_at)
        return expires_at + self._leeway, principal


class _Mac:
    """HMAC-SHA256 (RFC 2104) under one key, its padded key blocks hashed once: each MAC is then
    two copies of a SHA-256 state, about half of hmac.digest's cost, whose key set-up (an
    OpenSSL 3 provider fetch) runs on every call."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0")  # keys are 32 bytes, within SHA-256's 64-byte block
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def of(self, signed: str) -> str:
        inner = self._inner.copy()
        inner.update(signed.encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return b64url_encode(outer.digest()).decode("ascii")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if _B64.fullmatch(text) is None:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _generate() -> bytes:
    return _b64encode(secrets.token_bytes(KEY_BYTES)).encode("ascii") + b"\n"


def _derived_id(key: bytes) -> str:
    """A file key's id: not secret (a hash of the key), stable across gateways and restarts."""
    return "f" + hashlib.sha256(b"tally session key id\x00" + key).hexdigest()[:11]

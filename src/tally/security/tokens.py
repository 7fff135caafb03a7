"""Bearer tokens: a lean JWT verifier for the vote path (the dev issuer is in dev_issuer.py).

Tokens are compact JWS (RFC 7515) carrying JWT claims (RFC 7519), signed with EdDSA, ES256 or
RS256. The verifier sits directly on `cryptography` and `orjson` because it runs once per vote:
a general-purpose JWT library costs about as much again as the signature check itself.

Order of checks, cheapest refusal first and claims only once the signature holds:
length cap -> cache -> shape -> header (alg, crit, kid, alg matches the key) -> signature -> claims.

TokenError.code, stable for clients and metrics:
    token-malformed      not a compact JWS, too long, or a segment is not base64url JSON
    token-algorithm      alg not in {EdDSA, ES256, RS256}, or not the algorithm of the chosen key
    token-unknown-key    kid names no key, or is missing while several keys are configured
    token-signature      the signature does not verify
    token-issuer         iss is not the configured issuer
    token-audience       aud is neither the configured audience nor a list holding it
    token-expired        now is past exp (plus leeway)
    token-not-yet-valid  nbf or iat lies in the future (beyond leeway)
    token-lifetime       exp - iat is longer than the maximum lifetime (TALLY_TOKEN_MAX_LIFETIME_S)
    token-claims         a claim is missing or has the wrong type (exp, iat, nbf, sub, roles)

**Lifetime.** A token must say when it was issued (`iat`) and when it expires (`exp`), and may
live at most `max_lifetime_s` (24 h by default). A bearer token is a credential anyone who
copies it can use until `exp`: without a cap, an identity provider misconfigured to mint year-
long tokens (or a leaked signing key used to mint one) would hand out credentials that outlive
any poll. Without `iat` the lifetime cannot be known, so such a token is refused too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

import orjson
from cryptography.exceptions import InvalidSignature

from tally.security.jwks import (
    Algorithm,
    KeySet,
    VerificationKey,
    b64url_decode,
)

__all__ = ["KeySet", "Principal", "TokenError", "TokenErrorCode", "TokenVerifier"]

TokenErrorCode: TypeAlias = Literal[
    "token-malformed",
    "token-signature",
    "token-expired",
    "token-not-yet-valid",
    "token-issuer",
    "token-audience",
    "token-unknown-key",
    "token-algorithm",
    "token-lifetime",
    "token-claims",
]

MAX_TOKEN_CHARS: Final = 8192
DEFAULT_LEEWAY_S: Final = 30  # clock skew allowed on exp, nbf and iat
DEFAULT_MAX_LIFETIME_S: Final = 86_400  # exp - iat at most (module docstring)
MAX_SUBJECT_CHARS: Final = 256
DEFAULT_ROLES: Final = frozenset({"voter"})
_MAX_KNOWN_HEADERS: Final = 64
_ALGORITHMS: Final[tuple[str, ...]] = get_args(Algorithm)
# Checking the alphabet up front means the lenient stdlib base64 decoder never sees junk, and a
# non-ASCII token is refused before any decoding. The signature may be empty so `alg: none`
# tokens reach the header check and get the precise code.
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    issuer: str
    subject: str
    roles: frozenset[str]
    expires_at: int  # unix seconds, the token's exp
    issued_at: int | None = None  # unix seconds, the token's iat if it has one

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_reviewer(self) -> bool:
        """May list held votes and release or void them: the reviewer role, or an admin."""
        return "reviewer" in self.roles or "admin" in self.roles


class TokenError(Exception):
    """Why a token was refused; `code` is stable (see the module docstring), `detail` is for logs.

    Details never quote the token, so logging them leaks no credentials.
    """

    def __init__(self, code: TokenErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: TokenErrorCode = code
        self.detail = detail


class TokenVerifier:
    """Verifies bearer tokens against one key set, issuer and audience.

    Successful verifications are cached by the exact token string (apps resend the same token on
    retries and the WebSocket); a cache hit still re-checks expiry. Refusals are never cached.
    Meant for one event loop thread: the cache is a plain dict without locking.
    """

    __slots__ = (
        "_audience",
        "_cache",
        "_cache_size",
        "_clock",
        "_header_keys",
        "_issuer",
        "_keys",
        "_leeway",
        "_max_lifetime",
    )

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        leeway_s: int = DEFAULT_LEEWAY_S,
        max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
        cache_size: int = 65536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway_s < 0 or cache_size < 0:
            raise ValueError("leeway_s and cache_size must not be negative")
        if max_lifetime_s <= 0:
            raise ValueError("max_lifetime_s must be positive")
        self._max_lifetime = max_lifetime_s
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        self._cache_size = cache_size
        self._clock = clock
        # token -> (moment it stops being accepted, principal); dicts keep insertion order.
        self._cache: dict[str, tuple[float, Principal]] = {}
        # An issuer writes the same header on every token, and what a header selects depends only
        # on the header and the (immutable) key set; remembering it skips a JSON parse per vote.
        # Only headers of correctly signed tokens are remembered, so junk cannot fill it.
        self._header_keys: dict[str, VerificationKey] = {}

    @property
    def leeway_s(self) -> int:
        return self._leeway

    @property
    def max_lifetime_s(self) -> int:
        return self._max_lifetime

    def verify(self, token: str) -> Principal:
        """The principal `token` speaks for; raises TokenError saying why it is refused."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token-malformed", f"token is longer than {MAX_TOKEN_CHARS} chars")
        cached = self._cache.get(token)
        if cached is not None:
            deadline, principal = cached
            if self._clock() < deadline:
                return principal
            self._cache.pop(token, None)
            raise TokenError("token-expired", "token has expired")
        deadline, principal = self._verify_uncached(token)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            self._cache[token] = (deadline, principal)
        return principal

    def _verify_uncached(self, token: str) -> tuple[float, Principal]:
        if _COMPACT_JWS.fullmatch(token) is None:
            raise TokenError("token-malformed", _not_a_jwt(token))
        header_segment, payload_segment, signature_segment = token.split(".")
        key = self._header_keys.get(header_segment)
        if key is None:
            key = self._key_for(_json_object(header_segment, "header"))
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
        try:
            key.check(_segment_bytes(signature_segment, "signature"), signing_input)
        except InvalidSignature:
            raise TokenError("token-signature", f"signature does not verify ({key.kid})") from None
        if len(self._header_keys) < _MAX_KNOWN_HEADERS:
            self._header_keys[header_segment] = key
        return self._principal(_json_object(payload_segment, "payload"))

    def _key_for(self, header: Mapping[str, object]) -> VerificationKey:
        alg = header.get("alg")
        # Tuple membership compares with ==, so an unhashable alg (a list) is refused, not a crash.
        if alg not in _ALGORITHMS:
            raise TokenError("token-algorithm", f"alg {_brief(alg)} is not accepted")
        if "crit" in header:
            # RFC 7515 section 4.1.11: extensions we do not understand must be refused.
            raise TokenError("token-malformed", "critical header extensions are not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("token-malformed", "kid must be a string")
        key = self._keys.resolve(kid)
        if key is None:
            if kid is None:
                raise TokenError("token-unknown-key", f"no kid, and {len(self._keys)} keys to pick")
            raise TokenError("token-unknown-key", f"no key with kid {_brief(kid)}")
        if key.alg != alg:
            raise TokenError("token-algorithm", f"key {key.kid!r} verifies {key.alg}, not {alg}")
        return key

    def _principal(self, claims: Mapping[str, object]) -> tuple[float, Principal]:
        """Checks the claims; returns when the token stops being accepted, and its principal."""
        if claims.get("iss") != self._issuer:
            raise TokenError("token-issuer", f"issuer is not {self._issuer!r}")
        aud = claims.get("aud")
        if aud != self._audience and not (isinstance(aud, list) and self._audience in aud):
            raise TokenError("token-audience", f"audience does not include {self._audience!r}")
        now, leeway = self._clock(), self._leeway
        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise TokenError("token-claims", "exp is required")
        iat = _numeric_date(claims, "iat")
        if iat is None:
            raise TokenError(
                "token-claims",
                f"iat is required: a token must say when it was issued, so that its lifetime "
                f"(at most {self._max_lifetime} s) can be checked",
            )
        if now >= exp + leeway:
            raise TokenError("token-expired", "token has expired")
        for name, moment in (("nbf", _numeric_date(claims, "nbf")), ("iat", iat)):
            if moment is not None and moment > now + leeway:
                raise TokenError("token-not-yet-valid", f"{name} is in the future")
        if exp - iat > self._max_lifetime:
            raise TokenError(
                "token-lifetime",
                f"the token lives {exp - iat:g} s (exp - iat), more than the "
                f"{self._max_lifetime} s allowed",
            )
        principal = Principal(self._issuer, _subject(claims), _roles(claims), int(exp), int(iat))
        return exp + leeway, principal


def _not_a_jwt(token: str) -> str:
    """Why `token` is not even shaped like a JWT, in words a person pasting one understands."""
    shape = "a JWT is three base64url parts joined by dots: header.payload.signature"
    if not token.strip():
        return f"not a JWT: the token is empty ({shape})"
    if token.startswith(("Bearer ", "bearer ")):
        return "not a JWT: give the token without its 'Bearer ' prefix"
    dots = token.count(".")
    if dots != 2:
        return f"not a JWT: {dots + 1} part{'s' if dots else ''}, not 3 ({shape})"
    return f"not a JWT: a part holds characters outside base64url ({shape})"


def _segment_bytes(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError:
        raise TokenError("token-malformed", f"not a JWT: its {what} is not base64url") from None


def _json_object(segment: str, what: str) -> dict[str, object]:
    try:
        value: object = orjson.loads(_segment_bytes(segment, what))
    except orjson.JSONDecodeError:
        raise TokenError("token-malformed", f"not a JWT: its {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("token-malformed", f"not a JWT: its {what} is not a JSON object")
    return value


def _numeric_date(claims: Mapping[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is a subclass of int, but `true` is not a moment in time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("token-claims", f"{name} must be a number")
    return value


def _subject(claims: Mapping[str, object]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUBJECT_CHARS:
        raise TokenError("token-claims", f"sub must be a string of 1..{MAX_SUBJECT_CHARS} chars")
    return sub


def _roles(claims: Mapping[str, object]) -> frozenset[str]:
    roles = claims.get("roles")
    if roles is None:
        return DEFAULT_ROLES
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise TokenError("token-claims", "roles must be a list of strings")
    return frozenset(roles)


def _brief(value: object) -> str:
    # Header values are attacker-chosen; keep them from flooding the logs.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

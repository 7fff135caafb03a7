"""Bearer tokens: a lean JWT verifier for the vote path, and the local dev identity provider.

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
    token-claims         a claim is missing or has the wrong type (exp, nbf, iat, sub, roles)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias, get_args

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tally.security.jwks import (
    Algorithm,
    KeySet,
    VerificationKey,
    b64url_decode,
    b64url_encode,
    public_jwk,
    verification_key,
)

__all__ = ["DevIssuer", "KeySet", "Principal", "TokenError", "TokenErrorCode", "TokenVerifier"]

TokenErrorCode: TypeAlias = Literal[
    "token-malformed",
    "token-signature",
    "token-expired",
    "token-not-yet-valid",
    "token-issuer",
    "token-audience",
    "token-unknown-key",
    "token-algorithm",
    "token-claims",
]

MAX_TOKEN_CHARS: Final = 8192
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

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


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
    )

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        leeway_s: int = 30,
        cache_size: int = 65536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway_s < 0 or cache_size < 0:
            raise ValueError("leeway_s and cache_size must not be negative")
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
            dots = token.count(".")
            detail = f"{dots + 1} segments, not 3" if dots != 2 else "not base64url segments"
            raise TokenError("token-malformed", detail)
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
        if now >= exp + leeway:
            raise TokenError("token-expired", "token has expired")
        for name in ("nbf", "iat"):
            moment = _numeric_date(claims, name)
            if moment is not None and moment > now + leeway:
                raise TokenError("token-not-yet-valid", f"{name} is in the future")
        principal = Principal(self._issuer, _subject(claims), _roles(claims), int(exp))
        return exp + leeway, principal


def _segment_bytes(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError:
        raise TokenError("token-malformed", f"{what} is not base64url") from None


def _json_object(segment: str, what: str) -> dict[str, object]:
    try:
        value: object = orjson.loads(_segment_bytes(segment, what))
    except orjson.JSONDecodeError:
        raise TokenError("token-malformed", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("token-malformed", f"{what} is not a JSON object")
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


DevPrivateKey: TypeAlias = (
    ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
)
# kid and algorithm of each dev key; the kid doubles as the PEM file's name.
_DEV_KEYS: Final[tuple[tuple[str, Algorithm], ...]] = (
    ("dev-ed25519", "EdDSA"),
    ("dev-rs256", "RS256"),
    ("dev-es256", "ES256"),
)


@dataclass(frozen=True, slots=True)
class _Signer:
    header: bytes  # encoded header segment plus its dot: identical for every token of this key
    sign: Callable[[bytes], bytes]

    def token(self, claims: Mapping[str, object]) -> str:
        signing_input = self.header + b64url_encode(orjson.dumps(claims))
        return (signing_input + b"." + b64url_encode(self.sign(signing_input))).decode("ascii")


class DevIssuer:
    """The local identity provider for embedded mode and tests: a key pair per algorithm kept in
    a directory (PKCS8 PEM, 0600) next to the public `jwks.json`."""

    __slots__ = ("_directory", "_key_set", "_signers", "audience", "issuer")

    def __init__(
        self, directory: Path, keys: Mapping[str, DevPrivateKey], *, issuer: str, audience: str
    ) -> None:
        """Use `load_or_create`; this wires keys already loaded (kid -> private key)."""
        self.issuer = issuer
        self.audience = audience
        self._directory = directory
        pinned = {kid: verification_key(kid, key.public_key()) for kid, key in keys.items()}
        self._key_set = KeySet(pinned.values())
        self._signers: dict[str, _Signer] = {
            pinned[kid].alg: _Signer(_header(pinned[kid].alg, kid), _sign_function(key))
            for kid, key in keys.items()
        }

    @classmethod
    def load_or_create(
        cls, directory: Path, *, issuer: str = "tally-dev", audience: str = "tally"
    ) -> DevIssuer:
        """Loads the dev keys kept in `directory`, creating the directory and missing keys."""
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = {kid: _load_or_create_key(directory / f"{kid}.pem", alg) for kid, alg in _DEV_KEYS}
        jwks = {"keys": [public_jwk(kid, key.public_key()) for kid, key in keys.items()]}
        dev = cls(directory, keys, issuer=issuer, audience=audience)
        _replace_if_changed(dev.jwks_path, orjson.dumps(jwks, option=orjson.OPT_INDENT_2))
        return dev

    @property
    def jwks_path(self) -> Path:
        return self._directory / "jwks.json"

    def key_set(self) -> KeySet:
        return self._key_set

    def mint(
        self,
        subject: str,
        *,
        roles: Iterable[str] = ("voter",),
        ttl_s: int = 3600,
        alg: str = "EdDSA",
        now: float | None = None,
    ) -> str:
        """A signed token for `subject`, issued at `now` (default: the current time)."""
        signer, role_list = self._signer(alg, ttl_s), _role_list(roles)
        issued = int(time.time() if now is None else now)
        return signer.token(self._claims(subject, role_list, issued, ttl_s))

    def mint_many(
        self,
        subjects: Iterable[str],
        *,
        roles: Iterable[str] = ("voter",),
        ttl_s: int = 3600,
        alg: str = "EdDSA",
    ) -> Iterator[str]:
        """Lazily mints a token per subject; arguments are checked now, not at the first next()."""
        signer, role_list = self._signer(alg, ttl_s), _role_list(roles)
        return (
            signer.token(self._claims(subject, role_list, int(time.time()), ttl_s))
            for subject in subjects
        )

    def _signer(self, alg: str, ttl_s: int) -> _Signer:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        signer = self._signers.get(alg)
        if signer is None:
            raise ValueError(f"alg must be one of {sorted(self._signers)}, not {alg!r}")
        return signer

    def _claims(self, subject: str, roles: list[str], issued: int, ttl_s: int) -> dict[str, object]:
        if not 0 < len(subject) <= MAX_SUBJECT_CHARS:
            raise ValueError(f"subject must have 1..{MAX_SUBJECT_CHARS} chars")
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "roles": roles,
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": secrets.token_urlsafe(9),
        }


def _role_list(roles: Iterable[str]) -> list[str]:
    if isinstance(roles, str):  # a str is an Iterable[str]; "admin" must not become 5 roles
        raise ValueError("roles is a collection of role names, not a single string")
    return sorted(set(roles))


def _header(alg: Algorithm, kid: str) -> bytes:
    return b64url_encode(orjson.dumps({"alg": alg, "kid": kid, "typ": "JWT"})) + b"."


def _sign_function(key: DevPrivateKey) -> Callable[[bytes], bytes]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def sign_es256(signing_input: bytes) -> bytes:
            # cryptography returns DER; JWS wants fixed-width r||s (RFC 7518 section 3.4).
            r, s = decode_dss_signature(key.sign(signing_input, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign_es256
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def sign_rs256(signing_input: bytes) -> bytes:
        return key.sign(signing_input, pkcs1, sha256)

    return sign_rs256


def _generate(alg: Algorithm) -> DevPrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _load_or_create_key(path: Path, alg: Algorithm) -> DevPrivateKey:
    if not path.exists():
        pem = _generate(alg).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _create_exclusive(path, pem)
    # Read back even after creating: a process racing us may have won, and its key is the one.
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if (
        not isinstance(key, DevPrivateKey)
        or verification_key(path.name, key.public_key()).alg != alg
    ):
        raise ValueError(f"{path} does not hold a usable {alg} private key")
    return key


def _create_exclusive(path: Path, data: bytes) -> None:
    """Writes a 0600 file at `path` unless one appears first; never leaves a half-written file."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            os.fsync(file.fileno())
        # A hard link never replaces an existing file, so racing first starts agree on one key.
        with contextlib.suppress(FileExistsError):
            path.hardlink_to(temporary)
    finally:
        temporary.unlink(missing_ok=True)


def _replace_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return  # keeps a read-only key directory usable after the first start
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)

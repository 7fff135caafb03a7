"""Public verification keys: JWK documents (RFC 7517, 7518, 8037) in, signature checks out.

Each key is pinned to exactly one JWS algorithm by its type (OKP/Ed25519 -> EdDSA, EC/P-256 ->
ES256, RSA -> RS256). A token's header can therefore only *choose* a key, never decide how that key
is used: this, plus the header check in `tokens.py`, is the algorithm-confusion defence.

The checks are built once per key so the vote path pays only for the signature arithmetic.
"""

from __future__ import annotations

import base64
import binascii
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias, assert_never

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

Algorithm: TypeAlias = Literal["EdDSA", "ES256", "RS256"]
PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
SignatureCheck: TypeAlias = Callable[[bytes, bytes], None]
"""`check(signature, signing_input)` returns if they match and raises `InvalidSignature` if not."""

MIN_RSA_BITS: Final = 2048
ES256_SIGNATURE_BYTES: Final = 64
# A key set is a few kilobytes; the cap keeps a misconfigured URL from filling memory.
_MAX_DOCUMENT_BYTES: Final = 1 << 20
# Members that only a private (or symmetric) JWK has: publishing one is a leak, not a key set.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


_URLSAFE_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")


def b64url_encode(data: bytes) -> bytes:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(text: str) -> bytes:
    """Decodes unpadded base64url; ValueError (binascii.Error) on a length no encoder makes."""
    # binascii directly: urlsafe_b64decode's argument juggling is a third of its cost, and this
    # runs three times per verified token.
    padding = b"=" * (-len(text) % 4)
    return binascii.a2b_base64(text.encode("ascii").translate(_URLSAFE_TO_STANDARD) + padding)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key, the only algorithm it may verify, and its precomputed check."""

    kid: str
    alg: Algorithm
    check: SignatureCheck


def verification_key(kid: str, key: PublicKey) -> VerificationKey:
    """Pins `key` to the algorithm its type implies and builds its signature check."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return VerificationKey(kid, "EdDSA", key.verify)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"key {kid!r}: EC keys must be on P-256, not {key.curve.name}")
        return VerificationKey(kid, "ES256", _es256_check(key))
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"key {kid!r}: RSA key has {key.key_size} bits, {MIN_RSA_BITS} needed")
        return VerificationKey(kid, "RS256", _rs256_check(key))
    assert_never(key)


def _es256_check(key: ec.EllipticCurvePublicKey) -> SignatureCheck:
    ecdsa = ec.ECDSA(hashes.SHA256())

    def check(signature: bytes, signing_input: bytes) -> None:
        # JWS carries ECDSA as fixed-width r||s (RFC 7518 section 3.4); cryptography wants DER.
        if len(signature) != ES256_SIGNATURE_BYTES:
            raise InvalidSignature
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, ecdsa)

    return check


def _rs256_check(key: rsa.RSAPublicKey) -> SignatureCheck:
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def check(signature: bytes, signing_input: bytes) -> None:
        key.verify(signature, signing_input, pkcs1, sha256)

    return check


def public_jwk(kid: str, key: PublicKey) -> dict[str, str]:
    """The public JWK for `key`, marked for signatures with its one algorithm."""
    pinned = verification_key(kid, key)  # also refuses curves and sizes we would not accept
    members: dict[str, str]
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        members = {"kty": "OKP", "crv": "Ed25519", "x": _b64_text(raw)}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        x, y = point.x.to_bytes(32, "big"), point.y.to_bytes(32, "big")
        members = {"kty": "EC", "crv": "P-256", "x": _b64_text(x), "y": _b64_text(y)}
    else:
        numbers = key.public_numbers()
        members = {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}
    return members | {"kid": kid, "alg": pinned.alg, "use": "sig"}


def _b64_text(data: bytes) -> str:
    return b64url_encode(data).decode("ascii")


def _b64_uint(value: int) -> str:
    # RFC 7518 section 2: Base64urlUInt is the shortest big-endian form.
    return _b64_text(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def parse_jwk(jwk: Mapping[str, object]) -> VerificationKey:
    """One JWK -> a pinned verification key; ValueError says what is unacceptable about it."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("every key needs a non-empty string kid")
    leaked = _PRIVATE_MEMBERS.intersection(jwk)
    if leaked:
        raise ValueError(f"key {kid!r} holds private members {sorted(leaked)}; publish public keys")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"key {kid!r} is for use {jwk.get('use')!r}, not signatures")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError(f"key {kid!r} has key_ops {key_ops!r} without 'verify'")
    try:
        pinned = verification_key(kid, _public_key(jwk))
    except ValueError as error:
        raise ValueError(f"key {kid!r}: {error}") from error
    declared = jwk.get("alg", pinned.alg)
    if declared != pinned.alg:
        raise ValueError(
            f"key {kid!r} declares alg {declared!r}, its type only allows {pinned.alg}"
        )
    return pinned


def _public_key(jwk: Mapping[str, object]) -> PublicKey:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP":
        if crv != "Ed25519":
            raise ValueError(f"unsupported OKP curve {crv!r}; only Ed25519 is accepted")
        return ed25519.Ed25519PublicKey.from_public_bytes(_b64_member(jwk, "x"))
    if kty == "EC":
        if crv != "P-256":
            raise ValueError(f"unsupported EC curve {crv!r}; only P-256 is accepted")
        x, y = _b64_member(jwk, "x"), _b64_member(jwk, "y")
        if len(x) != 32 or len(y) != 32:
            raise ValueError("P-256 coordinates must be 32 bytes each")
        # from_encoded_point refuses points that are not on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    if kty == "RSA":
        n = int.from_bytes(_b64_member(jwk, "n"), "big")
        e = int.from_bytes(_b64_member(jwk, "e"), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise ValueError(f"unsupported kty {kty!r}; accepted: OKP (Ed25519), EC (P-256), RSA")


def _b64_member(jwk: Mapping[str, object], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"member {name!r} must be a non-empty base64url string")
    return b64url_decode(value)


class KeySet:
    """Public verification keys by kid; immutable once built."""

    __slots__ = ("_by_kid", "_only")

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        by_kid: dict[str, VerificationKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError(f"duplicate kid {key.kid!r}")
            by_kid[key.kid] = key
        if not by_kid:
            raise ValueError("a key set needs at least one key")
        self._by_kid = by_kid
        self._only = next(iter(by_kid.values())) if len(by_kid) == 1 else None

    @classmethod
    def from_jwks(cls, document: Mapping[str, object]) -> KeySet:
        """Builds a key set from a JWKS document; any key we would not accept is a ValueError."""
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise ValueError("a JWKS document needs a 'keys' list")
        parsed = []
        for index, jwk in enumerate(keys):
            if not isinstance(jwk, dict):
                raise ValueError(f"JWKS key #{index} is not a JSON object")
            try:
                parsed.append(parse_jwk(jwk))
            except ValueError as error:
                raise ValueError(f"JWKS key #{index}: {error}") from error
        return cls(parsed)

    @classmethod
    def load(cls, source: str, *, timeout_s: float = 5.0) -> KeySet:
        """Reads a JWKS document from a file path or an http(s):// URL.

        Network and file errors propagate as OSError; a bad document is a ValueError.
        """
        if source.startswith(("https://", "http://")):
            raw = _fetch(source, timeout_s)
        else:
            raw = Path(source).read_bytes()
        try:
            document: object = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"{source}: not a JSON document ({error})") from error
        if not isinstance(document, dict):
            raise ValueError(f"{source}: a JWKS document is a JSON object")
        try:
            return cls.from_jwks(document)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def __len__(self) -> int:
        return len(self._by_kid)

    def resolve(self, kid: str | None) -> VerificationKey | None:
        """The key named `kid`; with no kid, the only key (None if there are several)."""
        if kid is None:
            return self._only
        return self._by_kid.get(kid)


def _fetch(url: str, timeout_s: float) -> bytes:
    request = urllib.request.Request(  # noqa: S310 - load() admits only http(s) URLs here
        url, headers={"Accept": "application/jwk-set+json, application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - as above
        body: bytes = response.read(_MAX_DOCUMENT_BYTES + 1)
    if len(body) > _MAX_DOCUMENT_BYTES:
        raise ValueError(f"{url}: JWKS document is larger than {_MAX_DOCUMENT_BYTES} bytes")
    return body

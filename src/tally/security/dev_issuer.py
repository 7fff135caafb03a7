"""The local identity provider for embedded mode and tests: one key pair per algorithm (EdDSA,
ES256, RS256) kept in a directory, a public `jwks.json` beside them, and fast token minting
(`tally token`, `tally bench`). Production uses a real identity provider's JWKS instead.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tally.security.jwks import Algorithm, KeySet, b64url_encode, public_jwk, verification_key
from tally.security.keys import read_or_create
from tally.security.tokens import MAX_SUBJECT_CHARS

__all__ = ["DevIssuer"]


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
    def generate_pem() -> bytes:
        return _generate(alg).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    # What is on disk, even right after creating it: a process racing us may have won.
    key = serialization.load_pem_private_key(read_or_create(path, generate_pem), password=None)
    if (
        not isinstance(key, DevPrivateKey)
        or verification_key(path.name, key.public_key()).alg != alg
    ):
        raise ValueError(f"{path} does not hold a usable {alg} private key")
    return key


def _replace_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return  # keeps a read-only key directory usable after the first start
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)

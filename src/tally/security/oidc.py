"""OpenID Connect sign-in: authorization code flow with PKCE (RFC 7636, S256), state and nonce.

The gateway is the provider's client (gateway/signin.py serves the routes). What this module
holds, in flow order:

- `Provider`: the organiser's provider as its discovery document describes it (fetched on first
  use, not at start, so a gateway starts while the provider is down), its signing keys (JWKS,
  fetched again when an ID token names an unknown kid: the provider rotated), and the code
  exchange at its token endpoint. The only module here doing I/O, through httpx.
- `LoginState` and `StateSeal`: what the callback must find again (state, nonce, PKCE verifier,
  where to return), kept in the browser in a cookie sealed with HMAC-SHA256, so any gateway of a
  deployment can finish a sign-in another began (no server-side store).
- `check_id_token`: the ID token's signature against the provider's keys (security/jwks.py), and
  its iss, aud (and azp), nonce, exp and iat (OpenID Connect Core 1.0, section 3.1.3.7).
- `roles_of`: which Tally roles a verified ID token grants (voter always; admin or reviewer when
  the roles claim lists them, or admin when the subject is listed in TALLY_OIDC_ADMIN_SUBJECTS).

Every refusal is an OidcError with a stable code:
    signin-state     no sign-in cookie, a forged or expired one, or a state that does not match it
    signin-refused   the provider answered with an error, or refused to exchange the code
                     (a replayed or forged code, a wrong PKCE verifier)
    signin-token     the ID token fails a check (signature, issuer, audience, nonce, expiry...)
    signin-provider  the provider cannot be reached, or its documents are not usable
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias
from urllib.parse import quote

import httpx
import orjson
from cryptography.exceptions import InvalidSignature

from tally.security.jwks import KeySet, VerificationKey, b64url_decode, parse_jwk

__all__ = [
    "LoginState",
    "OidcError",
    "Provider",
    "ProviderMetadata",
    "StateSeal",
    "check_id_token",
    "discovery_url",
    "pkce_challenge",
    "roles_of",
]

OidcErrorCode: TypeAlias = Literal[
    "signin-state", "signin-refused", "signin-token", "signin-provider"
]

WELL_KNOWN: Final = "/.well-known/openid-configuration"
STATE_TTL_S: Final = 600  # a sign-in must come back from the provider within ten minutes
LEEWAY_S: Final = 60  # clock skew allowed between the provider and us
MAX_ID_TOKEN_AGE_S: Final = 600  # an ID token is used right after it is issued
MAX_DOCUMENT_BYTES: Final = 256 * 1024
_ROLES: Final = ("admin", "reviewer")


class OidcError(Exception):
    """Why a sign-in failed; `code` is stable (module docstring), `detail` names the check."""

    def __init__(self, code: OidcErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: OidcErrorCode = code
        self.detail = detail


def discovery_url(configured: str) -> str:
    """TALLY_OIDC_DISCOVERY_URL may be the discovery document's URL or the issuer's URL."""
    if configured.rstrip("/").endswith(WELL_KNOWN):
        return configured
    return configured.rstrip("/") + WELL_KNOWN


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 section 4.2)."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str

    @classmethod
    def parse(cls, document: Mapping[str, object]) -> ProviderMetadata:
        values = {}
        for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise OidcError("signin-provider", f"discovery document has no usable {name}")
            values[name] = value
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcError("signin-provider", "the provider does not support PKCE with S256")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class LoginState:
    """One sign-in in progress: what the callback checks, and where the voter returns."""

    state: str
    nonce: str
    verifier: str  # the PKCE code verifier
    next_path: str
    issued_at: int

    @classmethod
    def new(cls, next_path: str, now: float) -> LoginState:
        return cls(
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),  # 64 characters, within RFC 7636's 43..128
            next_path,
            int(now),
        )


class StateSeal:
    """Seals a LoginState into a cookie value (base64url JSON, a dot, an HMAC-SHA256) and opens it.
    Not encrypted: the cookie is HttpOnly and scoped to /auth, and what it holds is only useful
    together with the code the provider sends to the registered redirect URL."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"tally sign-in state\x00" + key).digest()

    def seal(self, login: LoginState) -> str:
        payload = _b64(
            orjson.dumps(
                [login.state, login.nonce, login.verifier, login.next_path, login.issued_at]
            )
        )
        return f"{payload}.{self._mac(payload)}"

    def open(self, sealed: str | None, state: str | None, now: float) -> LoginState:
        """The sign-in the cookie holds, if it is ours, fresh, and its state is `state`."""
        if not sealed:
            raise OidcError("signin-state", "no sign-in in progress (the cookie is missing)")
        payload, _, mac = sealed.partition(".")
        if not payload.isascii() or not hmac.compare_digest(
            mac.encode(), self._mac(payload).encode()
        ):
            raise OidcError("signin-state", "the sign-in cookie is not ours")
        fields = orjson.loads(b64url_decode(payload))
        login = LoginState(*fields)
        if now > login.issued_at + STATE_TTL_S:
            raise OidcError("signin-state", f"the sign-in took longer than {STATE_TTL_S} s")
        if not state or not hmac.compare_digest(state.encode(), login.state.encode()):
            raise OidcError("signin-state", "state does not match this browser's sign-in")
        return login

    def _mac(self, payload: str) -> str:
        return _b64(hmac.digest(self._key, payload.encode("ascii"), "sha256"))


class Provider:
    """The organiser's provider: discovery, keys and the code exchange, over httpx."""

    def __init__(
        self,
        configured_url: str,
        client_id: str,
        client_secret: str | None,
        allowed_issuers: tuple[str, ...] = (),
        *,
        timeout_s: float = 10.0,
        verify: str | bool = True,
    ) -> None:
        self.client_id = client_id
        self._discovery = discovery_url(configured_url)
        self._secret = client_secret
        self._allowed = allowed_issuers
        self._http = httpx.AsyncClient(timeout=timeout_s, verify=verify, follow_redirects=False)
        self._metadata: ProviderMetadata | None = None
        self._keys: dict[str, VerificationKey] = {}
        self._keys_fetched_at = 0.0

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            metadata = ProviderMetadata.parse(await self._get_json(self._discovery))
            if self._allowed and metadata.issuer not in self._allowed:
                raise OidcError(
                    "signin-provider",
                    f"the provider's issuer {metadata.issuer!r} is not in "
                    "TALLY_OIDC_ALLOWED_ISSUERS",
                )
            self._metadata = metadata
        return self._metadata

    def authorization_url(
        self, metadata: ProviderMetadata, login: LoginState, redirect_uri: str
    ) -> str:
        query = httpx.QueryParams(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile",
                "state": login.state,
                "nonce": login.nonce,
                "code_challenge": pkce_challenge(login.verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}"

    async def exchange(self, code: str, login: LoginState, redirect_uri: str) -> str:
        """The ID token the provider gives for `code` (sent once: a code is single-use)."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": login.verifier,
        }
        headers = {"Accept": "application/json"}
        if self._secret is None:
            form["client_id"] = self.client_id  # a public client names itself
        else:  # client_secret_basic: each part form-encoded first (RFC 6749 section 2.3.1)
            pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            response = await self._http.post(metadata.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise OidcError("signin-provider", f"token endpoint: {type(exc).__name__}") from None
        document = _json_object(response.content[:MAX_DOCUMENT_BYTES])
        if response.status_code != 200:
            error = document.get("error") if document else None
            raise OidcError(
                "signin-refused",
                f"the provider refused the code ({response.status_code} {_brief(error)})",
            )
        id_token = document.get("id_token") if document else None
        if not isinstance(id_token, str):
            raise OidcError("signin-token", "the token response has no id_token")
        return id_token

    async def key(self, kid: str | None) -> VerificationKey:
        """The provider's signing key `kid`; the JWKS is fetched again for a new kid, at most
        once a minute, so a rotation is picked up and junk kids cannot hammer the provider."""
        found = self._pick(kid)
        if found is None and time.monotonic() - self._keys_fetched_at > 60:
            self._keys = await self._fetch_keys()
            self._keys_fetched_at = time.monotonic()
            found = self._pick(kid)
        if found is None:
            raise OidcError("signin-token", f"no provider key with kid {_brief(kid)}")
        return found

    def _pick(self, kid: str | None) -> VerificationKey | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch_keys(self) -> dict[str, VerificationKey]:
        document = await self._get_json((await self.metadata()).jwks_uri)
        keys: dict[str, VerificationKey] = {}
        listed = document.get("keys")
        for jwk in listed if isinstance(listed, list) else []:
            # A provider's JWKS may hold encryption keys or algorithms Tally does not accept;
            # only the signing keys it can check are kept.
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = parse_jwk(jwk)
            except ValueError:
                continue
            keys.setdefault(key.kid, key)
        if not keys:
            raise OidcError("signin-provider", "the provider's JWKS has no usable signing key")
        return keys

    async def _get_json(self, url: str) -> dict[str, object]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcError("signin-provider", f"{url}: {type(exc).__name__}") from None
        document = _json_object(response.content[:MAX_DOCUMENT_BYTES])
        if response.status_code != 200 or document is None:
            raise OidcError("signin-provider", f"{url}: {response.status_code}, no JSON object")
        return document

    async def close(self) -> None:
        await self._http.aclose()


async def verified_claims(
    provider: Provider, id_token: str, login: LoginState, *, now: float | None = None
) -> dict[str, object]:
    """The claims of an ID token from the code exchange, once every check holds."""
    segment, _, _ = id_token.partition(".")
    try:
        header = _json_object(b64url_decode(segment))
    except ValueError:
        header = None
    if header is None:
        raise OidcError("signin-token", "the ID token is not a JWT")
    named = header.get("kid")
    key = await provider.key(named if isinstance(named, str) else None)
    metadata = await provider.metadata()
    return check_id_token(
        id_token,
        KeySet([key]),
        issuer=metadata.issuer,
        client_id=provider.client_id,
        nonce=login.nonce,
        now=time.time() if now is None else now,
    )


def check_id_token(
    id_token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
    leeway_s: int = LEEWAY_S,
) -> dict[str, object]:
    """The ID token's claims if its signature, iss, aud, azp, nonce, exp and iat all hold."""
    parts = id_token.split(".")
    if len(parts) != 3:
        raise OidcError("signin-token", "the ID token is not a JWT")
    try:
        header = _json_object(b64url_decode(parts[0]))
        claims = _json_object(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        header = claims = None
        signature = b""
    if header is None or claims is None:
        raise OidcError("signin-token", "the ID token is not a JWT")
    kid = header.get("kid")
    key = keys.resolve(kid if isinstance(kid, str) else None)
    if key is None:
        raise OidcError("signin-token", f"no provider key with kid {_brief(kid)}")
    if header.get("alg") != key.alg:
        raise OidcError("signin-token", f"alg {_brief(header.get('alg'))} is not {key.alg}")
    try:
        key.check(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except InvalidSignature:
        raise OidcError("signin-token", "the ID token's signature does not verify") from None
    if claims.get("iss") != issuer:
        raise OidcError("signin-token", f"the ID token's issuer is not {issuer!r}")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise OidcError("signin-token", f"the ID token is not for client {client_id!r}")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise OidcError("signin-token", "the ID token has several audiences and azp is not us")
    claimed_nonce = claims.get("nonce")
    if not isinstance(claimed_nonce, str) or not hmac.compare_digest(
        claimed_nonce.encode(), nonce.encode()
    ):
        raise OidcError("signin-token", "the ID token's nonce is not this sign-in's")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise OidcError("signin-token", "the ID token lacks exp or iat")
    if now >= exp + leeway_s:
        raise OidcError("signin-token", "the ID token has expired")
    if iat > now + leeway_s or iat < now - MAX_ID_TOKEN_AGE_S:
        raise OidcError("signin-token", "the ID token was not issued just now (iat)")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise OidcError("signin-token", "the ID token has no subject")
    return claims


def roles_of(
    claims: Mapping[str, object], roles_claim: str, admin_subjects: tuple[str, ...]
) -> frozenset[str]:
    """Tally roles from a verified ID token: `voter`, plus `admin`/`reviewer` where the roles
    claim (a list of strings, or one space-separated string) lists them, plus `admin` for a
    subject in TALLY_OIDC_ADMIN_SUBJECTS. Other role names are ignored."""
    listed = claims.get(roles_claim)
    names = listed.split() if isinstance(listed, str) else listed
    roles = {"voter"}
    if isinstance(names, list):
        roles.update(name for name in names if isinstance(name, str) and name in _ROLES)
    if claims.get("sub") in admin_subjects:
        roles.add("admin")
    return frozenset(roles)


def _json_object(raw: bytes) -> dict[str, object] | None:
    try:
        value: object = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

"""Who may vote and how voters are named: the token verifier (the identity provider's JWKS, or the
local dev issuer), and the pseudonym secret every gateway of a deployment must share."""

from __future__ import annotations

from tally.config import ConfigError, Settings, generate_secret
from tally.gateway.signin import OidcSettings, SignIn
from tally.security.dev_issuer import DevIssuer
from tally.security.keys import keys_dir, pseudonym_secret_file, read_or_create
from tally.security.oidc import Provider, StateSeal
from tally.security.sessions import SessionKeys, Sessions
from tally.security.tokens import KeySet, TokenVerifier


def dev_issuer(settings: Settings) -> DevIssuer:
    """The local identity provider whose keys live in the data dir (made on first use)."""
    return DevIssuer.load_or_create(
        keys_dir(settings.data_dir), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


def token_verifier(settings: Settings) -> tuple[TokenVerifier, DevIssuer | None]:
    """The verifier for TALLY_JWKS, or for the dev issuer (returned too) when that is unset.
    Gateways sharing a data dir's keys accept each other's dev tokens."""
    issuer = dev_issuer(settings) if settings.jwks is None else None
    keys = issuer.key_set() if issuer is not None else KeySet.load(settings.jwks or "")
    verifier = TokenVerifier(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        max_lifetime_s=settings.token_max_lifetime_s,
    )
    return verifier, issuer


def pseudonym_secret(settings: Settings) -> bytes:
    """The configured secret, or (embedded only) one generated once and kept in the data dir."""
    if settings.pseudonym_secret is not None:
        return settings.pseudonym_secret
    if not settings.embedded:
        raise SystemExit(
            "TALLY_PSEUDONYM_SECRET is required with TALLY_VALKEY_URL: every gateway must share it, "
            "or one voter could vote once per gateway"
        )
    return read_or_create(pseudonym_secret_file(settings.data_dir), generate_secret)


def sessions(settings: Settings) -> Sessions:
    """Voting sessions under TALLY_SESSION_KEYS, or the data dir's session key (made once)."""
    keys = (
        SessionKeys.from_env(settings.session_keys)
        if settings.session_keys
        else SessionKeys.load_or_create(settings.data_dir)
    )
    return Sessions(keys, ttl_s=settings.session_ttl_s)


def signin(settings: Settings, made: Sessions, *, demo: bool) -> SignIn:
    """/auth/*: OIDC when TALLY_OIDC_DISCOVERY_URL and TALLY_OIDC_CLIENT_ID are set; the demo
    sign-in with `--demo` (sessions under the dev issuer's name)."""
    url, client_id = settings.oidc_discovery_url, settings.oidc_client_id
    if (url is None) != (client_id is None):
        raise ConfigError(
            "TALLY_OIDC_DISCOVERY_URL and TALLY_OIDC_CLIENT_ID go together: set both for "
            "sign-in with your OpenID Connect provider, or neither"
        )
    oidc = None
    if url is not None and client_id is not None:
        provider = Provider(
            url, client_id, settings.oidc_client_secret, settings.oidc_allowed_issuers
        )
        oidc = OidcSettings(
            provider,
            settings.oidc_redirect_url,
            settings.oidc_roles_claim,
            settings.oidc_admin_subjects,
        )
    seal = StateSeal(made.state_key)
    demo_issuer = settings.jwt_issuer if demo else None  # loopback only: gateway/signin.py
    return SignIn(made, seal, oidc, demo_issuer=demo_issuer)

"""Token lifetime: a bearer token must carry iat and exp, and live at most the maximum lifetime
(exp - iat, TALLY_TOKEN_MAX_LIFETIME_S, 24 h by default). PyJWT signs the tokens the dev issuer
would not mint (no iat, no exp), with the dev issuer's own key."""

from __future__ import annotations

from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from tally import config
from tally.security.dev_issuer import DevIssuer
from tally.security.tokens import DEFAULT_MAX_LIFETIME_S, TokenError, TokenVerifier

ISSUER, AUDIENCE = "tally-dev", "tally"
NOW = 1_900_000_000


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    return DevIssuer.load_or_create(tmp_path_factory.mktemp("dev") / "keys")


def verifier(dev: DevIssuer, **options: int) -> TokenVerifier:
    return TokenVerifier(
        dev.key_set(), issuer=ISSUER, audience=AUDIENCE, clock=lambda: float(NOW), **options
    )


def signed(dev: DevIssuer, **claims: object) -> str:
    """A token with exactly `claims` (plus iss, aud, sub), signed with the dev Ed25519 key."""
    key = serialization.load_pem_private_key(
        (dev.jwks_path.parent / "dev-ed25519.pem").read_bytes(), password=None
    )
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "voter-1", **claims}
    return jwt.api_jws.encode(
        orjson.dumps(body),
        key,  # type: ignore[arg-type]  # an Ed25519 private key, which PyJWT signs EdDSA with
        algorithm="EdDSA",
        headers={"kid": "dev-ed25519"},
    )


def refusal(verifier: TokenVerifier, token: str) -> TokenError:
    with pytest.raises(TokenError) as refused:
        verifier.verify(token)
    return refused.value


def test_the_default_maximum_is_a_day(dev: DevIssuer) -> None:
    assert DEFAULT_MAX_LIFETIME_S == 86_400
    assert config.load({}).token_max_lifetime_s == 86_400
    assert verifier(dev).max_lifetime_s == 86_400


def test_a_token_of_exactly_the_maximum_lifetime_is_accepted(dev: DevIssuer) -> None:
    principal = verifier(dev).verify(signed(dev, iat=NOW - 60, exp=NOW - 60 + 86_400))
    assert principal.issued_at == NOW - 60


def test_a_token_living_one_second_longer_is_refused_as_token_lifetime(dev: DevIssuer) -> None:
    refused = refusal(verifier(dev), signed(dev, iat=NOW - 60, exp=NOW - 60 + 86_401))
    assert refused.code == "token-lifetime"
    assert refused.detail == "the token lives 86401 s (exp - iat), more than the 86400 s allowed"


def test_the_maximum_is_configurable(dev: DevIssuer) -> None:
    short = verifier(dev, max_lifetime_s=600)
    assert short.verify(signed(dev, iat=NOW, exp=NOW + 600)).subject == "voter-1"
    assert refusal(short, signed(dev, iat=NOW, exp=NOW + 601)).code == "token-lifetime"
    # The dev issuer's own tokens obey it too.
    assert refusal(short, dev.mint("v", ttl_s=3600, now=NOW)).code == "token-lifetime"


def test_a_token_without_iat_is_refused_with_the_reason(dev: DevIssuer) -> None:
    refused = refusal(verifier(dev), signed(dev, exp=NOW + 60))
    assert refused.code == "token-claims"
    assert refused.detail.startswith("iat is required")
    assert "at most 86400 s" in refused.detail


def test_a_token_without_exp_is_refused_with_the_reason(dev: DevIssuer) -> None:
    refused = refusal(verifier(dev), signed(dev, iat=NOW))
    assert (refused.code, refused.detail) == ("token-claims", "exp is required")


def test_a_year_long_token_is_refused_even_while_it_is_valid(dev: DevIssuer) -> None:
    """What a misconfigured identity provider (or a stolen key) would mint."""
    year = 365 * 86_400
    assert refusal(verifier(dev), signed(dev, iat=NOW, exp=NOW + year)).code == "token-lifetime"


def test_setting_is_read_and_checked() -> None:
    assert config.load({"TALLY_TOKEN_MAX_LIFETIME_S": "3600"}).token_max_lifetime_s == 3600
    with pytest.raises(config.ConfigError, match="TALLY_TOKEN_MAX_LIFETIME_S"):
        config.load({"TALLY_TOKEN_MAX_LIFETIME_S": "0"})


def test_the_token_command_refuses_a_ttl_the_gateway_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tally.cli import main

    monkeypatch.setenv("TALLY_TOKEN_MAX_LIFETIME_S", "3600")
    assert main(["token", "alice", "--ttl", "3601", "--data-dir", str(tmp_path)]) == 2
    assert "longer than TALLY_TOKEN_MAX_LIFETIME_S=3600" in capsys.readouterr().err
    assert main(["token", "alice", "--ttl", "3600", "--data-dir", str(tmp_path)]) == 0

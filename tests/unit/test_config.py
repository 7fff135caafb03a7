"""Configuration: TALLY_* variables parsed once, bad values named, secrets never shown."""

from __future__ import annotations

import base64
from dataclasses import fields, replace
from ipaddress import ip_network
from pathlib import Path

import pytest

from tally.config import ConfigError, Settings, load
from tally.domain.defences import DEFAULT_DEFENCES
from tally.ledger.cosignature import Cosigner

SECRET_HEX = "5e" * 32
PASSWORD = "hunter2-s3cret"
EVIDENCE_KEYS = "1:" + base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
WITNESS = f"http://127.0.0.1:8003 {Cosigner('witness.test/w', bytes(range(32))).verifier}"


def test_defaults_without_any_variable() -> None:
    """An empty environment gives the documented defaults: loopback, port 8000, embedded Valkey."""
    settings = load({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8000, Path("data"))
    assert settings.embedded
    assert settings.valkey_url is None
    assert settings.pseudonym_secret is None
    assert (settings.jwt_issuer, settings.jwt_audience) == ("tally-dev", "tally")
    assert (settings.replicas_to_confirm, settings.waitaof_timeout_ms) == (0, 1000)
    assert (settings.max_body_bytes, settings.shutdown_timeout_s) == (16384, 10.0)
    assert settings.log_level == "info"
    assert (settings.ops_host, settings.aggregator_port, settings.archiver_port) == (
        "127.0.0.1",
        8001,
        8002,
    )


SESSION_KEYS = "k2:" + "A" * 43 + ",k1:" + "B" * 43
PARSED = [
    ("TALLY_HOST", "0.0.0.0", "host", "0.0.0.0"),  # noqa: S104  # a value under test, never bound
    ("TALLY_PORT", "9000", "port", 9000),
    ("TALLY_WORKERS", "4", "workers", 4),
    ("TALLY_DATA_DIR", "/var/lib/tally", "data_dir", Path("/var/lib/tally")),
    ("TALLY_VALKEY_URL", "rediss://cache.example/1", "valkey_url", "rediss://cache.example/1"),
    ("TALLY_PSEUDONYM_SECRET", SECRET_HEX, "pseudonym_secret", bytes.fromhex(SECRET_HEX)),
    ("TALLY_JWKS", "https://idp.example/jwks.json", "jwks", "https://idp.example/jwks.json"),
    ("TALLY_JWT_ISSUER", "https://idp.example/", "jwt_issuer", "https://idp.example/"),
    ("TALLY_JWT_AUDIENCE", "votes", "jwt_audience", "votes"),
    ("TALLY_WAITAOF_REPLICAS", "2", "waitaof_replicas", 2),
    ("TALLY_WAITAOF_TIMEOUT_MS", "250", "waitaof_timeout_ms", 250),
    ("TALLY_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
    ("TALLY_SHUTDOWN_TIMEOUT_S", "2.5", "shutdown_timeout_s", 2.5),
    ("TALLY_LOG_LEVEL", "DEBUG", "log_level", "debug"),
    ("TALLY_TICK_MS", "100", "tick_ms", 100),
    ("TALLY_LEASE_TTL_MS", "3000", "lease_ttl_ms", 3000),
    ("TALLY_SLOW_CLIENT_S", "2.5", "slow_client_s", 2.5),
    ("TALLY_MAX_CONNECTIONS", "1000", "max_connections", 1000),
    ("TALLY_MAX_CONNECTIONS_PER_IP", "10", "max_connections_per_ip", 10),
    ("TALLY_PING_INTERVAL_S", "5", "ping_interval_s", 5.0),
    ("TALLY_SSE_KEEPALIVE_S", "2.5", "sse_keepalive_s", 2.5),
    ("TALLY_CHECKPOINT_INTERVAL_MS", "200", "checkpoint_interval_ms", 200),
    ("TALLY_LEDGER_ORIGIN", "vote.example/ledger", "ledger_origin", "vote.example/ledger"),
    ("TALLY_ARCHIVER", "off", "archiver", False),
    ("TALLY_OPS_HOST", "10.0.0.7", "ops_host", "10.0.0.7"),
    ("TALLY_AGGREGATOR_PORT", "9101", "aggregator_port", 9101),
    ("TALLY_ARCHIVER_PORT", "9102", "archiver_port", 9102),
    ("TALLY_ARCHIVER_VERIFY_THREADS", "3", "archiver_verify_threads", 3),
    (
        "TALLY_DEFENCES",
        '{"limits": {"address": null}, "pow": {"difficulty": 16}}',
        "defences",
        replace(
            DEFAULT_DEFENCES,
            limits=replace(DEFAULT_DEFENCES.limits, address=None),
            pow=replace(DEFAULT_DEFENCES.pow, difficulty=16),
        ),
    ),
    (
        "TALLY_TRUSTED_PROXIES",
        "10.0.0.0/8, 2001:db8::/48,192.0.2.7",
        "trusted_proxies",
        (ip_network("10.0.0.0/8"), ip_network("2001:db8::/48"), ip_network("192.0.2.7/32")),
    ),
    ("TALLY_MAX_REQUEST_HEAD_BYTES", "8192", "max_request_head_bytes", 8192),
    ("TALLY_HEAD_TIMEOUT_S", "2.5", "head_timeout_s", 2.5),
    ("TALLY_BODY_TIMEOUT_S", "4", "body_timeout_s", 4.0),
    ("TALLY_MAX_HTTP_CONNECTIONS_PER_IP", "32", "max_http_connections_per_ip", 32),
    ("TALLY_EDGE_RATE", "off", "edge_rate", 0.0),
    ("TALLY_EDGE_BURST", "50", "edge_burst", 50),
    ("TALLY_TLS_CERT", "/etc/tally/cert.pem", "tls_cert", Path("/etc/tally/cert.pem")),
    ("TALLY_TLS_KEY", "/etc/tally/key.pem", "tls_key", Path("/etc/tally/key.pem")),
    ("TALLY_HSTS_MAX_AGE_S", "0", "hsts_max_age_s", 0),
    ("TALLY_PUBLIC_URL", "https://vote.example.org/", "public_url", "https://vote.example.org"),
    ("TALLY_TOKEN_MAX_LIFETIME_S", "3600", "token_max_lifetime_s", 3600),
    ("TALLY_ADMISSION_KEY", "PRIVATE+KEY+x", "admission_key", "PRIVATE+KEY+x"),
    (
        "TALLY_ADMISSION_KEY_FILE",
        "/etc/tally/adm.key",
        "admission_key_file",
        Path("/etc/tally/adm.key"),
    ),
    ("TALLY_ADMISSION_KEY_NAME", "gw-7", "admission_key_name", "gw-7"),
    ("TALLY_ADMISSION_SIGNING", "off", "admission_signing", False),
    (
        "TALLY_VALKEY_TLS_CA",
        "/etc/tally/valkey-ca.pem",
        "valkey_tls_ca",
        "/etc/tally/valkey-ca.pem",
    ),
    ("TALLY_VALKEY_TLS_CERT", "/etc/tally/v.pem", "valkey_tls_cert", "/etc/tally/v.pem"),
    ("TALLY_VALKEY_TLS_KEY", "/etc/tally/v.key", "valkey_tls_key", "/etc/tally/v.key"),
    ("TALLY_WITNESSES", WITNESS, "witnesses", (tuple(WITNESS.split()),)),
    ("TALLY_EVIDENCE_KEYS", EVIDENCE_KEYS, "evidence_keys", EVIDENCE_KEYS),
    ("TALLY_EVIDENCE_RETENTION_S", "3600", "evidence_retention_s", 3600),
    ("TALLY_OIDC_DISCOVERY_URL", "https://id.example", "oidc_discovery_url", "https://id.example"),
    ("TALLY_OIDC_CLIENT_ID", "tally", "oidc_client_id", "tally"),
    ("TALLY_OIDC_CLIENT_SECRET", "s3cret", "oidc_client_secret", "s3cret"),
    (
        "TALLY_OIDC_ALLOWED_ISSUERS",
        "https://a, https://b",
        "oidc_allowed_issuers",
        ("https://a", "https://b"),
    ),
    (
        "TALLY_OIDC_REDIRECT_URL",
        "https://v.example/auth/callback",
        "oidc_redirect_url",
        "https://v.example/auth/callback",
    ),
    ("TALLY_OIDC_ROLES_CLAIM", "groups", "oidc_roles_claim", "groups"),
    ("TALLY_OIDC_ADMIN_SUBJECTS", "olga,ann", "oidc_admin_subjects", ("olga", "ann")),
    ("TALLY_SESSION_TTL_S", "600", "session_ttl_s", 600),
    ("TALLY_SESSION_KEYS", SESSION_KEYS, "session_keys", SESSION_KEYS),
]


@pytest.mark.parametrize(("variable", "raw", "field", "expected"), PARSED)
def test_each_variable_is_parsed(variable: str, raw: str, field: str, expected: object) -> None:
    """Each TALLY_* variable sets its own setting, converted to the setting's type."""
    settings = load({variable: raw})
    assert getattr(settings, field) == expected
    assert settings == Settings(**{field: expected})  # type: ignore[arg-type]  # one real field


def test_every_setting_has_a_variable_under_test() -> None:
    """The table above covers every setting, so a new setting cannot arrive untested."""
    assert {field for _, _, field, _ in PARSED} == {f.name for f in fields(Settings)}


@pytest.mark.parametrize(
    "variable", ["TALLY_PORT", "TALLY_VALKEY_URL", "TALLY_PSEUDONYM_SECRET", "TALLY_LOG_LEVEL"]
)
def test_empty_variable_means_default(variable: str) -> None:
    """A variable set to the empty string counts as unset."""
    assert load({variable: ""}) == Settings()


@pytest.mark.parametrize(
    "url",
    ["redis://h", "rediss://u:p@h:1/2", "valkey://h:6379", "valkeys://[::1]:6380", "redis://:p@h"],
)
def test_valkey_url_schemes_accepted(url: str) -> None:
    """redis, rediss, valkey and valkeys URLs are accepted, and mean "not embedded"."""
    settings = load({"TALLY_VALKEY_URL": url})
    assert settings.valkey_url == url
    assert not settings.embedded


INVALID = [
    ("TALLY_PORT", "0"),
    ("TALLY_PORT", "65536"),
    ("TALLY_PORT", "-1"),
    ("TALLY_PORT", "http"),
    ("TALLY_PORT", "80.5"),
    ("TALLY_VALKEY_URL", "http://cache.example:6379"),
    ("TALLY_VALKEY_URL", "cache.example:6379"),
    ("TALLY_VALKEY_URL", "redis://"),
    ("TALLY_VALKEY_URL", "redis://cache.example:port"),
    ("TALLY_VALKEY_URL", "redis://cache.example:70000"),
    ("TALLY_DEFENCES", "not json"),
    ("TALLY_DEFENCES", '{"limits": {"adress": null}}'),
    ("TALLY_DEFENCES", '{"pow": {"difficulty": 99}}'),
    ("TALLY_PSEUDONYM_SECRET", "not hex"),
    ("TALLY_PSEUDONYM_SECRET", "ab" * 31),
    ("TALLY_PSEUDONYM_SECRET", "abc"),
    ("TALLY_JWT_ISSUER", "   "),
    ("TALLY_JWT_AUDIENCE", "\t"),
    ("TALLY_WAITAOF_REPLICAS", "-1"),
    ("TALLY_WAITAOF_REPLICAS", "one"),
    ("TALLY_WAITAOF_TIMEOUT_MS", "0"),
    ("TALLY_WAITAOF_TIMEOUT_MS", "-5"),
    ("TALLY_MAX_BODY_BYTES", "0"),
    ("TALLY_MAX_BODY_BYTES", "16k"),
    ("TALLY_SHUTDOWN_TIMEOUT_S", "0"),
    ("TALLY_SHUTDOWN_TIMEOUT_S", "-1"),
    ("TALLY_SHUTDOWN_TIMEOUT_S", "nan"),
    ("TALLY_SHUTDOWN_TIMEOUT_S", "soon"),
    ("TALLY_LOG_LEVEL", "trace"),
    ("TALLY_TICK_MS", "0"),
    ("TALLY_LEASE_TTL_MS", "fast"),
    ("TALLY_SLOW_CLIENT_S", "inf"),
    ("TALLY_MAX_CONNECTIONS", "-1"),
    ("TALLY_MAX_CONNECTIONS_PER_IP", "0"),
    ("TALLY_PING_INTERVAL_S", "-1"),
    ("TALLY_SSE_KEEPALIVE_S", "often"),
    ("TALLY_CHECKPOINT_INTERVAL_MS", "0"),
    ("TALLY_LEDGER_ORIGIN", "https://vote.example/ledger"),
    ("TALLY_LEDGER_ORIGIN", "vote.example/ledger/"),
    ("TALLY_LEDGER_ORIGIN", "vote example"),
    ("TALLY_LEDGER_ORIGIN", "a+b"),
    ("TALLY_ARCHIVER", "maybe"),
    ("TALLY_AGGREGATOR_PORT", "0"),
    ("TALLY_ARCHIVER_PORT", "http"),
    ("TALLY_ARCHIVER_VERIFY_THREADS", "0"),
    ("TALLY_WORKERS", "0"),
    ("TALLY_TRUSTED_PROXIES", "10.0.0.1/8"),
    ("TALLY_TRUSTED_PROXIES", "proxy.internal"),
    ("TALLY_MAX_REQUEST_HEAD_BYTES", "512"),
    ("TALLY_HEAD_TIMEOUT_S", "0"),
    ("TALLY_BODY_TIMEOUT_S", "never"),
    ("TALLY_MAX_HTTP_CONNECTIONS_PER_IP", "0"),
    ("TALLY_EDGE_RATE", "-1"),
    ("TALLY_EDGE_RATE", "inf"),
    ("TALLY_EDGE_BURST", "-5"),
    ("TALLY_PUBLIC_URL", "vote.example.org"),
    ("TALLY_PUBLIC_URL", "https://vote.example.org/join"),
]


@pytest.mark.parametrize(("variable", "raw"), INVALID)
def test_invalid_value_raises_config_error_naming_the_variable(variable: str, raw: str) -> None:
    """A value Tally cannot use fails at load, and the message starts with the variable's name."""
    with pytest.raises(ConfigError, match=rf"^{variable} "):
        load({variable: raw})


# Python's own words, which tell a user nothing about what the setting wants.
PYTHON_WORDS = ("invalid literal", "base 10", "could not convert", "does not appear to be")


@pytest.mark.parametrize(("variable", "raw"), INVALID)
def test_invalid_value_says_what_is_expected_in_words(variable: str, raw: str) -> None:
    """Every refusal says what the setting must be, not a Python message."""
    with pytest.raises(ConfigError) as caught:
        load({variable: raw})
    message = str(caught.value)
    assert " must " in message or " is not usable (" in message, message
    assert not any(words in message for words in PYTHON_WORDS), message


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("TALLY_PORT", "http", "TALLY_PORT must be an integer 1-65535, not 'http'"),
        ("TALLY_PORT", "70000", "TALLY_PORT must be an integer 1-65535, not '70000'"),
        (
            "TALLY_MAX_BODY_BYTES",
            "16k",
            "TALLY_MAX_BODY_BYTES must be a whole number of at least 1",
        ),
        ("TALLY_SHUTDOWN_TIMEOUT_S", "soon", "TALLY_SHUTDOWN_TIMEOUT_S must be a positive number"),
        ("TALLY_ARCHIVER", "maybe", "TALLY_ARCHIVER must be on or off"),
        ("TALLY_HOST", "my host", "TALLY_HOST must be a host name or an IP address"),
        ("TALLY_TRUSTED_PROXIES", "proxy.internal", "TALLY_TRUSTED_PROXIES must be IP networks"),
        ("TALLY_VALKEY_URL", "redis://h:port", "TALLY_VALKEY_URL must name a port 1-65535"),
    ],
)
def test_refusals_name_the_expected_form(variable: str, raw: str, message: str) -> None:
    """The exact words for the common mistakes."""
    with pytest.raises(ConfigError) as caught:
        load({variable: raw})
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("raw", ["on", "ON", "true", "1", "yes", " on "])
def test_switches_take_on_true_yes_and_1(raw: str) -> None:
    """Every spelling of on is on."""
    assert load({"TALLY_ARCHIVER": "off", "TALLY_ADMISSION_SIGNING": raw}).admission_signing


@pytest.mark.parametrize("raw", ["off", "False", "0", "no"])
def test_switches_take_off_false_no_and_0(raw: str) -> None:
    """Every spelling of off is off."""
    assert not load({"TALLY_ARCHIVER": raw}).archiver


def test_config_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, so generic callers can still catch it."""
    assert issubclass(ConfigError, ValueError)


def test_infinite_shutdown_timeout_is_rejected() -> None:
    """A shutdown with no end is not a timeout: 'inf' is refused like 'nan'."""
    with pytest.raises(ConfigError, match=r"^TALLY_SHUTDOWN_TIMEOUT_S "):
        load({"TALLY_SHUTDOWN_TIMEOUT_S": "inf"})


@pytest.mark.parametrize(
    ("variable", "raw", "secret"),
    [
        ("TALLY_PSEUDONYM_SECRET", "ab" * 31, "ab" * 31),
        ("TALLY_VALKEY_URL", f"redis://tally:{PASSWORD}@cache.example:70000", PASSWORD),
    ],
    ids=["pseudonym-secret", "valkey-password"],
)
def test_config_error_never_shows_a_secret(variable: str, raw: str, secret: str) -> None:
    """An invalid secret or URL is named, never echoed (the message ends up in logs)."""
    with pytest.raises(ConfigError) as caught:
        load({variable: raw})
    assert secret not in str(caught.value)


def test_overrides_win_over_the_environment() -> None:
    """Explicit overrides (CLI flags) replace variables; None means "not given"."""
    settings = load({"TALLY_PORT": "9000", "TALLY_HOST": "::1"}, port=9100, host=None)
    assert (settings.port, settings.host) == (9100, "::1")


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, load() reads os.environ."""
    monkeypatch.setenv("TALLY_PORT", "9200")
    assert load().port == 9200


# --- what `tally config show` prints -----------------------------------------------------------


def test_public_view_names_every_variable() -> None:
    """The view has one TALLY_* entry per setting, in the order of the settings."""
    view = Settings().public_view()
    assert list(view) == [f"TALLY_{f.name.upper()}" for f in fields(Settings)]


def test_public_view_shows_defaults_as_text() -> None:
    """Unset optional settings show as explanations or blanks, never as 'None'."""
    view = Settings().public_view()
    assert view["TALLY_VALKEY_URL"] == "(embedded)"
    assert view["TALLY_PSEUDONYM_SECRET"] == "(generated in data dir)"
    assert view["TALLY_JWKS"] == ""
    assert view["TALLY_PORT"] == "8000"


def test_public_view_writes_values_as_they_are_set() -> None:
    """Switches show as on/off and whole seconds without '.0', so a line can be pasted back."""
    view = load({"TALLY_ARCHIVER": "false"}).public_view()
    assert (view["TALLY_ARCHIVER"], view["TALLY_ADMISSION_SIGNING"]) == ("off", "on")
    assert view["TALLY_SHUTDOWN_TIMEOUT_S"] == "10"
    assert view["TALLY_EDGE_RATE"] == "100"
    assert load({"TALLY_SLOW_CLIENT_S": "2.5"}).public_view()["TALLY_SLOW_CLIENT_S"] == "2.5"
    pasted = {name: value for name, value in view.items() if not value.startswith("(")}
    assert load(pasted).public_view() == view


def test_public_view_masks_the_pseudonym_secret() -> None:
    """A configured pseudonym secret shows as asterisks; its bytes appear nowhere in the view."""
    view = load({"TALLY_PSEUDONYM_SECRET": SECRET_HEX}).public_view()
    assert view["TALLY_PSEUDONYM_SECRET"] == "********"
    text = repr(view)
    assert SECRET_HEX not in text
    assert repr(bytes.fromhex(SECRET_HEX)) not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"rediss://tally:{PASSWORD}@cache.example:6380/1",
            "rediss://tally:********@cache.example:6380/1",
        ),
        (f"redis://:{PASSWORD}@cache.example", "redis://:********@cache.example"),
        ("redis://tally:p%40ss%3Aword@h:6379", "redis://tally:********@h:6379"),
    ],
)
def test_public_view_masks_the_valkey_password(url: str, shown: str) -> None:
    """The password in TALLY_VALKEY_URL is masked; user, host, port and db stay visible."""
    assert load({"TALLY_VALKEY_URL": url}).public_view()["TALLY_VALKEY_URL"] == shown


def test_public_view_keeps_a_url_without_password() -> None:
    """A Valkey URL with no password is shown as it is."""
    url = "valkey://tally@cache.example:6379/2"
    assert load({"TALLY_VALKEY_URL": url}).public_view()["TALLY_VALKEY_URL"] == url

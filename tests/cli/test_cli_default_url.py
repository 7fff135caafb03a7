"""Where a client command goes without --url: TALLY_URL, else the address `tally serve` reads."""

from __future__ import annotations

import pytest

from tally.client import DEFAULT_URL, default_url
from tally.config import ConfigError


@pytest.mark.parametrize(
    ("env", "url", "origin"),
    [
        ({}, DEFAULT_URL, "the default (no --url, TALLY_URL or TALLY_PORT)"),
        ({"TALLY_PORT": "8123"}, "http://127.0.0.1:8123", "TALLY_PORT"),
        ({"TALLY_HOST": "10.1.2.3"}, "http://10.1.2.3:8000", "TALLY_HOST"),
        (
            {"TALLY_HOST": "0.0.0.0", "TALLY_PORT": "9"},  # noqa: S104  # a wildcard bind
            "http://127.0.0.1:9",
            "TALLY_HOST and TALLY_PORT",
        ),
        ({"TALLY_HOST": "::"}, "http://[::1]:8000", "TALLY_HOST"),
        (
            {"TALLY_HOST": "::1", "TALLY_PORT": "8443"},
            "http://[::1]:8443",
            "TALLY_HOST and TALLY_PORT",
        ),
        (
            {"TALLY_PORT": "8443", "TALLY_TLS_CERT": "/etc/tally/cert.pem"},
            "https://127.0.0.1:8443",
            "TALLY_PORT",
        ),
        (
            {"TALLY_URL": "https://vote.example", "TALLY_PORT": "1"},
            "https://vote.example",
            "TALLY_URL",
        ),
    ],
)
def test_default_url_follows_the_servers_settings(
    env: dict[str, str], url: str, origin: str
) -> None:
    """TALLY_URL wins; else host and port as the server binds them (a wildcard on loopback)."""
    assert default_url(env) == (url, origin)


def test_a_bad_port_is_a_configuration_error_in_words() -> None:
    """The same message as the server's own."""
    with pytest.raises(ConfigError) as refused:
        default_url({"TALLY_PORT": "80a"})
    assert str(refused.value) == "TALLY_PORT must be an integer 1-65535, not '80a'"

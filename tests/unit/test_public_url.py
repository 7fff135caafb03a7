"""TALLY_PUBLIC_URL: the origin the presenter's join link and QR code name."""

from __future__ import annotations

import pytest

from tally.config import ConfigError, load


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://vote.example.org", "https://vote.example.org"),
        ("https://vote.example.org/", "https://vote.example.org"),
        ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
        (" https://[::1]:8443 ", "https://[::1]:8443"),
    ],
)
def test_an_origin_is_kept_without_a_trailing_slash(raw: str, origin: str) -> None:
    assert load({"TALLY_PUBLIC_URL": raw}).public_url == origin


def test_unset_means_the_requests_own_origin() -> None:
    assert load({}).public_url is None


@pytest.mark.parametrize(
    "raw",
    [
        "vote.example.org",
        "ftp://vote.example.org",
        "https://vote.example.org/tally",
        "https://vote.example.org/?a=1",
        "https://user@vote.example.org",
        "https://",
    ],
)
def test_anything_but_an_origin_is_refused_in_words(raw: str) -> None:
    with pytest.raises(ConfigError, match="TALLY_PUBLIC_URL must be"):
        load({"TALLY_PUBLIC_URL": raw})

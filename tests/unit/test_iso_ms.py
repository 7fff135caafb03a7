"""iso_ms (domain/timestamps.py): RFC 3339 UTC with milliseconds, exact integer arithmetic with
the second formatted once and cached (two per vote receipt)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from tally.domain.timestamps import iso_ms, parse_iso_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference(ms: int) -> str:
    """The moment by datetime's own exact arithmetic (no float seconds)."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_known_moments() -> None:
    assert iso_ms(1735732800250) == "2025-01-01T12:00:00.250Z"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(999) == "1970-01-01T00:00:00.999Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_ms(-62135596800000) == "0001-01-01T00:00:00.000Z"  # four-digit year


def test_matches_datetime_and_round_trips_over_the_whole_range() -> None:
    rng = random.Random(12)
    # Up to year 9999; a float ms / 1000 was a millisecond off for some of these after ~2100.
    moments = [rng.randrange(-62135596800000, 253402300800000) for _ in range(20000)]
    moments += [253402300799999, 9844447350946]
    for ms in moments:
        assert iso_ms(ms) == reference(ms)
        assert parse_iso_ms(iso_ms(ms)) == ms


def test_votes_in_the_same_second_share_its_text_but_not_their_milliseconds() -> None:
    second = 1735732800000
    assert [iso_ms(second + ms) for ms in (0, 7, 70, 700)] == [
        "2025-01-01T12:00:00.000Z",
        "2025-01-01T12:00:00.007Z",
        "2025-01-01T12:00:00.070Z",
        "2025-01-01T12:00:00.700Z",
    ]

"""Moments as the API and the wire formats write them: RFC 3339, UTC, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    """`2025-01-01T12:00:00.250Z` for 1735732800250.

    Every vote's receipt writes two of these, and votes arriving together share their second:
    the second is formatted once (cached) and the milliseconds are integer arithmetic, exact at
    any range (a float `ms / 1000` was a millisecond off for some times after ~2100)."""
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()


def parse_iso_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 moment; ValueError without a time zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("ts has no time zone")
    return (moment - _EPOCH) // _MS

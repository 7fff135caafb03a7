"""The edge's token buckets (tally.security.buckets): a burst, then the refill rate, the wait
until the next token, and memory that stays bounded however many addresses come."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.security.buckets import TokenBuckets


def test_a_burst_then_the_rate() -> None:
    """`burst` requests pass at once; then one per 1/rate seconds, and the refusal says how
    long until the next."""
    buckets = TokenBuckets(rate=10, burst=3)
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(0.1)
    assert buckets.take("a", 100.05) == pytest.approx(0.05)
    assert buckets.take("a", 100.1) == 0.0
    assert buckets.take("a", 100.1) == pytest.approx(0.1)


def test_addresses_have_their_own_buckets() -> None:
    """One address's empty bucket does not touch another's."""
    buckets = TokenBuckets(rate=1, burst=1)
    assert buckets.take("a", 0.0) == 0.0
    assert buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0


def test_a_refusal_takes_nothing() -> None:
    """Being refused does not push the next token further away."""
    buckets = TokenBuckets(rate=1, burst=1)
    buckets.take("a", 0.0)
    for _ in range(100):
        assert buckets.take("a", 0.5) == pytest.approx(0.5)
    assert buckets.take("a", 1.0) == 0.0


def test_an_idle_bucket_refills_to_the_burst_and_no_further() -> None:
    """After a long pause the bucket is full again: `burst` tokens, not more."""
    buckets = TokenBuckets(rate=2, burst=4)
    for _ in range(4):
        buckets.take("a", 0.0)
    assert [buckets.take("a", 1000.0) for _ in range(5)][-1] > 0
    assert sum(buckets.take("b", 1000.0) == 0.0 for _ in range(10)) == 4


def test_memory_stays_bounded_and_full_buckets_are_forgotten_first() -> None:
    """Past max_keys, full buckets go first; a busy address keeps its state if there is room."""
    buckets = TokenBuckets(rate=1, burst=2, max_keys=100)
    buckets.take("busy", 0.0)
    buckets.take("busy", 0.0)  # empty until t=1
    for i in range(99):
        buckets.take(f"idle-{i}", -10.0)  # full again by t=0
    buckets.take("newcomer", 0.5)
    assert len(buckets) == 2
    assert buckets.take("busy", 0.5) > 0  # its empty bucket was kept
    for i in range(10_000):
        buckets.take(f"flood-{i}", 0.5)
        assert len(buckets) <= 100


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps: list[float]) -> None:
    """Over any sequence of requests, the admitted ones never exceed burst + rate * elapsed."""
    rate, burst = 5.0, 3
    buckets = TokenBuckets(rate=rate, burst=burst)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        admitted += buckets.take("a", now) == 0.0
        assert admitted <= burst + rate * now + 1e-9


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBuckets(rate=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBuckets(rate=1, burst=0)

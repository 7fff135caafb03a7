"""Voter pseudonyms: a stable keyed hash per poll, and how it picks a lane and an index bucket."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from math import sqrt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.domain.polls import MAX_BUCKET_BITS, MAX_LANES
from tally.domain.pseudonyms import (
    INDEX_FIELD_OFFSET,
    PSEUDONYM_BYTES,
    bucket_of,
    index_field,
    lane_of,
    pseudonym,
)

SECRET = bytes(range(32))
SAMPLES = 65_536
# 64k pseudonyms of distinct subjects: what a real poll's voters look like to lane_of/bucket_of.
VOTERS = [pseudonym(SECRET, "final", "idp", f"user-{i}") for i in range(SAMPLES)]

pseudonyms = st.binary(min_size=PSEUDONYM_BYTES, max_size=PSEUDONYM_BYTES)
lane_counts = st.sampled_from([2**k for k in range(MAX_LANES.bit_length())])
triples = st.tuples(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8))


def chi_square(counts: Counter[int], cells: int) -> float:
    """Pearson's statistic of `counts` against a uniform spread over `cells` cells."""
    expected = sum(counts.values()) / cells
    return sum((counts.get(cell, 0) - expected) ** 2 / expected for cell in range(cells))


def looks_uniform(counts: Counter[int], cells: int) -> bool:
    """Within 6 standard deviations of chi-square's mean (df = cells - 1): fails only on bias."""
    df = cells - 1
    return chi_square(counts, cells) <= df + 6 * sqrt(2 * df)


# --- the pseudonym itself ----------------------------------------------------------------------


def test_pseudonym_is_16_bytes_and_deterministic() -> None:
    """The same secret, poll, issuer and subject always give the same 16 bytes."""
    first = pseudonym(SECRET, "final", "idp", "alice")
    assert len(first) == PSEUDONYM_BYTES == 16
    assert pseudonym(SECRET, "final", "idp", "alice") == first


def test_pseudonym_format_is_pinned() -> None:
    """HMAC-SHA256 over 4-byte big-endian length-prefixed UTF-8 parts, first 16 bytes (stable:
    changing it would let every voter vote again in a running poll)."""
    message = b"\x00\x00\x00\x05final" + b"\x00\x00\x00\x03idp" + b"\x00\x00\x00\x06z\xc3\xb6e-1"
    expected = hmac.new(SECRET, message, hashlib.sha256).digest()[:16]
    assert pseudonym(SECRET, "final", "idp", "zöe-1") == expected


@pytest.mark.parametrize(
    "other",
    [
        (b"\x01" * 32, "final", "idp", "alice"),
        (SECRET, "semi-final", "idp", "alice"),
        (SECRET, "final", "other-idp", "alice"),
        (SECRET, "final", "idp", "bob"),
    ],
    ids=["secret", "poll", "issuer", "subject"],
)
def test_pseudonym_changes_with_every_input(other: tuple[bytes, str, str, str]) -> None:
    """A different secret, poll, issuer or subject gives a different pseudonym."""
    assert pseudonym(*other) != pseudonym(SECRET, "final", "idp", "alice")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("ab", "c", "x"), ("a", "bc", "x")),
        (("p", "ab", "c"), ("p", "a", "bc")),
        (("abc", "", "x"), ("", "abc", "x")),
        (("p", "i", ""), ("p", "", "i")),
    ],
)
def test_framing_is_unambiguous(one: tuple[str, str, str], other: tuple[str, str, str]) -> None:
    """Moving characters across a part boundary changes the pseudonym ("ab"+"c" != "a"+"bc")."""
    assert pseudonym(SECRET, *one) != pseudonym(SECRET, *other)


@given(triples, triples)
def test_distinct_inputs_give_distinct_pseudonyms(
    one: tuple[str, str, str], other: tuple[str, str, str]
) -> None:
    """Any two different (poll, issuer, subject) triples get different pseudonyms."""
    assert (pseudonym(SECRET, *one) == pseudonym(SECRET, *other)) == (one == other)


# --- lanes -------------------------------------------------------------------------------------


@given(pseudonyms, lane_counts)
def test_lane_is_the_pseudonym_mod_lanes(p: bytes, lanes: int) -> None:
    """lane_of is the pseudonym, read as a big-endian integer, mod the (power-of-two) lane count."""
    lane = lane_of(p, lanes)
    assert 0 <= lane < lanes
    assert lane == int.from_bytes(p, "big") % lanes


@pytest.mark.parametrize("lanes", [1, 2, 16, 1024])
def test_voters_spread_evenly_over_lanes(lanes: int) -> None:
    """64k real pseudonyms fill every lane about equally (chi-square sanity check)."""
    counts = Counter(lane_of(p, lanes) for p in VOTERS)
    assert set(counts) == set(range(lanes))
    assert looks_uniform(counts, lanes)


# --- voter-index buckets -----------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(MAX_BUCKET_BITS + 1))
def test_bucket_in_range_for_every_bit_count(bits: int) -> None:
    """Buckets run 0 to 2^bits - 1, reaching both ends."""
    assert bucket_of(b"\x00" * 16, bits) == 0
    assert bucket_of(b"\xff" * 16, bits) == 2**bits - 1
    assert all(0 <= bucket_of(p, bits) < 2**bits for p in VOTERS[:4096])


@given(pseudonyms, st.integers(0, MAX_BUCKET_BITS))
def test_bucket_is_the_top_bits(p: bytes, bits: int) -> None:
    """The bucket is the pseudonym's top `bits` bits (so zero bits means one bucket, 0)."""
    assert bucket_of(p, bits) == int.from_bytes(p, "big") >> (8 * PSEUDONYM_BYTES - bits)


@given(pseudonyms)
def test_bucket_and_index_field_rebuild_the_pseudonym(p: bytes) -> None:
    """With 16 bucket bits, bucket and field together hold every bit: no two voters share both."""
    field = index_field(p)
    assert len(field) == PSEUDONYM_BYTES - INDEX_FIELD_OFFSET == 14
    assert bucket_of(p, 16).to_bytes(2, "big") + field == p


def test_voters_of_one_lane_spread_evenly_over_its_buckets() -> None:
    """Lane and bucket come from different bits, so one lane's voters fill all its buckets."""
    lane_zero = [p for p in VOTERS if lane_of(p, 16) == 0]
    counts = Counter(bucket_of(p, 6) for p in lane_zero)
    assert set(counts) == set(range(64))
    assert looks_uniform(counts, 64)

"""Hold for review in the ledger format: held vote records, review records (type 0x03) and
reviewed admin records (action 0x04), their worked example in docs/ledger-format.md §2.4 and
§11.5, strict decoding, the rules LaneReview follows, and the certificate's review totals."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.ledger import merkle
from tally.ledger.admin import AdminAction, AdminRecord, ReviewedVote, decode_admin, encode_admin
from tally.ledger.certificate import CertificateError, LogHead, ResultCertificate, ReviewTotals
from tally.ledger.leaf import LeafError, VoteRecord, VoteStatus, decode_leaf, encode_leaf
from tally.ledger.review import (
    Decision,
    LaneReview,
    ReviewRecord,
    decode_lane_record,
    decode_review,
    encode_review,
    review_leaf_hash,
)

POLL = "final-2025"
# docs §11.5: a fourth vote in lane 3, held, then released by a reviewer.
HELD = VoteRecord(
    POLL,
    3,
    4,
    bytes.fromhex("5566778899aabbccddeeff0011223343"),
    "bob",
    1_767_225_600_750,
    VoteStatus.HELD,
)
HELD_HEX = (
    "01010a66696e616c2d32303235000300000000000000045566778899aabbccddeeff001122334303626f62"
    "0000019b76daaaee02"
)
HELD_HASH = "fac7eca41f30bdab00170765340db21660def58e2e8b206d2fc19af3a8436e12"
RELEASE = ReviewRecord(POLL, 3, 5, 4, Decision.RELEASED, 1_767_226_200_000)
RELEASE_HEX = "01030a66696e616c2d32303235000300000000000000050000000000000004010000019b76e3cfc0"
RELEASE_HASH = "00b8689b7b5d74271cf7b6dfeb2f280b9ee9022d4f850ab66b03152740973322"
REVIEWED = AdminRecord(
    POLL,
    AdminAction.REVIEWED,
    1_767_226_199_990,
    b"reviewer@example",
    None,
    ReviewedVote(3, 4, Decision.RELEASED),
)
REVIEWED_HEX = (
    "01020a66696e616c2d32303235040000019b76e3cfb6107265766965776572406578616d706c65"
    "0003000000000000000401"
)
REVIEWED_HASH = "04ca02311a7d57b01bbc9fb82e48bd8bbb2118e895ce15da34437dcdecf1998b"


def test_worked_example_held_vote() -> None:
    data = encode_leaf(HELD)
    assert data.hex() == HELD_HEX
    assert len(data) == 39 + 10 + 3
    assert data[-1] == 0x02  # status held
    assert merkle.leaf_hash(data).hex() == HELD_HASH
    assert decode_leaf(data) == HELD == decode_lane_record(data)


def test_worked_example_review_record() -> None:
    data = encode_review(RELEASE)
    assert data.hex() == RELEASE_HEX
    assert len(data) == 30 + 10
    assert review_leaf_hash(RELEASE).hex() == RELEASE_HASH
    assert hashlib.sha256(b"\x00" + data).hexdigest() == RELEASE_HASH
    assert decode_review(data) == RELEASE == decode_lane_record(data)
    assert RELEASE.leaf_index == 4


def test_worked_example_reviewed_admin_record() -> None:
    data = encode_admin(REVIEWED)
    assert data.hex() == REVIEWED_HEX
    assert len(data) == 50
    assert merkle.leaf_hash(data).hex() == REVIEWED_HASH
    assert decode_admin(data) == REVIEWED


def _patched(hex_record: str, offset: int, new: str) -> bytes:
    data = bytearray(bytes.fromhex(hex_record))
    patch = bytes.fromhex(new)
    data[offset : offset + len(patch)] = patch
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_patched(RELEASE_HEX, 0, "02"), "version"),
        (_patched(RELEASE_HEX, 1, "01"), "review record"),
        (_patched(RELEASE_HEX, 3, "ff"), "poll id"),
        (_patched(RELEASE_HEX, 15, "0000000000000000"), "entry seq"),  # own seq 0
        (_patched(RELEASE_HEX, 23, "0000000000000000"), "held seq"),  # decides entry 0
        (_patched(RELEASE_HEX, 31, "00"), "decision"),
        (_patched(RELEASE_HEX, 31, "03"), "decision"),
        (bytes.fromhex(RELEASE_HEX)[:-1], "decision time"),
        (bytes.fromhex(RELEASE_HEX) + b"\x00", "after the record"),
    ],
)
def test_malformed_review_records_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(LeafError, match=message):
        decode_review(data)
    with pytest.raises(LeafError):
        decode_lane_record(data)


def test_record_types_do_not_mix() -> None:
    """A review record is not a vote, a vote not a review record, neither an admin record."""
    with pytest.raises(LeafError, match="record type"):
        decode_leaf(bytes.fromhex(RELEASE_HEX))
    with pytest.raises(LeafError, match="not a review record"):
        decode_review(bytes.fromhex(HELD_HEX))
    with pytest.raises(LeafError, match="not a admin record"):
        decode_admin(bytes.fromhex(RELEASE_HEX))


@pytest.mark.parametrize(
    ("offset", "new", "message"),
    [
        (49, "00", "decision"),  # after the actor (23..38), the lane (39) and held seq (41)
        (49, "03", "decision"),
        (41, "0000000000000000", "held seq"),
    ],
)
def test_malformed_reviewed_admin_records_are_rejected(offset: int, new: str, message: str) -> None:
    with pytest.raises(LeafError, match=message):
        decode_admin(_patched(REVIEWED_HEX, offset, new))


def test_reviewed_admin_record_needs_its_vote_and_only_it() -> None:
    with pytest.raises(LeafError, match="reviewed vote"):
        AdminRecord(POLL, AdminAction.REVIEWED, 1, b"r")
    with pytest.raises(LeafError, match="reviewed vote"):
        AdminRecord(POLL, AdminAction.OPENED, 1, b"r", None, ReviewedVote(0, 1, Decision.VOIDED))
    # a reviewed record cut after its actor, as an opened one ends
    short = bytes.fromhex(REVIEWED_HEX)[: -(2 + 8 + 1)]
    with pytest.raises(LeafError, match="lane"):
        decode_admin(short)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ReviewRecord(POLL, 70_000, 2, 1, Decision.RELEASED, 0),
        lambda: ReviewRecord(POLL, 0, 0, 1, Decision.RELEASED, 0),
        lambda: ReviewRecord(POLL, 0, 2, 0, Decision.RELEASED, 0),
        lambda: ReviewRecord(POLL, 0, 2, 1, 1, 0),  # type: ignore[arg-type]
        lambda: ReviewRecord(POLL, 0, 2, 1, Decision.VOIDED, -1),
        lambda: ReviewRecord("", 0, 2, 1, Decision.VOIDED, 0),
        lambda: ReviewedVote(0, 0, Decision.VOIDED),
        lambda: ReviewedVote(-1, 1, Decision.VOIDED),
    ],
)
def test_out_of_range_fields_are_refused(make: object) -> None:
    with pytest.raises(LeafError):
        make()  # type: ignore[operator]


_reviews = st.builds(
    ReviewRecord,
    poll_id=st.text(min_size=1, max_size=20).filter(lambda t: len(t.encode()) <= 255),
    lane=st.integers(0, 0xFFFF),
    seq=st.integers(1, 2**64 - 1),
    held_seq=st.integers(1, 2**64 - 1),
    decision=st.sampled_from(Decision),
    at_ms=st.integers(0, 2**64 - 1),
)


@given(_reviews)
def test_review_round_trip(record: ReviewRecord) -> None:
    assert decode_review(encode_review(record)) == record


@given(
    st.builds(
        ReviewedVote, st.integers(0, 0xFFFF), st.integers(1, 2**64 - 1), st.sampled_from(Decision)
    ),
    st.binary(max_size=255),
)
def test_reviewed_admin_round_trip(reviewed: ReviewedVote, actor: bytes) -> None:
    record = AdminRecord(POLL, AdminAction.REVIEWED, 5, actor, None, reviewed)
    assert decode_admin(encode_admin(record)) == record


@given(st.binary(max_size=60))
def test_anything_that_decodes_re_encodes_to_the_same_bytes(data: bytes) -> None:
    try:
        record = decode_review(data)
    except LeafError:
        return
    assert encode_review(record) == data


def vote(seq: int, status: VoteStatus = VoteStatus.ACCEPTED, option: str = "bob") -> VoteRecord:
    return VoteRecord(POLL, 3, seq, bytes(16), option, 0, status)


def decide(seq: int, held_seq: int, decision: Decision = Decision.RELEASED) -> ReviewRecord:
    return ReviewRecord(POLL, 3, seq, held_seq, decision, 0)


def test_lane_review_follows_the_rules() -> None:
    review = LaneReview()
    review.vote(vote(1))
    review.vote(vote(2, VoteStatus.HELD, "alice"))
    review.vote(vote(3, VoteStatus.HELD))
    review.vote(vote(4, VoteStatus.HELD))
    assert (review.held, sorted(review.pending)) == (3, [2, 3, 4])
    assert review.decide(decide(5, 2)) is None  # release alice's held vote
    assert review.decide(decide(6, 3, Decision.VOIDED)) is None
    assert review.decide(decide(7, 2, Decision.VOIDED)) == "review-duplicate"
    assert review.decide(decide(8, 1)) == "review-target-not-held"  # accepted, not held
    assert review.decide(decide(9, 10)) == "review-target-not-held"  # a later seq
    assert review.decide(decide(10, 6)) == "review-target-not-held"  # a decision, not a vote
    assert (review.released, review.voided, sorted(review.pending)) == (1, 1, [4])
    assert review.released_counts == {"alice": 1}
    assert review.decided == {2: Decision.RELEASED, 3: Decision.VOIDED}


def test_certificate_review_totals() -> None:
    head = LogHead(0, hashlib.sha256(b"").digest())
    certificate = ResultCertificate(
        "o/p/certificate", "p", head, (head,), (("a", 2), ("b", 1)), ReviewTotals(3, 1, 2)
    )
    text = certificate.format()
    assert text.splitlines()[1] == "tally-result/v2"
    assert text.endswith("total 3\nheld 3\nreleased 1\nvoided 2\n")
    assert ResultCertificate.parse(text) == certificate
    assert certificate.review == ReviewTotals(3, 1, 2)
    assert certificate.review.undecided == 0
    # v1 (before votes could be held) still parses, with no totals
    v1 = ResultCertificate("o/p/certificate", "p", head, (head,), (("a", 2),))
    assert v1.format().splitlines()[1] == "tally-result/v1"
    assert ResultCertificate.parse(v1.format()) == v1
    broken = [
        text.replace("held 3\n", ""),  # a line missing
        text.replace("released 1\nvoided 2\n", "voided 2\nreleased 1\n"),  # out of order
        text.replace("held 3", "held 03"),
        text.replace("held 3", "held 2"),  # 1 released + 2 voided > 2 held
        text + "held 3\n",
        text.replace("tally-result/v2", "tally-result/v3"),
        v1.format() + "held 0\nreleased 0\nvoided 0\n",  # v1 has none
    ]
    for bad in broken:
        with pytest.raises(CertificateError):
            ResultCertificate.parse(bad)
    with pytest.raises(CertificateError):
        ReviewTotals(1, 1, 1)
    assert ReviewTotals(5, 1, 2).undecided == 2

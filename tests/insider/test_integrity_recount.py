"""The archiver's recount (archive.poll_logs.PollReview), record by record: a vote stuffed without
a valid admission signature into a poll whose admin log names admission keys is refused (never
counted, released or not), a signed one counts; a poll without keys counts as before. And the
v3 certificate that records alarms round-trips, while v2 and v1 still parse."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.archive.poll_logs import PollReview, Refused
from tally.ledger.admin import AdminAction, AdminRecord
from tally.ledger.admission import AdmissionSigner
from tally.ledger.certificate import (
    FORMAT_V3,
    CertificateError,
    Integrity,
    LogHead,
    ResultCertificate,
    ReviewTotals,
)
from tally.ledger.leaf import VoteRecord, VoteStatus
from tally.ledger.review import Decision, ReviewRecord

POLL = "insiderpoll00001"
T = 1_767_225_000_000
SIGNER = AdmissionSigner("tally.test/ledger/admission/gw", Ed25519PrivateKey.generate())


def vote(seq: int, option: str, *, signed: bool, held: bool = False) -> VoteRecord:
    status = VoteStatus.HELD if held else VoteStatus.ACCEPTED
    pseudonym = seq.to_bytes(16, "big")
    admission = SIGNER.sign(POLL, pseudonym, option, status, T) if signed else None
    return VoteRecord(POLL, 0, seq, pseudonym, option, T + 10, status, admission)


def key_record() -> AdminRecord:
    return AdminRecord(POLL, AdminAction.ADMISSION_KEY, T, b"ops", admission_key=SIGNER.key)


def test_a_poll_with_admission_keys_counts_only_signed_votes() -> None:
    review = PollReview(1)
    review.add(POLL, key_record())
    assert review.signed
    review.add(POLL, vote(1, "a", signed=True))
    review.add(POLL, vote(2, "a", signed=False))  # stuffed: no gateway signed it
    review.add(POLL, vote(3, "b", signed=False, held=True))  # stuffed, held, then released
    review.add(POLL, ReviewRecord(POLL, 0, 4, 3, Decision.RELEASED, T + 20))
    review.add(POLL, vote(5, "b", signed=True, held=True))
    review.add(POLL, ReviewRecord(POLL, 0, 6, 5, Decision.RELEASED, T + 30))
    assert review.counts(["a", "b"]) == [("a", 1), ("b", 1)]
    assert review.refused == [Refused(0, 2, "unsigned"), Refused(0, 3, "unsigned")]
    count = review.lane_count(0, 6)
    assert (count.counts, count.held) == ({"a": 1, "b": 1}, 0)


def test_a_vote_signed_by_another_key_is_refused() -> None:
    review = PollReview(1)
    review.add(POLL, key_record())
    stranger = AdmissionSigner("tally.test/ledger/admission/evil", Ed25519PrivateKey.generate())
    pseudonym = bytes(16)
    forged = VoteRecord(
        POLL, 0, 1, pseudonym, "a", T + 10, VoteStatus.ACCEPTED,
        stranger.sign(POLL, pseudonym, "a", VoteStatus.ACCEPTED, T),
    )  # fmt: skip
    review.add(POLL, forged)
    assert review.counts(["a"]) == [("a", 0)]
    assert review.refused == [Refused(0, 1, "unknown-key")]


def test_a_poll_without_admission_keys_counts_unsigned_votes_as_before() -> None:
    review = PollReview(1)
    review.add(POLL, vote(1, "a", signed=False))
    review.add(POLL, vote(2, "b", signed=False, held=True))
    assert not review.signed
    assert review.counts(["a", "b"]) == [("a", 1), ("b", 0)]
    assert review.lane_count(0, 2).held == 1
    assert review.refused == []


ROOT = bytes(range(32))


def certificate(integrity: Integrity | None) -> ResultCertificate:
    return ResultCertificate(
        f"tally.test/ledger/{POLL}/certificate",
        POLL,
        LogHead(3, ROOT),
        (LogHead(5, ROOT), LogHead(0, ROOT)),
        (("a", 4), ("b", 1)),
        ReviewTotals(1, 1, 0),
        integrity,
    )


def test_a_v3_certificate_records_alarms_and_counters_and_round_trips() -> None:
    cert = certificate(
        Integrity((("counter-mismatch", "0"), ("ledger-gap", "1")), (("a", 4), ("b", 6)))
    )
    text = cert.format()
    lines = text.splitlines()
    assert lines[1] == FORMAT_V3
    assert lines[-4:] == [
        "alarm counter-mismatch 0", "alarm ledger-gap 1", "counter a 4", "counter b 6",
    ]  # fmt: skip
    v2_lines = certificate(None).format().splitlines()
    assert lines[:-4] == [v2_lines[0], FORMAT_V3, *v2_lines[2:]]
    assert ResultCertificate.parse(text) == cert
    only_alarm = certificate(Integrity((("unsigned-vote", "0"),)))
    assert ResultCertificate.parse(only_alarm.format()) == only_alarm


@pytest.mark.parametrize(
    "tail",
    [
        "",  # v3 without an alarm line
        "counter a 4\ncounter b 6\n",  # counters without an alarm
        "alarm ledger-gap 0\ncounter b 6\n",  # counters that skip an option
        "alarm Ledger-Gap 0\n",  # not a kind's spelling
        "alarm ledger-gap lane0\n",  # not a log
    ],
)
def test_a_malformed_v3_integrity_section_is_refused(tail: str) -> None:
    body = certificate(None).format().replace("tally-result/v2", FORMAT_V3)
    with pytest.raises(CertificateError):
        ResultCertificate.parse(body + tail)


def test_v2_and_v1_certificates_still_parse() -> None:
    v2 = certificate(None)
    assert ResultCertificate.parse(v2.format()) == v2
    v1 = ResultCertificate(v2.origin, POLL, v2.admin, v2.lanes, v2.counts)
    assert v1.format().splitlines()[1] == "tally-result/v1"
    assert ResultCertificate.parse(v1.format()) == v1
    assert base64.b64encode(ROOT).decode() in v1.format()

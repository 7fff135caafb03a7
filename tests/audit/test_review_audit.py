"""Hold for review under `tally audit verify`: a clean ledger with held, released and voided
votes passes and recounts accepted + released; forged, misdirected and repeated decisions, a
decision the admin log signs but no lane holds, wrong certificate totals and a certificate while
votes are still held are each caught with their stable code. `tally audit receipt` shows a held
vote's status.

Tampered ledgers are written whole with the archiver's writer and signed with the ledger's own
key, the certificate re-signed with the recount: only the meaning of the records can tell."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from audit.conftest import (
    KEY,
    POLL,
    REVIEWER,
    LedgerSpec,
    audit_cli,
    make_review_spec,
    write_ledger,
)
from audit.test_receipt import iso_ms
from tally.audit.verify import FINDING_CODES
from tally.ledger import merkle
from tally.ledger.admin import AdminAction, AdminRecord, ReviewedVote, decode_admin, encode_admin
from tally.ledger.certificate import ReviewTotals
from tally.ledger.leaf import VoteRecord, VoteStatus, decode_leaf, encode_leaf
from tally.ledger.review import Decision, ReviewRecord, decode_lane_record, encode_review


@pytest.fixture(scope="module")
def review_spec() -> LedgerSpec:
    return make_review_spec()


def verify(root: Path) -> tuple[int, dict[str, Any]]:
    result = audit_cli("verify", str(root), "--key", KEY, "--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert all(f["code"] in FINDING_CODES for f in document["findings"])
    assert (result.returncode == 0) == document["ok"]
    return result.returncode, document


def written(tmp_path: Path, spec: LedgerSpec) -> Path:
    root = tmp_path / "ledger" / POLL
    write_ledger(root, spec)
    return root


def codes(document: dict[str, Any]) -> set[str]:
    return {f["code"] for f in document["findings"]}


def where(document: dict[str, Any], code: str) -> list[tuple[str, int | None]]:
    return [(f["file"], f["index"]) for f in document["findings"] if f["code"] == code]


def first_review(spec: LedgerSpec, lane: int, decision: Decision) -> tuple[int, ReviewRecord]:
    """The leaf index and record of the lane's first review record with ``decision``."""
    for index, data in enumerate(spec.votes[lane]):
        record = decode_lane_record(data)
        if isinstance(record, ReviewRecord) and record.decision is decision:
            return index, record
    raise AssertionError("no such review record")


def admin_twin(spec: LedgerSpec, record: ReviewRecord) -> int:
    """The admin log's leaf index of the review record's reviewed twin."""
    twin = ReviewedVote(record.lane, record.held_seq, record.decision)
    return next(i for i, data in enumerate(spec.admin) if decode_admin(data).review == twin)


def with_admin(spec: LedgerSpec, admin: list[bytes]) -> LedgerSpec:
    published = sorted({s for s in spec.admin_publish if s < len(admin)} | {len(admin)})
    return replace(spec, admin=admin, admin_publish=published)


def test_a_clean_ledger_with_held_released_and_voided_votes_passes(
    tmp_path: Path, review_spec: LedgerSpec
) -> None:
    root = written(tmp_path, review_spec)
    code, document = verify(root)
    assert code == 0, document["findings"]
    assert document["certificate"] == "verified"
    totals = review_spec.review_totals()
    assert (totals.held, totals.undecided) == (171, 0)
    assert totals.released > 0
    assert totals.voided > 0
    assert document["review"] == {
        "held": totals.held,
        "released": totals.released,
        "voided": totals.voided,
        "undecided": 0,
    }
    accepted = sum(
        decode_leaf(d).status is VoteStatus.ACCEPTED
        for lane in review_spec.votes
        for d in lane
        if d[1] == 0x01
    )
    assert document["votes"] == accepted + totals.released  # voided and held are not counted
    assert document["counts"] == dict(review_spec.recount())
    text = audit_cli("verify", str(root), "--key", KEY).stdout
    assert f"review       held 171, released {totals.released}, voided {totals.voided}" in text


def test_a_forged_decision_without_its_admin_record(
    tmp_path: Path, review_spec: LedgerSpec
) -> None:
    """The admin log loses one reviewed record (re-signed): the lane's decision is unsigned."""
    index, record = first_review(review_spec, 2, Decision.RELEASED)
    admin = list(review_spec.admin)
    del admin[admin_twin(review_spec, record)]
    code, document = verify(written(tmp_path, with_admin(review_spec, admin)))
    assert code == 1
    assert codes(document) == {"review-unsigned"}
    assert where(document, "review-unsigned") == [("2/tile/entries/000", index)]


def test_a_voided_vote_turned_released_in_its_lane(tmp_path: Path, review_spec: LedgerSpec) -> None:
    """A dishonest operator counts a voided vote: the lane now says released (the certificate
    recounted to match), but the signed admin log says voided."""
    index, record = first_review(review_spec, 1, Decision.VOIDED)
    votes = list(review_spec.votes[1])
    votes[index] = encode_review(replace(record, decision=Decision.RELEASED))
    twin = admin_twin(review_spec, record)
    code, document = verify(written(tmp_path, review_spec.with_lane(1, votes)))
    assert code == 1
    assert codes(document) == {"review-unsigned", "review-unlogged"}
    assert where(document, "review-unsigned") == [("1/tile/entries/000", index)]
    assert [index for _, index in where(document, "review-unlogged")] == [twin]


def test_a_decision_on_a_vote_that_was_not_held(tmp_path: Path, review_spec: LedgerSpec) -> None:
    """A decision retargeted at an accepted vote (its admin twin too): no vote may be voided
    unless it was held, and the held vote it decided is left undecided."""
    index, record = first_review(review_spec, 0, Decision.VOIDED)
    accepted = next(
        r.seq
        for r in map(decode_lane_record, review_spec.votes[0])
        if isinstance(r, VoteRecord) and r.status is VoteStatus.ACCEPTED
    )
    votes = list(review_spec.votes[0])
    votes[index] = encode_review(replace(record, held_seq=accepted))
    admin = list(review_spec.admin)
    twin = admin_twin(review_spec, record)
    reviewed = ReviewedVote(0, accepted, Decision.VOIDED)
    admin[twin] = encode_admin(replace(decode_admin(admin[twin]), review=reviewed))
    spec = with_admin(review_spec.with_lane(0, votes), admin)
    code, document = verify(written(tmp_path, spec))
    assert code == 1
    assert where(document, "review-target-not-held") == [("0/tile/entries/000", index)]
    assert codes(document) == {"review-target-not-held", "held-undecided"}


def test_a_second_decision_on_the_same_vote(tmp_path: Path, review_spec: LedgerSpec) -> None:
    """A held vote released, then (with a signed twin in the admin log) released again."""
    _, record = first_review(review_spec, 3, Decision.RELEASED)
    votes = list(review_spec.votes[3])
    again = ReviewRecord(POLL, 3, len(votes) + 1, record.held_seq, Decision.RELEASED, 1)
    votes.append(encode_review(again))
    reviewed = ReviewedVote(3, record.held_seq, Decision.RELEASED)
    admin = [
        *review_spec.admin,
        encode_admin(AdminRecord(POLL, AdminAction.REVIEWED, 1, REVIEWER, None, reviewed)),
    ]
    spec = with_admin(review_spec.with_lane(3, votes), admin)
    code, document = verify(written(tmp_path, spec))
    assert code == 1
    assert codes(document) == {"review-duplicate"}
    [(file, index)] = where(document, "review-duplicate")
    assert (file.startswith("3/tile/entries/"), index) == (True, len(votes) - 1)


def test_certificate_review_totals_that_are_not_the_logs(
    tmp_path: Path, review_spec: LedgerSpec
) -> None:
    totals = review_spec.review_totals()
    wrong = ReviewTotals(totals.held, totals.released - 1, totals.voided + 1)
    code, document = verify(written(tmp_path, replace(review_spec, review=wrong)))
    assert code == 1
    assert codes(document) == {"review-totals"}
    assert sorted((f["expected"], f["found"]) for f in document["findings"]) == sorted(
        [(str(totals.released), str(wrong.released)), (str(totals.voided), str(wrong.voided))]
    )


def test_a_v1_certificate_of_a_poll_with_held_votes(
    tmp_path: Path, review_spec: LedgerSpec
) -> None:
    """A certificate in the format from before holds states none: the totals disagree."""
    root = tmp_path / "ledger" / POLL
    write_ledger(root, replace(review_spec, review=ReviewTotals(0, 0, 0)))
    _, document = verify(root)
    assert codes(document) == {"review-totals"}


def test_a_certificate_while_votes_are_still_held(tmp_path: Path) -> None:
    spec = make_review_spec(undecided=2)
    assert spec.review_totals().undecided == 2
    code, document = verify(written(tmp_path, spec))
    assert code == 1
    assert codes(document) == {"held-undecided"}
    assert where(document, "held-undecided") == [("certificate", None)]


def test_a_closed_poll_waiting_for_reviewers_has_no_certificate_yet(tmp_path: Path) -> None:
    spec = replace(make_review_spec(undecided=2), certify=False)
    code, document = verify(written(tmp_path, spec))
    assert code == 0, document["findings"]
    assert document["certificate"] == "awaiting-review"
    assert document["review"]["undecided"] == 2


def test_a_vote_recorded_as_voided(tmp_path: Path, review_spec: LedgerSpec) -> None:
    """Status 0x03 is reserved: a voided vote is a held vote and a review record."""
    votes = list(review_spec.votes[2])
    index = next(i for i, d in enumerate(votes) if d[1] == 0x01 and d[-1] == VoteStatus.ACCEPTED)
    votes[index] = encode_leaf(replace(decode_leaf(votes[index]), status=VoteStatus.VOIDED))
    spec = review_spec.with_lane(2, votes)
    _, document = verify(written(tmp_path, spec))
    assert codes(document) == {"vote-status"}
    assert where(document, "vote-status") == [("2/tile/entries/000", index)]


def test_a_reviewed_record_before_the_poll_opened(tmp_path: Path, review_spec: LedgerSpec) -> None:
    admin = list(review_spec.admin)
    twin = admin.pop(admin_twin(review_spec, first_review(review_spec, 0, Decision.RELEASED)[1]))
    admin.insert(1, twin)  # between created and opened
    _, document = verify(written(tmp_path, with_admin(review_spec, admin)))
    assert codes(document) == {"admin-order"}
    assert where(document, "admin-order") == [(f"admin/tile/entries/000.p/{len(admin)}", 1)]


def held_receipt(spec: LedgerSpec, lane: int, decision: Decision) -> dict[str, Any]:
    """The receipt of a vote cast held that reviewers then decided so, as the server gives it
    when the voter asks again after the decision."""
    _, review = first_review(spec, lane, decision)
    data = spec.votes[lane][review.held_seq - 1]
    record = decode_leaf(data)
    assert record.status is VoteStatus.HELD
    return {
        "poll_id": POLL,
        "lane": lane,
        "entry_id": record.seq,
        "option": record.option_id,
        "accepted_at": iso_ms(record.accepted_ms),
        "leaf_hash": merkle.leaf_hash(data).hex(),
        "status": decision.name.lower(),
    }


def check_receipt(tmp_path: Path, root: Path, receipt: dict[str, Any]) -> tuple[int, Any]:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    result = audit_cli("receipt", str(path), str(root), "--key", KEY, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("decision", [Decision.RELEASED, Decision.VOIDED])
def test_the_receipt_of_a_held_vote_shows_what_became_of_it(
    tmp_path: Path, review_spec: LedgerSpec, decision: Decision
) -> None:
    root = written(tmp_path, review_spec)
    receipt = held_receipt(review_spec, 1, decision)
    code, document = check_receipt(tmp_path, root, receipt)
    assert code == 0, document
    assert document["status"] == decision.name.lower()
    assert "review decision" in document["checked"]
    for said in ("held", None):  # as answered when cast, or a receipt without a status
        code, document = check_receipt(tmp_path, root, {**receipt, "status": said})
        assert code == 0, document
        assert document["status"] == decision.name.lower()
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    text = audit_cli("receipt", str(path), str(root), "--key", KEY).stdout
    assert f"status       held for review, then {decision.name.lower()}" in text


def test_a_receipt_that_misstates_a_held_vote(tmp_path: Path, review_spec: LedgerSpec) -> None:
    root = written(tmp_path, review_spec)
    receipt = held_receipt(review_spec, 1, Decision.VOIDED)
    for said, found in (("released", "voided"), ("accepted", "held")):
        code, document = check_receipt(tmp_path, root, {**receipt, "status": said})
        assert code == 1
        [finding] = document["findings"]
        assert (finding["code"], finding["expected"], finding["found"]) == (
            "receipt-mismatch",
            said,
            found,
        )

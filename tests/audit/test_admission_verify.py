"""`tally audit verify` and admission signatures: a poll whose admin log names admission keys
verifies only if every vote carries a valid signature by one of them, valid at its time; a vote
stuffed into a lane by someone without a gateway key (then archived and signed by the ledger key,
as the archiver signs whatever the store holds) is a finding that names its lane and leaf. A
pre-admission poll (the fixture ledger of conftest.py) still verifies, reported as unsigned.

Such a vote is not counted, accepted or released, by the archiver's recount (archive.poll_logs.
PollReview), which makes the certificate; the auditor recounts the same way, so a certificate made
by it (`archived`) is not blamed with a count-mismatch, and one that counts stuffed votes is."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.conftest import (
    CREATED_MS,
    KEY,
    POLL,
    PREFIX,
    VOTERS,
    LedgerSpec,
    audit_cli,
    lane_of,
    make_spec,
    pseudonym_of,
    write_ledger,
)
from tally.archive.poll_logs import PollReview
from tally.audit.report import Report
from tally.audit.source import DirectorySource
from tally.audit.verify import FINDING_CODES, verify
from tally.audit.verify_findings import MAX_FINDINGS_PER_KIND
from tally.ledger import layout, note
from tally.ledger.admin import AdminAction, AdminRecord, ReviewedVote, decode_admin, encode_admin
from tally.ledger.admission import AdmissionKey, AdmissionSigner
from tally.ledger.certificate import ReviewTotals
from tally.ledger.leaf import Admission, VoteRecord, VoteStatus, decode_leaf, encode_leaf
from tally.ledger.review import Decision, ReviewRecord, decode_lane_record, encode_review
from tally.ledger.tiles import TILE_WIDTH

GATEWAY = AdmissionSigner(
    f"{PREFIX}/admission/gw-1", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
)
RETIRED = AdmissionSigner(
    f"{PREFIX}/admission/gw-old", Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
)
RETIRED_UNTIL_MS = CREATED_MS + 1  # gw-old signed nothing valid once the poll opened
OUTSIDER = AdmissionSigner(
    f"{PREFIX}/admission/gw-1", Ed25519PrivateKey.from_private_bytes(bytes(range(3, 35)))
)
ADMIT_LAG_MS = 7  # the gateway signs a few ms before the store accepts
STUFFED_LANE = 1


def key_record(key: AdmissionKey) -> bytes:
    return encode_admin(
        AdminRecord(POLL, AdminAction.ADMISSION_KEY, CREATED_MS, b"registry", admission_key=key)
    )


def signed(
    record: VoteRecord, signer: AdmissionSigner = GATEWAY, lag_ms: int = ADMIT_LAG_MS
) -> bytes:
    admission = signer.sign(
        record.poll_id,
        record.pseudonym,
        record.option_id,
        record.status,
        record.accepted_ms - lag_ms,
    )
    return encode_leaf(replace(record, admission=admission))


def make_signed_spec() -> LedgerSpec:
    """The fixture poll with admission: the gateway's key (and a retired one) in the admin log
    right after `created`, every vote signed by the gateway."""
    base = make_spec()
    admin = [
        base.admin[0],
        key_record(GATEWAY.key),
        key_record(replace(RETIRED.key, not_after_ms=RETIRED_UNTIL_MS)),
        *base.admin[1:],
    ]
    votes = [[signed(decode_leaf(r)) for r in lane] for lane in base.votes]
    return replace(base, admin=admin, admin_publish=[1, 3, 4, 5], votes=votes)


@pytest.fixture(scope="module")
def signed_spec() -> LedgerSpec:
    return make_signed_spec()


@pytest.fixture(scope="module")
def signed_ledger(tmp_path_factory: pytest.TempPathFactory, signed_spec: LedgerSpec) -> Path:
    root = tmp_path_factory.mktemp("signed") / POLL
    write_ledger(root, signed_spec)
    return root


def archived(spec: LedgerSpec) -> LedgerSpec:
    """The poll with the certificate the archiver would sign: counts and review totals from its
    own recount (PollReview), fed every record as it rebuilds one from the published logs (the
    admin log, then each lane)."""
    review = PollReview(spec.definition.lanes)
    for data in spec.admin:
        review.add(spec.poll_id, decode_admin(data))
    for lane in spec.votes:
        for data in lane:
            review.add(spec.poll_id, decode_lane_record(data))
    counts = review.counts([o.id for o in spec.definition.options])
    return replace(spec, counts=counts, review=review.totals())


def audit(root: Path, **options: object) -> Report:
    return verify(DirectorySource(root), note.Verifier.parse(KEY), **options)  # type: ignore[arg-type]


def stuffed_vote(spec: LedgerSpec) -> VoteRecord:
    """A vote an insider adds at the end of lane 1: a made-up voter, a plausible time."""
    voter = next(v for v in range(VOTERS, VOTERS + 100) if lane_of(pseudonym_of(v)) == STUFFED_LANE)
    last = decode_leaf(spec.votes[STUFFED_LANE][-1])
    return VoteRecord(
        POLL,
        STUFFED_LANE,
        len(spec.votes[STUFFED_LANE]) + 1,
        pseudonym_of(voter),
        "red",
        last.accepted_ms + 1,
    )


def bundle_path(lane: int, index: int, size: int) -> str:
    start = index // TILE_WIDTH * TILE_WIDTH
    width = min(TILE_WIDTH, size - start)
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"{lane}/tile/entries/{index // TILE_WIDTH:03d}{suffix}"


def test_a_signed_poll_verifies_and_lists_its_admission_keys(signed_ledger: Path) -> None:
    report = audit(signed_ledger)
    assert report.findings == [], [f.line() for f in report.findings]
    assert (report.admission, report.admission_signed, report.votes) == ("signed", VOTERS, VOTERS)
    listed = {(k.name, k.key_id, k.not_before_ms, k.not_after_ms) for k in report.admission_keys}
    assert listed == {
        (GATEWAY.key.name, GATEWAY.key.key_id, 0, 0),
        (RETIRED.key.name, RETIRED.key.key_id, 0, RETIRED_UNTIL_MS),
    }
    result = audit_cli("verify", str(signed_ledger), "--key", KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "admission    signed: every vote" in result.stdout
    assert f"admission key {GATEWAY.key.verifier} valid 1970-01-01T00:00:00.000Z to no end" in (
        result.stdout
    )


def test_a_pre_admission_poll_still_verifies_and_says_it_is_unsigned(pristine: Path) -> None:
    report = audit(pristine)
    assert report.ok
    assert report.admission == "unsigned"
    assert report.admission_keys == []
    result = audit_cli("verify", str(pristine), "--key", KEY, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["admission"] == {"state": "unsigned", "signed_votes": 0, "keys": []}


def _unsigned(record: VoteRecord) -> bytes:
    return encode_leaf(record)


def _garbage(record: VoteRecord) -> bytes:
    admission = Admission(record.accepted_ms - 5, GATEWAY.key.key_id, hashlib.sha512(b"x").digest())
    return encode_leaf(replace(record, admission=admission))


def _other_option(record: VoteRecord) -> bytes:
    """A real signature of the gateway, for another option than the record says."""
    admission = GATEWAY.sign(POLL, record.pseudonym, "blue", record.status, record.accepted_ms - 5)
    return encode_leaf(replace(record, admission=admission))


STUFFINGS: dict[str, Callable[[VoteRecord], bytes]] = {
    "admission-unsigned": _unsigned,
    "admission-bad-signature": _garbage,
    "admission-bad-signature/option": _other_option,
    "admission-unknown-key": lambda record: signed(record, OUTSIDER),
    "admission-key-not-valid": lambda record: signed(record, RETIRED),
    "admission-time": lambda record: signed(record, GATEWAY, lag_ms=301_000),
}


@pytest.mark.parametrize("case", sorted(STUFFINGS))
def test_a_stuffed_vote_is_a_finding_naming_its_leaf(
    case: str, signed_spec: LedgerSpec, tmp_path: Path
) -> None:
    vote = stuffed_vote(signed_spec)
    lane = [*signed_spec.votes[STUFFED_LANE], STUFFINGS[case](vote)]
    root = tmp_path / POLL
    write_ledger(root, archived(signed_spec.with_lane(STUFFED_LANE, lane)))  # re-signed
    report = audit(root)
    code = case.partition("/")[0]
    assert code in FINDING_CODES
    assert [(f.code, f.file, f.index) for f in report.findings] == [
        (code, bundle_path(STUFFED_LANE, vote.seq - 1, len(lane)), vote.seq - 1)
    ]
    assert vote.pseudonym.hex() in report.findings[0].message
    assert report.admission == "invalid"
    assert report.admission_signed == VOTERS
    assert report.certificate == "verified"  # the archiver did not count it either
    assert report.counts == dict(signed_spec.recount())
    result = audit_cli("verify", str(root), "--key", KEY)
    assert result.returncode == 1
    assert f"[{code}] leaf {vote.seq - 1}" in result.stdout


def test_many_stuffed_votes_are_all_found_with_one_thread_or_several(
    signed_spec: LedgerSpec, tmp_path: Path
) -> None:
    lane = list(signed_spec.votes[STUFFED_LANE])
    seqs = []
    for voter in range(VOTERS, VOTERS + 400):
        pseudonym = pseudonym_of(voter)
        if lane_of(pseudonym) != STUFFED_LANE:
            continue
        last = decode_leaf(lane[-1])
        record = VoteRecord(POLL, STUFFED_LANE, len(lane) + 1, pseudonym, "green", last.accepted_ms)
        lane.append(encode_leaf(record))
        seqs.append(record.seq)
    root = tmp_path / POLL
    write_ledger(root, archived(signed_spec.with_lane(STUFFED_LANE, lane)))
    one, several = audit(root, jobs=1), audit(root, jobs=3)
    assert [f.to_json() for f in one.findings] == [f.to_json() for f in several.findings]
    assert one.counts == several.counts == dict(signed_spec.recount())
    listed, summed = one.findings[:MAX_FINDINGS_PER_KIND], one.findings[MAX_FINDINGS_PER_KIND:]
    assert [f.index for f in listed] == [seq - 1 for seq in seqs[:MAX_FINDINGS_PER_KIND]]
    assert {f.code for f in listed} == {"admission-unsigned"}
    assert [(f.code, f.expected, f.found) for f in summed] == [
        ("too-many", "admission-unsigned", str(len(seqs) - MAX_FINDINGS_PER_KIND))
    ]


REVIEWER = b"rita"


def stuffed_and_reviewed(spec: LedgerSpec) -> tuple[LedgerSpec, list[tuple[int, str]]]:
    """The poll with, at the end of the stuffed lane: an unsigned accepted vote for red; an
    unsigned held vote for blue that a reviewer releases; a held vote for green signed by a key
    that is none of the poll's, voided; and a genuine held vote for green, released. Each
    decision is a review record in the lane and a reviewed record in the admin log (after the
    close). Returns the poll and the stuffed votes' (leaf index, finding code)."""
    lane = list(spec.votes[STUFFED_LANE])
    last = decode_leaf(lane[-1])
    voters = (v for v in range(VOTERS, VOTERS + 100) if lane_of(pseudonym_of(v)) == STUFFED_LANE)

    def vote(option: str, status: VoteStatus) -> VoteRecord:
        seq = len(lane) + 1
        return VoteRecord(
            POLL, STUFFED_LANE, seq, pseudonym_of(next(voters)), option, last.accepted_ms + seq,
            status,
        )  # fmt: skip

    held = VoteStatus.HELD
    stuffed = vote("red", VoteStatus.ACCEPTED)
    lane.append(encode_leaf(stuffed))
    released = vote("blue", held)
    lane.append(encode_leaf(released))
    voided = vote("green", held)
    lane.append(signed(voided, OUTSIDER))
    genuine = vote("green", held)
    lane.append(signed(genuine))
    admin = list(spec.admin)
    decided_ms = last.accepted_ms + 60_000
    for target, decision in (
        (released, Decision.RELEASED),
        (voided, Decision.VOIDED),
        (genuine, Decision.RELEASED),
    ):
        review = ReviewRecord(POLL, STUFFED_LANE, len(lane) + 1, target.seq, decision, decided_ms)
        lane.append(encode_review(review))
        reviewed = ReviewedVote(STUFFED_LANE, target.seq, decision)
        admin.append(
            encode_admin(
                AdminRecord(POLL, AdminAction.REVIEWED, decided_ms, REVIEWER, None, reviewed)
            )
        )
    poll = replace(spec, admin=admin, admin_publish=[*spec.admin_publish, len(admin)])
    found = [
        (stuffed.seq - 1, "admission-unsigned"),
        (released.seq - 1, "admission-unsigned"),
        (voided.seq - 1, "admission-unknown-key"),
    ]
    return poll.with_lane(STUFFED_LANE, lane), found


def test_stuffed_votes_accepted_or_released_are_not_counted_as_the_archiver_certifies(
    signed_spec: LedgerSpec, tmp_path: Path
) -> None:
    poll, stuffed = stuffed_and_reviewed(signed_spec)
    honest = dict(signed_spec.recount())
    expected = {**honest, "green": honest["green"] + 1}  # the genuine held vote, released
    certified = archived(poll)
    assert dict(certified.counts or ()) == expected  # what the archiver's recount certifies
    assert certified.review == ReviewTotals(3, 2, 1)  # the logs' totals, stuffed votes included
    root = tmp_path / POLL
    write_ledger(root, certified)

    one, several = audit(root, jobs=1), audit(root, jobs=3)
    assert [f.to_json() for f in one.findings] == [f.to_json() for f in several.findings]
    path = bundle_path(STUFFED_LANE, stuffed[0][0], len(poll.votes[STUFFED_LANE]))
    assert [(f.index, f.code, f.file) for f in one.findings] == [
        (index, code, path) for index, code in stuffed
    ], [f.line() for f in one.findings]
    for report in (one, several):
        assert report.certificate == "verified"
        assert report.counts == expected
        assert report.review == ReviewTotals(3, 2, 1)
        assert (report.admission, report.admission_signed) == ("invalid", VOTERS + 1)

    # Pinned keys change which signatures pass, not what the archiver counted: the honest votes
    # signed by a logged key that is not pinned are findings, but still counted.
    pinned = audit(root, admission_keys=[GATEWAY.key.verifier])
    assert [(f.index, f.code) for f in pinned.findings] == stuffed
    elsewhere = audit(root, admission_keys=[OUTSIDER.key.verifier])
    assert {f.code for f in elsewhere.findings} == {
        "admission-key-not-pinned", "admission-unsigned", "admission-unknown-key", "too-many",
    }  # fmt: skip
    assert (elsewhere.counts, elsewhere.certificate) == (expected, "verified")

    # A certificate that counts the stuffed votes is the one at fault: red and blue.
    write_ledger(root, replace(certified, counts=None))  # conftest's recount: every vote
    blamed = audit(root)
    assert [(f.code, f.message) for f in blamed.findings if f.code == "count-mismatch"] == [
        ("count-mismatch", f"option red: certified {honest['red'] + 1} votes, the recount of the leaves gives "
         f"{honest['red']}"),
        ("count-mismatch", f"option blue: certified {honest['blue'] + 1} votes, the recount of the leaves gives "
         f"{honest['blue']}"),
    ]  # fmt: skip


def test_a_signed_vote_in_a_poll_without_keys_is_reported_alone_and_counted(
    spec: LedgerSpec, tmp_path: Path
) -> None:
    """The admin log names no key: the archiver counts every vote, and the audit reports the one
    signed vote (no key it could pass under), not the unsigned votes of its bundle."""
    lane = list(spec.votes[STUFFED_LANE])
    lane[5] = signed(decode_leaf(lane[5]))
    poll = archived(spec.with_lane(STUFFED_LANE, lane))
    assert poll.counts == spec.recount()
    root = tmp_path / POLL
    write_ledger(root, poll)
    report = audit(root)
    assert [(f.code, f.index) for f in report.findings] == [("admission-unknown-key", 5)]
    assert (report.certificate, report.counts) == ("verified", dict(spec.recount()))


def test_pinned_admission_keys_decide_which_signatures_count(
    signed_ledger: Path, pristine: Path
) -> None:
    pinned = audit(signed_ledger, admission_keys=[GATEWAY.key.verifier])
    assert pinned.ok, [f.line() for f in pinned.findings]
    accepted = {k.name: k.accepted for k in pinned.admission_keys}
    assert accepted == {GATEWAY.key.name: True, RETIRED.key.name: False}

    other = audit(signed_ledger, admission_keys=[OUTSIDER.key.verifier])
    assert {f.code for f in other.findings} <= {"admission-key-not-pinned", "too-many"}
    assert other.admission == "invalid"
    assert not other.ok

    # Keys pinned: even a poll whose admin log names none must have signed votes.
    unsigned = audit(pristine, admission_keys=[GATEWAY.key.verifier])
    assert {f.code for f in unsigned.findings} <= {"admission-unsigned", "too-many"}
    assert unsigned.findings[0].code == "admission-unsigned"

    result = audit_cli(
        "verify", str(signed_ledger), "--key", KEY, "--admission-key", str(OUTSIDER.key.verifier)
    )
    assert result.returncode == 1
    assert "[admission-key-not-pinned]" in result.stdout
    assert "NOT PINNED" in result.stdout


def test_an_admission_key_file_and_bad_keys(signed_ledger: Path, tmp_path: Path) -> None:
    keys = tmp_path / "admission.keys"
    keys.write_text(f"{GATEWAY.key.verifier}\n\n{RETIRED.key.verifier}\n")
    result = audit_cli("verify", str(signed_ledger), "--key", KEY, "--admission-key", str(keys))
    assert result.returncode == 0, result.stdout + result.stderr
    for bad in ("tally.test/ledger/admission/gw-1+00000000+AQ==", str(tmp_path / "none")):
        refused = audit_cli("verify", str(signed_ledger), "--key", KEY, "--admission-key", bad)
        assert refused.returncode == 2
        assert "--admission-key" in refused.stderr
    refused = audit_cli("verify", str(signed_ledger), "--key", KEY, "--jobs", "0")
    assert refused.returncode == 2


def test_an_admission_key_record_before_created_is_out_of_order(
    signed_spec: LedgerSpec, tmp_path: Path
) -> None:
    admin = [signed_spec.admin[1], signed_spec.admin[0], *signed_spec.admin[2:]]
    root = tmp_path / POLL
    write_ledger(root, replace(signed_spec, admin=admin))
    report = audit(root)
    assert "admin-order" in {f.code for f in report.findings}
    assert all(
        f.file.startswith(layout.ADMIN_LOG) for f in report.findings if f.code == "admin-order"
    )

"""Tampered ledgers: each makes `tally audit verify` exit 1 with a finding naming the file at
fault and, where one leaf is at fault, its index.

Byte-level tampering edits a copy of the published files. Tampering only the meaning or the
history can tell is done as a dishonest operator would: the lane is rewritten with the archiver's
own writer from modified records and re-signed with the ledger's key, and the result certificate
re-signed to match, so every signature, tile and root is consistent.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from audit.conftest import (
    KEY,
    POLL,
    PREFIX,
    SIGNER,
    LedgerSpec,
    audit_cli,
    bundle_entry_offset,
    flip_byte,
    lane_of,
    pseudonym_of,
    sign_certificate_file,
    write_ledger,
)
from tally.audit.verify import FINDING_CODES
from tally.ledger import layout, note
from tally.ledger.certificate import certificate_origin, open_certificate
from tally.ledger.checkpoint import lane_origin
from tally.ledger.leaf import decode_leaf, encode_leaf


def audit(root: Path) -> list[dict[str, Any]]:
    """Run `verify --json` on ``root``; it must exit 1. Returns the findings."""
    result = audit_cli("verify", str(root), "--key", KEY, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is False
    findings: list[dict[str, Any]] = document["findings"]
    assert all(f["code"] in FINDING_CODES for f in findings), findings
    return findings


def where(findings: list[dict[str, Any]], code: str) -> list[tuple[str, int | None]]:
    return [(f["file"], f["index"]) for f in findings if f["code"] == code]


def codes(findings: list[dict[str, Any]]) -> set[str]:
    return {f["code"] for f in findings}


def rewrite_lane(ledger: Path, spec: LedgerSpec, lane: int, records: list[bytes]) -> None:
    """Replace a lane with ``records``, written and signed with the ledger's own key, and
    re-sign the certificate with the new heads and the recount: only meaning can tell."""
    other = ledger.parent.parent / "rewritten" / POLL
    write_ledger(other, spec.with_lane(lane, records))
    shutil.rmtree(ledger / str(lane))
    shutil.copytree(other / str(lane), ledger / str(lane))
    shutil.copy(other / layout.CERTIFICATE, ledger / layout.CERTIFICATE)


def vote_with(record: bytes, **changes: Any) -> bytes:
    return encode_leaf(replace(decode_leaf(record), **changes))


def test_flipped_byte_in_a_tile(ledger: Path) -> None:
    flip_byte(ledger / "2" / "tile" / "0" / "000", 5 * 32 + 3)
    findings = audit(ledger)
    assert where(findings, "tile-mismatch") == [("2/tile/0/000", 5)]
    assert codes(findings) == {"tile-mismatch"}  # the entries and roots are right
    message = findings[0]["message"]
    assert message.startswith("hash 5: expected ")
    assert "(from entries), found " in message


def test_flipped_byte_in_a_higher_tile(ledger: Path) -> None:
    flip_byte(ledger / "0" / "tile" / "1" / "000.p" / "1", 0)
    findings = audit(ledger)
    assert where(findings, "tile-mismatch") == [("0/tile/1/000.p/1", 0)]


@pytest.mark.parametrize(
    ("bundle", "entry", "leaf"),
    [("1/tile/entries/000", 7, 7), ("1/tile/entries/001.p/43", 5, 261)],
)
def test_changed_entry_in_a_bundle(ledger: Path, bundle: str, entry: int, leaf: int) -> None:
    path = ledger / bundle
    data = path.read_bytes()
    start = bundle_entry_offset(data, entry)
    length = int.from_bytes(data[start - 2 : start], "big")
    flip_byte(path, start + length - 2)  # the accepted time's last byte: still a valid record
    findings = audit(ledger)
    # The published tiles give the signed roots: the entry is what changed, not the tiles.
    assert where(findings, "entry-mismatch") == [(bundle, leaf)]
    assert codes(findings) == {"entry-mismatch"}


def test_dropped_leaf(ledger: Path, spec: LedgerSpec) -> None:
    records = list(spec.votes[2])
    del records[100]
    rewrite_lane(ledger, spec, 2, records)
    findings = audit(ledger)
    dropped = [f for f in findings if f["code"] == "seq-mismatch"]
    assert (dropped[0]["file"], dropped[0]["index"]) == ("2/tile/entries/000", 100)
    assert (dropped[0]["expected"], dropped[0]["found"]) == ("101", "102")
    assert codes(findings) == {"seq-mismatch", "too-many"}  # every later leaf is off by one


def test_two_swapped_leaves(ledger: Path, spec: LedgerSpec) -> None:
    records = list(spec.votes[3])
    records[10], records[20] = records[20], records[10]
    rewrite_lane(ledger, spec, 3, records)
    findings = audit(ledger)
    assert where(findings, "seq-mismatch") == [
        ("3/tile/entries/000", 10),
        ("3/tile/entries/000", 20),
    ]
    assert codes(findings) == {"seq-mismatch"}


def test_checkpoint_signed_by_another_key(ledger: Path) -> None:
    origin = lane_origin(PREFIX, POLL, 3)
    path = ledger / "3" / "checkpoints" / "134"
    text = path.read_bytes().rpartition(b"\n\n")[0].decode() + "\n"
    impostor = note.Signer(origin, bytes(range(1, 33)))  # the right name, another key
    path.write_bytes(note.sign(text, [impostor]))
    findings = audit(ledger)
    assert where(findings, "bad-signature") == [("3/checkpoints/134", None)]
    assert codes(findings) == {"bad-signature"}


def test_rewritten_history_resigned_with_the_right_key(ledger: Path, spec: LedgerSpec) -> None:
    """Lane 0 rewritten (leaf 3's vote changed) and every checkpoint re-signed with the ledger's
    key, but checkpoint 32 had been published before: the entries no longer give its root."""
    published = (ledger / "0" / "checkpoints" / "32").read_bytes()
    records = list(spec.votes[0])
    records[3] = vote_with(records[3], option_id="blue" if b"red" in records[3] else "red")
    rewrite_lane(ledger, spec, 0, records)
    (ledger / "0" / "checkpoints" / "32").write_bytes(published)
    findings = audit(ledger)
    assert where(findings, "history-rewritten") == [("0/checkpoints/32", None)]
    assert "inconsistent with checkpoint 0/checkpoints/32" in findings[0]["message"]
    assert where(findings, "inconsistent-history") == [("0/checkpoints/59", None)]
    assert codes(findings) == {"history-rewritten", "inconsistent-history"}


@pytest.mark.parametrize(
    ("copy_to", "bundle"), [(150, "1/tile/entries/000"), (270, "1/tile/entries/001.p/43")]
)
def test_duplicate_pseudonym(ledger: Path, spec: LedgerSpec, copy_to: int, bundle: str) -> None:
    records = list(spec.votes[1])
    twice = decode_leaf(records[40]).pseudonym  # same lane: placement cannot tell
    records[copy_to] = vote_with(records[copy_to], pseudonym=twice)
    rewrite_lane(ledger, spec, 1, records)
    findings = audit(ledger)
    assert where(findings, "duplicate-pseudonym") == [(bundle, copy_to)]
    assert codes(findings) == {"duplicate-pseudonym"}
    assert findings[0]["found"] == "1/tile/entries/000 leaf 40"  # and where it voted first
    assert twice.hex() in findings[0]["message"]


def test_vote_in_the_wrong_lane(ledger: Path, spec: LedgerSpec) -> None:
    stranger = next(p for p in map(pseudonym_of, range(10_000, 10_100)) if lane_of(p) == 3)
    records = list(spec.votes[2])
    records[260] = vote_with(records[260], pseudonym=stranger)
    rewrite_lane(ledger, spec, 2, records)
    findings = audit(ledger)
    assert where(findings, "wrong-lane") == [("2/tile/entries/001.p/54", 260)]
    assert (findings[0]["expected"], findings[0]["found"]) == ("2", "3")
    assert codes(findings) == {"wrong-lane"}


def test_certificate_counts_disagree_with_the_leaves(ledger: Path, spec: LedgerSpec) -> None:
    origin = certificate_origin(PREFIX, POLL)
    certificate = open_certificate(
        (ledger / layout.CERTIFICATE).read_bytes(), [SIGNER.verifier.renamed(origin)], origin=origin
    )
    counts = dict(certificate.counts)
    counts["red"] += 5
    counts["blue"] -= 5  # the same total: only a recount can tell
    sign_certificate_file(ledger, POLL, certificate.admin, certificate.lanes, list(counts.items()))
    findings = audit(ledger)
    assert where(findings, "count-mismatch") == [("certificate", None), ("certificate", None)]
    recount = dict(spec.recount())
    assert [(f["expected"], f["found"]) for f in findings] == [
        (str(recount["red"]), str(recount["red"] + 5)),
        (str(recount["blue"]), str(recount["blue"] - 5)),
    ]
    assert codes(findings) == {"count-mismatch"}


def test_stale_latest_checkpoint(ledger: Path) -> None:
    (ledger / "3" / "checkpoint").write_bytes((ledger / "3" / "checkpoints" / "279").read_bytes())
    findings = audit(ledger)
    assert where(findings, "latest-mismatch") == [("3/checkpoint", None)]
    assert where(findings, "certificate-log") == [("certificate", None)]


def test_missing_and_truncated_files(ledger: Path) -> None:
    (ledger / "1" / "tile" / "0" / "000.p" / "49").unlink()
    bundle = ledger / "2" / "tile" / "entries" / "000"
    bundle.write_bytes(bundle.read_bytes()[:-1])
    findings = audit(ledger)
    assert where(findings, "missing-file") == [("1/tile/0/000.p/49", None)]
    assert where(findings, "bad-bundle") == [("2/tile/entries/000", 0)]
    # The rest of lane 2 is still checked, from the published tile; its 256 leaves are not
    # counted, so the certificate's counts no longer match the recount.
    assert "count-mismatch" in codes(findings)


def test_vote_after_the_deadline(ledger: Path, spec: LedgerSpec) -> None:
    records = list(spec.votes[0])
    records[-1] = vote_with(records[-1], accepted_ms=spec.definition.closes_at_ms or 0)
    rewrite_lane(ledger, spec, 0, records)
    findings = audit(ledger)
    assert where(findings, "late-vote") == [("0/tile/entries/001.p/49", 304)]
    assert codes(findings) == {"late-vote"}


def test_checkpoint_of_another_lane(ledger: Path) -> None:
    """Validly signed, but for lane 0: an origin check is what tells lanes apart."""
    (ledger / "1" / "checkpoints" / "28").write_bytes(
        (ledger / "0" / "checkpoints" / "32").read_bytes()
    )
    findings = audit(ledger)
    assert where(findings, "wrong-origin") == [("1/checkpoints/28", None)]
    assert findings[0]["found"] == lane_origin(PREFIX, POLL, 0)


def test_admin_log_out_of_order_and_a_lane_missing(ledger: Path, spec: LedgerSpec) -> None:
    other = ledger.parent.parent / "reordered" / POLL
    created, opened, closed = spec.admin
    write_ledger(other, replace(spec, admin=[created, closed, opened]))
    shutil.rmtree(ledger / layout.ADMIN_LOG)
    shutil.copytree(other / layout.ADMIN_LOG, ledger / layout.ADMIN_LOG)
    shutil.copy(other / layout.CERTIFICATE, ledger / layout.CERTIFICATE)
    shutil.rmtree(ledger / "3")
    findings = audit(ledger)
    assert where(findings, "admin-order") == [("admin/tile/entries/000.p/3", 2)]
    assert where(findings, "missing-log") == [("3/checkpoint", None)]


def test_history_rewritten_as_a_whole_is_caught_by_a_known_copy(
    ledger: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    """A dishonest operator rewrites lane 2 *and its whole history*, re-signed with the ledger's
    key: the ledger alone is consistent again. An auditor who exported it earlier still holds
    the checkpoints the rewrite no longer extends."""
    earlier = tmp_path / "earlier"
    shutil.copytree(ledger, earlier)
    records = list(spec.votes[2])
    records[10] = vote_with(records[10], option_id="blue" if b"red" in records[10] else "red")
    rewrite_lane(ledger, spec, 2, records)
    assert audit_cli("verify", str(ledger), "--key", KEY).returncode == 0  # consistent alone

    result = audit_cli("verify", str(ledger), "--key", KEY, "--known", str(earlier), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    findings = json.loads(result.stdout)["findings"]
    rewritten = [f for f in findings if f["code"] in ("history-rewritten", "root-mismatch")]
    assert rewritten
    assert all(f["file"].startswith(f"{earlier} (known): 2/checkpoints/") for f in rewritten)
    # Every finding is about lane 2 and names the earlier copy's checkpoint it contradicts.
    assert codes(findings) == {"history-rewritten", "root-mismatch", "inconsistent-history"}
    assert all(f"{earlier} (known): 2/" in f["file"] + f["message"] for f in findings)

"""`tally audit receipt` and admission signatures: a signed vote's receipt carries its pseudonym
and the gateway's signature, which verify with the receipt and the gateway's key alone; on a
closed, certified poll whose final log does not hold the vote, the receipt is "missing from the
final log" (exit status 3), distinct from "not yet in a checkpoint" and from other failures."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from audit.conftest import KEY, POLL, LedgerSpec, audit_cli, write_ledger
from audit.test_admission_verify import GATEWAY, OUTSIDER, make_signed_spec
from audit.test_receipt import iso_ms
from tally.audit.cli import MISSING_FROM_FINAL_LOG
from tally.audit.receipt import RECEIPT_CODES
from tally.audit.receipt_admission import published_keys
from tally.ledger import merkle
from tally.ledger.leaf import decode_leaf, encode_leaf

LANE = 2


def signed_receipt(spec: LedgerSpec, lane: int = LANE, entry_id: int = 18) -> dict[str, Any]:
    """What the gateway answers for a signed vote (/work/brief/out/receipt-fields.md)."""
    entry = spec.votes[lane][entry_id - 1]
    record = decode_leaf(entry)
    assert record.admission is not None
    return {
        "poll_id": record.poll_id,
        "lane": record.lane,
        "entry_id": record.seq,
        "option": record.option_id,
        "accepted_at": iso_ms(record.accepted_ms),
        "leaf_hash": merkle.leaf_hash(entry).hex(),
        "pseudonym": record.pseudonym.hex(),
        "admission": {
            "key_id": f"{record.admission.key_id:08x}",
            "admitted_at": iso_ms(record.admission.admitted_ms),
            "signature": record.admission.signature.hex(),
        },
    }


@pytest.fixture(scope="module")
def spec() -> LedgerSpec:
    return make_signed_spec()


@pytest.fixture(scope="module")
def signed_root(tmp_path_factory: pytest.TempPathFactory, spec: LedgerSpec) -> Path:
    root = tmp_path_factory.mktemp("signed-receipts") / POLL
    write_ledger(root, spec)
    return root


def check(
    tmp_path: Path, receipt: object, *args: str, pin: str | None = str(GATEWAY.key.verifier)
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    pins = ["--admission-key", pin] if pin else []
    result = audit_cli("receipt", str(path), *args, "--key", KEY, *pins, "--json")
    assert result.returncode != 2, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert all(f["code"] in RECEIPT_CODES for f in document["findings"])
    return result.returncode, document


def test_a_signed_receipt_verifies_with_its_admission(
    signed_root: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    code, document = check(tmp_path, signed_receipt(spec), str(signed_root))
    assert code == 0, document
    assert document["verdict"] == "ok"
    assert document["admitted_by"] == str(GATEWAY.key.verifier)
    assert document["admission"].startswith("valid: signed by")
    assert {"receipt fields give its leaf hash", "admission signature"} <= set(document["checked"])
    # Without a key to check it against, the signature is reported as not checked.
    code, document = check(tmp_path, signed_receipt(spec), str(signed_root), pin=None)
    assert code == 0
    assert "NOT CHECKED" in document["admission"]
    assert document["admitted_by"] is None


def test_a_forged_or_foreign_admission_is_a_finding(
    signed_root: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    receipt = signed_receipt(spec)
    forged = receipt | {"admission": receipt["admission"] | {"signature": "00" * 64}}
    code, document = check(tmp_path, forged, str(signed_root))
    assert code == 1
    codes = {f["code"] for f in document["findings"]}
    assert "admission-bad-signature" in codes
    code, document = check(tmp_path, receipt, pin=str(OUTSIDER.key.verifier))  # offline
    assert code == 1
    assert [f["code"] for f in document["findings"]] == ["admission-unknown-key"]


def test_a_receipt_whose_fields_do_not_give_its_leaf_hash(spec: LedgerSpec, tmp_path: Path) -> None:
    receipt = signed_receipt(spec)
    receipt["option"] = "red" if receipt["option"] != "red" else "green"  # the leaf hash stays
    code, document = check(tmp_path, receipt)
    assert code == 1
    assert "receipt-inconsistent" in {f["code"] for f in document["findings"]}


def test_a_vote_deleted_at_the_end_of_a_lane_is_missing_from_the_final_log(
    spec: LedgerSpec, tmp_path: Path
) -> None:
    victim = signed_receipt(spec, LANE, len(spec.votes[LANE]))
    root = tmp_path / POLL
    write_ledger(root, spec.with_lane(LANE, spec.votes[LANE][:-1]))  # then closed, certified
    code, document = check(tmp_path, victim, str(root))
    assert code == MISSING_FROM_FINAL_LOG == 3
    assert document["verdict"] == "missing"
    assert [f["code"] for f in document["findings"]] == ["missing-from-final-log"]
    assert document["final_size"] == len(spec.votes[LANE]) - 1
    assert document["admitted_by"] == str(GATEWAY.key.verifier)
    path = tmp_path / "victim.json"
    path.write_text(json.dumps(victim))
    text = audit_cli(
        "receipt", str(path), str(root), "--key", KEY, "--admission-key", str(GATEWAY.key.verifier)
    )
    assert text.returncode == 3
    assert "MISSING FROM THE FINAL LOG" in text.stdout
    assert "the gateway admitted this vote" in text.stdout
    # The same ledger before it is certified: only "not yet in a checkpoint" (exit 1).
    uncertified = tmp_path / "uncertified"
    shutil.copytree(root, uncertified)
    (uncertified / "certificate").unlink()
    code, document = check(tmp_path, victim, str(uncertified))
    assert code == 1
    assert document["verdict"] == "pending"


def test_a_vote_replaced_in_the_final_log_is_missing(spec: LedgerSpec, tmp_path: Path) -> None:
    victim = signed_receipt(spec, LANE, 5)
    lane = list(spec.votes[LANE])
    record = decode_leaf(lane[4])
    other = "red" if record.option_id != "red" else "green"
    admission = GATEWAY.sign(POLL, record.pseudonym, other, record.status, record.accepted_ms - 3)
    lane[4] = encode_leaf(replace(record, option_id=other, admission=admission))
    root = tmp_path / POLL
    write_ledger(root, spec.with_lane(LANE, lane))
    code, document = check(tmp_path, victim, str(root))
    assert code == 3, document
    assert "missing-from-final-log" in {f["code"] for f in document["findings"]}


def test_the_help_documents_the_exit_statuses() -> None:
    result = audit_cli("receipt", "--help")
    assert result.returncode == 0
    assert "exit status:" in result.stdout
    assert "3  missing from the final log" in result.stdout


@pytest.mark.parametrize(
    "change",
    [
        {"pseudonym": "xyz"},
        {"admission": {"key_id": "00000000"}},
        {"admission": {"key_id": "zz", "admitted_at": "2026-01-01T00:00:00Z", "signature": "0"}},
        {"pseudonym": None},  # an admission without its pseudonym
    ],
)
def test_a_malformed_admission_receipt_is_refused(
    spec: LedgerSpec, tmp_path: Path, change: dict[str, Any]
) -> None:
    receipt = {k: v for k, v in (signed_receipt(spec) | change).items() if v is not None}
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    result = audit_cli(
        "receipt", str(path), "--key", KEY, "--admission-key", str(GATEWAY.key.verifier)
    )
    assert result.returncode == 2
    assert "not a receipt" in result.stderr


def test_published_keys_are_read_with_their_validity() -> None:
    document = (
        f"{KEY}\n"
        f"{GATEWAY.key.verifier} 1000 0\n"
        f"{OUTSIDER.key.verifier.renamed('tally.test/ledger/admission/gw-2')} 5 9\n"
        "tally.test/ledger/admission/gw-3+00000000+AQ== 0 0\n"  # malformed: skipped
    )
    keys = published_keys(document)
    gw2 = OUTSIDER.key.verifier.renamed("tally.test/ledger/admission/gw-2")
    assert {(k.name, k.not_before_ms, k.not_after_ms) for k in keys.values()} == {
        (GATEWAY.key.name, 1000, 0),
        (gw2.name, 5, 9),
    }
    assert keys[GATEWAY.key.key_id].public_key == GATEWAY.key.public_key

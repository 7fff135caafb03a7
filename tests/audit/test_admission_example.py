"""docs/ledger-format.md §14.5: every value of the admission worked example, recomputed."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.audit.receipt import check_receipt
from tally.audit.receipt_admission import admission_keys
from tally.audit.receipt_parse import parse_receipt
from tally.ledger import merkle, note
from tally.ledger.admin import AdminAction, AdminRecord, encode_admin
from tally.ledger.admission import AdmissionSigner, admission_message, check_admission
from tally.ledger.leaf import VoteRecord, decode_leaf, encode_leaf

DOC = (Path(__file__).parents[2] / "docs" / "ledger-format.md").read_text()
SECTION = DOC[DOC.index("### 14.5 Worked example") :]
GATEWAY = AdmissionSigner(
    "tally.example/ledger/admission/gw-1", Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
)
POLL, PSEUDONYM = "final-2025", bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f13")
CREATED_MS, ADMITTED_MS, ACCEPTED_MS = 1767225000000, 1767225600243, 1767225600250


def hex_block(after: str) -> bytes:
    """The hex bytes of the first code block after ``after`` (comments and '…' lines aside)."""
    block = SECTION[SECTION.index(after) :].split("```")[1]
    words = [w for line in block.splitlines() for w in line.split("  ")[0].split()]
    return bytes.fromhex("".join(w for w in words if re.fullmatch(r"[0-9a-f]+", w)))


def test_the_key_the_admin_record_the_message_the_record_and_the_receipt() -> None:
    assert f"verifier key: {GATEWAY.key.verifier}" in SECTION
    assert f"{GATEWAY.key.key_id:08x}" == "ba5852bf"
    key = replace(GATEWAY.key, not_before_ms=CREATED_MS)
    admin = encode_admin(
        AdminRecord(POLL, AdminAction.ADMISSION_KEY, CREATED_MS, b"", admission_key=key)
    )
    assert admin == hex_block("The admin record (action")
    assert f"{len(admin)} bytes; leaf hash\n`{merkle.leaf_hash(admin).hex()}`" in SECTION

    message = admission_message(POLL, PSEUDONYM, "bob", 1, ADMITTED_MS, GATEWAY.key.key_id)
    assert message == hex_block("The signed message")
    assert "(63 bytes)" in SECTION
    assert len(message) == 63
    admission = GATEWAY.sign(POLL, PSEUDONYM, "bob", 1, ADMITTED_MS)
    assert f"`{admission.signature.hex()}`" in SECTION

    record = VoteRecord(POLL, 3, 2, PSEUDONYM, "bob", ACCEPTED_MS, admission=admission)
    leaf = encode_leaf(record)
    assert len(leaf) == 128
    assert leaf[:-64] == hex_block("The version-`0x02` vote record")[: len(leaf) - 64]
    assert decode_leaf(leaf) == record
    assert check_admission(record, {key.key_id: key}) is None
    leaf_hash = merkle.leaf_hash(leaf).hex()
    assert f"Its leaf hash is `{leaf_hash}`" in SECTION

    receipt_text = SECTION[SECTION.index("```json") + 7 :].split("```")[0]
    receipt = parse_receipt(receipt_text.encode())
    assert json.loads(receipt_text)["leaf_hash"] == leaf_hash
    assert receipt.record() == record
    ledger_key = note.Signer("tally.example/ledger", bytes(range(32))).verifier
    report = check_receipt(
        receipt, ledger_key, admission_keys=admission_keys([GATEWAY.key.verifier])
    )
    assert report.ok, [f.line() for f in report.findings]
    assert report.admitted_by == str(GATEWAY.key.verifier)

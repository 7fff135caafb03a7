"""`tally audit receipt`: a voter's receipt against the published lane log (a directory or a
server) and against a tlog-proof alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit.conftest import KEY, POLL, PREFIX, LedgerSpec, audit_cli, serve_ledger
from tally.audit.receipt import RECEIPT_CODES
from tally.ledger import merkle, note
from tally.ledger.checkpoint import lane_origin
from tally.ledger.leaf import decode_leaf
from tally.ledger.proof import InclusionProofText

LANE = 2
ENTRY_ID = 18  # leaf 17


def iso_ms(ms: int) -> str:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def receipt_of(spec: LedgerSpec, lane: int = LANE, entry_id: int = ENTRY_ID) -> dict[str, Any]:
    """The receipt the server gave for a vote, as `POST /votes` renders it."""
    entry = spec.votes[lane][entry_id - 1]
    record = decode_leaf(entry)
    return {
        "poll_id": record.poll_id,
        "lane": record.lane,
        "entry_id": record.seq,
        "option": record.option_id,
        "accepted_at": iso_ms(record.accepted_ms),
        "leaf_hash": merkle.leaf_hash(entry).hex(),
    }


def tlog_proof(
    ledger: Path, spec: LedgerSpec, lane: int = LANE, index: int = ENTRY_ID - 1
) -> bytes:
    """What the server serves as `tlog_proof`: the entry, its proof, the lane's checkpoint."""
    leaves = [merkle.leaf_hash(r) for r in spec.votes[lane]]
    checkpoint = (ledger / str(lane) / "checkpoint").read_bytes()
    proof = merkle.inclusion_proof(index, len(leaves), leaves)
    return InclusionProofText(index, tuple(proof), checkpoint, spec.votes[lane][index]).format()


def check(tmp_path: Path, receipt: object, *args: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    result = audit_cli("receipt", str(path), *args, "--key", KEY, "--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert all(f["code"] in RECEIPT_CODES for f in document["findings"])
    return result.returncode, document


def test_receipt_is_in_the_log(pristine: Path, spec: LedgerSpec, tmp_path: Path) -> None:
    code, document = check(tmp_path, receipt_of(spec), str(pristine))
    assert code == 0, document
    assert document["ok"] is True
    assert (document["lane"], document["entry_id"], document["index"]) == (LANE, 18, 17)
    assert document["checkpoint_size"] == len(spec.votes[LANE])
    assert "inclusion proof (from the tiles)" in document["checked"]


def test_vote_reply_wrapper_and_text_output(
    pristine: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    path = tmp_path / "reply.json"
    path.write_text(json.dumps({"receipt": receipt_of(spec, lane=0, entry_id=300)}))
    result = audit_cli("receipt", str(path), str(pristine), "--key", KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result       OK" in result.stdout


def test_receipt_over_http(pristine: Path, spec: LedgerSpec, tmp_path: Path) -> None:
    with serve_ledger(pristine) as url:
        code, document = check(tmp_path, receipt_of(spec, lane=3, entry_id=1), url)
    assert code == 0, document


@pytest.mark.parametrize(
    ("field", "value", "finding"),
    [
        ("option", "blue-ish", "receipt-mismatch"),
        ("accepted_at", "2030-01-01T00:00:00.000Z", "receipt-mismatch"),
        ("leaf_hash", "00" * 32, "leaf-hash-mismatch"),
        ("entry_id", ENTRY_ID + 1, "leaf-hash-mismatch"),
    ],
)
def test_receipt_that_differs_from_the_log(
    pristine: Path, spec: LedgerSpec, tmp_path: Path, field: str, value: object, finding: str
) -> None:
    receipt = receipt_of(spec) | {field: value}
    code, document = check(tmp_path, receipt, str(pristine))
    assert code == 1
    found = [(f["code"], f["file"]) for f in document["findings"]]
    assert (finding, "2/tile/entries/000") in found


def test_forged_leaf_hash_fails_the_inclusion_proof(
    pristine: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    code, document = check(tmp_path, receipt_of(spec) | {"leaf_hash": "ab" * 32}, str(pristine))
    assert code == 1
    assert "inclusion-failed" in {f["code"] for f in document["findings"]}


def test_not_yet_in_a_checkpoint(ledger: Path, spec: LedgerSpec, tmp_path: Path) -> None:
    (ledger / "certificate").unlink()  # not certified yet: a later checkpoint may add it
    later = receipt_of(spec) | {"entry_id": len(spec.votes[LANE]) + 1}
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(later))
    result = audit_cli("receipt", str(path), str(ledger), "--key", KEY)
    assert result.returncode == 1
    assert "not yet in a checkpoint" in result.stdout
    assert "[not-in-checkpoint]" in result.stdout


def test_tampered_tile_fails_the_inclusion_proof(
    ledger: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    tile = ledger / "2" / "tile" / "0" / "000"
    data = bytearray(tile.read_bytes())
    data[16 * 32] ^= 1  # leaf 16: the sibling of leaf 17
    tile.write_bytes(bytes(data))
    code, document = check(tmp_path, receipt_of(spec), str(ledger))
    assert code == 1
    assert [f["code"] for f in document["findings"]] == ["inclusion-failed"]


def test_offline_tlog_proof(pristine: Path, spec: LedgerSpec, tmp_path: Path) -> None:
    proof = tmp_path / "vote.tlog-proof"
    proof.write_bytes(tlog_proof(pristine, spec))
    code, document = check(tmp_path, receipt_of(spec), "--proof", str(proof))
    assert code == 0, document
    assert document["checked"] == [
        "checkpoint signature (proof)",
        "entry",
        "inclusion proof (from the tlog-proof)",
    ]
    both_code, both = check(tmp_path, receipt_of(spec), str(pristine), "--proof", str(proof))
    assert both_code == 0, both


def test_offline_proof_that_does_not_verify(
    pristine: Path, spec: LedgerSpec, tmp_path: Path
) -> None:
    text = InclusionProofText.parse(tlog_proof(pristine, spec))
    broken = tmp_path / "broken.tlog-proof"
    broken.write_bytes(
        InclusionProofText(text.index, (bytes(32), *text.hashes[1:]), text.checkpoint).format()
    )
    code, document = check(tmp_path, receipt_of(spec), "--proof", str(broken))
    assert code == 1
    assert [(f["code"], f["file"]) for f in document["findings"]] == [
        ("inclusion-failed", str(broken))
    ]

    impostor = note.Signer(lane_origin(PREFIX, POLL, LANE), bytes(range(2, 34)))
    body = text.checkpoint.rpartition(b"\n\n")[0].decode() + "\n"
    forged = tmp_path / "forged.tlog-proof"
    forged.write_bytes(
        InclusionProofText(text.index, text.hashes, note.sign(body, [impostor])).format()
    )
    code, document = check(tmp_path, receipt_of(spec), "--proof", str(forged))
    assert code == 1
    assert [f["code"] for f in document["findings"]] == ["bad-signature"]


def test_bad_receipts_and_arguments_exit_2(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps({"poll_id": POLL, "lane": 0}))
    result = audit_cli("receipt", str(path), str(pristine), "--key", KEY)
    assert result.returncode == 2
    assert "lacks entry_id" in result.stderr
    no_source = audit_cli("receipt", str(path), "--key", KEY)
    assert no_source.returncode == 2
    assert "SOURCE" in no_source.stderr

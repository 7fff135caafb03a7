"""Admission signatures end to end on a real `tally serve`: the gateway signs every vote, the
archived ledger passes `tally audit verify` with the gateway's key pinned as /ledger/keys
publishes it, and a voter's receipt carries a signature anyone can check with the receipt and
/ledger/keys alone (no ledger needed), and passes `tally audit receipt` against the server."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from insider_stack import tally_cli

from conftest import RunningTally, serving
from tally.ledger.admission import admission_message
from tally.ledger.note import Verifier

FAST = {"TALLY_CHECKPOINT_INTERVAL_MS": "100"}


def vote(t: RunningTally, poll_id: str, subject: str, option: str) -> dict[str, Any]:
    reply = httpx.post(
        f"{t.url}/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={"Authorization": f"Bearer {t.voter_token(subject)}"},
    )
    assert reply.status_code == 201, reply.text
    receipt: dict[str, Any] = reply.json()["receipt"]
    return receipt


def published(t: RunningTally) -> tuple[str, dict[int, tuple[Verifier, int, int]]]:
    """/ledger/keys: the ledger key's line, and each admission key with its validity."""
    lines = httpx.get(f"{t.url}/ledger/keys").text.splitlines()
    keys = {}
    for line in lines[1:]:
        vkey, not_before, not_after = line.split()
        verifier = Verifier.parse(vkey)
        keys[verifier.key_id] = (verifier, int(not_before), int(not_after))
    return lines[0], keys


def third_party_check(receipt: dict[str, Any], keys: dict[int, tuple[Verifier, int, int]]) -> str:
    """What anyone can check with the receipt and /ledger/keys: the gateway's signature."""
    admission = receipt["admission"]
    verifier, not_before, not_after = keys[int(admission["key_id"], 16)]
    admitted = datetime.fromisoformat(admission["admitted_at"])
    admitted_ms = (admitted - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert not_before <= admitted_ms
    assert not not_after or admitted_ms < not_after
    status = 0x01 if receipt.get("status") in (None, "accepted") else 0x02
    message = admission_message(
        receipt["poll_id"],
        bytes.fromhex(receipt["pseudonym"]),
        receipt["option"],
        status,
        admitted_ms,
        verifier.key_id,
    )
    assert verifier.verify(message, bytes.fromhex(admission["signature"]))
    return str(verifier)


def test_signed_votes_pass_the_audit_and_receipts_prove_admission(tmp_path: Path) -> None:
    with serving(tmp_path / "data", FAST) as server:
        poll_id = str(server.open_poll("Red", "Blue", lanes=2)["id"])
        receipts = [vote(server, poll_id, f"signed-{i}", ("red", "blue")[i % 2]) for i in range(6)]
        ledger_key, keys = published(server)
        assert keys, "the gateway publishes its admission key"
        signer = third_party_check(receipts[2], keys)
        server.admin().post(f"/v1/polls/{poll_id}/close")
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/ledger/{poll_id}/certificate").status_code != 200:
            assert time.monotonic() < deadline, "no certificate within 20 s"
            time.sleep(0.1)
        source = f"{server.url}/ledger/{poll_id}"
        audit = tally_cli(
            "audit", "verify", source, "--key", ledger_key, "--admission-key", signer, "--json"
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        report = json.loads(audit.stdout)
        assert report["admission"]["state"] == "signed"
        assert report["admission"]["signed_votes"] == 6
        assert signer in {k["verifier"] for k in report["admission"]["keys"]}
        receipt_file = tmp_path / "receipt.json"
        receipt_file.write_text(json.dumps({"receipt": receipts[2]}))
        checked = tally_cli(
            "audit", "receipt", str(receipt_file), source, "--key", ledger_key, "--json"
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout)["admitted_by"] == signer  # from /ledger/keys

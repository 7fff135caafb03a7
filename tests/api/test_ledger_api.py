"""The published ledger over HTTP on a real `tally serve`: receipts carry their leaf hash, proofs
verify against signed checkpoints, files have the right cache headers, bad paths are refused,
the certificate appears at close, and `tally audit` accepts what the server published."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import RunningTally, serving
from tally.ledger import merkle
from tally.ledger.checkpoint import lane_origin, open_checkpoint
from tally.ledger.leaf import decode_leaf
from tally.ledger.note import Verifier
from tally.ledger.proof import InclusionProofText

FAST = {"TALLY_CHECKPOINT_INTERVAL_MS": "100"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    with serving(tmp_path_factory.mktemp("ledger-api"), FAST) as running:
        yield running


def vote(t: RunningTally, poll_id: str, subject: str, option: str) -> httpx.Response:
    return httpx.post(
        f"{t.url}/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={"Authorization": f"Bearer {t.voter_token(subject)}"},
    )


def wait_for_proof(t: RunningTally, receipt: dict[str, Any]) -> dict[str, Any]:
    url = f"{t.url}/v1/polls/{receipt['poll_id']}/receipts/{receipt['lane']}/{receipt['entry_id']}/proof"
    deadline = time.monotonic() + 20
    while True:
        reply = httpx.get(url)
        if reply.status_code == 200:
            document: dict[str, Any] = reply.json()
            return document
        assert (reply.status_code, reply.json()["code"]) == (404, "not-archived"), reply.text
        assert time.monotonic() < deadline, "not archived within 20 s"
        time.sleep(0.1)


def ledger_key(t: RunningTally) -> Verifier:
    reply = httpx.get(f"{t.url}/ledger/keys")
    assert reply.status_code == 200
    return Verifier.parse(reply.text.splitlines()[0])  # then the admission keys


def test_a_receipt_is_proven_against_a_signed_checkpoint(server: RunningTally) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=2)["id"])
    reply = vote(server, poll_id, "prover-1", "red")
    assert reply.status_code == 201
    receipt = reply.json()["receipt"]
    assert len(bytes.fromhex(receipt["leaf_hash"])) == 32

    proof = wait_for_proof(server, receipt)
    leaf = base64.b64decode(proof["leaf"])
    assert merkle.leaf_hash(leaf).hex() == receipt["leaf_hash"] == proof["leaf_hash"]
    record = decode_leaf(leaf)
    assert (record.poll_id, record.lane, record.seq, record.option_id) == (
        poll_id, receipt["lane"], receipt["entry_id"], "red",
    )  # fmt: skip
    key = ledger_key(server)
    origin = lane_origin(key.name, poll_id, receipt["lane"])
    checkpoint = open_checkpoint(proof["checkpoint"].encode(), [key.renamed(origin)], origin=origin)
    hashes = [base64.b64decode(h) for h in proof["proof"]]
    merkle.verify_inclusion(
        merkle.leaf_hash(leaf), proof["index"], checkpoint.size, hashes, checkpoint.root
    )
    text = InclusionProofText.parse(proof["tlog_proof"].encode())
    assert (text.index, list(text.hashes), text.extra) == (proof["index"], hashes, leaf)


def test_a_repeat_vote_after_archiving_gets_the_same_receipt(server: RunningTally) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=1)["id"])
    first = vote(server, poll_id, "repeater", "red").json()["receipt"]
    wait_for_proof(server, first)
    time.sleep(0.3)  # the stream is trimmed right after the checkpoint
    again = vote(server, poll_id, "repeater", "blue")
    assert again.status_code == 409
    assert again.json()["receipt"] == first


def test_not_yet_archived_is_a_404_with_retry_after(server: RunningTally) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=2)["id"])
    reply = httpx.get(f"{server.url}/v1/polls/{poll_id}/receipts/1/5000/proof")
    assert reply.status_code == 404
    assert reply.json()["code"] == "not-archived"
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/ledger/Bad!/0/checkpoint", 400, "invalid-poll-id"),
        ("/ledger/{poll}/x1/checkpoint", 404, "invalid-ledger-path"),
        ("/ledger/{poll}/01/checkpoint", 404, "invalid-ledger-path"),
        ("/ledger/{poll}/0/tile/0/00", 404, "invalid-ledger-path"),
        ("/ledger/{poll}/0/tile/0/000.p/256", 404, "invalid-ledger-path"),
        ("/ledger/{poll}/0/tile/0/..%2f..%2f..%2fkeys", 404, "invalid-ledger-path"),
        ("/ledger/{poll}/0/checkpoints/007", 404, "invalid-ledger-path"),
        ("/ledger/{poll}/7/checkpoint", 404, "not-found"),
        ("/ledger/{poll}/certificate", 404, "not-found"),
        ("/ledger/nosuchpoll/checkpoints", 404, "not-found"),
        ("/v1/polls/{poll}/receipts/2/1/proof", 404, "not-found"),
        ("/v1/polls/{poll}/receipts/0/0/proof", 404, "not-found"),
        ("/v1/polls/{poll}/receipts/0/01/proof", 404, "not-found"),
        ("/v1/polls/{poll}/receipts/-1/1/proof", 404, "not-found"),
        ("/v1/polls/nosuchpoll/receipts/0/1/proof", 404, "poll-not-found"),
    ],
)
def test_bad_ledger_paths_get_problems(
    server: RunningTally, path: str, status: int, code: str
) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=2)["id"])
    reply = httpx.get(server.url + path.replace("{poll}", poll_id))
    assert (reply.status_code, reply.json()["code"]) == (status, code), reply.text


def test_files_cache_headers_history_and_certificate(server: RunningTally, tmp_path: Path) -> None:
    poll = server.open_poll("Red", "Blue", lanes=2)
    poll_id = str(poll["id"])
    receipts = [
        vote(server, poll_id, f"cert-{i}", ("red", "blue")[i % 3 == 0]).json()["receipt"]
        for i in range(20)
    ]
    wait_for_proof(server, receipts[-1])

    latest = httpx.get(f"{server.url}/ledger/{poll_id}/0/checkpoint")
    assert latest.headers["cache-control"] == "public, max-age=1"
    assert latest.headers["content-type"].startswith("text/plain")
    # The admin log: created, the serve's admission key, opened.
    tile = httpx.get(f"{server.url}/ledger/{poll_id}/admin/tile/0/000.p/3")
    assert (tile.status_code, len(tile.content)) == (200, 96)
    assert "immutable" in tile.headers["cache-control"]
    history = httpx.get(f"{server.url}/ledger/{poll_id}/checkpoints").json()
    assert set(history["logs"]) == {"admin", "0", "1"}

    server.admin().post(f"/v1/polls/{poll_id}/close")
    deadline = time.monotonic() + 20
    while (
        certificate := httpx.get(f"{server.url}/ledger/{poll_id}/certificate")
    ).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "count red 13\ncount blue 7\n" in certificate.text
    assert "immutable" in certificate.headers["cache-control"]

    key = str(ledger_key(server))
    audit = tally_cli("audit", "verify", f"{server.url}/ledger/{poll_id}", "--key", key, "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["counts"] == {"red": 13, "blue": 7}
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps({"receipt": receipts[3]}))
    checked = tally_cli(
        "audit", "receipt", str(receipt_file), f"{server.url}/ledger/{poll_id}", "--key", key
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def tally_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tally", *args], capture_output=True, text=True, timeout=120
    )


def test_metrics_show_the_archiver_at_work(server: RunningTally) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=1)["id"])
    wait_for_proof(server, vote(server, poll_id, "metered", "red").json()["receipt"])
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    values = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in lines if not line.startswith("#"))
    }
    for name in ("cycles", "leaves", "checkpoints"):
        assert values[f"tally_archiver_{name}_total"] > 0, name
    assert values["tally_archiver_failed_polls_total"] == 0

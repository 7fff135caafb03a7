"""Admission signatures end to end on a real `tally serve` over HTTP: the receipt carries the
gateway's signature and the pseudonym, the archived leaf is a version 0x02 record whose signature
verifies under the admission key GET /ledger/keys publishes (after the unchanged ledger key),
a repeat vote gets the same signed receipt, and `tally gateway` refuses to start with a key
nobody registered, saying how to register it."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ON_CLUSTER, RunningTally, serving
from tally.domain.timestamps import parse_iso_ms
from tally.ledger import merkle
from tally.ledger.admin import AdmissionKey
from tally.ledger.admission import check_admission
from tally.ledger.leaf import decode_leaf
from tally.ledger.note import Verifier

FAST = {"TALLY_CHECKPOINT_INTERVAL_MS": "100"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    with serving(tmp_path_factory.mktemp("admission-http"), FAST) as running:
        yield running


def vote(t: RunningTally, poll_id: str, subject: str, option: str) -> httpx.Response:
    return httpx.post(
        f"{t.url}/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={"Authorization": f"Bearer {t.voter_token(subject)}"},
    )


def archived_leaf(t: RunningTally, receipt: dict[str, Any]) -> bytes:
    url = f"{t.url}/v1/polls/{receipt['poll_id']}/receipts/{receipt['lane']}/{receipt['entry_id']}/proof"
    deadline = time.monotonic() + 20
    while True:
        reply = httpx.get(url)
        if reply.status_code == 200:
            return base64.b64decode(reply.json()["leaf"])
        assert time.monotonic() < deadline, f"not archived within 20 s: {reply.text}"
        time.sleep(0.1)


def published_admission_keys(t: RunningTally) -> dict[int, AdmissionKey]:
    lines = httpx.get(f"{t.url}/ledger/keys").text.splitlines()
    Verifier.parse(lines[0])  # the ledger key stays first, alone on its line
    keys = {}
    for line in lines[1:]:
        vkey, not_before, not_after = line.split(" ")
        verifier = Verifier.parse(vkey)
        assert "/admission/" in verifier.name
        key = AdmissionKey(verifier.name, verifier.public_key, int(not_before), int(not_after))
        keys[key.key_id] = key
    return keys


def test_a_vote_is_signed_archived_as_v2_and_verifies_with_the_published_key(
    server: RunningTally,
) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=2)["id"])
    reply = vote(server, poll_id, "signed-1", "red")
    assert reply.status_code == 201, reply.text
    receipt = reply.json()["receipt"]
    admission = receipt["admission"]
    assert set(admission) == {"key_id", "admitted_at", "signature"}
    assert len(bytes.fromhex(receipt["pseudonym"])) == 16
    assert len(bytes.fromhex(admission["signature"])) == 64

    leaf = archived_leaf(server, receipt)
    record = decode_leaf(leaf)
    assert leaf[0] == 0x02
    assert merkle.leaf_hash(leaf).hex() == receipt["leaf_hash"]
    assert record.admission is not None
    assert record.pseudonym.hex() == receipt["pseudonym"]
    assert f"{record.admission.key_id:08x}" == admission["key_id"]
    assert record.admission.admitted_ms == parse_iso_ms(admission["admitted_at"])
    assert record.admission.signature.hex() == admission["signature"]
    keys = published_admission_keys(server)
    assert check_admission(record, keys) is None
    assert check_admission(record, {}) == "unknown-key"


def test_a_repeat_vote_gets_the_same_signed_receipt(server: RunningTally) -> None:
    poll_id = str(server.open_poll("Red", "Blue", lanes=2)["id"])
    first = vote(server, poll_id, "signed-2", "red")
    again = vote(server, poll_id, "signed-2", "blue")
    assert first.status_code == 201
    assert again.status_code == 409, again.text
    assert again.json()["receipt"] == first.json()["receipt"]


@pytest.mark.skipif(ON_CLUSTER, reason="starts its own one-node valkey-server")
def test_tally_gateway_refuses_an_unregistered_key(tmp_path: Path) -> None:
    """Against a store whose registry lacks its key, `tally gateway` exits at once, naming the
    key and the command that registers it; after that command it starts."""
    import asyncio

    from role_processes import role_env, running_role
    from tally.store.embedded import EmbeddedValkey

    valkey = EmbeddedValkey(tmp_path / "valkey")
    asyncio.run(valkey.start())
    try:
        env = role_env(
            valkey,
            tmp_path / "data",
            TALLY_ADMISSION_KEY_NAME="gw-unregistered",
            TALLY_PSEUDONYM_SECRET="ab" * 32,
        )
        refused = subprocess.run(
            [sys.executable, "-m", "tally", "gateway", "--port", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0
        assert "tally.localhost/ledger/admission/gw-unregistered+" in refused.stderr
        assert "is not registered" in refused.stderr
        assert "tally admission-key register" in refused.stderr
        # running_role registers the key first, as the message says; then it starts.
        with running_role("gateway", env, tmp_path) as gateway:
            assert gateway.get("/healthz").status_code == 200
    finally:
        asyncio.run(valkey.stop())
    assert (tmp_path / "data" / "keys" / "admission.key").stat().st_mode & 0o777 == 0o600

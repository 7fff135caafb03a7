"""Evidence at rest (issue 11 acceptance): a real `tally serve` (a subprocess, on a valkey-server
the test starts with its files in the data dir, so the test can force its rewrites) holds votes from a distinctive client address and user agent; the reviewer's API shows them
decrypted, while no byte of any file under the data dir (the AOF directory after a forced
BGREWRITEAOF, an RDB from BGSAVE, the key files, the ledger, Valkey's log), nor the roles' logs,
holds the address, its /24 in prefix form or the user agent. Then a key rotation by
`tally evidence rotate|reencrypt|drop-key`, and retention: once the poll has been closed longer
than TALLY_EVIDENCE_RETENTION_S, the aggregator deletes the evidence (gone from the AOF after a
rewrite) and the held votes can still be decided."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import StoreUnderTest, own_store
from role_processes import Role, role_env, running_role, wait_for
from tally.security.dev_issuer import DevIssuer
from tally.store.resp import Valkey

ADDRESS = "203.0.113.77"
PREFIX = b"203.0.113."
RETENTION_S = 2
HOLD_FRESH = {
    "risk": {
        "rules": [
            {
                "signal": "token_age_s",
                "comparison": "below",
                "value": 3600,
                "score": 100,
                "reason": "fresh-token",
            }
        ],
        "challenge_at": 50,
        "hold_at": 100,
    }
}

pytestmark = pytest.mark.single_node(
    "reads the raw AOF and RDB of the one valkey-server it starts in the data dir"
)


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    """A valkey-server started by the test, its files under the data dir (data/valkey/)."""
    async with own_store(tmp_path / "data") as store:
        yield store


@pytest.fixture
def deployment(valkey: StoreUnderTest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    assert valkey.server is not None
    data_dir = tmp_path / "data"
    env = role_env(
        valkey.server,
        data_dir,
        TALLY_PSEUDONYM_SECRET="5e" * 32,
        TALLY_TRUSTED_PROXIES="127.0.0.1/32",
        TALLY_EVIDENCE_RETENTION_S=str(RETENTION_S),
        TALLY_TICK_MS="100",
        TALLY_LEASE_TTL_MS="1000",
        TALLY_WORKERS="1",
    )
    with running_role("serve", env, tmp_path) as serve:
        yield {
            "env": env,  # the admin's URL: what `tally evidence` uses too
            "data_dir": data_dir,
            "gateway": serve,  # gateway, aggregator (its retention sweep) and archiver
            "issuer": DevIssuer.load_or_create(data_dir / "keys"),
            "server": valkey.server,
        }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tally(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tally", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def admin_command(server: Any, *args: str) -> Any:
    client = Valkey(server.endpoint)
    try:
        await client.connect()
        return await client.execute(*args)
    finally:
        await client.close()


async def persist(server: Any) -> None:
    """BGREWRITEAOF and BGSAVE, each waited for: every byte Valkey holds is in its files."""
    await admin_command(server, "BGREWRITEAOF")
    for _ in range(200):
        info = (await admin_command(server, "INFO", "persistence")).decode()
        if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info:
            break
        await asyncio.sleep(0.05)
    await admin_command(server, "BGSAVE")
    for _ in range(200):
        info = (await admin_command(server, "INFO", "persistence")).decode()
        if "rdb_bgsave_in_progress:0" in info:
            break
        await asyncio.sleep(0.05)


def files_holding(root: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    """Every file under `root` holding any needle, with the needles found."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def held_listing(gateway: Role, poll_id: str, token: str) -> dict[str, Any]:
    answer = httpx.get(f"{gateway.url}/v1/polls/{poll_id}/held", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    listing: dict[str, Any] = answer.json()
    return listing


def test_evidence_is_never_in_clear_at_rest(deployment: dict[str, Any]) -> None:
    gateway: Role = deployment["gateway"]
    issuer: DevIssuer = deployment["issuer"]
    data_dir: Path = deployment["data_dir"]
    server = deployment["server"]
    env: dict[str, str] = deployment["env"]
    agent = f"EvidenceProbe/9.9 (+{uuid.uuid4().hex})"
    needles = [ADDRESS.encode(), PREFIX, agent.encode(), b"EvidenceProbe"]
    admin = bearer(issuer.mint("test-admin", roles=["admin"]))
    reviewer_token = issuer.mint("rita", roles=["reviewer"])

    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        body = {"title": "evidence", "options": ["Red", "Green"], "lanes": 2}
        created = http.post("/v1/polls", json={**body, "defences": HOLD_FRESH}, headers=admin)
        assert created.status_code == 201, created.text
        poll_id = created.json()["id"]
        assert http.post(f"/v1/polls/{poll_id}/open", headers=admin).status_code == 200
        network = {"X-Forwarded-For": ADDRESS, "User-Agent": agent}

        def vote(fresh: bool) -> httpx.Response:
            now = None if fresh else time.time() - 7200  # an old token is not held
            token = issuer.mint(f"voter-{uuid.uuid4().hex[:10]}", ttl_s=10_800, now=now)
            return http.post(
                f"/v1/polls/{poll_id}/votes",
                json={"option": "red"},
                headers={**bearer(token), **network},
            )

        held = [vote(fresh=True) for _ in range(4)]
        assert {v.status_code for v in held} == {202}, held[0].text
        accepted = [vote(fresh=False) for _ in range(3)]
        assert {v.status_code for v in accepted} == {201}, accepted[0].text

        # The reviewer sees who voted, decrypted; an admin sees the subnet only.
        listing = held_listing(gateway, poll_id, reviewer_token)
        [group] = listing["groups"]
        assert (group["reason"], group["subnet"], group["count"]) == (
            "fresh-token", "203.0.113.0/24", 4,
        )  # fmt: skip
        assert {(e["evidence"], e["address"], e["user_agent"]) for e in group["entries"]} == {
            ("kept", ADDRESS, agent)
        }
        as_admin = held_listing(gateway, poll_id, issuer.mint("test-admin", roles=["admin"]))
        assert "address" not in as_admin["groups"][0]["entries"][0]
        review = tally({**env, "TALLY_TOKEN": reviewer_token}, "review", "list", poll_id,
                       "--url", gateway.url)  # fmt: skip
        assert review.returncode == 0, review.stderr
        assert f"from {ADDRESS}" in review.stdout

        asyncio.run(persist(server))
        assert files_holding(data_dir, needles) == {}
        aof = list((data_dir / "valkey" / "appendonly").iterdir())
        assert aof  # the AOF directory was read
        assert (data_dir / "valkey" / "dump.rdb").is_file()
        written = b"".join(p.read_bytes() for p in aof)
        # Positive controls: the held index reached the files, its clear reason code too.
        assert b"|e1." in written
        assert b"fresh-token|e1." in written
        logs = files_holding(data_dir.parent, needles)  # the roles' logs sit beside the data dir
        assert logs == {}, logs

        # Rotation: a new key seals new evidence; re-encryption moves the old blobs to it;
        # the old key can then be dropped, and every vote still opens.
        rotated = tally(env, "evidence", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        assert vote(fresh=True).status_code == 202
        keys = json.loads(tally(env, "evidence", "keys", "--json").stdout)
        assert (keys["current"], keys["keys"]) == (
            2,
            [{"id": 1, "blobs": 4}, {"id": 2, "blobs": 1}],
        )
        refused = tally(env, "evidence", "drop-key", "1")
        assert refused.returncode == 1
        assert "4 blobs still use evidence key 1" in refused.stderr
        done = tally(env, "evidence", "reencrypt", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) | {"polls": 1} == {
            "polls": 1, "resealed": 4, "sealed_clear": 0, "already_current": 1,
            "unreadable": 0, "without": 0, "raced": 0, "key_id": 2,
        }  # fmt: skip
        again = json.loads(tally(env, "evidence", "reencrypt", "--json").stdout)
        assert (again["resealed"], again["already_current"]) == (0, 5)
        dropped = tally(env, "evidence", "drop-key", "1")
        assert dropped.returncode == 0, dropped.stderr
        assert not (data_dir / "secrets" / "evidence" / "1.key").exists()
        listing = held_listing(gateway, poll_id, reviewer_token)
        entries = listing["groups"][0]["entries"]
        assert {(e["evidence"], e["address"]) for e in entries} == {("kept", ADDRESS)}
        assert len(entries) == 5

        # Retention: closed longer than TALLY_EVIDENCE_RETENTION_S, the evidence is deleted by
        # the aggregator's sweep; the votes stay held and a reviewer can still decide.
        one = {"lane": entries[0]["lane"], "entry_id": entries[0]["entry_id"]}
        assert http.post(f"/v1/polls/{poll_id}/close", headers=admin).status_code == 200

        def deleted() -> bool:
            now = held_listing(gateway, poll_id, reviewer_token)["groups"]
            return [e["evidence"] for g in now for e in g["entries"]] == ["deleted"] * 5

        wait_for(deleted, "evidence deleted by the retention sweep", timeout_s=RETENTION_S + 10)
        listing = held_listing(gateway, poll_id, reviewer_token)
        assert "address" not in listing["groups"][0]["entries"][0]
        assert listing["groups"][0]["subnet"] == ""
        decided = http.post(
            f"/v1/polls/{poll_id}/held/decisions",
            json={"decision": "release", "entries": [one]},
            headers=bearer(reviewer_token),
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["released"] == 1
        asyncio.run(persist(server))
        aof_bytes = b"".join(p.read_bytes() for p in (data_dir / "valkey" / "appendonly").iterdir())
        assert b"|e1." not in aof_bytes  # the sealed blobs are gone from disk too
        assert files_holding(data_dir, needles) == {}
    assert "deleted (retention)" in gateway.log()

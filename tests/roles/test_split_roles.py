"""One process per role: `tally gateway` x2, `tally aggregator` and `tally archiver` against one
external valkey-server serve votes, live snapshots and the ledger together; a second aggregator
takes over from a SIGKILLed one; every role answers /readyz and /metrics on its own port and
exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import StoreUnderTest, is_running, own_store
from role_processes import (
    ROLE_URL_PREFIX,
    Role,
    metric,
    process_valkey_url,
    role_env,
    running_role,
    wait_for,
)
from tally.ledger import merkle
from tally.ledger.checkpoint import lane_origin, open_checkpoint
from tally.ledger.note import Verifier
from tally.security.dev_issuer import DevIssuer

SECRET_HEX = "7a" * 32
LEASE_TTL_MS = 1000
FAST = {
    "TALLY_PSEUDONYM_SECRET": SECRET_HEX,
    "TALLY_TICK_MS": "100",
    "TALLY_LEASE_TTL_MS": str(LEASE_TTL_MS),
    "TALLY_CHECKPOINT_INTERVAL_MS": "200",
    "TALLY_SHUTDOWN_TIMEOUT_S": "5",
}


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    """An external valkey-server: the bundled binary, started by the test, not by Tally (in
    cluster mode: the store-level tests' cluster, emptied first)."""
    async with own_store(tmp_path / "external") as store:
        yield store


@pytest.fixture
def deployment(valkey: StoreUnderTest, tmp_path: Path) -> dict[str, Any]:
    """The roles' shared environment and data dir (dev issuer keys and ledger)."""
    data_dir = tmp_path / "data"
    if valkey.server is not None:
        env = role_env(valkey.server, data_dir, **FAST)
    else:
        env = valkey.role_env(data_dir, **FAST)
    return {"env": env, "data_dir": data_dir, "logs": tmp_path}


def vote(gateway: Role, poll_id: str, token: str, option: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )


def snapshot_with(ws: ClientConnection, total: int, timeout_s: float) -> dict[str, Any]:
    """Read the watcher's snapshots until one counts `total` votes."""
    deadline = time.monotonic() + timeout_s
    while True:
        message: dict[str, Any] = orjson.loads(ws.recv(timeout=deadline - time.monotonic()))
        if message.get("type") == "snapshot" and message["total"] >= total:
            return message


def assert_ready_and_measured(role: Role, sample: str) -> None:
    ready = role.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"}), role.log()
    assert metric(role.get("/metrics").text, sample) >= 0


def proof_of(gateway: Role, receipt: dict[str, Any]) -> dict[str, Any]:
    path = f"/v1/polls/{receipt['poll_id']}/receipts/{receipt['lane']}/{receipt['entry_id']}/proof"
    replies: list[httpx.Response] = []

    def proven() -> bool:
        replies.append(gateway.get(path))
        return replies[-1].status_code == 200

    try:
        wait_for(proven, "a proof of the receipt from the archiver's ledger")
    except TimeoutError:
        raise AssertionError(f"{replies[-1].text}\n{gateway.log()}") from None
    document: dict[str, Any] = replies[-1].json()
    return document


def connected_users(valkey: StoreUnderTest) -> set[str]:
    """The ACL user of every client connection on every primary."""
    lists = asyncio.run(valkey.on_every_primary("CLIENT", "LIST"))
    return {
        field.removeprefix("user=")
        for text in lists
        for line in text.decode().splitlines()
        for field in line.split()
        if field.startswith("user=")
    }


def assert_least_privilege(roles: list[Role], env: dict[str, str], valkey: StoreUnderTest) -> None:
    """Each role process was started with its own user's URL, holds not the admin's password,
    and Valkey sees each role's user connected."""
    admin_url = env[ROLE_URL_PREFIX + "ADMIN"]
    admin_password = admin_url.rpartition("@")[0].rpartition(":")[2]
    for role in roles:
        own = env[ROLE_URL_PREFIX + role.command.upper()]
        assert process_valkey_url(role.process.pid) == own
        assert f"tally-{role.command}:" in own
        environ = Path(f"/proc/{role.process.pid}/environ").read_bytes()
        assert admin_password.encode() not in environ
    users = connected_users(valkey)
    assert {"tally-gateway", "tally-aggregator", "tally-archiver"} <= users, users


def test_two_gateways_an_aggregator_and_an_archiver_serve_one_deployment(
    deployment: dict[str, Any], valkey: StoreUnderTest
) -> None:
    """Votes through either gateway count once per voter; a watcher on one gateway sees the
    aggregator's snapshots; the other gateway serves the archiver's ledger and receipt proofs; a
    second aggregator resumes the snapshots after the first is SIGKILLed; all exit 0 on SIGTERM.
    Each role runs as its own Valkey ACL user (least privilege), never as the admin."""
    env, logs = deployment["env"], deployment["logs"]
    with contextlib.ExitStack() as stack:
        archiver = stack.enter_context(running_role("archiver", env, logs))
        gateway_a = stack.enter_context(running_role("gateway", env, logs, name="gateway-a"))
        gateway_b = stack.enter_context(running_role("gateway", env, logs, name="gateway-b"))
        first = stack.enter_context(running_role("aggregator", env, logs, name="aggregator-1"))

        for role, sample in (
            (gateway_a, "tally_live_connections"),
            (gateway_b, "tally_live_connections"),
            (first, "tally_aggregator_ticks_total"),
            (archiver, "tally_archiver_cycles_total"),
        ):
            assert_ready_and_measured(role, sample)
        assert "tally_archiver_cycles_total" not in gateway_a.get("/metrics").text
        assert_least_privilege([archiver, gateway_a, gateway_b, first], env, valkey)

        issuer = DevIssuer.load_or_create(deployment["data_dir"] / "keys")
        admin = {"Authorization": f"Bearer {issuer.mint('admin', roles=['admin'])}"}
        created = httpx.post(
            f"{gateway_a.url}/v1/polls",
            json={"title": "split", "options": ["Red", "Blue"], "lanes": 2},
            headers=admin,
        )
        poll_id = created.json()["id"]
        assert httpx.post(f"{gateway_b.url}/v1/polls/{poll_id}/open", headers=admin).is_success

        ws_url = f"ws://127.0.0.1:{gateway_b.port}/v1/polls/{poll_id}/live"
        with connect(ws_url, open_timeout=5, proxy=None) as ws:
            alice, bob = issuer.mint("alice"), issuer.mint("bob")
            accepted = vote(gateway_a, poll_id, alice, "red")
            assert accepted.status_code == 201, accepted.text
            repeat = vote(gateway_b, poll_id, alice, "blue")
            assert (repeat.status_code, repeat.json()["code"]) == (409, "already-voted")
            assert repeat.json()["receipt"] == accepted.json()["receipt"]
            assert vote(gateway_b, poll_id, bob, "blue").status_code == 201

            snapshot = snapshot_with(ws, 2, timeout_s=10)
            assert snapshot["counts"] == {"red": 1, "blue": 1}

            receipt = accepted.json()["receipt"]
            proof = proof_of(gateway_b, receipt)
            key = Verifier.parse(gateway_a.get("/ledger/keys").text.splitlines()[0])
            origin = lane_origin(key.name, poll_id, receipt["lane"])
            checkpoint = open_checkpoint(
                proof["checkpoint"].encode(), [key.renamed(origin)], origin=origin
            )
            served = gateway_a.get(f"/ledger/{poll_id}/{receipt['lane']}/checkpoint")
            assert served.status_code == 200
            leaf = merkle.leaf_hash(base64.b64decode(proof["leaf"]))
            assert leaf.hex() == receipt["leaf_hash"]
            hashes = [base64.b64decode(h) for h in proof["proof"]]
            merkle.verify_inclusion(leaf, proof["index"], checkpoint.size, hashes, checkpoint.root)

            first.kill()
            second = stack.enter_context(running_role("aggregator", env, logs, name="aggregator-2"))
            assert vote(gateway_a, poll_id, issuer.mint("carol"), "red").status_code == 201
            # The killed aggregator's lease expires, then the second one publishes.
            snapshot = snapshot_with(ws, 3, timeout_s=10 + LEASE_TTL_MS / 1000)
            assert snapshot["counts"] == {"red": 2, "blue": 1}
            assert snapshot["seq"] > 1
        assert_ready_and_measured(second, "tally_aggregator_ticks_total")
        assert metric(second.get("/metrics").text, "tally_aggregator_snapshots_total") >= 1

        for role in (gateway_a, gateway_b, second, archiver):
            pid = role.process.pid
            assert role.terminate() == 0, role.log()
            assert not is_running(pid)
            assert "Traceback" not in role.log(), role.log()

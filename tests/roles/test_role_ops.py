"""What each role command needs, and what its ops server tells: `/readyz` follows the store and
(for the archiver) the ledger directory, `/metrics` shows the role's own samples."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import StoreUnderTest
from role_processes import Role, metric, role_env, running_role, wait_for
from tally.store.embedded import EmbeddedValkey

SECRET_HEX = "3c" * 32


def tally(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tally", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A valkey-server this test may stop."""
    server = EmbeddedValkey(tmp_path / "own")
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())


def env_on(store: StoreUnderTest, data_dir: Path) -> dict[str, str]:
    """A role's environment on the store under test (a valkey-server, or in cluster mode the
    cluster)."""
    if store.server is not None:
        return role_env(store.server, data_dir)
    return store.role_env(data_dir)


def readiness(role: Role) -> tuple[int, str]:
    reply = role.get("/readyz")
    return reply.status_code, reply.json().get("code", reply.json().get("status"))


@pytest.mark.parametrize("command", ["gateway", "aggregator", "archiver"])
def test_each_role_needs_the_valkey_url(command: str, tmp_path: Path) -> None:
    """Only `tally serve` embeds a Valkey: the roles refuse to start without TALLY_VALKEY_URL."""
    env = {"PATH": "/usr/bin:/bin", "TALLY_DATA_DIR": str(tmp_path)}
    completed = tally(command, env=env)
    assert completed.returncode == 1
    assert f"tally {command} needs TALLY_VALKEY_URL" in completed.stderr


def test_a_gateway_needs_the_shared_pseudonym_secret(
    store_server: StoreUnderTest, tmp_path: Path
) -> None:
    """Without TALLY_PSEUDONYM_SECRET two gateways would name one voter twice: refused."""
    completed = tally("gateway", "--port", "1", env=env_on(store_server, tmp_path))
    assert completed.returncode == 1
    assert "TALLY_PSEUDONYM_SECRET is required" in completed.stderr


@pytest.mark.single_node(
    "stops the one valkey-server under the aggregator; a cluster that loses a node fails it "
    "over (the cluster's failover tests)"
)
def test_the_aggregators_readiness_follows_its_store(
    own_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """Ready while Valkey answers with the functions loaded; 503 store-unavailable once it is
    gone; its /metrics has the aggregator's samples; SIGTERM exits 0."""
    env = role_env(own_valkey, tmp_path, TALLY_TICK_MS="50", TALLY_LEASE_TTL_MS="500")
    with running_role("aggregator", env, tmp_path) as aggregator:
        assert readiness(aggregator) == (200, "ready")
        wait_for(
            lambda: metric(aggregator.get("/metrics").text, "tally_aggregator_ticks_total") > 2,
            "aggregator ticks",
        )
        asyncio.run(own_valkey.stop())
        wait_for(lambda: readiness(aggregator) == (503, "store-unavailable"), "not ready")
        assert aggregator.terminate() == 0, aggregator.log()


def test_the_archivers_readiness_follows_its_ledger_directory(
    store_server: StoreUnderTest, tmp_path: Path
) -> None:
    """A ledger path that is no writable directory makes the archiver unready (503, naming the
    directory) until it is one again."""
    env = env_on(store_server, tmp_path)
    ledger = tmp_path / "ledger"
    with running_role("archiver", env, tmp_path) as archiver:
        assert readiness(archiver) == (200, "ready")
        assert metric(archiver.get("/metrics").text, "tally_archiver_failed_polls_total") == 0
        shutil.move(ledger, tmp_path / "ledger.moved")
        ledger.write_text("not a directory")
        reply = archiver.get("/readyz")
        assert (reply.status_code, reply.json()["code"]) == (503, "store-unavailable")
        assert f"the ledger directory {ledger} is not writable" in reply.json()["detail"]
        ledger.unlink()
        shutil.move(tmp_path / "ledger.moved", ledger)
        assert readiness(archiver) == (200, "ready")
        assert archiver.terminate() == 0, archiver.log()

"""A forged counter, as an insider with the store's admin user would write it (issue 11): `tally
archiver` and `tally gateway` as separate processes on a valkey-server the test started. HINCRBY on
a lane's counter raises a counter-mismatch alarm within one checkpoint interval: the poll and its
results show `integrity`, the archiver's metric counts it; and the certificate signed at close
carries the ledger's count, with the counters' beside it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from insider_stack import Operator, deployment_env

from conftest import StoreUnderTest, own_store
from role_processes import running_role, wait_for
from tally.ledger.certificate import FORMAT_V3
from tally.store import keys

INTERVAL_MS = 300
ENV = {
    "TALLY_PSEUDONYM_SECRET": "5c" * 32,
    "TALLY_CHECKPOINT_INTERVAL_MS": str(INTERVAL_MS),
    "TALLY_SHUTDOWN_TIMEOUT_S": "5",
    # Counters are the point here, not admission signatures (tests/insider/test_admission*.py):
    # unsigned votes in a poll that names no admission key count as before.
    "TALLY_ADMISSION_SIGNING": "off",
}


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    """The store the roles share, started by the test, which thereby holds its admin user."""
    async with own_store(tmp_path / "external") as store:
        yield store


async def forge(valkey: StoreUnderTest, poll_id: str) -> None:
    """The insider adds 5 votes for b to lane 0's counter, as the admin user may."""
    store = valkey.client()
    await store.connect()
    try:
        await store.execute("HINCRBY", keys.lane_counts(poll_id, 0), "b", 5)
    finally:
        await store.close()


def test_a_forged_counter_raises_the_alarm_and_the_certificate_keeps_the_ledger_count(
    valkey: StoreUnderTest, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = deployment_env(valkey, data_dir, **ENV)
    with (
        running_role("archiver", env, tmp_path) as archiver,
        running_role("gateway", env, tmp_path) as gateway,
    ):
        operator = Operator(gateway, data_dir)
        poll_id = operator.open_poll("Forged", ("a", "b"), lanes=2)
        for i in range(12):
            operator.vote(poll_id, f"voter-{i}", "ab"[i % 4 == 0])
        results = gateway.get(f"/v1/polls/{poll_id}/results").json()
        assert results["counts"] == {"a": 9, "b": 3}
        # Honest so far: a few checkpoints later, no alarm anywhere.
        time.sleep(3 * INTERVAL_MS / 1000)
        assert operator.integrity(f"/v1/polls/{poll_id}") is None
        assert operator.integrity(f"/v1/polls/{poll_id}/results") is None

        asyncio.run(forge(valkey, poll_id))
        forged_at = time.monotonic()
        assert gateway.get(f"/v1/polls/{poll_id}/results").json()["counts"]["b"] == 8
        wait_for(lambda: operator.integrity(f"/v1/polls/{poll_id}"), "the alarm", timeout_s=10)
        # Within one checkpoint interval (and the cycle that found it, and this poll's HTTP).
        assert time.monotonic() - forged_at < INTERVAL_MS / 1000 + 1.0

        [alarm] = operator.integrity(f"/v1/polls/{poll_id}") or []
        assert (alarm["kind"], alarm["lane"]) == ("counter-mismatch", 0)
        assert "b=" in alarm["details"]
        assert operator.integrity(f"/v1/polls/{poll_id}/results") == [alarm]
        metrics = archiver.get("/metrics").text
        sample = f'tally_integrity_alarms_total{{kind="counter-mismatch",poll="{poll_id}"}} 1'
        assert sample in metrics.splitlines(), metrics
        assert "INTEGRITY ALARM" in archiver.log()

        # At close the certificate is built from the ledger: 9 a, 3 b; the counters' 8 b beside.
        operator.close(poll_id)
        text, certificate = operator.certificate(poll_id)
        assert text.splitlines()[1] == FORMAT_V3
        assert certificate.counts == (("a", 9), ("b", 3))
        assert certificate.integrity is not None
        assert certificate.integrity.counters == (("a", 9), ("b", 8))
        assert ("counter-mismatch", "0") in certificate.integrity.alarms

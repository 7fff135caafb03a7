"""The restore drill of README.md ("Backup and restore"), step by step with real processes.

Votes are cast until the archiver has checkpointed and trimmed them from the lane streams, so
the backup holds votes whose only copy is `ledger/`. The backup is taken the documented way
(stop Tally, archive the whole data dir), the original directory is destroyed, the archive is
unpacked into a new directory and Tally started there. Every vote must count again, every repeat
must get its original receipt (archived votes included), new votes must continue the logs, and
the ledger must audit clean, certificate included."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import OPTIONS, RunningTally, serving, vote_requests
from tally.bench.loadgen import Reply, build_request, run_requests
from tally.store import keys
from tally.store.embedded import EmbeddedValkey
from tally.store.resp import Valkey

LANES = 4
ARCHIVED_VOTERS = 240  # cast, then waited for until a checkpoint covers them and they are trimmed
LATE_VOTERS = 60  # cast just before the stop: in the streams, or archived, whichever came first
NEW_VOTERS = 20  # cast after the restore
# Short cycles, so checkpoints and trims come within the test's time budget.
ENV = {"TALLY_CHECKPOINT_INTERVAL_MS": "200"}
WAIT_S = 20.0


async def send(t: RunningTally, requests: list[bytes]) -> list[Reply]:
    replies = (await run_requests(t.host, t.port, requests, concurrency=16)).replies
    assert all(reply is not None for reply in replies), "a request got no reply"
    return [reply for reply in replies if reply is not None]


def document(reply: Reply) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(reply.body)
    return parsed


async def cast(t: RunningTally, poll_id: str, tokens: list[str], shift: int) -> list[Reply]:
    replies = await send(t, vote_requests(t, poll_id, tokens, shift))
    assert [reply.status for reply in replies] == [201] * len(tokens)
    return replies


async def wait_until_provable(
    t: RunningTally, poll_id: str, receipts: list[dict[str, Any]]
) -> None:
    """Until a published checkpoint covers every receipt (its proof route answers 200)."""
    proofs = [
        build_request(
            "GET",
            f"/v1/polls/{poll_id}/receipts/{r['lane']}/{r['entry_id']}/proof",
            host=f"{t.host}:{t.port}",
        )
        for r in receipts
    ]
    async with asyncio.timeout(WAIT_S):
        # Polling is all there is: the archiver tells no client when it has checkpointed.
        while True:
            if {reply.status for reply in await send(t, proofs)} == {200}:
                return
            await asyncio.sleep(0.1)


async def wait_for_certificate(t: RunningTally, poll_id: str) -> None:
    certificate = build_request("GET", f"/ledger/{poll_id}/certificate", host=f"{t.host}:{t.port}")
    async with asyncio.timeout(WAIT_S):
        while True:
            if (await send(t, [certificate]))[0].status == 200:
                return
            await asyncio.sleep(0.1)


def backup(data_dir: Path, archive: Path) -> None:
    """README: with Tally stopped, archive the whole data directory (modes kept)."""
    subprocess.run(
        [
            "tar",
            "--create",
            "--preserve-permissions",
            "--file",
            str(archive),
            "-C",
            str(data_dir),
            ".",
        ],
        check=True,
    )


def restore(archive: Path, data_dir: Path) -> None:
    """README: unpack the archive into a new, empty data directory."""
    data_dir.mkdir(mode=0o700)
    subprocess.run(
        ["tar", "--extract", "--preserve-permissions", "--file", str(archive), "-C", str(data_dir)],
        check=True,
    )


async def trimmed_votes(data_dir: Path, poll_id: str) -> int:
    """Votes of the poll whose stream entries the archiver had trimmed when the backup was made:
    their only copy is ledger/. Read from the restored AOF with a bare valkey-server."""
    server = EmbeddedValkey(data_dir)
    await server.start()
    client = Valkey(server.endpoint)
    try:
        trimmed = 0
        for lane in range(LANES):
            seq = await client.execute("HGET", keys.lane_state(poll_id, lane), "seq")
            length = await client.execute("XLEN", keys.lane_ledger(poll_id, lane))
            trimmed += int(seq) - int(length)
        return trimmed
    finally:
        await client.close()
        await server.stop()


def audit(data_dir: Path, poll_id: str) -> dict[str, Any]:
    """`tally audit verify` over the restored ledger directory, with the restored public key."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tally",
            "audit",
            "verify",
            str(data_dir / "ledger" / "polls" / poll_id),
            "--key",
            str(data_dir / "ledger" / "keys"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = orjson.loads(done.stdout)
    return report


@pytest.mark.single_node(
    "the documented backup is a copy of the data dir, which holds the embedded valkey-server's "
    "AOF; a cluster's data lives in its nodes (backed up as Valkey's own docs say)"
)
async def test_a_backup_of_a_stopped_tally_restores_every_vote_and_receipt(tmp_path: Path) -> None:
    """Stop, archive the data dir, destroy it, unpack elsewhere, start: votes, receipts and the
    ledger are all back, including votes that only the ledger files still held."""
    original, restored, archive = tmp_path / "data", tmp_path / "restored", tmp_path / "backup.tar"
    with serving(original, ENV) as t:
        poll_id = str(t.open_poll(*OPTIONS, lanes=LANES)["id"])
        tokens = list(t.issuer.mint_many(f"backup-{i}" for i in range(ARCHIVED_VOTERS)))
        first = await cast(t, poll_id, tokens, 0)
        await wait_until_provable(t, poll_id, [document(r)["receipt"] for r in first])
        await asyncio.sleep(0.6)  # the trim follows the checkpoint within the same cycle
        late = list(t.issuer.mint_many(f"late-{i}" for i in range(LATE_VOTERS)))
        first += await cast(t, poll_id, late, 0)
        tokens += late
        before = t.results(poll_id, total=len(tokens))
    # Leaving `serving` stops Tally with SIGTERM, as Ctrl-C would: it stops its valkey-server.

    backup(original, archive)
    shutil.rmtree(original)
    restore(archive, restored)
    assert await trimmed_votes(restored, poll_id) >= ARCHIVED_VOTERS

    with serving(restored, ENV) as t:
        assert t.results(poll_id, total=len(tokens)) == before
        # The tokens were signed with the backed-up dev keys; the voters' pseudonyms come from
        # the backed-up secret, so each repeat finds its first vote, trimmed or not.
        repeats = await send(t, vote_requests(t, poll_id, tokens, 1))
        assert [reply.status for reply in repeats] == [409] * len(tokens)
        assert [document(r)["receipt"] for r in repeats] == [document(r)["receipt"] for r in first]
        fresh = list(t.issuer.mint_many(f"after-{i}" for i in range(NEW_VOTERS)))
        await cast(t, poll_id, fresh, 0)
        t.admin().post(f"/v1/polls/{poll_id}/close")
        await wait_for_certificate(t, poll_id)

    report = audit(restored, poll_id)
    assert report["ok"] is True, report["findings"]
    assert report["votes"] == len(tokens) + NEW_VOTERS
    assert report["certificate"] == "verified", report["certificate"]
    assert (restored / "keys" / "ledger.key").stat().st_mode & 0o777 == 0o600

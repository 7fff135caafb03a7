"""The archiver killed with SIGKILL again and again while votes stream in: afterwards every
accepted vote is a leaf exactly once, at the place its receipt names, and the ledger audits clean.

Votes go through the real service and Valkey in this process; each archiver is a separate
`tally archiver` process on the same Valkey and ledger dir, killed at a random moment (starting,
reading, writing tiles, signing, trimming). The lease a killed archiver held would expire after
its TTL; the test deletes it instead, as if that time had passed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import StoreUnderTest, own_store
from tally.archive.logs import LedgerDirectory, LedgerFiles
from tally.bench.processes import free_port
from tally.domain.polls import OptionSpec
from tally.domain.votes import Accepted, Receipt
from tally.ledger import layout, merkle
from tally.ledger.certificate import certificate_origin, open_certificate
from tally.ledger.note import Verifier
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.polls import ValkeyPolls
from tally.store.votes import ValkeyBallotBox

SECRET = b"crash-test-pseudonym-secret-32by"
KILLS = 8
LANES = 4


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    async with own_store(tmp_path / "valkey") as store:
        yield store


def start_archiver(server: StoreUnderTest, data_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TALLY_VALKEY_URL=server.url,
        TALLY_DATA_DIR=str(data_dir),
        TALLY_CHECKPOINT_INTERVAL_MS="50",
        TALLY_LOG_LEVEL="warning",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tally", "archiver", "--port", str(free_port())],
        env=env,
        stderr=subprocess.PIPE,
    )


async def test_kill_9_the_archiver_repeatedly(server: StoreUnderTest, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = LedgerFiles(data_dir / "ledger")
    client = server.client()
    await client.connect()
    service = VotingService(
        ValkeyPolls(client),
        ValkeyBallotBox(client),
        pseudonym_secret=SECRET,
        ledger=LedgerDirectory(files),
    )
    options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
    poll = await service.create_poll(NewPoll("Crash", options, lanes=LANES))
    await service.open_poll(poll.id)
    receipts: list[Receipt] = []
    stop = asyncio.Event()

    async def voters() -> None:
        voter = 0
        while not stop.is_set():
            batch = range(voter, voter + 40)
            voter += 40
            outcomes = await asyncio.gather(
                *(
                    service.vote(poll.id, Voter("idp", f"v{i}"), ("red", "blue")[i % 2])
                    for i in batch
                )
            )
            for outcome in outcomes:
                assert isinstance(outcome, Accepted)
                receipts.append(outcome.receipt)
            await asyncio.sleep(0.005)

    def published() -> int:
        history = files.history(poll.id) or {}
        return sum(len(history.get(str(lane), [])) for lane in range(LANES))

    rng = random.Random(4)  # a fixed seed: a failure can be replayed
    producing = asyncio.create_task(voters())
    try:
        for kill in range(KILLS):
            before = published()
            process = start_archiver(server, data_dir)
            if kill % 2:
                # Every other archiver is first seen publishing, so that progress between kills
                # does not hang on how fast a loaded machine starts a process; the others die
                # at any moment, starting up included.
                deadline = time.monotonic() + 30
                while published() == before and time.monotonic() < deadline:  # noqa: ASYNC110  # polls files on disk, which signal nothing
                    await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.4, 1.6))
            process.send_signal(signal.SIGKILL)
            _, errors = process.communicate(timeout=10)
            assert b"STOPPED" not in errors, errors.decode()
            await client.call("DEL", keys.poll_archiver_lease(poll.id))
    finally:
        stop.set()
        await producing
    await service.close_poll(poll.id)

    assert published() > KILLS  # the killed archivers did make progress between kills

    process = start_archiver(server, data_dir)
    try:
        deadline = time.monotonic() + 60
        while files.read(poll.id, layout.CERTIFICATE) is None:
            assert time.monotonic() < deadline, "no certificate within 60 s"
            assert process.poll() is None, "the last archiver exited"
            await asyncio.sleep(0.1)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=20)
    assert b"STOPPED" not in errors, errors.decode()
    await client.close()

    key = Verifier.parse((data_dir / "ledger" / "keys").read_text().strip())
    for lane in range(LANES):
        mine = sorted((r for r in receipts if r.lane == lane), key=lambda r: r.entry_id)
        assert [r.entry_id for r in mine] == list(range(1, len(mine) + 1))
        leaves = [files.read_entry(poll.id, str(lane), r.entry_id - 1) for r in mine]
        assert [merkle.leaf_hash(leaf or b"") for leaf in leaves] == [r.leaf_hash for r in mine]
        assert files.read_entry(poll.id, str(lane), len(mine)) is None  # nothing beyond them
    signed = files.read(poll.id, layout.CERTIFICATE) or b""
    origin = certificate_origin(key.name, poll.id)
    certificate = open_certificate(signed, [key.renamed(origin)], origin=origin)
    assert certificate.total == len(receipts) > 1000

    audit = subprocess.run(  # noqa: ASYNC221  # everything else has stopped: nothing to block
        [
            sys.executable,
            "-m",
            "tally",
            "audit",
            "verify",
            str(files.poll_dir(poll.id)),
            "--key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr

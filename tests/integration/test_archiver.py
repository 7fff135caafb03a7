"""The archiver on a real Valkey and a real disk: queues become signed, tiled logs; streams are
trimmed only behind a checkpoint; a restarted archiver continues with no gap and no duplicate;
a closed poll gets a certificate; receipts match the published leaves, even after trimming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archive_rig import PREFIX, archiver_of, cast, make_signer, service_of
from conftest import StoreConnection, own_client
from tally.archive.logs import LedgerFiles, note_body
from tally.domain.polls import OptionSpec, Poll
from tally.domain.votes import AlreadyVoted, Receipt
from tally.ledger import layout, merkle, note
from tally.ledger.admin import AdminAction, decode_admin
from tally.ledger.certificate import certificate_origin, open_certificate
from tally.ledger.checkpoint import lane_origin, open_checkpoint
from tally.ledger.leaf import decode_leaf
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.resp import Valkey


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    """A store of the test's own: the archiver archives every poll there is."""
    async with own_client(tmp_path / "valkey") as valkey:
        yield valkey


async def open_poll(service: VotingService, lanes: int = 4) -> Poll:
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("Archive", options, lanes=lanes), actor="alice")
    return await service.open_poll(poll.id, actor="alice")


def lane_leaves(files: LedgerFiles, poll: Poll, lane: int, verifier: note.Verifier) -> list[bytes]:
    signed = files.read(poll.id, layout.checkpoint_path(str(lane)))
    assert signed is not None
    origin = lane_origin(PREFIX, poll.id, lane)
    checkpoint = open_checkpoint(signed, [verifier.renamed(origin)], origin=origin)
    leaves = [files.read_entry(poll.id, str(lane), i) for i in range(checkpoint.size)]
    assert all(leaf is not None for leaf in leaves)
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves if leaf is not None]
    assert merkle.root(hashes) == checkpoint.root
    return [leaf for leaf in leaves if leaf is not None]


async def test_votes_become_leaves_and_streams_are_trimmed(client: Valkey, tmp_path: Path) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service)
    receipts = await cast(service, poll, range(300))
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()

    by_lane: dict[int, list[Receipt]] = {}
    for receipt in receipts:
        by_lane.setdefault(receipt.lane, []).append(receipt)
    for lane in range(poll.lanes):
        leaves = lane_leaves(files, poll, lane, signer.verifier)
        assert len(leaves) == len(by_lane.get(lane, []))
        for receipt in by_lane.get(lane, []):
            leaf = leaves[receipt.entry_id - 1]
            assert merkle.leaf_hash(leaf) == receipt.leaf_hash
            record = decode_leaf(leaf)
            assert (record.option_id, record.accepted_ms) == (
                receipt.option,
                receipt.accepted_at_ms,
            )
        assert await client.call("XLEN", keys.lane_ledger(poll.id, lane)) == 0

    # Trimmed from the stream, a repeat vote still gets its receipt: from the archive.
    again = await service.vote(poll.id, Voter("idp", "v7"), "a")
    assert isinstance(again, AlreadyVoted)
    assert again.receipt == receipts[7]

    admin = [files.read_entry(poll.id, "admin", i) for i in range(2)]
    actions = [decode_admin(a).action for a in admin if a is not None]
    assert actions == [AdminAction.CREATED, AdminAction.OPENED]
    assert decode_admin(admin[0] or b"").actor == b"alice"


async def test_a_new_archiver_continues_without_gap_or_duplicate(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=2)
    first = await cast(service, poll, range(0, 400))
    await archiver_of(client, files, signer).cycle()
    second = await cast(service, poll, range(400, 1000))
    successor = archiver_of(client, files, signer)  # a restart: nothing in memory
    await successor.cycle()
    for lane in range(poll.lanes):
        leaves = lane_leaves(files, poll, lane, signer.verifier)
        mine = sorted(r.entry_id for r in first + second if r.lane == lane)
        assert mine == list(range(1, len(leaves) + 1))
        history = files.history(poll.id)
        assert history is not None
        sizes = [note_body(signed).size for signed in history[str(lane)]]
        assert sizes == [sum(r.lane == lane for r in first), len(leaves)]  # one per cycle


async def test_closing_certifies_the_counts_against_the_final_checkpoints(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=2)
    receipts = await cast(service, poll, range(51))
    await service.close_poll(poll.id, actor="bob")
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()
    signed = files.read(poll.id, layout.CERTIFICATE)
    assert signed is not None
    origin = certificate_origin(PREFIX, poll.id)
    certificate = open_certificate(signed, [signer.verifier.renamed(origin)], origin=origin)
    assert dict(certificate.counts) == {"a": 26, "b": 25}
    for lane, head in enumerate(certificate.lanes):
        assert head.size == sum(r.lane == lane for r in receipts)
        leaves = lane_leaves(files, poll, lane, signer.verifier)
        assert head.root == merkle.root([merkle.leaf_hash(leaf) for leaf in leaves])
    assert certificate.admin.size == 3
    assert archiver.stats.certificates == 1
    await archiver.cycle()  # certified polls are left alone
    assert archiver.stats.certificates == 1


async def test_only_the_lease_holder_archives(client: Valkey, tmp_path: Path) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=1)
    await cast(service, poll, range(10))
    holder = archiver_of(client, files, signer, "holder")
    other = archiver_of(client, files, signer, "other")
    await holder.cycle()
    await other.cycle()
    assert holder.leading == {poll.id}
    assert other.leading == frozenset()
    assert other.stats.leaves == 0


async def test_a_poll_from_before_the_ledger_is_left_alone(client: Valkey, tmp_path: Path) -> None:
    """A poll whose record was written without an admin log (an older Tally) gets no ledger,
    and is not counted as a failure; the polls after it are archived as usual."""
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    old = await open_poll(service, lanes=1)
    await client.call("DEL", keys.poll_admin(old.id))  # as an older Tally wrote it
    await client.call("HDEL", keys.poll_meta(old.id), "admin_seq")
    new = await open_poll(service, lanes=1)
    await cast(service, new, range(5))
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()
    assert files.logs(old.id) == []
    assert files.logs(new.id) == ["admin", "0"]
    assert archiver.stats.failed_polls == 0


async def test_stop_waits_for_file_work_already_running(client: Valkey, tmp_path: Path) -> None:
    """Cancelling the archiver's task does not stop a publish running in its worker thread:
    stop() waits for it before handing the lease over, so no write lands after."""
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=16)
    await cast(service, poll, range(3000))
    archiver = archiver_of(client, files, signer)
    task = asyncio.create_task(archiver.cycle())
    # The drain is done once leaves are counted: the publish is starting or running.
    while archiver.stats.leaves == 0:  # noqa: ASYNC110  # the archiver exposes no event for it
        await asyncio.sleep(0.001)
    task.cancel()
    await archiver.stop()
    assert await client.call("GET", keys.poll_archiver_lease(poll.id)) is None
    published = [p.stat().st_mtime_ns for p in files.poll_dir(poll.id).rglob("*") if p.is_file()]
    await asyncio.sleep(0.2)
    assert published == [
        p.stat().st_mtime_ns for p in files.poll_dir(poll.id).rglob("*") if p.is_file()
    ]

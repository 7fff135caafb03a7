"""Counts from the ledger, as an insider with the store's admin user (issue 11), on a real Valkey
and a real disk: an entry deleted mid-log raises a ledger-gap alarm and stops that lane only (the
other lanes and the admin log go on, the poll is certified with the alarm recorded, and `tally
audit verify` finds the rest consistent and reports the gap); an honest poll archived while votes
pour in raises no alarm, whatever the archiver reads mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archive_rig import archiver_of, make_signer, service_of
from conftest import StoreConnection, own_client
from tally.archive.logs import LedgerFiles, note_body
from tally.audit.source import DirectorySource
from tally.audit.verify import verify
from tally.domain.integrity import AlarmKind
from tally.domain.polls import OptionSpec, Poll
from tally.domain.votes import Accepted, Receipt
from tally.ledger import layout
from tally.ledger.certificate import FORMAT, FORMAT_V3, ResultCertificate
from tally.ledger.note import Signer
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.integrity import ValkeyIntegrity
from tally.store.resp import Valkey


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    """A store of the test's own (the archiver archives every poll there is), as its admin."""
    async with own_client(tmp_path / "valkey") as valkey:
        yield valkey


async def open_poll(service: VotingService, lanes: int) -> Poll:
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("Insider", options, lanes=lanes), actor="alice")
    return await service.open_poll(poll.id, actor="alice")


async def cast(service: VotingService, poll: Poll, voters: range) -> list[Receipt]:
    outcomes = await asyncio.gather(
        *(service.vote(poll.id, Voter("idp", f"v{i}"), "ab"[i % 3 == 0]) for i in voters)
    )
    receipts = []
    for outcome in outcomes:
        assert isinstance(outcome, Accepted), outcome
        receipts.append(outcome.receipt)
    return receipts


def certificate_of(files: LedgerFiles, poll: Poll) -> ResultCertificate:
    signed = files.read(poll.id, layout.CERTIFICATE)
    assert signed is not None
    return ResultCertificate.parse(note_body_text(signed))


def note_body_text(signed: bytes) -> str:
    return signed.rpartition(b"\n\n")[0].decode() + "\n"


def lane_size(files: LedgerFiles, poll: Poll, lane: int) -> int:
    signed = files.read(poll.id, layout.checkpoint_path(str(lane)))
    assert signed is not None
    return note_body(signed).size


def audit(files: LedgerFiles, poll: Poll, signer: Signer) -> tuple[str, list[tuple[str, str]]]:
    report = verify(DirectorySource(files.poll_dir(poll.id)), signer.verifier, poll_id=poll.id)
    return report.certificate, [(f.code, f.message) for f in report.findings]


async def test_a_mid_log_deletion_stops_that_lane_only_and_the_rest_stays_verifiable(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    integrity = ValkeyIntegrity(client)
    poll = await open_poll(service, lanes=2)
    archiver = archiver_of(client, files, signer)
    await cast(service, poll, range(40))
    await archiver.cycle()
    assert await integrity.alarms(poll.id) == []

    # More votes, and an insider deletes one of lane 0's, mid-log, before the archiver reads it.
    later = await cast(service, poll, range(40, 100))
    lane0 = sorted(r.entry_id for r in later if r.lane == 0)
    assert len(lane0) >= 3
    victim = lane0[len(lane0) // 2]
    deleted = await client.execute("XDEL", keys.lane_ledger(poll.id, 0), f"{victim}-0")
    assert deleted == 1
    await archiver.cycle()

    [alarm] = await integrity.alarms(poll.id)
    assert (alarm.kind, alarm.lane) == (AlarmKind.LEDGER_GAP, 0)
    assert f"entry {victim + 1} after entry {victim - 1}" in alarm.details
    assert lane_size(files, poll, 0) == victim - 1  # archived up to the gap, no further
    lane1_total = lane_size(files, poll, 1)
    assert archiver.stats.failed_polls == 0

    # The poll goes on: lane 1 keeps being archived, lane 0 stays at its gap.
    more = await cast(service, poll, range(100, 140))
    await archiver.cycle()
    assert lane_size(files, poll, 1) == lane1_total + sum(1 for r in more if r.lane == 1)
    assert lane_size(files, poll, 0) == victim - 1
    # What was archived is still served with its proof.
    assert files.entry(poll.id, "0", victim - 2) is not None

    await service.close_poll(poll.id, actor="alice")
    await archiver.cycle()
    certificate = certificate_of(files, poll)
    text = note_body_text(files.read(poll.id, layout.CERTIFICATE) or b"")
    assert text.splitlines()[1] == FORMAT_V3
    assert certificate.integrity is not None
    assert ("ledger-gap", "0") in certificate.integrity.alarms
    # The certified counts are the ledger's (lane 0 up to its gap), never the counters': the
    # counters counted every vote, and the certificate states them beside the recount.
    counted = dict(certificate.counts)
    assert sum(counted.values()) == lane_size(files, poll, 0) + lane_size(files, poll, 1)
    assert sum(n for _, n in certificate.integrity.counters) == 140
    kinds = {(a.kind, a.lane) for a in await integrity.alarms(poll.id)}
    assert kinds == {(AlarmKind.LEDGER_GAP, 0), (AlarmKind.COUNTER_MISMATCH, 0)}

    state, findings = audit(files, poll, signer)
    assert state == "verified"  # signed, bound to every log's final checkpoint, counts = recount
    assert {code for code, _ in findings} == {"integrity-alarm"}, findings
    assert any("ledger-gap on lane 0" in message for _, message in findings)


async def test_an_honest_poll_archived_under_concurrent_votes_raises_no_alarm(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    integrity = ValkeyIntegrity(client)
    poll = await open_poll(service, lanes=4)
    archiver = archiver_of(client, files, signer)
    voting = True
    seen_mid_stream: list[int] = []
    cast_total = 0

    async def vote_in_waves() -> None:
        """Waves of 20 concurrent votes, until the archiver ran 6 cycles in the middle of them."""
        nonlocal voting, cast_total
        while len(seen_mid_stream) < 6 and cast_total < 6000:
            await cast(service, poll, range(cast_total, cast_total + 20))
            cast_total += 20
            await asyncio.sleep(0.005)
        voting = False

    async def archive_meanwhile() -> None:
        while voting:
            await archiver.cycle()
            seen_mid_stream.append(sum(lane_size(files, poll, n) for n in range(4)))

    await asyncio.gather(vote_in_waves(), archive_meanwhile())
    await archiver.cycle()

    # The archiver compared counters while votes kept arriving (it saw the logs at many sizes).
    assert len({size for size in seen_mid_stream if 0 < size < cast_total}) >= 3, seen_mid_stream
    assert archiver.stats.integrity_checks >= 4 * len(seen_mid_stream)
    assert await integrity.alarms(poll.id) == []

    await service.close_poll(poll.id, actor="alice")
    await archiver.cycle()
    text = note_body_text(files.read(poll.id, layout.CERTIFICATE) or b"")
    assert text.splitlines()[1] == FORMAT  # no alarm: the v2 certificate, as before
    certificate = certificate_of(files, poll)
    assert certificate.integrity is None
    b_votes = len(range(0, cast_total, 3))
    assert dict(certificate.counts) == {"a": cast_total - b_votes, "b": b_votes}
    assert await integrity.alarms(poll.id) == []
    assert audit(files, poll, signer) == ("verified", [])


async def test_a_restarted_archiver_rebuilds_its_recount_and_still_finds_a_forged_counter(
    client: Valkey, tmp_path: Path
) -> None:
    """The recount is rebuilt from the archived leaves when an archiver (re)opens a poll: a
    counter forged while no archiver ran is found by the next one, and the certificate it signs
    counts the ledger."""
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    integrity = ValkeyIntegrity(client)
    poll = await open_poll(service, lanes=2)
    first = archiver_of(client, files, signer, owner="first")
    await cast(service, poll, range(30))
    await first.cycle()
    await first.stop()

    await client.execute("HINCRBY", keys.lane_counts(poll.id, 1), "a", 3)
    await cast(service, poll, range(30, 45))  # the lane moves on past the forged counter
    successor = archiver_of(client, files, signer, owner="successor")
    await successor.cycle()
    [alarm] = await integrity.alarms(poll.id)
    assert (alarm.kind, alarm.lane) == (AlarmKind.COUNTER_MISMATCH, 1)

    await service.close_poll(poll.id, actor="alice")
    await successor.cycle()
    certificate = certificate_of(files, poll)
    b_votes = len(range(0, 45, 3))
    assert certificate.counts == (("a", 45 - b_votes), ("b", b_votes))
    assert certificate.integrity is not None
    assert certificate.integrity.counters == (("a", 48 - b_votes), ("b", b_votes))

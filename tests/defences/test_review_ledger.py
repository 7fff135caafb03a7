"""Hold for review in the ledger, on a real Valkey and a real disk: held votes and reviewers'
decisions, written into the streams in the agreed format (as the store's functions write them),
become held vote records, review records and REVIEWED admin records in order; a closed poll is
certified only once every held vote is decided, with the held, released and voided totals; and
`tally audit verify` (a subprocess, as an auditor runs it) passes the result.

The queue decoding of those stream entries is strict: anything else is a MalformedEntry."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archive_rig import PREFIX, archiver_of, make_signer, service_of
from conftest import StoreConnection, own_store
from tally.archive.logs import LedgerFiles
from tally.domain.polls import OptionSpec, Poll
from tally.domain.votes import Accepted
from tally.gateway.metrics import Metrics
from tally.ledger import layout, note
from tally.ledger.admin import AdminAction, ReviewedVote, decode_admin
from tally.ledger.certificate import ReviewTotals, certificate_origin, open_certificate
from tally.ledger.leaf import VoteRecord, VoteStatus
from tally.ledger.review import Decision, ReviewRecord, decode_lane_record
from tally.ports import MalformedEntry, QueuedDecision, QueuedReview, QueuedVote
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.ledger_queue import decode_admin_entry, decode_lane_entry
from tally.store.resp import Valkey
from tally.wiring.archiver import observe_archiver

REVIEWER = "rita"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    async with own_store(tmp_path / "valkey") as store:
        valkey = store.client()
        await valkey.connect()
        yield valkey
        await valkey.close()


async def open_poll(service: VotingService, lanes: int) -> Poll:
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("Review", options, lanes=lanes), actor="alice")
    return await service.open_poll(poll.id, actor="alice")


async def cast(service: VotingService, poll: Poll, voters: range) -> None:
    for i in voters:
        outcome = await service.vote(poll.id, Voter("idp", f"v{i}"), "ab"[i % 2])
        assert isinstance(outcome, Accepted)


def pseudonym_in(lane: int, lanes: int, n: int) -> bytes:
    """A pseudonym no service voter has, that maps to ``lane``."""
    digest = hashlib.sha256(f"held-{n}".encode()).digest()[:16]
    return digest[:15] + bytes([(digest[15] & ~(lanes - 1) & 0xFF) | lane])


async def hold(client: Valkey, poll: Poll, lane: int, n: int, option: str) -> int:
    """Record a held vote as the store's held mode does: the next seq of the lane, `s`=held,
    counted in the lane's `held`, not in its counts. Returns its seq."""
    state = keys.lane_state(poll.id, lane)
    seq = int(await client.call("HINCRBY", state, "seq", 1))
    pseudonym = pseudonym_in(lane, poll.lanes, n)
    await client.call(
        "XADD", keys.lane_ledger(poll.id, lane), f"{seq}-0",
        "p", pseudonym, "o", option, "t", str(1_800_000_000_000 + n), "s", "held",
    )  # fmt: skip
    await client.call("HINCRBY", state, "held", 1)
    return seq


async def sign_decision(client: Valkey, poll: Poll, lane: int, seq: int, decision: str) -> None:
    """The admin log's half of a decision (written first): a=reviewed with lane, seq, decision."""
    admin_seq = int(await client.call("HINCRBY", keys.poll_meta(poll.id), "admin_seq", 1))
    await client.call(
        "XADD", keys.poll_admin(poll.id), f"{admin_seq}-0",
        "a", "reviewed", "t", "1800000100000", "u", REVIEWER,
        "l", str(lane), "r", str(seq), "d", decision,
    )  # fmt: skip


async def apply_decision(
    client: Valkey, poll: Poll, lane: int, seq: int, decision: str, option: str
) -> None:
    """The lane's half: the held vote leaves `held`, a release is counted, and the decision is
    appended to the lane's stream at the lane's next seq."""
    state = keys.lane_state(poll.id, lane)
    entry = int(await client.call("HINCRBY", state, "seq", 1))
    await client.call("HINCRBY", state, "held", -1)
    if decision == "released":
        await client.call("HINCRBY", keys.lane_counts(poll.id, lane), option, 1)
    await client.call(
        "XADD", keys.lane_ledger(poll.id, lane), f"{entry}-0",
        "r", str(seq), "d", decision, "t", "1800000100001",
    )  # fmt: skip


async def decide(
    client: Valkey, poll: Poll, lane: int, seq: int, decision: str, option: str
) -> None:
    await sign_decision(client, poll, lane, seq, decision)
    await apply_decision(client, poll, lane, seq, decision, option)


def audit(directory: Path, signer: note.Signer) -> dict[str, Any]:
    """`python -m tally.audit verify --json` on a poll's ledger directory."""
    result = subprocess.run(
        [sys.executable, "-m", "tally.audit", "verify", str(directory), "--key",
         str(signer.verifier), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    document: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == (0 if document["ok"] else 1), result.stderr
    return document


def lane_records(files: LedgerFiles, poll: Poll, lane: int) -> list[VoteRecord | ReviewRecord]:
    records = []
    index = 0
    while (leaf := files.read_entry(poll.id, str(lane), index)) is not None:
        records.append(decode_lane_record(leaf))
        index += 1
    return records


async def test_held_votes_and_decisions_are_archived_and_certified_once_all_are_decided(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=2)
    await cast(service, poll, range(10))
    held = [(lane, await hold(client, poll, lane, n, "ab"[n % 2])) for n, lane in enumerate([0, 1])]
    held += [(lane, await hold(client, poll, lane, n, "b")) for n, lane in enumerate([0, 1], 2)]
    await cast(service, poll, range(10, 20))  # accepted votes go on after the held ones
    await decide(client, poll, *held[0], "released", "a")
    await decide(client, poll, *held[1], "voided", "b")
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()

    for lane in range(2):
        records = lane_records(files, poll, lane)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        mine = [(seq, o) for (n, seq), o in zip(held, "abbb", strict=True) if n == lane]
        statuses = {r.seq: r.status for r in records if isinstance(r, VoteRecord)}
        assert [s for s, st in statuses.items() if st is VoteStatus.HELD] == [s for s, _ in mine]
        decisions = [r for r in records if isinstance(r, ReviewRecord)]
        assert [(r.held_seq, r.decision) for r in decisions] == [
            (mine[0][0], Decision.RELEASED if lane == 0 else Decision.VOIDED)
        ]
        assert decisions[0].seq > mine[0][0]
    admin = [decode_admin(files.read_entry(poll.id, "admin", i) or b"") for i in range(4)]
    assert [a.action for a in admin] == [AdminAction.CREATED, AdminAction.OPENED] + [
        AdminAction.REVIEWED
    ] * 2
    assert [(a.review, a.actor) for a in admin[2:]] == [
        (ReviewedVote(*held[0], Decision.RELEASED), REVIEWER.encode()),
        (ReviewedVote(*held[1], Decision.VOIDED), REVIEWER.encode()),
    ]

    await service.close_poll(poll.id, actor="alice")
    await archiver.cycle()
    await archiver.cycle()
    assert files.read(poll.id, layout.CERTIFICATE) is None  # two held votes wait for a reviewer
    assert (archiver.stats.certificates, archiver.stats.awaiting_review) == (0, 1)
    metrics = Metrics(vote_path=False)
    observe_archiver(metrics, archiver)
    assert "\ntally_archiver_polls_awaiting_review 1\n" in await metrics.scrape()
    assert audit(files.poll_dir(poll.id), signer)["certificate"] == "awaiting-review"

    await decide(client, poll, *held[2], "released", "b")  # reviewers decide after the close
    await decide(client, poll, *held[3], "voided", "b")
    await archiver.cycle()
    signed = files.read(poll.id, layout.CERTIFICATE)
    assert signed is not None
    origin = certificate_origin(PREFIX, poll.id)
    certificate = open_certificate(signed, [signer.verifier.renamed(origin)], origin=origin)
    assert certificate.review == ReviewTotals(held=4, released=2, voided=2)
    assert dict(certificate.counts) == {"a": 10 + 1, "b": 10 + 1}  # accepted + released
    assert (archiver.stats.certificates, archiver.stats.awaiting_review) == (1, 0)

    report = audit(files.poll_dir(poll.id), signer)
    assert report["ok"], report["findings"]
    assert report["certificate"] == "verified"
    assert report["counts"] == {"a": 11, "b": 11}
    assert report["review"] == {"held": 4, "released": 2, "voided": 2, "undecided": 0}


async def test_a_restarted_archiver_reads_the_review_state_from_the_published_leaves(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=1)
    await cast(service, poll, range(5))
    first = await hold(client, poll, 0, 0, "a")
    second = await hold(client, poll, 0, 1, "b")
    await decide(client, poll, 0, first, "released", "a")
    await archiver_of(client, files, signer).cycle()
    await service.close_poll(poll.id, actor="alice")

    successor = archiver_of(client, files, signer)  # resumes from disk: nothing in memory
    await successor.cycle()
    assert files.read(poll.id, layout.CERTIFICATE) is None  # `second` is still held
    await decide(client, poll, 0, second, "voided", "b")
    await successor.cycle()
    report = audit(files.poll_dir(poll.id), signer)
    assert report["ok"], report["findings"]
    assert report["review"] == {"held": 2, "released": 1, "voided": 1, "undecided": 0}
    assert report["counts"] == {"a": 3 + 1, "b": 2}


async def test_a_decision_waits_for_its_admin_record_before_the_certificate(
    client: Valkey, tmp_path: Path
) -> None:
    """On a cluster the admin stream and a lane are read from different nodes: a lane decision
    can be drained before its admin twin. The certificate waits for the twin."""
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=1)
    await cast(service, poll, range(3))
    seq = await hold(client, poll, 0, 0, "a")
    await service.close_poll(poll.id, actor="alice")
    await apply_decision(client, poll, 0, seq, "released", "a")  # the lane's half only
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()
    assert files.read(poll.id, layout.CERTIFICATE) is None
    assert archiver.stats.failed_polls == 0
    await sign_decision(client, poll, 0, seq, "released")  # (appended after `closed` here)
    await archiver.cycle()
    report = audit(files.poll_dir(poll.id), signer)
    assert report["ok"], report["findings"]
    assert report["certificate"] == "verified"


async def test_a_decision_on_a_vote_that_is_not_held_stops_the_poll(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=1)
    await cast(service, poll, range(3))
    await decide(client, poll, 0, 2, "voided", "b")  # entry 2 was accepted: never held
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()
    assert archiver.stats.failed_polls == 1
    assert files.read_entry(poll.id, "0", 3) is None  # the forged decision is not published


def fields(**values: str | bytes) -> list[bytes]:
    flat: list[bytes] = []
    for name, value in values.items():
        flat += [name.encode(), value if isinstance(value, bytes) else value.encode()]
    return flat


PSEUDONYM = bytes(range(16))


def test_lane_entries_decode_strictly() -> None:
    held = decode_lane_entry(b"4-0", fields(p=PSEUDONYM, o="a", t="7", s="held"))
    assert held == QueuedVote(4, PSEUDONYM, "a", 7, held=True)
    assert decode_lane_entry(b"4-0", fields(p=PSEUDONYM, o="a", t="7")) == QueuedVote(
        4, PSEUDONYM, "a", 7
    )
    assert decode_lane_entry(b"9-0", fields(r="4", d="released", t="8")) == QueuedDecision(
        9, 4, True, 8
    )
    assert decode_lane_entry(b"9-0", fields(r="4", d="voided", t="8")) == QueuedDecision(
        9, 4, False, 8
    )
    bad = [
        fields(p=PSEUDONYM, o="a", t="7", s="voided"),  # only `held` is a status
        fields(p=PSEUDONYM, o="a", t="7", s="held", r="1"),
        fields(r="4", d="accepted", t="8"),
        fields(r="04", d="released", t="8"),
        fields(r="9", d="released", t="8"),  # decides itself
        fields(r="12", d="released", t="8"),  # decides a later entry
        fields(r="0", d="released", t="8"),
        fields(r="4", d="released"),
        fields(r="4", d="released", t="8", o="a"),
    ]
    for flat in bad:
        with pytest.raises(MalformedEntry):
            decode_lane_entry(b"9-0", flat)


def test_admin_review_entries_decode_strictly() -> None:
    entry = fields(a="reviewed", t="5", u="rita", l="3", r="17", d="voided")
    assert decode_admin_entry(b"6-0", entry) == QueuedReview(6, 5, b"rita", 3, 17, False)
    bad = [
        fields(a="closed", t="5", u="rita", l="3", r="17", d="voided"),
        fields(a="reviewed", t="5", u="rita"),  # no lane, seq, decision
        fields(a="reviewed", t="5", u="rita", l="3", r="17"),
        fields(a="reviewed", t="5", u="rita", l="65536", r="17", d="voided"),
        fields(a="reviewed", t="5", u="rita", l="3", r="0", d="voided"),
        fields(a="reviewed", t="5", u="rita", l="3", r="17", d="maybe"),
        fields(a="reviewed", t="5", u="rita", l="-1", r="17", d="voided"),
    ]
    for flat in bad:
        with pytest.raises(MalformedEntry):
            decode_admin_entry(b"6-0", flat)


async def test_an_admin_decision_no_lane_can_apply_stops_the_certificate(
    client: Valkey, tmp_path: Path
) -> None:
    """A reviewed admin entry for a vote that was never held (its lane applies nothing, and no
    held vote waits): certifying would publish a `review-unlogged` ledger, so the poll stops."""
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service, lanes=1)
    await cast(service, poll, range(3))
    await sign_decision(client, poll, 0, 2, "voided")
    await service.close_poll(poll.id, actor="alice")
    archiver = archiver_of(client, files, signer)
    await archiver.cycle()
    assert archiver.stats.failed_polls == 1
    assert files.read(poll.id, layout.CERTIFICATE) is None

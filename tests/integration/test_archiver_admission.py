"""The archiver's admission checks on its verify pool (TALLY_ARCHIVER_VERIFY_THREADS), on a real
Valkey and a real disk: a cycle whose lane batches mix valid, unsigned, unknown-key, bad-signature
and out-of-time votes, with the gateway's admission key rotated mid-poll so that the new key's
admin record is archived in that same cycle, raises the same alarms and certifies the same counts
whether one thread checks the votes or four do; a successor that takes the poll over rebuilds the
same recount from the published bundles on its own pool; and stopping the archiver ends its
pool."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archive_rig import PREFIX, SECRET, archiver_of, make_signer
from conftest import StoreConnection, own_store
from tally.archive.logs import LedgerDirectory, LedgerFiles
from tally.archive.poll_logs import PollLogs, Refused
from tally.domain.integrity import AlarmKind
from tally.domain.polls import OptionSpec, Poll
from tally.domain.review import Decision, EntryRef, Selector
from tally.domain.votes import Accepted, AdmissionSignature, Receipt
from tally.ledger import layout
from tally.ledger.admission import AdmissionSigner
from tally.ledger.certificate import certificate_origin, open_certificate
from tally.ledger.leaf import VoteStatus
from tally.ports import HoldAs, Recorded, RecordedHeld
from tally.service import NewPoll, Voter, VotingService
from tally.service.review import ReviewService
from tally.store.admission_keys import RegisteredKey, ValkeyAdmissionKeys
from tally.store.integrity import ValkeyIntegrity
from tally.store.polls import ValkeyPolls
from tally.store.review import ValkeyReviews
from tally.store.votes import ValkeyBallotBox

GATEWAY = AdmissionSigner(
    f"{PREFIX}/admission/gw", Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
)
PREVIOUS = AdmissionSigner(  # the gateway's key when the poll opened, before a rotation
    f"{PREFIX}/admission/gw-old", Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
)
STRANGER = AdmissionSigner(
    f"{PREFIX}/admission/evil", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
)
HOUR_MS = 3_600_000
ACCEPTED = int(VoteStatus.ACCEPTED)
POLL_ID = "mixedadmissions1"  # the same poll in each run, on a store of its own
POOL = "archiver-verify"  # the verify pool's thread names start so


@dataclass(frozen=True)
class Outcome:
    """What a poll's archiving ended with, in terms that do not depend on the clock."""

    alarms: list[tuple[str, int | None, str]]
    counts: tuple[tuple[str, int], ...]
    certified_alarms: tuple[tuple[str, str], ...]
    refused: list[Refused]  # by the recount rebuilt from the published leaves, in log order
    expected_refused: list[Refused]


def pseudonym_of(label: str) -> bytes:
    """A made-up voter's pseudonym, the same in every run (so is the lane it lands in)."""
    return hashlib.sha256(label.encode()).digest()[:16]


def pool_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith(POOL)}


async def cast(service: VotingService, poll: Poll, voters: range) -> list[Receipt]:
    """Real voters through the gateway's path, signed by GATEWAY, 100 at a time (in voter
    order: each lane's seqs are then the same in every run)."""
    receipts = []
    for first in range(voters.start, voters.stop, 100):
        outcomes = await asyncio.gather(
            *(
                service.vote(poll.id, Voter("idp", f"v{i}"), "ab"[i % 2])
                for i in range(first, min(first + 100, voters.stop))
            )
        )
        for outcome in outcomes:
            assert isinstance(outcome, Accepted), outcome
            receipts.append(outcome.receipt)
    return receipts


async def stuff(
    ballots: ValkeyBallotBox,
    poll: Poll,
    label: str,
    admission: AdmissionSignature | None,
    reason: str,
    *,
    held: bool = False,
) -> Refused:
    """An insider's vote for b through the vote function, which the store takes: the refusal
    the recount must make of it."""
    hold = HoldAs("insider") if held else None
    result = await ballots.cast(poll, pseudonym_of(label), "b", hold, admission)
    assert isinstance(result, RecordedHeld if held else Recorded), result
    return Refused(result.lane, result.seq, reason)


def signed_by(
    signer: AdmissionSigner, poll: Poll, label: str, admitted_ms: int
) -> AdmissionSignature:
    """A real signature by `signer` of a vote for b by `label`, admitted at `admitted_ms`."""
    signature = signer.sign(poll.id, pseudonym_of(label), "b", ACCEPTED, admitted_ms)
    return AdmissionSignature(signature.admitted_ms, signature.key_id, signature.signature)


async def archive_mixed_poll(
    client: StoreConnection, ledger: Path, threads: int, successor_threads: int
) -> Outcome:
    """A poll archived by an archiver checking on `threads` threads, then taken over (recount
    rebuilt from the published bundles) by one on `successor_threads`, which certifies it."""
    files, signer = LedgerFiles(ledger), make_signer()
    polls, ballots = ValkeyPolls(client), ValkeyBallotBox(client)
    integrity, registry = ValkeyIntegrity(client), ValkeyAdmissionKeys(client)

    def service_of(admission: AdmissionSigner) -> VotingService:
        return VotingService(
            polls,
            ballots,
            pseudonym_secret=SECRET,
            ledger=LedgerDirectory(files),
            new_id=lambda: POLL_ID,  # voters' pseudonyms, so their lanes, are the poll's
            signer=admission,
        )

    # The poll opens with the gateway's previous key registered (its admin log names it).
    now = time.time_ns() // 1_000_000
    await registry.register(
        RegisteredKey(PREVIOUS.key.name, PREVIOUS.key.public_key, now - HOUR_MS)
    )
    service = service_of(PREVIOUS)
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("Admission", options, lanes=2), actor="alice")
    poll = await service.open_poll(poll.id, actor="alice")
    first = archiver_of(client, files, signer, "first", verify_threads=threads)
    receipts = await cast(service, poll, range(20))
    await first.cycle()
    assert await integrity.alarms(poll.id) == []

    # The gateway's key is rotated mid-poll: the new key's admin record is archived in the same
    # cycle as the votes it signs below, and must be in effect for them (else all 600 would be
    # refused as unknown-key).
    key = RegisteredKey(GATEWAY.key.name, GATEWAY.key.public_key, now - HOUR_MS)
    assert await registry.register(key, actor="ops") == 1
    service = service_of(GATEWAY)
    receipts += await cast(service, poll, range(20, 620))
    expected = [
        await stuff(ballots, poll, "unsigned", None, "unsigned"),
        await stuff(
            ballots, poll, "stranger", signed_by(STRANGER, poll, "stranger", now), "unknown-key"
        ),
        # Another voter's real signature: a key of the poll, over another pseudonym.
        await stuff(ballots, poll, "copied", receipts[0].admission, "bad-signature"),
        await stuff(
            ballots, poll, "early", signed_by(GATEWAY, poll, "early", now - 2 * HOUR_MS),
            "key-not-valid-then",
        ),
        await stuff(
            ballots, poll, "kept-back", signed_by(GATEWAY, poll, "kept-back", now - 400_000),
            "admitted-too-early",
        ),
        await stuff(ballots, poll, "held", None, "unsigned", held=True),
    ]  # fmt: skip
    before = pool_threads()
    await first.cycle()
    started = pool_threads() - before
    if threads > 1:
        assert len(started) >= 2, started  # the 600-odd votes were checked side by side
    else:
        assert started == set()

    # Each lane's alarm names its first refused vote and counts the lane's refusals: the key
    # was applied before this cycle's lanes were checked.
    in_cycle = {
        lane: [r for r in expected if r.lane == lane] for lane in sorted({r.lane for r in expected})
    }
    alarms = {(a.kind, a.lane): a.details for a in await integrity.alarms(poll.id)}
    for lane, refused in in_cycle.items():
        assert alarms[AlarmKind.UNSIGNED_VOTE, lane] == (
            f"lane {lane} entry {refused[0].seq}: admission check failed ({refused[0].reason}); "
            f"{len(refused)} vote(s) of the lane not counted"
        )
    assert set(alarms) == {
        (kind, lane)
        for lane in in_cycle
        for kind in (AlarmKind.UNSIGNED_VOTE, AlarmKind.COUNTER_MISMATCH)
    }

    await first.stop()  # its pool ends with it
    for thread in started:
        thread.join(5)
        assert not thread.is_alive(), thread

    # A reviewer releases the stuffed held vote: released, it is still not counted.
    held = expected[-1]
    reviews = ReviewService(polls, ValkeyReviews(client))
    selector = Selector(entries=(EntryRef(held.lane, held.seq),))
    await reviews.decide(poll.id, "rita", Decision.RELEASED, selector)

    # The successor rebuilds the recount from the published bundles, on its own pool.
    successor = archiver_of(client, files, signer, "successor", verify_threads=successor_threads)
    receipts += await cast(service, poll, range(620, 920))
    expected.append(await stuff(ballots, poll, "unsigned-later", None, "unsigned"))
    await service.close_poll(poll.id, actor="alice")
    await successor.cycle()
    await successor.stop()
    assert (first.stats.failed_polls, successor.stats.failed_polls) == (0, 0)

    signed = files.read(poll.id, layout.CERTIFICATE)
    assert signed is not None
    origin = certificate_origin(PREFIX, poll.id)
    certificate = open_certificate(signed, [signer.verifier.renamed(origin)], origin=origin)
    assert dict(certificate.counts) == {"a": 460, "b": 460}  # the 920 real voters alone
    assert certificate.integrity is not None

    # The recount rebuilt once more from the published leaves, checked here and on a pool of
    # four: the same refusals, in log order.
    closed = await polls.get(poll.id)
    assert closed is not None
    here = PollLogs(files.poll_files(poll.id), closed, signer).take_refused()
    with ThreadPoolExecutor(4) as pool:
        pooled = PollLogs(files.poll_files(poll.id), closed, signer, pool).take_refused()
    assert pooled == here
    assert here == sorted(expected, key=lambda r: (r.lane, r.seq))

    return Outcome(
        sorted((a.kind.value, a.lane, a.details) for a in await integrity.alarms(poll.id)),
        certificate.counts,
        certificate.integrity.alarms,
        here,
        expected,
    )


async def test_mixed_admissions_give_the_same_alarms_and_counts_on_one_thread_and_on_four(
    tmp_path: Path,
) -> None:
    outcomes = []
    for name, threads, successor_threads in (("one", 1, 4), ("four", 4, 1)):
        async with own_store(tmp_path / f"valkey-{name}") as store:
            client = store.client()
            await client.connect()
            try:
                outcomes.append(
                    await archive_mixed_poll(
                        client, tmp_path / f"ledger-{name}", threads, successor_threads
                    )
                )
            finally:
                await client.close()
    one, four = outcomes
    assert four == one

"""Admission signatures through the store, on a real Valkey (one node or, with
TALLY_TEST_STORE=cluster, a local cluster): the real intake signs every admitted vote (held ones
with status held), the lane stream keeps the signature, a repeat gets the same one back, the
queue decodes it into a version 0x02 record that check_admission accepts, and the registry's
keys reach the admin log of every poll not closed.

Votes are held by a hold-everything admission check written here (an implementation of the
AdmissionCheck port, as the risk scorer is one)."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.domain.admission import ADMIT, Evidence, Hold, Transport, Verdict, Voter, VoteRequest
from tally.domain.polls import OptionSpec, Poll
from tally.domain.votes import Accepted, AlreadyVoted, HeldForReview
from tally.ledger.admin import AdminAction, AdminRecord, AdmissionKey
from tally.ledger.admission import AdmissionSigner, check_admission, keys_from_admin
from tally.ledger.leaf import Admission, VoteRecord, VoteStatus, encode_leaf
from tally.ledger.merkle import leaf_hash
from tally.ports import QueuedAdmissionKey, QueuedVote, ReplyError, StoreClient
from tally.service import NewPoll, VotingService
from tally.store import keys
from tally.store.admission_keys import RegisteredKey, ValkeyAdmissionKeys
from tally.store.ledger_queue import ValkeyLedgerQueue
from tally.store.polls import ValkeyPolls
from tally.store.votes import ValkeyBallotBox

SECRET = b"admission-store-pseudonym-secre!"
CLOCK_MS = 1_767_225_600_000


class HoldSome:
    """Holds every vote whose voter's subject starts with "held-"."""

    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        return Hold("bot") if request.voter.subject.startswith("held-") else ADMIT


def new_signer(gateway: str) -> AdmissionSigner:
    return AdmissionSigner(f"tally.test/ledger/admission/{gateway}", Ed25519PrivateKey.generate())


async def setup(valkey: StoreClient, signer: AdmissionSigner) -> tuple[VotingService, Poll]:
    service = VotingService(
        ValkeyPolls(valkey),
        ValkeyBallotBox(valkey),
        pseudonym_secret=SECRET,
        checks=[HoldSome()],
        signer=signer,
    )
    options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
    poll = await service.create_poll(NewPoll(f"adm {secrets.token_hex(3)}", options, lanes=2))
    await service.open_poll(poll.id)
    return service, poll


def request(poll: Poll, subject: str, option: str = "red") -> VoteRequest:
    evidence = Evidence(Transport.HTTP, "198.51.100.7", "agent")
    return VoteRequest(poll.id, Voter("idp", subject), option, evidence)


async def queued(valkey: StoreClient, poll: Poll, lane: int, seq: int) -> QueuedVote:
    [[entry]] = await ValkeyLedgerQueue(valkey).read(poll.id, [lane], [seq], 1)
    assert isinstance(entry, QueuedVote)
    return entry


def record_of(poll: Poll, lane: int, entry: QueuedVote) -> VoteRecord:
    """The vote's ledger record, as the archiver builds it from the queue."""
    signed = entry.admission
    assert signed is not None
    return VoteRecord(
        poll.id,
        lane,
        entry.seq,
        entry.pseudonym,
        entry.option,
        entry.accepted_ms,
        VoteStatus.HELD if entry.held else VoteStatus.ACCEPTED,
        Admission(signed.admitted_ms, signed.key_id, signed.signature),
    )


async def test_accepted_and_held_votes_are_signed_and_the_queue_keeps_it(
    valkey: StoreClient,
) -> None:
    signer = new_signer("gw-store")
    service, poll = await setup(valkey, signer)
    keys_by_id = {signer.key.key_id: signer.key}
    for subject, status in (("voter-1", VoteStatus.ACCEPTED), ("held-1", VoteStatus.HELD)):
        outcome = await service.submit(request(poll, subject))
        assert isinstance(outcome, Accepted if status is VoteStatus.ACCEPTED else HeldForReview)
        receipt = outcome.receipt
        assert receipt.admission is not None
        assert receipt.pseudonym is not None
        assert receipt.admission.key_id == signer.key.key_id
        entry = await queued(valkey, poll, receipt.lane, receipt.entry_id)
        assert entry.admission == receipt.admission
        record = record_of(poll, receipt.lane, entry)
        assert record.status is status
        assert check_admission(record, keys_by_id) is None
        # The receipt's leaf hash is the version 0x02 record's, as the archiver will log it.
        assert encode_leaf(record)[0] == 0x02
        assert receipt.leaf_hash == leaf_hash(encode_leaf(record))
        # Signed with the verdict: the same signature under the other status does not verify.
        other = VoteStatus.HELD if status is VoteStatus.ACCEPTED else VoteStatus.ACCEPTED
        forged = dataclasses.replace(record, status=other)
        assert check_admission(forged, keys_by_id) == "bad-signature"


async def test_a_repeat_vote_gets_the_same_signature(valkey: StoreClient) -> None:
    signer = new_signer("gw-repeat")
    service, poll = await setup(valkey, signer)
    first = await service.submit(request(poll, "voter-r"))
    assert isinstance(first, Accepted)
    again = await service.submit(request(poll, "voter-r", "blue"))
    assert isinstance(again, AlreadyVoted)
    assert again.receipt == first.receipt
    held = await service.submit(request(poll, "held-r"))
    repeat = await service.submit(request(poll, "held-r"))
    assert isinstance(held, HeldForReview)
    assert isinstance(repeat, AlreadyVoted)
    assert repeat.receipt == held.receipt
    assert repeat.status == "held"


async def test_an_unsigned_vote_is_a_version_1_entry(valkey: StoreClient) -> None:
    """Without a signer (TALLY_ADMISSION_SIGNING=off) the entry has no `g`: a version 0x01
    record, which check_admission calls unsigned."""
    service = VotingService(ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=SECRET)
    options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
    poll = await service.create_poll(NewPoll("unsigned", options, lanes=1))
    await service.open_poll(poll.id)
    outcome = await service.submit(request(poll, "voter-u"))
    assert isinstance(outcome, Accepted)
    assert outcome.receipt.admission is None
    entry = await queued(valkey, poll, 0, outcome.receipt.entry_id)
    assert entry.admission is None


async def admin_keys(valkey: StoreClient, poll: Poll) -> list[QueuedAdmissionKey]:
    [entries] = await ValkeyLedgerQueue(valkey).read(poll.id, [None], [1], 1000)
    return [e for e in entries if isinstance(e, QueuedAdmissionKey)]


async def test_registry_keys_reach_the_admin_log_of_open_polls_only(valkey: StoreClient) -> None:
    registry = ValkeyAdmissionKeys(valkey)
    early = new_signer(f"gw-early-{secrets.token_hex(2)}").key
    await registry.register(RegisteredKey(early.name, early.public_key, 1000), actor="ops")
    signer = new_signer("gw-reg")
    _service, poll = await setup(valkey, signer)
    closed_service, closed = await setup(valkey, signer)
    await closed_service.close_poll(closed.id)

    # Created with the registry copied right after 'created' (seq 2 on).
    copied = await admin_keys(valkey, poll)
    assert copied[0].seq == 2
    assert (early.name, early.public_key, 1000, 0) in {
        (k.name, k.public_key, k.not_before_ms, k.not_after_ms) for k in copied
    }

    # A key registered later is appended to the open poll, not to the closed one.
    late = new_signer(f"gw-late-{secrets.token_hex(2)}").key
    before_closed = len(await admin_keys(valkey, closed))
    await registry.register(RegisteredKey(late.name, late.public_key, 5000), actor="ops")
    names = [k.name for k in await admin_keys(valkey, poll)]
    assert names.count(late.name) == 1
    assert len(await admin_keys(valkey, closed)) == before_closed

    # Retiring it appends its end; a repeat appends nothing.
    registered = {k.name: k for k in await registry.registered()}
    await registry.retire(registered[late.name], 9000, actor="ops")
    await registry.retire(registered[late.name], 9000, actor="ops")
    mine = [k for k in await admin_keys(valkey, poll) if k.name == late.name]
    assert [(k.not_before_ms, k.not_after_ms, k.actor) for k in mine] == [
        (5000, 0, b"ops"),
        (5000, 9000, b"ops"),
    ]

    # As the archiver logs them: keys_from_admin sees the retirement.
    records = [
        AdminRecord(
            poll.id,
            AdminAction.ADMISSION_KEY,
            k.at_ms,
            k.actor,
            admission_key=AdmissionKey(k.name, k.public_key, k.not_before_ms, k.not_after_ms),
        )
        for k in await admin_keys(valkey, poll)
    ]
    known = keys_from_admin(records)
    assert known[late.key_id].not_after_ms == 9000
    assert known[early.key_id].not_after_ms in (0, *[k.not_after_ms for k in copied])


async def test_a_malformed_signature_is_refused_by_the_vote_function(valkey: StoreClient) -> None:
    """tally_vote keeps only a 76-byte signature: a bad one never reaches the ledger queue."""
    _service, poll = await setup(valkey, new_signer("gw-bad"))
    lane = 0
    with pytest.raises(ReplyError, match="76 bytes"):
        await valkey.execute(
            "FCALL", "tally_vote", 4,
            keys.lane_state(poll.id, lane), keys.lane_counts(poll.id, lane),
            keys.lane_ledger(poll.id, lane), keys.lane_voters(poll.id, lane, 0),
            b"\x00" * 16, b"x", "red", b"short",
        )  # fmt: skip
    assert await ValkeyLedgerQueue(valkey).read(poll.id, [lane], [1], 10) == [[]]


async def test_a_poll_opened_unsigned_stays_unsigned(valkey: StoreClient) -> None:
    """A poll opened with no admission key (made before gateways signed) takes no key later: its
    unsigned votes were counted, and a key arriving later would have the archiver (after a
    restart) and the auditor refuse them. A draft with no key has no vote yet and takes one."""
    service = VotingService(ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=SECRET)
    options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
    unsigned = await service.create_poll(NewPoll("pre-admission", options, lanes=2))
    draft = await service.create_poll(NewPoll("draft without keys", options, lanes=2))
    for poll in (unsigned, draft):  # as a poll created before the registry existed
        await valkey.call("DEL", keys.poll_admission(poll.id))
    await service.open_poll(unsigned.id)
    before = len(await admin_keys(valkey, unsigned))

    late = new_signer(f"gw-after-{secrets.token_hex(2)}").key
    await ValkeyAdmissionKeys(valkey).register(RegisteredKey(late.name, late.public_key, 5000))
    assert len(await admin_keys(valkey, unsigned)) == before
    assert late.name in [k.name for k in await admin_keys(valkey, draft)]
    assert await ValkeyAdmissionKeys(valkey).sync_poll(unsigned.id, 6000) == -2

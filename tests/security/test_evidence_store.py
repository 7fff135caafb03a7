"""Held votes' sealed evidence at the store, on a real Valkey (one node or, with
TALLY_TEST_STORE=cluster, a local cluster): the real intake holds votes, the ballot box keeps their
evidence sealed (service.evidence.EvidenceVault), reviewers see it opened; a blob moved to another
vote, altered, or under a dropped key is shown unreadable (never wrong); re-encryption is
idempotent and never brings back a decided vote; the retention sweep deletes evidence only once
the poll is closed longer than the retention, and the votes stay decidable."""

from __future__ import annotations

import secrets
from pathlib import Path

from tally.domain.admission import ADMIT, Evidence, Hold, Transport, Verdict, Voter, VoteRequest
from tally.domain.polls import OptionSpec, Poll
from tally.domain.review import Decision, EntryRef, EvidenceStatus, HeldVote, Selector
from tally.domain.votes import HeldForReview
from tally.ports import StoreClient
from tally.security.evidence import EvidenceKeys
from tally.service import NewPoll, VotingService
from tally.service.evidence import EvidenceMaintenance, EvidenceVault
from tally.service.review import ReviewService
from tally.store import keys
from tally.store.evidence import ValkeyHeldEvidence
from tally.store.polls import ValkeyPolls
from tally.store.review import ValkeyReviews
from tally.store.votes import ValkeyBallotBox

SECRET = b"evidence-store-pseudonym-secret1"
ADDRESS, AGENT = "203.0.113.77", "EvidenceProbe/9.9 (store)"


class HoldEverything:
    async def check(self, request: VoteRequest, poll: Poll, now_ms: int) -> Verdict:
        return Hold("bot") if request.voter.subject.startswith("held-") else ADMIT


class Rig:
    def __init__(self, valkey: StoreClient, data_dir: Path) -> None:
        self.valkey = valkey
        self.keys = EvidenceKeys(data_dir)
        self.polls = ValkeyPolls(valkey)
        self.store = ValkeyHeldEvidence(valkey)
        box = ValkeyBallotBox(valkey, EvidenceVault(self.keys, self.store))
        self.service = VotingService(
            self.polls, box, pseudonym_secret=SECRET, checks=[HoldEverything()]
        )
        self.reviews = ReviewService(self.polls, ValkeyReviews(valkey), self.keys)
        self.maintenance = EvidenceMaintenance(self.polls, ValkeyReviews(valkey), self.store)

    async def poll(self) -> Poll:
        options = [OptionSpec("Red", "red"), OptionSpec("Blue", "blue")]
        poll = await self.service.create_poll(
            NewPoll(f"evidence {secrets.token_hex(3)}", options, lanes=2)
        )
        await self.service.open_poll(poll.id)
        return poll

    async def hold(self, poll: Poll, address: str = ADDRESS, agent: str = AGENT) -> EntryRef:
        voter = Voter("idp", f"held-{secrets.token_hex(4)}")
        evidence = Evidence(Transport.HTTP, address, agent)
        outcome = await self.service.submit(VoteRequest(poll.id, voter, "red", evidence))
        assert isinstance(outcome, HeldForReview)
        return EntryRef(outcome.receipt.lane, outcome.receipt.entry_id)

    async def listed(self, poll_id: str) -> dict[EntryRef, HeldVote]:
        listing = await self.reviews.held(poll_id)
        return {v.ref: v for group in listing.groups for v in group.votes}

    async def raw(self, poll: Poll, ref: EntryRef) -> bytes:
        value: bytes = await self.valkey.call(
            "HGET", keys.lane_held(poll.id, ref.lane), str(ref.entry_id)
        )
        return value


def field_of(raw: bytes) -> str:
    return raw.decode().split("|")[2]


async def test_evidence_is_stored_sealed_and_listed_opened(
    valkey: StoreClient, tmp_path: Path
) -> None:
    rig = Rig(valkey, tmp_path)
    poll = await rig.poll()
    ref = await rig.hold(poll)
    raw = await rig.raw(poll, ref)
    option, reason, field, _ = raw.decode().split("|")
    assert (option, reason) == ("red", "bot")
    assert field.startswith("e1.")
    assert b"203.0.113" not in raw
    assert b"EvidenceProbe" not in raw
    vote = (await rig.listed(poll.id))[ref]
    assert (vote.evidence, vote.address, vote.subnet, vote.user_agent) == (
        EvidenceStatus.KEPT, ADDRESS, "203.0.113.0/24", AGENT,
    )  # fmt: skip
    # A group decision selects by the opened subnet.
    report = await rig.reviews.decide(
        poll.id, "rita", Decision.VOIDED, Selector(subnet="203.0.113.0/24")
    )
    assert report.count(report.outcomes[ref]) == 1
    assert await rig.listed(poll.id) == {}


async def test_a_moved_or_altered_blob_is_unreadable_not_misattributed(
    valkey: StoreClient, tmp_path: Path
) -> None:
    """An insider swaps two held votes' evidence fields, or flips a byte of a third: the listing
    shows them unreadable (no address, no subnet), never the other vote's evidence."""
    rig = Rig(valkey, tmp_path)
    poll = await rig.poll()
    a = await rig.hold(poll, "198.51.100.1", "agent-a")
    b = await rig.hold(poll, "192.0.2.2", "agent-b")
    c = await rig.hold(poll, "192.0.2.3", "agent-c")
    field_a, field_b = field_of(await rig.raw(poll, a)), field_of(await rig.raw(poll, b))
    # The admin's raw writes, as an insider with the store's password would.
    moved = await rig.store.rewrite(poll, [(a, field_a, field_b), (b, field_b, field_a)])
    assert moved == 2
    field_c = field_of(await rig.raw(poll, c))
    flipped = field_c[:-3] + ("A" if field_c[-3] != "A" else "B") + field_c[-2:]
    assert await rig.store.rewrite(poll, [(c, field_c, flipped)]) == 1
    listed = await rig.listed(poll.id)
    for ref in (a, b, c):
        assert (listed[ref].evidence, listed[ref].address, listed[ref].subnet) == (
            EvidenceStatus.UNREADABLE, "", "",
        )  # fmt: skip


async def test_rotation_reencryption_and_a_dropped_key(valkey: StoreClient, tmp_path: Path) -> None:
    rig = Rig(valkey, tmp_path)
    poll = await rig.poll()
    old = [await rig.hold(poll) for _ in range(3)]
    assert rig.keys.rotate() == 2
    new = await rig.hold(poll)  # the ring is re-read: key 2 seals now
    used = await rig.maintenance.usage([poll.id])
    assert (used[1], used[2]) == (3, 1)
    # A vote decided while re-encryption runs is never brought back (compare-and-set).
    decided = old[0]
    stale = field_of(await rig.raw(poll, decided))
    await rig.reviews.decide(poll.id, "rita", Decision.RELEASED, Selector(entries=(decided,)))
    assert await rig.store.rewrite(poll, [(decided, stale, "e1.AAAA")]) == 0
    assert await rig.raw(poll, decided) is None

    first = await rig.maintenance.reencrypt(rig.keys, [poll.id])
    assert first.key_id == 2
    assert (first.resealed, first.already_current, first.raced) == (2, 1, 0)
    assert first.unreadable == 0
    again = await rig.maintenance.reencrypt(rig.keys, [poll.id])  # idempotent: nothing left to do
    assert (again.resealed, again.sealed_clear, again.raced) == (0, 0, 0)
    assert (await rig.maintenance.usage([poll.id]))[1] == 0
    rig.keys.drop(1)
    listed = await rig.listed(poll.id)
    for ref in (*old[1:], new):
        assert (listed[ref].evidence, listed[ref].address) == (EvidenceStatus.KEPT, ADDRESS)


async def test_a_clear_subnet_of_an_older_version_is_listed_then_sealed(
    valkey: StoreClient, tmp_path: Path
) -> None:
    """Held votes written before sealing kept `option|reason|subnet|ms`: they still list (as
    `clear`), and reencrypt seals them."""
    rig = Rig(valkey, tmp_path)
    poll = await rig.poll()
    ref = await rig.hold(poll, address="", agent="")  # nothing to keep: the field stays empty
    assert field_of(await rig.raw(poll, ref)) == ""
    assert await rig.store.rewrite(poll, [(ref, "", "198.51.100.0/24")]) == 1  # the old format
    assert (await rig.listed(poll.id))[ref].evidence is EvidenceStatus.CLEAR
    await rig.maintenance.reencrypt(rig.keys, [poll.id])
    raw = await rig.raw(poll, ref)
    assert b"198.51.100" not in raw
    vote = (await rig.listed(poll.id))[ref]
    assert (vote.evidence, vote.subnet) == (EvidenceStatus.KEPT, "198.51.100.0/24")


async def test_retention_deletes_evidence_only_after_the_close_and_votes_stay_decidable(
    valkey: StoreClient, tmp_path: Path
) -> None:
    rig = Rig(valkey, tmp_path)
    poll = await rig.poll()
    refs = [await rig.hold(poll) for _ in range(2)]
    retention_ms = 60_000
    far_future = 2**50
    assert poll.id not in await rig.maintenance.purge(far_future, retention_ms)  # still open
    await rig.service.close_poll(poll.id)
    closed_at = await rig.store.closed_at_ms(poll)
    assert closed_at is not None
    assert poll.id not in await rig.maintenance.purge(closed_at + retention_ms - 1, retention_ms)
    assert (await rig.listed(poll.id))[refs[0]].evidence is EvidenceStatus.KEPT
    purged = await rig.maintenance.purge(closed_at + retention_ms, retention_ms)
    assert purged[poll.id] == 2
    for ref in refs:
        assert field_of(await rig.raw(poll, ref)) == "-"
    listed = await rig.listed(poll.id)
    assert {v.evidence for v in listed.values()} == {EvidenceStatus.DELETED}
    assert {v.address for v in listed.values()} == {""}
    report = await rig.reviews.decide(
        poll.id, "rita", Decision.RELEASED, Selector(entries=tuple(refs))
    )
    assert report.count(report.outcomes[refs[0]]) == 2

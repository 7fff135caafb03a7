"""Held votes' network evidence: kept sealed, opened for reviewers, re-sealed on rotation,
deleted with the poll's retention.

    keep        gateway, after a held cast: seal (address, subnet, user agent) for that vote
    reveal      reviewers' listing: open each vote's evidence (tally.service.review)
    reencrypt   `tally evidence reencrypt`: every blob under the current key, clear ones sealed
    usage       `tally evidence keys` / `drop-key`: how many blobs each key sealed
    purge       the aggregator's retention sweep: evidence of polls closed longer than the
                retention is deleted; the held votes and every decision stay

Sealing binds each blob to its vote's place (poll, lane, seq), which only the cast decides, so
the evidence is written in a second, compare-and-set step right after the cast
(ports.HeldEvidenceStore). A crash between the two leaves the vote held without evidence: the
vote stands and nothing is ever written in clear.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import Poll, PollState
from tally.domain.review import EntryRef, EvidenceStatus, HeldVote
from tally.ports import HeldEvidenceStore, HoldAs, PollStore, ReviewStore
from tally.security.addresses import subnet_key
from tally.security.evidence import (
    DELETED,
    EvidenceError,
    EvidenceKeys,
    FieldState,
    NetworkEvidence,
    field_key_id,
    field_state,
    open_field,
    seal_field,
)

log = logging.getLogger("tally")

MAX_POLLS = 10_000  # as the other sweeps: every poll the store lists


class EvidenceVault:
    """Seals evidence as votes are held (ports.EvidenceKeeper) and opens it for reviewers."""

    def __init__(
        self,
        keys: EvidenceKeys,
        store: HeldEvidenceStore,
        lost: Callable[[], None] = lambda: None,
    ) -> None:
        """`lost()` counts evidence that could not be kept (for metrics)."""
        self._keys = keys
        self._store = store
        self._lost = lost

    async def keep(self, poll: Poll, lane: int, seq: int, hold: HoldAs) -> None:
        address = hold.address
        evidence = NetworkEvidence(address, subnet_key(address) if address else "", hold.user_agent)
        try:
            field = seal_field(self._keys.ring(), poll.id, lane, seq, evidence)
            if field:
                await self._store.rewrite(poll, [(EntryRef(lane, seq), "", field)])
        except (StoreUnavailable, OSError, ValueError) as exc:
            # The vote is cast and stands; only its evidence is missing (never kept in clear).
            self._lost()
            log.warning("evidence of held vote %s/%d/%d not kept: %s", poll.id, lane, seq, exc)

    def reveal(self, poll: Poll, vote: HeldVote) -> HeldVote:
        """The vote with its evidence opened (status, subnet, address, user agent)."""
        return reveal(poll, vote, self._keys)


def reveal(poll: Poll, vote: HeldVote, keys: EvidenceKeys | None) -> HeldVote:
    """`vote` (as the store lists it) with its evidence field read: opened with `keys` when
    sealed, shown as it is when kept in clear by an older version, UNREADABLE when it does not
    open (or no keys are at hand)."""
    state = field_state(vote.sealed)
    if state is FieldState.NONE:
        return replace(vote, subnet="", evidence=EvidenceStatus.NONE)
    if state is FieldState.DELETED:
        return replace(vote, subnet="", evidence=EvidenceStatus.DELETED)
    if state is FieldState.LEGACY:
        return replace(vote, subnet=vote.sealed, evidence=EvidenceStatus.CLEAR)
    if keys is None:
        return replace(vote, subnet="", evidence=EvidenceStatus.UNREADABLE)
    try:
        opened = open_field(keys.ring(), vote.sealed, poll.id, vote.lane, vote.entry_id)
    except EvidenceError as exc:
        log.warning("evidence of held vote %s/%d/%d: %s", poll.id, vote.lane, vote.entry_id, exc)
        return replace(vote, subnet="", evidence=EvidenceStatus.UNREADABLE)
    return replace(
        vote,
        subnet=opened.subnet,
        address=opened.address,
        user_agent=opened.user_agent,
        evidence=EvidenceStatus.KEPT,
    )


@dataclass
class ReencryptReport:
    """What `reencrypt` found and did, over every held vote of every poll."""

    polls: int = 0
    resealed: int = 0  # sealed under an older key: re-sealed under the current one
    sealed_clear: int = 0  # kept in clear by an older version: sealed
    already_current: int = 0
    unreadable: int = 0  # does not open with any known key: left as it is
    without: int = 0  # no evidence (none kept, or deleted by retention)
    raced: int = 0  # of those two, decided or rewritten meanwhile: left (a re-run looks again)
    key_id: int = 0  # the current key


class EvidenceMaintenance:
    """Key rotation's store side, and the retention sweep, over every poll's held votes."""

    def __init__(self, polls: PollStore, reviews: ReviewStore, store: HeldEvidenceStore) -> None:
        self._polls = polls
        self._reviews = reviews
        self._store = store
        self._purged: set[str] = set()  # polls whose evidence this process deleted already

    async def _polls_of(self, poll_ids: Collection[str] | None) -> list[Poll]:
        polls = await self._polls.recent(MAX_POLLS)
        return polls if poll_ids is None else [p for p in polls if p.id in poll_ids]

    async def reencrypt(
        self, keys: EvidenceKeys, poll_ids: Collection[str] | None = None
    ) -> ReencryptReport:
        """Every blob not under the current key re-sealed under it (and clear subnets of older
        versions sealed), over every poll or those of `poll_ids`. Idempotent and safe beside
        live gateways and reviewers: each rewrite is a compare-and-set, so a vote decided
        meanwhile is left alone."""
        ring = keys.ring()
        report = ReencryptReport(key_id=ring.current_id)
        for poll in await self._polls_of(poll_ids):
            report.polls += 1
            changes: list[tuple[EntryRef, str, str]] = []
            for vote in await self._reviews.held(poll):
                state = field_state(vote.sealed)
                if state in (FieldState.NONE, FieldState.DELETED):
                    report.without += 1
                    continue
                if state is FieldState.LEGACY:
                    evidence = NetworkEvidence(subnet=vote.sealed)
                    report.sealed_clear += 1
                else:
                    try:
                        if field_key_id(vote.sealed) == ring.current_id:
                            report.already_current += 1
                            continue
                        evidence = open_field(ring, vote.sealed, poll.id, vote.lane, vote.entry_id)
                    except EvidenceError:
                        report.unreadable += 1
                        continue
                    report.resealed += 1
                new = seal_field(ring, poll.id, vote.lane, vote.entry_id, evidence)
                changes.append((vote.ref, vote.sealed, new))
            changed = await self._store.rewrite(poll, changes)
            report.raced += len(changes) - changed
        return report

    async def usage(self, poll_ids: Collection[str] | None = None) -> Counter[int]:
        """How many held votes' evidence each key id sealed (-1: malformed fields; 0: kept in
        clear by an older version), over every poll or those of `poll_ids`."""
        used: Counter[int] = Counter()
        for poll in await self._polls_of(poll_ids):
            for vote in await self._reviews.held(poll):
                state = field_state(vote.sealed)
                if state is FieldState.LEGACY:
                    used[0] += 1
                elif state is FieldState.SEALED:
                    try:
                        used[field_key_id(vote.sealed)] += 1
                    except EvidenceError:
                        used[-1] += 1
        return used

    async def purge(self, now_ms: int, retention_ms: int) -> dict[str, int]:
        """Delete the evidence of every poll closed more than `retention_ms` ago; the votes stay
        held (reviewers may still decide) and decisions stay in the ledger. Returns the polls
        purged now with how many votes' evidence each lost. Once purged, a poll gets no new
        evidence (its lanes take no votes), so it is not read again by this process."""
        purged: dict[str, int] = {}
        for poll in await self._polls.recent(MAX_POLLS):
            if poll.id in self._purged or poll.state is PollState.DRAFT:
                continue
            if poll.state is PollState.OPEN and poll.closes_at_ms is None:
                continue  # open until someone closes it: its retention has not started
            closed_at = await self._store.closed_at_ms(poll)
            if closed_at is None or now_ms < closed_at + retention_ms:
                continue
            changes = [
                (vote.ref, vote.sealed, DELETED)
                for vote in await self._reviews.held(poll)
                if field_state(vote.sealed) in (FieldState.SEALED, FieldState.LEGACY)
            ]
            deleted = await self._store.rewrite(poll, changes)
            if deleted < len(changes):
                continue  # raced a re-encryption: look again at the next sweep
            self._purged.add(poll.id)
            if deleted:
                purged[poll.id] = deleted
        return purged

"""What the archiver's store-level tests build on a real Valkey and a real disk: a signing key,
the voting service and an archiver over one store client and one ledger directory."""

from __future__ import annotations

import asyncio

from tally.archive.logs import LedgerDirectory, LedgerFiles
from tally.archiver import Archiver
from tally.domain.polls import Poll
from tally.domain.votes import Accepted, Receipt
from tally.ledger import note
from tally.ports import StoreClient, TurnoutStore
from tally.service import Voter, VotingService
from tally.store.integrity import ValkeyIntegrity
from tally.store.ledger_queue import ValkeyLedgerQueue
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox

SECRET = b"archiver-test-pseudonym-secret-3"
PREFIX = "tally.test/ledger"


def make_signer() -> note.Signer:
    skey, _ = note.generate_key(PREFIX)
    return note.Signer.parse(skey)


def service_of(client: Valkey, files: LedgerFiles) -> VotingService:
    ballots = ValkeyBallotBox(client)
    return VotingService(
        ValkeyPolls(client), ballots, pseudonym_secret=SECRET, ledger=LedgerDirectory(files)
    )


def archiver_of(
    client: StoreClient,
    files: LedgerFiles,
    signer: note.Signer,
    owner: str = "t",
    *,
    verify_threads: int | None = None,
    turnout: TurnoutStore | None = None,
) -> Archiver:
    return Archiver(
        ValkeyPolls(client),
        ValkeyLedgerQueue(client),
        files,
        signer,
        ValkeyIntegrity(client),
        owner=owner,
        interval_ms=100,
        verify_threads=verify_threads,
        turnout=turnout,
    )


async def cast(service: VotingService, poll: Poll, voters: range) -> list[Receipt]:
    """Voters `v<i>` vote at once, options a and b in turn; every vote must be accepted."""
    outcomes = await asyncio.gather(
        *(service.vote(poll.id, Voter("idp", f"v{i}"), "ab"[i % 2]) for i in voters)
    )
    receipts = []
    for outcome in outcomes:
        assert isinstance(outcome, Accepted), outcome
        receipts.append(outcome.receipt)
    return receipts

"""What the archiver's store-level tests build on a real Valkey and a real disk: a signing key,
the voting service and an archiver over one store client and one ledger directory."""

from __future__ import annotations

from tally.archive.logs import LedgerDirectory, LedgerFiles
from tally.archiver import Archiver
from tally.ledger import note
from tally.ports import StoreClient, TurnoutStore
from tally.service import VotingService
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

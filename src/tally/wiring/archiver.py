"""The archiver role: each poll's queues into its published, signed ledger under
`TALLY_DATA_DIR/ledger`, which must be the directory the gateways serve /ledger from."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tally.aggregator import new_owner_id
from tally.archive.logs import LedgerFiles
from tally.archive.witnessing import CheckpointWitnesses, WitnessEndpoint
from tally.archiver import STOP_WAIT_S, Archiver
from tally.config import Settings
from tally.gateway.metrics import Metrics
from tally.ledger import note
from tally.security.keys import ledger_key_file, read_or_create
from tally.store.integrity import ValkeyIntegrity
from tally.store.ledger_queue import ValkeyLedgerQueue
from tally.store.polls import ValkeyPolls
from tally.store.turnout import ValkeyTurnout
from tally.wiring.aggregator import LOOP_RESTARTS
from tally.wiring.store import StoreConnection
from tally.wiring.supervisor import Duty, Step

DEFAULT_LEDGER_ORIGIN = "tally.localhost/ledger"


@dataclass
class ArchiverRole:
    archiver: Archiver
    directory: Path

    def duties(self) -> list[Duty]:
        """The archiver loop: restarted after a crash (a few times)."""
        return [Duty("archiver", self.archiver.run, LOOP_RESTARTS)]

    def release_step(self, timeout_s: float) -> Step:
        """After its loop ended: let file work already running in its thread finish (a thread
        cannot be cancelled), then release its leases."""
        return Step(
            "archiver: finish file work, release its leases",
            timeout_s + STOP_WAIT_S,
            then=self.archiver.stop,
        )

    async def ledger_writable(self) -> str | None:
        """Readiness: None when a file can be made in the ledger directory, else why not."""
        return await asyncio.to_thread(_writable, self.directory)


def build_archiver(client: StoreConnection, settings: Settings) -> ArchiverRole:
    """The role on its own connection: a backlog read is megabytes, which must not delay others."""
    directory = settings.ledger_dir
    archiver = Archiver(
        ValkeyPolls(client),
        ValkeyLedgerQueue(client),
        LedgerFiles(directory),
        ledger_signer(settings),
        ValkeyIntegrity(client),
        owner=new_owner_id(),
        interval_ms=settings.checkpoint_interval_ms,
        witnesses=checkpoint_witnesses(settings),
        verify_threads=settings.archiver_verify_threads,
        turnout=ValkeyTurnout(client),  # ballots per minute, for turnout.csv
    )
    return ArchiverRole(archiver, directory)


def checkpoint_witnesses(settings: Settings) -> CheckpointWitnesses | None:
    """TALLY_WITNESSES, if it names any: who cosigns each checkpoint before it is published."""
    if not settings.witnesses:
        return None
    endpoints = [WitnessEndpoint.parse(f"{url} {key}") for url, key in settings.witnesses]
    return CheckpointWitnesses(endpoints)


def ledger_signer(settings: Settings) -> note.Signer:
    """The ledger's Ed25519 key, made once and kept in the data dir (security.keys).

    Its name is the origin prefix of every log: changing TALLY_LEDGER_ORIGIN afterwards would
    rename logs auditors already follow, so it is refused."""
    path = ledger_key_file(settings.data_dir)

    def make() -> bytes:
        signer_key, _ = note.generate_key(settings.ledger_origin or DEFAULT_LEDGER_ORIGIN)
        return (signer_key + "\n").encode()

    signer = note.Signer.parse(read_or_create(path, make).decode().strip())
    if settings.ledger_origin is not None and settings.ledger_origin != signer.name:
        raise SystemExit(
            f"TALLY_LEDGER_ORIGIN={settings.ledger_origin} but the ledger key in {path} is for "
            f"{signer.name}: logs cannot be renamed once published"
        )
    return signer


def observe_archiver(metrics: Metrics, archiver: Archiver) -> None:
    """What /metrics reads from the archiver at each scrape, and the integrity alarms it raises."""
    archiver.on_alarm = lambda poll_id, alarm: metrics.integrity_alarms.inc(
        alarm.kind.value, poll_id
    )
    for name, help_text, read in (
        (
            "cycles",
            "Archiver cycles run (flat: the archiver is not running).",
            lambda: archiver.stats.cycles,
        ),
        ("leaves", "Ledger leaves this archiver appended.", lambda: archiver.stats.leaves),
        ("checkpoints", "Signed checkpoints published.", lambda: archiver.stats.checkpoints),
        ("certificates", "Result certificates signed.", lambda: archiver.stats.certificates),
        (
            "store_errors",
            "Archiver steps that failed on the store.",
            lambda: archiver.stats.store_errors,
        ),
        (
            "failed_polls",
            "Polls whose archiving stopped on an error (see the log).",
            lambda: archiver.stats.failed_polls,
        ),
    ):
        metrics.sample(f"tally_archiver_{name}_total", help_text, "counter", read)
    witnesses = archiver.witnesses
    if witnesses is not None:
        for name, help_text, read in (
            (
                "cosignatures",
                "Witness cosignatures collected and published with a checkpoint.",
                lambda: witnesses.stats.cosignatures,
            ),
            (
                "unavailable",
                "Checkpoints published without a witness's cosignature: it did not answer "
                "(down, timeout, 5xx) or was in back-off.",
                lambda: witnesses.stats.unavailable,
            ),
            (
                "refused",
                "Checkpoints a witness refused to cosign (inconsistent, or a bad answer).",
                lambda: witnesses.stats.refused,
            ),
        ):
            metrics.sample(f"tally_archiver_witness_{name}_total", help_text, "counter", read)
    metrics.sample(
        "tally_archiver_polls_awaiting_review",
        "Closed polls not certified yet because held votes await a reviewer's decision.",
        "gauge",
        lambda: archiver.stats.awaiting_review,
    )


def _writable(directory: Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as exc:
        return f"the ledger directory {directory} is not writable: {exc.strerror}"

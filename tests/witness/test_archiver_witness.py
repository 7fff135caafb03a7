"""The archiver with a real `tally witness`: every checkpoint is published cosigned, and
`tally audit verify --witness` passes; a witness that is down never stops archiving; and the
acceptance test of issue 11: an insider holding the ledger key rewrites a checkpointed lane and
its whole history, re-signed, and the audit fails once one witness is required, with no
earlier export to compare against."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from archive_rig import archiver_of, cast, make_signer, service_of
from audit.conftest import audit_cli
from conftest import StoreConnection, own_client
from role_processes import HOST
from tally.archive.durable import DurableFiles
from tally.archive.logs import LedgerFiles, LogWriter, history_sizes, note_body
from tally.archive.witnessing import CheckpointWitnesses, WitnessEndpoint
from tally.bench.processes import free_port
from tally.domain.polls import OptionSpec, Poll
from tally.ledger import layout, merkle, note
from tally.ledger.certificate import (
    LogHead,
    certificate_origin,
    open_certificate,
    sign_certificate,
)
from tally.ledger.checkpoint import lane_origin
from tally.ledger.cosignature import CosignatureVerifier, add_cosignatures, check_cosignatures
from tally.ledger.leaf import decode_leaf
from tally.service import NewPoll, VotingService
from tally.store.resp import Valkey
from witness.rig import running_witness, witness_key

LANES = 2


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    async with own_client(tmp_path / "valkey") as valkey:
        yield valkey


async def open_poll(service: VotingService) -> Poll:
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("Witnessed", options, lanes=LANES), actor="alice")
    return await service.open_poll(poll.id, actor="alice")


def witnesses(url: str, key: CosignatureVerifier, backoff_s: float = 30.0) -> CheckpointWitnesses:
    return CheckpointWitnesses([WitnessEndpoint(url, key)], timeout_s=2.0, backoff_s=backoff_s)


def verify(poll_dir: Path, signer: note.Signer, *extra: str) -> tuple[int, list[dict[str, str]]]:
    result = audit_cli("verify", str(poll_dir), "--key", str(signer.verifier), "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def cosigned(signed: bytes, key: CosignatureVerifier) -> bool:
    return bool(check_cosignatures(signed, [key]).valid)


async def test_cosigned_checkpoints_pass_the_audit_and_a_rewritten_lane_fails_it(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service)
    with running_witness(tmp_path / "w", log_keys=[str(signer.verifier)]) as witness:
        key = witness_key(tmp_path / "w" / "witness.key")
        archiver = archiver_of(client, files, signer)
        archiver.witnesses = witnesses(witness.url, key)
        await archiver.cycle()  # size 0 (lanes) and the admin log's first checkpoint
        await cast(service, poll, range(0, 40))
        await archiver.cycle()
        await cast(service, poll, range(40, 100))
        await archiver.cycle()
        await service.close_poll(poll.id, actor="alice")
        await archiver.cycle()
        assert files.read(poll.id, layout.CERTIFICATE) is not None

        # Every checkpoint was published with the witness's cosignature, history and latest
        # alike (the same bytes).
        history = files.history(poll.id)
        assert history is not None
        published = sum(len(notes) for notes in history.values())
        assert all(cosigned(signed, key) for notes in history.values() for signed in notes)
        for log, notes in history.items():
            assert files.read(poll.id, layout.checkpoint_path(log)) == notes[-1]
        stats = archiver.witnesses.stats
        assert (stats.cosignatures, stats.unavailable, stats.refused) == (published, 0, 0)

        poll_dir = files.poll_dir(poll.id)
        assert verify(poll_dir, signer, "--witness", str(key)) == (0, [])

        # The insider deletes lane 1's last vote and rewrites the lane and its history with the
        # ledger key, then re-signs the certificate: the ledger alone is consistent again.
        lane = 1
        dropped = rewrite_lane_without_last_vote(poll_dir, signer, poll.id, lane)
        assert verify(poll_dir, signer) == (0, [])
        # With one witness required, the rewritten lane's newest checkpoint lacks it.
        code, findings = verify(poll_dir, signer, "--witness", str(key), "--min-witnesses", "1")
        assert code == 1
        assert [(f["code"], f["file"]) for f in findings] == [
            ("witness-missing", f"{lane}/checkpoints/{dropped}")
        ]

        # The witness will not cosign the rewrite: it saw the lane at dropped + 1 ...
        rewritten = (poll_dir / layout.history_path(str(lane), dropped)).read_bytes()
        insider = witnesses(witness.url, key)
        reader = DurableFiles(poll_dir)
        assert insider.cosign(rewritten, note_body(rewritten), None, lambda old: []) == rewritten
        assert (insider.stats.refused, insider.stats.cosignatures) == (1, 0)
        # ... and its cosignature copied from the honest checkpoint does not verify on it.
        honest = history[str(lane)][-1]
        lines = honest.decode().split("\n\n")[-1].splitlines(keepends=True)
        forged = add_cosignatures(rewritten, [line for line in lines if key.name in line])
        (poll_dir / layout.history_path(str(lane), dropped)).write_bytes(forged)
        (poll_dir / layout.checkpoint_path(str(lane))).write_bytes(forged)
        code, findings = verify(poll_dir, signer, "--witness", str(key))
        assert code == 1
        assert {f["code"] for f in findings} == {"witness-bad-signature", "witness-missing"}
        assert reader.read(layout.checkpoint_path(str(lane))) == forged


def rewrite_lane_without_last_vote(
    poll_dir: Path, signer: note.Signer, poll_id: str, lane: int
) -> int:
    """Rewrite lane ``lane`` without its last vote, checkpointed at its old sizes below the new
    one and at the new size, and re-sign the certificate: what an insider with the key can do.
    Returns the lane's new size."""
    files = DurableFiles(poll_dir)
    name = layout.lane_log(lane)
    sizes = history_sizes(files, name)
    reader = LedgerFiles(poll_dir.parent.parent)
    records = [reader.read_entry(poll_id, name, i) for i in range(sizes[-1])]
    assert all(records)
    kept = [r for r in records[:-1] if r is not None]
    last = decode_leaf(records[-1] or b"")
    shutil.rmtree(poll_dir / name)
    writer = LogWriter(files, name, lane_origin(signer.name, poll_id, lane), signer)
    points = sorted({s for s in sizes if s < len(kept)} | {len(kept)})
    if points[0] == 0:
        writer.publish()
    for record in kept:
        writer.append(record)
        if writer.appended in points:
            writer.publish()
    origin = certificate_origin(signer.name, poll_id)
    certificate = open_certificate(
        (poll_dir / layout.CERTIFICATE).read_bytes(),
        [signer.verifier.renamed(origin)],
        origin=origin,
    )
    lanes = list(certificate.lanes)
    lanes[lane] = LogHead(writer.size, writer.root())
    counts = tuple((o, n - (o == last.option_id)) for o, n in certificate.counts)
    forged = replace(certificate, lanes=tuple(lanes), counts=counts)
    (poll_dir / layout.CERTIFICATE).write_bytes(sign_certificate(forged, [signer.renamed(origin)]))
    assert merkle.root([merkle.leaf_hash(r) for r in kept]) == writer.root()
    return len(kept)


async def test_a_witness_that_is_down_does_not_stop_archiving(
    client: Valkey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    poll = await open_poll(service)
    port = free_port()
    state = tmp_path / "w"
    state.mkdir()
    key = witness_key(state / "witness.key")
    archiver = archiver_of(client, files, signer)
    archiver.witnesses = witnesses(f"http://{HOST}:{port}", key, backoff_s=0.0)
    await cast(service, poll, range(0, 30))
    await archiver.cycle()  # nobody listens on the port
    history = files.history(poll.id)
    assert history is not None
    assert all(len(notes) == 1 for notes in history.values())  # published all the same
    assert not any(cosigned(notes[-1], key) for notes in history.values())
    assert archiver.witnesses.stats.unavailable == len(history)
    assert "published without its cosignature" in caplog.text

    # Once the witness runs, the next checkpoint of every log that grows is cosigned (from old
    # size 0: it never saw the log), and the audit passes with it required.
    with running_witness(state, log_keys=[str(signer.verifier)], port=port):
        await cast(service, poll, range(30, 90))
        await service.close_poll(poll.id, actor="alice")
        await archiver.cycle()
    history = files.history(poll.id)
    assert history is not None
    assert all(cosigned(notes[-1], key) for notes in history.values())
    assert not any(cosigned(notes[0], key) for notes in history.values())
    assert verify(files.poll_dir(poll.id), signer, "--witness", str(key)) == (0, [])

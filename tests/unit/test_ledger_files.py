"""The ledger's files on disk: written once and never changed, resumed exactly after a crash at
any point of a publish, and read back with inclusion proofs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tally.archive.durable import DurableFiles, LedgerConflict
from tally.archive.logs import LedgerFiles, LogWriter, history_sizes, note_body
from tally.ledger import layout, merkle, note
from tally.ledger.checkpoint import lane_origin

PREFIX = "tally.test/ledger"
ORIGIN = lane_origin(PREFIX, "p", 0)


@pytest.fixture
def signer() -> note.Signer:
    return note.Signer.parse(note.generate_key(PREFIX)[0])


def entries(n: int, start: int = 0) -> list[bytes]:
    return [b"entry %d" % i for i in range(start, start + n)]


def test_write_once_is_idempotent_and_refuses_a_change(tmp_path: Path) -> None:
    files = DurableFiles(tmp_path)
    files.write_once("a/b/c", b"one")
    files.write_once("a/b/c", b"one")
    with pytest.raises(LedgerConflict):
        files.write_once("a/b/c", b"two")
    files.sync()
    assert (tmp_path / "a/b/c").read_bytes() == b"one"
    assert not [p for p in (tmp_path / "a/b").iterdir() if p.name.startswith(".")]


def test_a_log_resumes_from_its_newest_checkpoint(tmp_path: Path, signer: note.Signer) -> None:
    writer = LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    assert note_body(writer.publish() or b"").size == 0  # an empty log gets a first checkpoint
    assert writer.publish() is None  # not grown: nothing new
    for entry in entries(700):
        writer.append(entry)
    writer.publish()
    resumed = LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    assert (resumed.size, resumed.appended) == (700, 700)
    for entry in entries(300, 700):
        resumed.append(entry)
    resumed.publish()
    assert history_sizes(DurableFiles(tmp_path), "0") == [0, 700, 1000]
    assert resumed.root() == merkle.root([merkle.leaf_hash(e) for e in entries(1000)])


def test_a_crash_between_files_and_checkpoint_loses_nothing(
    tmp_path: Path, signer: note.Signer
) -> None:
    writer = LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    for entry in entries(300):
        writer.append(entry)
    writer.publish()
    for entry in entries(600, 300):
        writer.append(entry)
    writer.flush()  # full tiles of the next 600 are on disk, but no checkpoint covers them: a crash
    # Everything but the latest checkpoint (which moves on by design) is immutable.
    before = {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "checkpoint"
    }

    resumed = LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    assert resumed.size == 300
    for entry in entries(600, 300):  # the queue still holds them: appended again
        resumed.append(entry)
    resumed.publish()
    for path, data in before.items():  # every file written before the crash is unchanged
        assert path.read_bytes() == data, path
    assert resumed.root() == merkle.root([merkle.leaf_hash(e) for e in entries(900)])


def test_a_crash_after_the_history_file_restores_the_latest(
    tmp_path: Path, signer: note.Signer
) -> None:
    writer = LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    writer.append(b"x")
    first = writer.publish()
    writer.append(b"y")
    second = writer.publish()
    (tmp_path / layout.checkpoint_path("0")).write_bytes(first or b"")  # the replace never happened
    LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    assert (tmp_path / layout.checkpoint_path("0")).read_bytes() == second


def test_a_changed_tile_stops_the_resume(tmp_path: Path, signer: note.Signer) -> None:
    writer = LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)
    for entry in entries(10):
        writer.append(entry)
    writer.publish()
    tile = tmp_path / "0/tile/0/000.p/10"
    data = bytearray(tile.read_bytes())
    data[5] ^= 1
    tile.write_bytes(bytes(data))
    with pytest.raises(LedgerConflict):
        LogWriter.open(DurableFiles(tmp_path), "0", ORIGIN, signer)


def test_entries_are_read_back_with_proofs(tmp_path: Path, signer: note.Signer) -> None:
    poll_dir = tmp_path / "polls" / "p"
    writer = LogWriter.open(DurableFiles(poll_dir), "0", ORIGIN, signer)
    for entry in entries(1000):
        writer.append(entry)
    writer.publish()
    files = LedgerFiles(tmp_path)
    root = merkle.root([merkle.leaf_hash(e) for e in entries(1000)])
    for index in (0, 255, 256, 999):
        proven = files.entry("p", "0", index)
        assert proven is not None
        assert proven.entry == b"entry %d" % index
        merkle.verify_inclusion(merkle.leaf_hash(proven.entry), index, 1000, proven.proof, root)
    assert files.entry("p", "0", 1000) is None
    assert files.entry("p", "1", 0) is None
    assert files.logs("p") == ["0"]

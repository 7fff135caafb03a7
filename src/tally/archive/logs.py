"""One poll's logs on disk: appending to them (the archiver) and reading them back (the gateway).

Layout: :mod:`tally.ledger.layout` under ``<ledger root>/polls/<poll id>/``. A log's state is
its newest history checkpoint: every tile and bundle it covers was fsynced before it was written,
so an archiver that dies at any point resumes from it, recomputes what came after, and finds any
file it had already written byte-identical (:class:`DurableFiles` refuses a change).

Witnesses: with :attr:`LogWriter.witnesses` set, each checkpoint is sent to the witnesses once
its tiles are durable, and the note is written (history file, then latest) only once their
cosignatures are collected: ``checkpoints/<size>`` holds the cosigned note, written once like
before, and ``checkpoint`` the same bytes. A witness that does not answer leaves its line out of
that checkpoint for good (the next checkpoint of the log can carry it again). Cosignatures carry
the witness's time, so a checkpoint re-signed after a crash is not byte-identical to one written
before it: a history file already there with the same signed checkpoint (origin, size, root,
valid under the log's key) is kept as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from tally.archive.durable import DurableFiles, LedgerConflict
from tally.archive.witnessing import CheckpointWitnesses
from tally.ledger import layout, merkle, note
from tally.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from tally.ledger.tiles import (
    TILE_WIDTH,
    Bundle,
    BundleBuilder,
    TileReader,
    TileSet,
    decode_bundle,
    decode_tile,
)
from tally.ports import PollFiles, ProvenEntry

__all__ = ["LedgerDirectory", "LedgerFiles", "LogWriter", "ProvenEntry", "note_body"]

# Full tiles and bundles waiting for the next publish are written early beyond this many leaves,
# which bounds the archiver's memory when it catches up on a long backlog.
MAX_PENDING_LEAVES = 65_536


class LogWriter:
    """Appends entries to one log and publishes signed checkpoints of it."""

    __slots__ = (
        "_bundles",
        "_files",
        "_latest",
        "_log",
        "_origin",
        "_pending",
        "_signer",
        "_size",
        "_tiles",
        "witnesses",
    )

    def __init__(self, files: PollFiles, log: str, origin: str, signer: note.Signer) -> None:
        self._files = files
        self._log = log
        self._origin = origin
        self._signer = signer.renamed(origin)
        self._tiles = TileSet()
        self._bundles = BundleBuilder()
        self._pending: list[tuple[str, bytes]] = []
        self._size = 0  # covered by the newest published checkpoint
        self._latest: bytes | None = None
        # Set by the archiver when TALLY_WITNESSES names any: who cosigns each checkpoint.
        self.witnesses: CheckpointWitnesses | None = None

    @classmethod
    def open(cls, files: PollFiles, log: str, origin: str, signer: note.Signer) -> LogWriter:
        """Resume the log from its newest history checkpoint (an empty log if it has none)."""
        writer = cls(files, log, origin, signer)
        sizes = history_sizes(files, log)
        if not sizes:
            return writer
        size = sizes[-1]
        signed = _must_read(files, layout.history_path(log, size))
        checkpoint = open_checkpoint(signed, [writer._signer.verifier], origin=origin)
        if checkpoint.size != size:
            raise LedgerConflict(f"{layout.history_path(log, size)} is of size {checkpoint.size}")
        if size:
            reader = TileReader(size, lambda tile: _must_read(files, f"{log}/{tile.path}"))
            writer._tiles = TileSet.resume(size, reader)
            if writer._tiles.root() != checkpoint.root:
                raise LedgerConflict(f"log {log}: the tiles at size {size} do not give its root")
            partial = size % TILE_WIDTH
            entries: list[bytes] = []
            if partial:
                bundle = Bundle(size // TILE_WIDTH, partial)
                entries = decode_bundle(_must_read(files, f"{log}/{bundle.path}"), partial)
            edge = writer._tiles.partial_tiles()
            if entries and [merkle.leaf_hash(e) for e in entries] != decode_tile(
                edge[0].data, partial
            ):
                raise LedgerConflict(
                    f"log {log}: the partial bundle at size {size} is not its tile"
                )
            writer._bundles = BundleBuilder.resume(size, entries)
        writer._size = size
        writer._latest = signed
        if files.read(layout.checkpoint_path(log)) != signed:
            files.replace(layout.checkpoint_path(log), signed)  # died between the two writes
            files.sync()
        return writer

    @property
    def size(self) -> int:
        """The tree size of the newest published checkpoint."""
        return self._size

    @property
    def appended(self) -> int:
        """Entries appended so far, published or not."""
        return self._tiles.size

    @property
    def latest(self) -> bytes | None:
        """The newest published signed checkpoint."""
        return self._latest

    def root(self) -> bytes:
        """The root of every entry appended so far."""
        return self._tiles.root()

    def append(self, entry: bytes, leaf_hash: bytes | None = None) -> None:
        """Append one entry (its leaf hash may be given when the caller has it already)."""
        digest = merkle.leaf_hash(entry) if leaf_hash is None else leaf_hash
        prefix = f"{self._log}/"
        for done in self._tiles.append(digest):
            self._pending.append((prefix + done.tile.path, done.data))
        bundle = self._bundles.append(entry)
        if bundle is not None:
            self._pending.append((prefix + bundle.bundle.path, bundle.data))
            if self._tiles.size - self._size >= MAX_PENDING_LEAVES:
                self.flush()

    def flush(self) -> None:
        """Write (and fsync) the full tiles and bundles completed so far."""
        for path, data in self._pending:
            self._files.write_once(path, data)
        self._pending.clear()
        self._files.sync()

    def publish(self) -> bytes | None:
        """Make every appended entry durable and sign a checkpoint of it.

        Returns the new signed checkpoint, or None when the log has not grown since the last
        one (an empty log still gets a first checkpoint, of size 0)."""
        size = self._tiles.size
        if self._latest is not None and size == self._size:
            return None
        prefix = f"{self._log}/"
        for tile in self._tiles.partial_tiles():
            self._pending.append((prefix + tile.tile.path, tile.data))
        bundle = self._bundles.partial()
        if bundle is not None:
            self._pending.append((prefix + bundle.bundle.path, bundle.data))
        self.flush()
        checkpoint = Checkpoint(self._origin, size, self._tiles.root())
        signed = sign_checkpoint(checkpoint, [self._signer])
        if self.witnesses is not None:
            signed = self.witnesses.cosign(signed, checkpoint, self._latest, self._proof_to(size))
        signed = self._written_before(size, checkpoint) or signed
        self._files.write_once(layout.history_path(self._log, size), signed)
        self._files.sync()  # the history file is the log's state: durable before it is served
        self._files.replace(layout.checkpoint_path(self._log), signed)
        self._files.sync()
        self._size, self._latest = size, signed
        return signed

    def _proof_to(self, size: int) -> Callable[[int], list[bytes]]:
        """Consistency proofs to the tree of ``size``, from its tiles (durable by now)."""
        prefix = f"{self._log}/"

        def proof(old: int) -> list[bytes]:
            reader = TileReader(size, lambda tile: _must_read(self._files, prefix + tile.path))
            return merkle.consistency_proof(old, size, reader)

        return proof

    def _written_before(self, size: int, checkpoint: Checkpoint) -> bytes | None:
        """The history file of ``size`` if one is there already and signs ``checkpoint`` (an
        archiver that lost its lease wrote it, with other cosignatures): kept, not rewritten."""
        existing = self._files.read(layout.history_path(self._log, size))
        if existing is None:
            return None
        try:
            opened = open_checkpoint(existing, [self._signer.verifier], origin=self._origin)
        except (note.NoteError, ValueError):
            return None  # write_once refuses to change it, loudly
        return existing if opened == checkpoint else None


def history_sizes(files: PollFiles, log: str) -> list[int]:
    """The tree sizes of a log's published checkpoints, ascending."""
    sizes = []
    for name in files.names(layout.history_dir(log)):
        with contextlib.suppress(layout.LayoutError):
            sizes.append(layout.parse_size(name))  # skips temporary files
    return sorted(sizes)


def _must_read(files: PollFiles, relative: str) -> bytes:
    data = files.read(relative)
    if data is None:
        raise FileNotFoundError(relative)
    return data


def note_body(signed: bytes) -> Checkpoint:
    """The checkpoint inside a signed note we wrote ourselves (signatures not checked)."""
    body, sep, _ = signed.rpartition(b"\n\n")
    if not sep:
        raise ValueError("not a signed note")
    return Checkpoint.parse(body.decode() + "\n")


class LedgerFiles:
    """Every poll's ledger files under ``root`` (``<data dir>/ledger``): implements
    ports.LedgerStore for the archiver, and the blocking reads behind :class:`LedgerDirectory`.

    Blocking: call it from a worker thread (the archiver's) or through LedgerDirectory."""

    KEYS = "keys"

    # History checkpoints never change, so the served history reads each file once.
    MAX_CACHED = 100_000

    def __init__(self, root: Path) -> None:
        self.root = root
        self._immutable: dict[tuple[str, str], bytes] = {}

    def poll_dir(self, poll_id: str) -> Path:
        return self.root / "polls" / poll_id

    def poll_files(self, poll_id: str) -> DurableFiles:
        return DurableFiles(self.poll_dir(poll_id))

    def read(self, poll_id: str, relative: str) -> bytes | None:
        """A file of a poll's ledger; ``relative`` must be a path the caller validated."""
        return self.poll_files(poll_id).read(relative)

    def publish_key(self, verifier_key: str) -> None:
        """Write the verifier key served at /ledger/keys (one key per line)."""
        files = DurableFiles(self.root)
        files.replace(self.KEYS, f"{verifier_key}\n".encode())
        files.sync()

    def keys(self) -> bytes | None:
        return DurableFiles(self.root).read(self.KEYS)

    def logs(self, poll_id: str) -> list[str]:
        """The poll's logs that have published a checkpoint: admin first, then lanes in order."""
        poll_dir = self.poll_dir(poll_id)
        try:
            names = [p.name for p in poll_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        lanes = sorted(lane for lane in map(_lane_or_none, names) if lane is not None)
        return ([layout.ADMIN_LOG] if layout.ADMIN_LOG in names else []) + [str(n) for n in lanes]

    def history(self, poll_id: str) -> dict[str, list[bytes]] | None:
        """Every published checkpoint of every log of the poll, by increasing size."""
        files = self.poll_files(poll_id)
        logs = self.logs(poll_id)
        if not logs:
            return None
        return {
            log: [
                self._read_immutable(files, poll_id, layout.history_path(log, size))
                for size in history_sizes(files, log)
            ]
            for log in logs
        }

    def _read_immutable(self, files: DurableFiles, poll_id: str, relative: str) -> bytes:
        data = self._immutable.get((poll_id, relative))
        if data is None:
            if len(self._immutable) >= self.MAX_CACHED:
                self._immutable.clear()
            data = self._immutable[poll_id, relative] = _must_read(files, relative)
        return data

    def entry(self, poll_id: str, log: str, index: int) -> ProvenEntry | None:
        """Entry ``index`` of a log with its inclusion proof against the latest checkpoint;
        None while no published checkpoint covers it."""
        files = self.poll_files(poll_id)
        covered = _covering(files, log, index)
        if covered is None:
            return None
        signed, size = covered
        reader = TileReader(size, lambda tile: _must_read(files, f"{log}/{tile.path}"))
        proof = merkle.inclusion_proof(index, size, reader)
        entry = _read_entry(files, log, index, size)
        return ProvenEntry(entry, index, proof, signed, size, note_body(signed).root)

    def read_entry(self, poll_id: str, log: str, index: int) -> bytes | None:
        """Entry ``index`` of a log, if a published checkpoint covers it."""
        files = self.poll_files(poll_id)
        covered = _covering(files, log, index)
        if covered is None:
            return None
        return _read_entry(files, log, index, covered[1])


class LedgerDirectory:
    """The published ledger in a local directory, read off the event loop (implements
    ports.LedgerReader over :class:`LedgerFiles`: each read runs in the default executor)."""

    def __init__(self, files: LedgerFiles) -> None:
        self._files = files

    async def keys(self) -> bytes | None:
        return await asyncio.to_thread(self._files.keys)

    async def read(self, poll_id: str, relative: str) -> bytes | None:
        return await asyncio.to_thread(self._files.read, poll_id, relative)

    async def history(self, poll_id: str) -> dict[str, list[bytes]] | None:
        return await asyncio.to_thread(self._files.history, poll_id)

    async def entry(self, poll_id: str, log: str, index: int) -> ProvenEntry | None:
        return await asyncio.to_thread(self._files.entry, poll_id, log, index)

    async def read_entry(self, poll_id: str, log: str, index: int) -> bytes | None:
        return await asyncio.to_thread(self._files.read_entry, poll_id, log, index)


def _covering(files: DurableFiles, log: str, index: int) -> tuple[bytes, int] | None:
    """The log's latest signed checkpoint and its size, if it covers entry ``index``."""
    signed = files.read(layout.checkpoint_path(log))
    if signed is None:
        return None
    size = note_body(signed).size
    return (signed, size) if 0 <= index < size else None


def _read_entry(files: DurableFiles, log: str, index: int, size: int) -> bytes:
    width = min(TILE_WIDTH, size - index // TILE_WIDTH * TILE_WIDTH)
    bundle = Bundle(index // TILE_WIDTH, width)
    return decode_bundle(_must_read(files, f"{log}/{bundle.path}"), width)[index % TILE_WIDTH]


def _lane_or_none(name: str) -> int | None:
    try:
        return layout.parse_log(name)
    except layout.LayoutError:
        return None

"""``tally audit verify``: check one poll's published ledger with nothing but its files and key.

What is checked (docs/ledger-format.md §5), log by log, admin log first:

1. **Checkpoints.** Every published checkpoint (the history and the latest) verifies under the
   ledger key renamed to the log's origin, and names that origin. The latest is the newest
   history entry.
2. **Entries and tiles.** The entry bundles are read in order up to the newest verified size;
   each record is decoded strictly and leaf-hashed, every tile is rebuilt and compared byte for
   byte with the published one (every full tile, and the partial tiles and bundles of every
   checkpoint size), the root is recomputed at every checkpoint size, and an RFC 9162
   consistency proof is checked between each pair of successive checkpoints.
3. **Meaning.** The admin log is ``created`` (with the poll's definition), then ``opened`` and
   ``closed`` in order. In lane ``l``, leaf ``i`` is a vote of this poll, lane ``l``, seq
   ``i + 1``, for an option of the poll, accepted before the deadline, from a pseudonym that maps
   to lane ``l``; no pseudonym votes twice in the whole poll.
4. **Result.** The votes are recounted and compared with the signed result certificate, whose
   log lines must be each log's latest checkpoint.

Every discrepancy is a :class:`~tally.audit.report.Finding` naming the file and, where one leaf
is at fault, its index. Where two published files disagree, the signed checkpoint decides which
one is wrong: a flipped tile byte is a ``tile-mismatch`` on the tile, a changed entry an
``entry-mismatch`` on its bundle.

Speed: a lane is read one bundle (256 leaves) at a time, and the per-leaf work is what cannot be
avoided: split the bundle, decode the record (:func:`tally.ledger.leaf.decode_leaf`), hash it,
and the tile's 255 interior hashes. The meaning checks run over whole bundles with C-level
builtins (``map``, ``set``, ``Counter``, ``bytes.translate``) and fall back to a leaf-by-leaf
pass, which words the findings, only for a bundle that fails them. Memory: 32 bytes per leaf of
the log being checked (its rebuilt level-0 tiles) plus the poll's set of pseudonyms.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from operator import attrgetter

from tally.audit.report import Finding, Report
from tally.audit.source import History, Source
from tally.ledger import layout, merkle, note
from tally.ledger.admin import AdminAction, AdminRecord, PollDefinition, decode_admin
from tally.ledger.certificate import CertificateError, certificate_origin, open_certificate
from tally.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    admin_origin,
    lane_origin,
    open_checkpoint,
)
from tally.ledger.leaf import LeafError, VoteRecord, VoteStatus, decode_leaf
from tally.ledger.merkle import HASH_SIZE, TreeBuilder
from tally.ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Bundle,
    Tile,
    TileError,
    TileReader,
    TileSet,
    bundles_for_size,
    decode_bundle,
    decode_tile,
)

__all__ = ["FINDING_CODES", "ProgressCallback", "partial_tiles", "verify"]

# Every code a finding of `verify` can carry, with what it means.
FINDING_CODES = {
    "missing-file": "a file the ledger must publish is not there",
    "missing-log": "a log of the poll (the admin log, or a lane of its definition) is not published",
    "unexpected-log": "a lane the poll's definition does not have is published",
    "unknown-poll": "no admin checkpoint names a poll under the key's origin prefix",
    "poll-mismatch": "the poll named by the source or --poll is not the one the ledger signs",
    "bad-signature": "a checkpoint or certificate is not validly signed by the ledger key",
    "malformed-checkpoint": "a checkpoint is not a well-formed signed checkpoint",
    "wrong-origin": "a validly signed checkpoint is of another log",
    "checkpoint-size": "a history checkpoint is filed under another tree size than it signs",
    "latest-mismatch": "a log's latest checkpoint is not its newest history checkpoint",
    "bad-bundle": "an entry bundle does not split into the entries its width says",
    "tile-size": "a tile is not 32 bytes per hash of its width",
    "tile-mismatch": "a published tile differs from the one rebuilt from the entries",
    "entry-mismatch": "an entry differs from the leaf the signed tree holds (the tiles agree with the signature)",
    "bundle-mismatch": "a checkpoint's partial bundle differs from the entries of the log",
    "root-mismatch": "the entries do not give the root a checkpoint signs",
    "history-rewritten": "the entries do not give an earlier checkpoint's root though later ones match: the history was rewritten",
    "inconsistent-history": "a checkpoint does not extend the one before it (RFC 9162 consistency proof)",
    "bad-record": "a leaf is not a valid record (strict decoding)",
    "record-poll": "a record names another poll",
    "record-lane": "a vote record names another lane than the log holding it",
    "seq-mismatch": "leaf i of a lane does not have seq i + 1 (a vote dropped, repeated or moved)",
    "unknown-option": "a vote is for an option the poll does not have",
    "wrong-lane": "a vote's pseudonym maps to another lane than the one holding it",
    "duplicate-pseudonym": "a pseudonym votes more than once in the poll",
    "late-vote": "a vote was accepted at or after the poll's deadline",
    "vote-status": "a vote's status is not 'accepted'",
    "admin-order": "the admin log is not 'created', then 'opened' and/or 'closed', in order",
    "missing-definition": "the admin log holds no 'created' record, so the poll's definition is unknown",
    "certificate-missing": "the poll is closed but no result certificate is published",
    "certificate-not-closed": "a result certificate is published but the admin log does not close the poll",
    "bad-certificate": "the certificate is malformed, or signed for another origin",
    "certificate-poll": "the certificate names another poll",
    "certificate-log": "a certificate log line is not that log's latest checkpoint",
    "certificate-options": "the certificate does not count exactly the poll's options, in order",
    "count-mismatch": "a certified count differs from the recount of the leaves",
    "too-many": "more findings of one kind in one log than are listed",
}

ProgressCallback = Callable[[int, int], None]  # (leaves done, leaves in total)

# Findings of one code in one log listed before the rest are summed up in one `too-many` line:
# a lane rewritten wholesale would otherwise print a line per leaf.
MAX_FINDINGS_PER_KIND = 50

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_SEQ = attrgetter("seq")
_LANE = attrgetter("lane")
_POLL = attrgetter("poll_id")
_STATUS = attrgetter("status")
_PSEUDONYM = attrgetter("pseudonym")
_OPTION = attrgetter("option_id")
_ACCEPTED_MS = attrgetter("accepted_ms")
_ACCEPTED = frozenset({VoteStatus.ACCEPTED})
_KNOWN = " (known): "  # names a checkpoint from an earlier copy: "<copy> (known): <file>"
_NEXT_ACTIONS = {  # the poll lifecycle: a draft may be closed without ever opening
    AdminAction.CREATED: frozenset({AdminAction.OPENED, AdminAction.CLOSED}),
    AdminAction.OPENED: frozenset({AdminAction.CLOSED}),
    AdminAction.CLOSED: frozenset[AdminAction](),
}
_STATE_NAMES = {
    AdminAction.CREATED: "draft",
    AdminAction.OPENED: "open",
    AdminAction.CLOSED: "closed",
}


def verify(
    source: Source,
    key: note.Verifier,
    *,
    poll_id: str | None = None,
    progress: ProgressCallback | None = None,
    known: Sequence[Source] = (),
) -> Report:
    """Check the poll's ledger at ``source`` against ``key`` (named by the origin prefix).

    ``poll_id``, when given, is the poll the ledger must be of. ``known`` are earlier copies of
    the ledger (say, exports the auditor made during the vote): each of their checkpoints is
    checked as if it were in the history, so a ledger rewritten *with* its history, and re-signed
    with the right key, is caught by the checkpoints it no longer extends. Raises
    :class:`~tally.audit.source.SourceError` when the source cannot be read at all, ValueError
    when the key's name cannot be an origin prefix; every other problem is a finding.
    """
    admin_origin(key.name, "poll")  # ValueError: the key's name is not an origin prefix
    return _Audit(source, key, poll_id, progress, known).run()


def partial_tiles(size: int) -> list[Tile]:
    """The partial tiles (one per level at most) of a tree of ``size`` leaves."""
    tiles: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        width = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
        if width:
            tiles.append(Tile(level, size >> (TILE_HEIGHT * (level + 1)), width))
        level += 1
    return tiles


def _full_tiles(size: int) -> list[Tile]:
    tiles: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * (level + 1)):
        tiles += (Tile(level, index) for index in range(size >> (TILE_HEIGHT * (level + 1))))
        level += 1
    return tiles


def _bundle_of(index: int, size: int) -> Bundle:
    """The bundle of a log of ``size`` entries that holds entry ``index``."""
    start = index - index % TILE_WIDTH
    return Bundle(index // TILE_WIDTH, min(TILE_WIDTH, size - start))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    return [_sha256(_LEAF_PREFIX + entry).digest() for entry in entries]


class _Findings:
    """The findings so far, at most MAX_FINDINGS_PER_KIND of one code per log."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._listed: Counter[tuple[str, str]] = Counter()
        self._omitted: Counter[tuple[str, str]] = Counter()

    def add(
        self,
        code: str,
        file: str,
        message: str,
        *,
        index: int | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        kind = (file.partition("/")[0], code)
        if self._listed[kind] >= MAX_FINDINGS_PER_KIND:
            self._omitted[kind] += 1
            return
        self._listed[kind] += 1
        self.items.append(Finding(code, file, message, index, expected, found))

    def __len__(self) -> int:
        return len(self.items) + sum(self._omitted.values())

    def finish(self) -> list[Finding]:
        for (log, code), count in self._omitted.items():
            self.items.append(
                Finding(
                    "too-many",
                    log,
                    f"{count} more [{code}] findings in {log} are not listed",
                    expected=code,
                    found=str(count),
                )
            )
        return self.items


@dataclass(frozen=True, slots=True)
class _Signed:
    """A verified checkpoint and the path it is published under."""

    file: str
    checkpoint: Checkpoint

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


@dataclass(slots=True)
class _Log:
    """One log of the poll, and its verified checkpoints (by increasing size)."""

    name: str
    lane: int | None
    origin: str
    verifier: note.Verifier
    signed: list[_Signed] = field(default_factory=list)
    latest: _Signed | None = None

    @property
    def size(self) -> int:
        """The size of the newest verified checkpoint: how far the log is checked."""
        return self.signed[-1].size if self.signed else 0


class _Tree:
    """A log's tiles, rebuilt from its leaf hashes one bundle at a time.

    Level-0 tiles are kept as joined bytes (one object per 256 leaves); the tree above them is a
    :class:`TileSet` fed with the root of each full level-0 tile, whose tiles are our levels
    1 and up. Every tile entry is a complete subtree and never changes, so the partial tile of an
    earlier size is a prefix of the tile of the final size: one set of tiles serves every size.
    """

    __slots__ = ("_higher", "_level0", "_upper", "size")

    def __init__(self) -> None:
        self._level0: list[bytes] = []
        self._upper = TileSet()
        self._higher: dict[tuple[int, int], bytes] = {}
        self.size = 0

    def add(self, hashes: Sequence[bytes]) -> None:
        """Append one bundle's leaf hashes (full ones, then at most one partial, last)."""
        self._level0.append(b"".join(hashes))
        if len(hashes) == TILE_WIDTH:
            for done in self._upper.append(merkle.root(hashes)):
                self._higher[(done.tile.level + 1, done.tile.index)] = done.data
        self.size += len(hashes)

    def finish(self) -> None:
        for edge in self._upper.partial_tiles():
            self._higher[(edge.tile.level + 1, edge.tile.index)] = edge.data

    def tile(self, tile: Tile) -> bytes:
        """The rebuilt contents of ``tile``; LookupError if the tree does not reach it."""
        data = (
            self._level0[tile.index] if tile.level == 0 else self._higher[(tile.level, tile.index)]
        )
        if len(data) < tile.width * HASH_SIZE:
            raise KeyError(tile.path)
        return data[: tile.width * HASH_SIZE]

    def leaf(self, index: int) -> bytes:
        data = self._level0[index // TILE_WIDTH]
        offset = index % TILE_WIDTH * HASH_SIZE
        return data[offset : offset + HASH_SIZE]

    def reader(self, size: int) -> TileReader:
        return TileReader(size, self.tile)

    def root(self, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        return TreeBuilder.resume(size, self.reader(size)).root()


@dataclass(frozen=True, slots=True)
class _TileDiff:
    """One hash of a published tile that differs from the rebuilt one."""

    path: str
    position: int  # the hash's place in the tile
    first: int  # the leaves it covers: [first, end)
    end: int
    expected: bytes
    found: bytes


@dataclass(slots=True)
class _LaneContext:
    """What every leaf of one lane must be, prepared once for the bundle-wide checks."""

    lane: int
    lane_set: frozenset[int]
    poll_set: frozenset[str]
    options: frozenset[str] | None  # None: the poll's definition is unknown
    deadline: int | None
    mask: int | None  # lanes - 1
    # Byte values that may end a pseudonym of this lane: its lane is the low bits of the last
    # two bytes (lanes is a power of two up to 32768).
    last_byte_ok: bytes
    second_last_ok: bytes
    # (first leaf index, bundle path, pseudonyms) of each bundle, to find where a pseudonym
    # that votes twice voted first; None for a leaf that did not decode.
    pseudonyms: list[tuple[int, str, Sequence[bytes | None]]] = field(default_factory=list)

    @classmethod
    def of(cls, lane: int, poll: str, definition: PollDefinition | None) -> _LaneContext:
        if definition is None:
            return cls(lane, frozenset({lane}), frozenset({poll}), None, None, None, b"", b"")
        mask = definition.lanes - 1
        return cls(
            lane,
            frozenset({lane}),
            frozenset({poll}),
            frozenset(o.id for o in definition.options),
            definition.closes_at_ms,
            mask,
            bytes(b for b in range(256) if b & mask & 0xFF == lane & 0xFF),
            bytes(b for b in range(256) if b & (mask >> 8) == (lane >> 8) & 0xFF),
        )

    def placed(self, pseudonyms: list[bytes]) -> bool:
        """Whether every pseudonym maps to this lane (True when the lane count is unknown)."""
        if self.mask is None:
            return True
        joined = b"".join(pseudonyms)
        last, second_last = joined[15::16], joined[14::16]
        return not last.translate(None, self.last_byte_ok) and not second_last.translate(
            None, self.second_last_ok
        )

    def lane_of(self, pseudonym: bytes) -> int | None:
        """The lane the pseudonym maps to (docs/ledger-format.md §2.1); None if unknown."""
        if self.mask is None:
            return None
        return int.from_bytes(pseudonym[-4:], "big") & self.mask


class _Audit:
    """One run of ``verify``: the state shared by the checks of every log."""

    def __init__(
        self,
        source: Source,
        key: note.Verifier,
        wanted_poll: str | None,
        progress: ProgressCallback | None,
        known: Sequence[Source] = (),
    ) -> None:
        self.source = source
        self.known = known
        self.key = key
        self.prefix = key.name
        self.wanted_poll = wanted_poll
        self.progress = progress
        self.findings = _Findings()
        self.report = Report(source.location)
        self.poll = ""
        self.definition: PollDefinition | None = None
        # Each admin leaf that could be read: (leaf index, record or None if invalid, bundle).
        self.admin_records: list[tuple[int, AdminRecord | None, str]] = []
        self.closed = False
        self.counts: Counter[str] = Counter()
        self.seen: set[bytes] = set()
        self.duplicates: list[tuple[bytes, int, str]] = []  # pseudonym, leaf index, bundle path
        self.lane_contexts: list[_LaneContext] = []
        self.done = 0
        self.total = 0

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Report:
        history = self._with_known(self.source.history())
        poll = self._find_poll(history)
        if poll is None:
            return self._finish()
        self.poll = self.report.poll_id = poll
        logs = self._logs(history)
        self.total = sum(log.size for log in logs)
        self._tick(0)
        admin = logs[0] if logs and logs[0].lane is None else None
        if admin is not None:
            self._check_log(admin, self._check_admin_bundle)
            self._check_admin_order()
        else:
            self.findings.add(
                "missing-log",
                layout.checkpoint_path(layout.ADMIN_LOG),
                "the admin log is not published: the poll's definition is unknown",
            )
        self._check_lane_set(logs)
        for log in logs:
            if log.lane is not None:
                context = _LaneContext.of(log.lane, self.poll, self.definition)
                self.lane_contexts.append(context)
                self._check_log(log, partial(self._check_vote_bundle, context))
        self._report_duplicates()
        self._check_certificate(logs)
        return self._finish()

    def _with_known(self, history: History) -> History:
        """The source's history plus every checkpoint of the known copies, each named by its
        copy, so a finding about one says which earlier copy it came from."""
        logs = {log: list(notes) for log, notes in history.logs.items()}
        for copy in self.known:
            for log, notes in copy.history().logs.items():
                logs.setdefault(log, []).extend(
                    (f"{copy.location}{_KNOWN}{file}", signed) for file, signed in notes
                )
        return replace(history, logs=logs)

    def _finish(self) -> Report:
        report = self.report
        if self.definition is not None:
            report.counts = {o.id: self.counts[o.id] for o in self.definition.options}
        else:
            report.counts = dict(self.counts)
        report.votes = sum(report.counts.values())
        report.findings = self.findings.finish()
        return report

    def _tick(self, leaves: int) -> None:
        self.done += leaves
        if self.progress is not None:
            self.progress(self.done, self.total)

    # -- which poll, which logs ------------------------------------------------------------------

    def _find_poll(self, history: History) -> str | None:
        """The poll the admin log is signed for: from its origin ``<prefix>/<poll>/admin``."""
        notes = [self.source.read(layout.checkpoint_path(layout.ADMIN_LOG))]
        notes += [signed for _, signed in history.logs.get(layout.ADMIN_LOG, [])]
        signed_poll = next(filter(None, map(self._poll_of, notes)), None)
        poll = self.wanted_poll or signed_poll or history.poll_id
        if poll is None:
            self.findings.add(
                "unknown-poll",
                layout.checkpoint_path(layout.ADMIN_LOG),
                f"no admin checkpoint has the origin {self.prefix}/<poll>/admin: is the key "
                "the ledger's?",
                expected=f"{self.prefix}/<poll>/admin",
            )
            return None
        if signed_poll is not None and signed_poll != poll:
            self.findings.add(
                "poll-mismatch",
                layout.checkpoint_path(layout.ADMIN_LOG),
                f"the admin log is of poll {signed_poll!r}, not {poll!r}",
                expected=poll,
                found=signed_poll,
            )
            return None  # every checkpoint would be of the wrong log: nothing more to learn
        if history.poll_id is not None and history.poll_id != poll:
            self.findings.add(
                "poll-mismatch",
                layout.HISTORY,
                f"the checkpoint history says poll {history.poll_id!r}, the ledger is of {poll!r}",
                expected=poll,
                found=history.poll_id,
            )
        try:
            admin_origin(self.prefix, poll)
        except ValueError:
            self.findings.add(
                "unknown-poll",
                layout.checkpoint_path(layout.ADMIN_LOG),
                f"{poll!r} is not a poll id that makes an origin",
                found=poll,
            )
            return None
        return poll

    def _poll_of(self, signed: bytes | None) -> str | None:
        if signed is None:
            return None
        origin = signed.split(b"\n", 1)[0].decode("utf-8", "replace")
        head, suffix = f"{self.prefix}/", f"/{layout.ADMIN_LOG}"
        if origin.startswith(head) and origin.endswith(suffix):
            poll = origin[len(head) : -len(suffix)]
            if poll and "/" not in poll:
                return poll
        return None

    def _logs(self, history: History) -> list[_Log]:
        """Every published log with its verified checkpoints, admin first, then lanes in order."""
        logs: list[_Log] = []
        for name, notes in history.logs.items():
            lane = layout.parse_log(name)
            if lane is None:
                origin = admin_origin(self.prefix, self.poll)
            else:
                origin = lane_origin(self.prefix, self.poll, lane)
            log = _Log(name, lane, origin, self.key.renamed(origin))
            self._verify_checkpoints(log, notes)
            logs.append(log)
        logs.sort(key=lambda log: -1 if log.lane is None else log.lane)
        for log in logs:
            self.report.logs[log.name] = log.size
        return logs

    def _check_lane_set(self, logs: list[_Log]) -> None:
        if self.definition is None:
            return
        present = {log.lane for log in logs if log.lane is not None}
        for lane in range(self.definition.lanes):
            if lane not in present:
                self.findings.add(
                    "missing-log",
                    layout.checkpoint_path(layout.lane_log(lane)),
                    f"lane {lane} of {self.definition.lanes} is not published",
                )
        for lane in sorted(present):
            if lane >= self.definition.lanes:
                self.findings.add(
                    "unexpected-log",
                    layout.checkpoint_path(layout.lane_log(lane)),
                    f"the poll has {self.definition.lanes} lanes, but lane {lane} is published",
                )

    # -- checkpoints ---------------------------------------------------------------------------

    def _verify_checkpoints(self, log: _Log, notes: list[tuple[str, bytes]]) -> None:
        verified: list[tuple[_Signed, bytes]] = []
        for file, signed in notes:
            checkpoint = self._open(log, file, signed)
            if checkpoint is None:
                continue
            named = file.rpartition("/")[2]
            if file.startswith(f"{layout.history_dir(log.name)}/") and named != str(
                checkpoint.size
            ):
                self.findings.add(
                    "checkpoint-size",
                    file,
                    f"the checkpoint filed as size {named} signs size {checkpoint.size}",
                    expected=named,
                    found=str(checkpoint.size),
                )
            verified.append((_Signed(file, checkpoint), signed))
        # By size; at equal sizes a known copy's checkpoint first, so the newest is the source's.
        verified.sort(key=lambda item: (item[0].size, _KNOWN not in item[0].file))
        latest_file = layout.checkpoint_path(log.name)
        latest = self.source.read(latest_file)
        if latest is None:
            self.findings.add("missing-file", latest_file, "the log's latest checkpoint is missing")
        else:
            checkpoint = self._open(log, latest_file, latest)
            if checkpoint is not None:
                log.latest = _Signed(latest_file, checkpoint)
                if not verified:
                    self.findings.add(
                        "missing-file",
                        layout.history_path(log.name, checkpoint.size),
                        "the latest checkpoint is not in the log's history",
                    )
                    verified.append((log.latest, latest))
                elif checkpoint.size > verified[-1][0].size and latest == self.source.read(
                    layout.history_path(log.name, checkpoint.size)
                ):
                    # A live log grew between reading its history and its latest checkpoint:
                    # the archiver files each checkpoint in the history before it becomes the
                    # latest, so the newer one is there now.
                    verified.append(
                        (
                            _Signed(layout.history_path(log.name, checkpoint.size), checkpoint),
                            latest,
                        )
                    )
                elif latest != verified[-1][1]:
                    newest = verified[-1][0]
                    self.findings.add(
                        "latest-mismatch",
                        latest_file,
                        f"the latest checkpoint is not the newest in the history ({newest.file})",
                        expected=f"size {newest.size} root {_b64(newest.root)}",
                        found=f"size {checkpoint.size} root {_b64(checkpoint.root)}",
                    )
                    if all(signed != latest for _, signed in verified):
                        verified.append((log.latest, latest))
                        verified.sort(key=lambda item: item[0].size)
        unique: list[_Signed] = []
        for item, _ in verified:
            if unique and unique[-1].checkpoint == item.checkpoint:
                continue  # the same tree head listed twice
            unique.append(item)
        log.signed = unique

    def _open(self, log: _Log, file: str, signed: bytes) -> Checkpoint | None:
        try:
            return open_checkpoint(signed, [log.verifier], origin=log.origin)
        except note.UnverifiedNote as exc:
            other = self._other_log(signed, exc.unknown)
            if other is not None:
                self.findings.add(
                    "wrong-origin",
                    file,
                    f"a checkpoint of {other}, signed by the ledger key, published as one of "
                    f"{log.origin}",
                    expected=log.origin,
                    found=other,
                )
                return None
            names = ", ".join(f"{name}+{kid:08x}" for name, kid in exc.unknown) or "none"
            self.findings.add(
                "bad-signature",
                file,
                f"not signed by the ledger key for {log.origin} (signed by: {names})",
                expected=str(log.verifier),
                found=names,
            )
        except note.BadSignature as exc:
            self.findings.add(
                "bad-signature",
                file,
                f"the signature of {exc.name} does not verify",
                expected=str(log.verifier),
            )
        except note.NoteError as exc:
            self.findings.add("malformed-checkpoint", file, f"not a signed note: {exc}")
        except CheckpointError as exc:
            try:
                origin = Checkpoint.parse(note.open(signed, [log.verifier]).text).origin
            except (note.NoteError, CheckpointError):
                self.findings.add("malformed-checkpoint", file, str(exc))
            else:
                self.findings.add(
                    "wrong-origin",
                    file,
                    f"a checkpoint of {origin}, published as one of {log.origin}",
                    expected=log.origin,
                    found=origin,
                )
        return None

    def _other_log(self, signed: bytes, signers: tuple[tuple[str, int], ...]) -> str | None:
        """The origin of another log of this ledger that validly signed ``signed``, if any."""
        for name, kid in signers:
            if not note.is_valid_name(name) or note.key_id(name, self.key.public_key) != kid:
                continue
            try:
                open_checkpoint(signed, [self.key.renamed(name)], origin=name)
            except (note.NoteError, CheckpointError):
                continue
            return name
        return None

    # -- entries, tiles, roots -----------------------------------------------------------------

    def _check_log(self, log: _Log, check_bundle: Callable[[int, list[bytes], str], None]) -> None:
        tree = self._rebuild(log, check_bundle)
        tree.finish()
        diffs = self._compare_tiles(log, tree)
        self._check_roots(log, tree, diffs)

    def _rebuild(self, log: _Log, check_bundle: Callable[[int, list[bytes], str], None]) -> _Tree:
        tree = _Tree()
        size = log.size
        bundles = bundles_for_size(size)
        paths = [f"{log.name}/{bundle.path}" for bundle in bundles]
        for bundle, path, data in zip(bundles, paths, self.source.read_many(paths), strict=True):
            entries: list[bytes] | None = None
            if data is None:
                self.findings.add("missing-file", path, "the entry bundle is missing")
            else:
                try:
                    entries = decode_bundle(data, bundle.width)
                except TileError as exc:
                    self.findings.add("bad-bundle", path, str(exc), index=bundle.start)
            if entries is None:
                # Go on with the published tile's hashes, so that the rest of the log is still
                # checked; those leaves are not decoded, so not counted.
                hashes = self._published_level0(log, bundle)
                if hashes is None:
                    self.findings.add(
                        "missing-file",
                        f"{log.name}/{Tile(0, bundle.index, bundle.width).path}",
                        f"the tile is missing too: leaves from {bundle.start} on cannot be checked",
                        index=bundle.start,
                    )
                    break
                tree.add(hashes)
            else:
                tree.add(_leaf_hashes(entries))
                check_bundle(bundle.start, entries, path)
            self._tick(bundle.width)
        return tree

    def _published_level0(self, log: _Log, bundle: Bundle) -> list[bytes] | None:
        data = self.source.read(f"{log.name}/{Tile(0, bundle.index, bundle.width).path}")
        if data is None:
            return None
        try:
            return decode_tile(data, bundle.width)
        except TileError:
            return None

    def _compare_tiles(self, log: _Log, tree: _Tree) -> list[_TileDiff]:
        """Compare every tile of every checkpoint size with the rebuilt one."""
        # The tiles of the newest size first, so that a leaf's first difference names them.
        tiles = _full_tiles(tree.size) + partial_tiles(tree.size)
        for signed in log.signed:
            if signed.size <= tree.size:
                tiles += partial_tiles(signed.size)
        wanted: dict[str, Tile] = {}
        for tile in tiles:
            wanted.setdefault(f"{log.name}/{tile.path}", tile)  # each path once
        diffs: list[_TileDiff] = []
        paths = list(wanted)
        for path, published in zip(paths, self.source.read_many(paths), strict=True):
            tile = wanted[path]
            expected = tree.tile(tile)
            if published == expected:
                continue
            if published is None:
                self.findings.add("missing-file", path, "the tile is missing")
            elif len(published) != len(expected):
                self.findings.add(
                    "tile-size",
                    path,
                    f"a tile of width {tile.width} is {len(expected)} bytes, found {len(published)}",
                    expected=str(len(expected)),
                    found=str(len(published)),
                )
            else:
                span = 1 << (TILE_HEIGHT * tile.level)
                for position in range(tile.width):
                    at = position * HASH_SIZE
                    want, got = expected[at : at + HASH_SIZE], published[at : at + HASH_SIZE]
                    if want != got:
                        first = (tile.index * TILE_WIDTH + position) * span
                        diffs.append(_TileDiff(path, position, first, first + span, want, got))
        return diffs

    def _check_roots(self, log: _Log, tree: _Tree, diffs: list[_TileDiff]) -> None:
        checked = [s for s in log.signed if s.size <= tree.size]
        good = {id(s): tree.root(s.size) == s.root for s in checked}
        # Where the rebuilt leaves differ from the published tiles and a checkpoint does not
        # match the entries, ask the signature which side is right: if the published tiles give
        # the signed root, the entries were changed, not the tiles.
        level0: dict[int, _TileDiff] = {}
        for diff in diffs:
            if diff.end - diff.first == 1:
                level0.setdefault(diff.first, diff)  # the newest size's tile, listed first
        wrong_entries: set[int] = set()
        tiles_agree: set[int] = set()  # ids of mismatched checkpoints the published tiles give
        if level0:
            for signed in checked:
                if not good[id(signed)] and self._published_root(log, signed.size) == signed.root:
                    tiles_agree.add(id(signed))
                    wrong_entries.update(j for j in level0 if j < signed.size)
        explained = {
            id(s)
            for s in checked
            if id(s) in tiles_agree and any(j < s.size for j in wrong_entries)
        }
        for j in sorted(wrong_entries):
            bundle = _bundle_of(j, tree.size)
            diff = level0[j]
            self.findings.add(
                "entry-mismatch",
                f"{log.name}/{bundle.path}",
                f"leaf {j}: the entry hashes to {diff.expected.hex()}, but the signed tree "
                f"holds {diff.found.hex()} ({diff.path})",
                index=j,
                expected=diff.found.hex(),
                found=diff.expected.hex(),
            )
        for diff in diffs:
            if any(diff.first <= j < diff.end for j in wrong_entries):
                continue  # the tile is right; the entry was reported
            self.findings.add(
                "tile-mismatch",
                diff.path,
                f"hash {diff.position}: expected {diff.expected.hex()} (from entries), "
                f"found {diff.found.hex()}",
                index=diff.first,
                expected=diff.expected.hex(),
                found=diff.found.hex(),
            )
        for n, signed in enumerate(checked):
            if good[id(signed)] or id(signed) in explained:
                continue
            rebuilt = tree.root(signed.size)
            later_good = any(good[id(s)] for s in checked[n + 1 :] if s.size > signed.size)
            if later_good:
                self.findings.add(
                    "history-rewritten",
                    signed.file,
                    f"the entries give another root at size {signed.size} than this checkpoint "
                    "signs, while later checkpoints match them: the log's history was rewritten "
                    f"(inconsistent with checkpoint {signed.file})",
                    expected=_b64(rebuilt),
                    found=_b64(signed.root),
                )
            else:
                self.findings.add(
                    "root-mismatch",
                    signed.file,
                    f"the entries give root {_b64(rebuilt)} at size {signed.size}, the "
                    f"checkpoint signs {_b64(signed.root)}",
                    expected=_b64(rebuilt),
                    found=_b64(signed.root),
                )
        for older, newer in itertools.pairwise(checked):
            # RFC 9162 §2.1.4: the proof is built from the rebuilt tree and checked against the
            # signed roots, an independent path to the same answer as the roots above.
            proof = merkle.consistency_proof(older.size, newer.size, tree.reader(newer.size))
            try:
                merkle.verify_consistency(older.size, newer.size, proof, older.root, newer.root)
            except merkle.ProofError as exc:
                pair = (older, newer)
                if any(id(s) in explained for s in pair) and all(
                    good[id(s)] or id(s) in explained for s in pair
                ):
                    continue  # the changed entries, reported above, are why
                self.findings.add(
                    "inconsistent-history",
                    newer.file,
                    f"size {newer.size} does not extend checkpoint {older.file} (size "
                    f"{older.size}): {exc}",
                    expected=f"a tree extending {older.file}",
                    found=_b64(newer.root),
                )
        self._check_partial_bundles(log, tree, checked, wrong_entries, level0)

    def _published_root(self, log: _Log, size: int) -> bytes | None:
        def fetch(tile: Tile) -> bytes:
            data = self.source.read(f"{log.name}/{tile.path}")
            if data is None:
                raise KeyError(tile.path)
            return data

        try:
            return TreeBuilder.resume(size, TileReader(size, fetch)).root()
        except (LookupError, ValueError):
            return None

    def _check_partial_bundles(
        self,
        log: _Log,
        tree: _Tree,
        checked: list[_Signed],
        wrong_entries: set[int],
        level0: dict[int, _TileDiff],
    ) -> None:
        """Each checkpoint's partial bundle holds the log's entries at that size."""
        bundles = {
            Bundle(s.size // TILE_WIDTH, s.size % TILE_WIDTH)
            for s in checked
            if s.size % TILE_WIDTH and s.size < tree.size
        }
        ordered = sorted(bundles, key=lambda b: (b.index, b.width))
        paths = [f"{log.name}/{bundle.path}" for bundle in ordered]
        for bundle, path, data in zip(ordered, paths, self.source.read_many(paths), strict=True):
            if data is None:
                self.findings.add(
                    "missing-file", path, "the checkpoint's partial bundle is missing"
                )
                continue
            try:
                entries = decode_bundle(data, bundle.width)
            except TileError as exc:
                self.findings.add("bad-bundle", path, str(exc), index=bundle.start)
                continue
            for offset, digest in enumerate(_leaf_hashes(entries)):
                j = bundle.start + offset
                trusted = level0[j].found if j in wrong_entries else tree.leaf(j)
                if digest != trusted:
                    self.findings.add(
                        "bundle-mismatch",
                        path,
                        f"leaf {j}: the entry hashes to {digest.hex()}, the log's leaf is "
                        f"{trusted.hex()}",
                        index=j,
                        expected=trusted.hex(),
                        found=digest.hex(),
                    )

    # -- meaning: the admin log ----------------------------------------------------------------

    def _check_admin_bundle(self, start: int, entries: list[bytes], path: str) -> None:
        for offset, entry in enumerate(entries):
            index = start + offset
            try:
                record = decode_admin(entry)
            except LeafError as exc:
                self.findings.add("bad-record", path, f"leaf {index}: {exc}", index=index)
                self.admin_records.append((index, None, path))
                continue
            if record.poll_id != self.poll:
                self.findings.add(
                    "record-poll",
                    path,
                    f"leaf {index}: an admin record of poll {record.poll_id!r}",
                    index=index,
                    expected=self.poll,
                    found=record.poll_id,
                )
            self.admin_records.append((index, record, path))

    def _check_admin_order(self) -> None:
        """created first (with the definition), then opened and/or closed, in that order."""
        previous: AdminAction | None = None
        for index, record, path in self.admin_records:
            if record is None:
                continue  # a bad record, reported already
            action = record.action
            if index == 0 and action is AdminAction.CREATED:
                self.definition = record.definition
                previous = action
                continue
            if index == 0:
                expected = "created"
            elif previous is None:
                continue  # the log does not start right: that is reported, the rest cannot be judged
            elif action in _NEXT_ACTIONS[previous]:
                previous = action
                continue
            else:
                expected = " or ".join(a.name.lower() for a in _NEXT_ACTIONS[previous]) or "nothing"
            self.findings.add(
                "admin-order",
                path,
                f"leaf {index}: {action.name.lower()}"
                + (f" after {previous.name.lower()}" if previous else " first")
                + f", expected {expected}",
                index=index,
                expected=expected,
                found=action.name.lower(),
            )
        if self.definition is None:
            self.findings.add(
                "missing-definition",
                layout.checkpoint_path(layout.ADMIN_LOG),
                "the admin log does not start with a created record: options and lanes are unknown",
            )
        self.report.state = _STATE_NAMES[previous] if previous is not None else None
        self.closed = previous is AdminAction.CLOSED

    # -- meaning: the votes (the hot path) -----------------------------------------------------

    def _check_vote_bundle(
        self, context: _LaneContext, start: int, entries: list[bytes], path: str
    ) -> None:
        try:
            records = list(map(decode_leaf, entries))
        except LeafError:
            self._check_votes_one_by_one(context, start, entries, path)
            return
        count = len(records)
        pseudonyms = list(map(_PSEUDONYM, records))
        options = Counter(map(_OPTION, records))
        seen = self.seen
        if (
            list(map(_SEQ, records)) == list(range(start + 1, start + count + 1))
            and set(map(_LANE, records)) == context.lane_set
            and set(map(_POLL, records)) == context.poll_set
            and set(map(_STATUS, records)) == _ACCEPTED
            and (context.options is None or options.keys() <= context.options)
            and (context.deadline is None or max(map(_ACCEPTED_MS, records)) < context.deadline)
            and context.placed(pseudonyms)
            and seen.isdisjoint(pseudonyms)
        ):
            before = len(seen)
            seen.update(pseudonyms)
            if len(seen) - before == count:
                self.counts.update(options)
                context.pseudonyms.append((start, path, pseudonyms))
                return
            seen.difference_update(pseudonyms)  # they were all new: undo, then go leaf by leaf
        self._check_votes_one_by_one(context, start, entries, path, records)

    def _check_votes_one_by_one(
        self,
        context: _LaneContext,
        start: int,
        entries: list[bytes],
        path: str,
        decoded: list[VoteRecord] | None = None,
    ) -> None:
        pseudonyms: list[bytes | None] = []
        for offset, entry in enumerate(entries):
            index = start + offset
            if decoded is not None:
                record = decoded[offset]
            else:
                try:
                    record = decode_leaf(entry)
                except LeafError as exc:
                    self.findings.add("bad-record", path, f"leaf {index}: {exc}", index=index)
                    pseudonyms.append(None)
                    continue
            pseudonyms.append(record.pseudonym)
            self._check_vote(context, index, record, path)
        context.pseudonyms.append((start, path, pseudonyms))

    def _check_vote(self, context: _LaneContext, index: int, record: VoteRecord, path: str) -> None:
        add = self.findings.add
        if record.poll_id != self.poll:
            add(
                "record-poll",
                path,
                f"leaf {index}: a vote of poll {record.poll_id!r}",
                index=index,
                expected=self.poll,
                found=record.poll_id,
            )
        if record.lane != context.lane:
            add(
                "record-lane",
                path,
                f"leaf {index}: the record says lane {record.lane}, in the log of lane "
                f"{context.lane}",
                index=index,
                expected=str(context.lane),
                found=str(record.lane),
            )
        if record.seq != index + 1:
            add(
                "seq-mismatch",
                path,
                f"leaf {index}: expected seq {index + 1}, found {record.seq} (a vote was "
                "dropped, repeated or moved)",
                index=index,
                expected=str(index + 1),
                found=str(record.seq),
            )
        known = context.options is None or record.option_id in context.options
        if not known:
            add(
                "unknown-option",
                path,
                f"leaf {index}: a vote for {record.option_id!r}, not an option of the poll",
                index=index,
                expected=", ".join(sorted(context.options or ())),
                found=record.option_id,
            )
        placed = context.lane_of(record.pseudonym)
        if placed is not None and placed != context.lane:
            add(
                "wrong-lane",
                path,
                f"leaf {index}: pseudonym {record.pseudonym.hex()} maps to lane {placed}, not "
                f"{context.lane}",
                index=index,
                expected=str(context.lane),
                found=str(placed),
            )
        if context.deadline is not None and record.accepted_ms >= context.deadline:
            add(
                "late-vote",
                path,
                f"leaf {index}: accepted at {record.accepted_ms} ms, the deadline is "
                f"{context.deadline} ms",
                index=index,
                expected=f"< {context.deadline}",
                found=str(record.accepted_ms),
            )
        if record.status is not VoteStatus.ACCEPTED:
            add(
                "vote-status",
                path,
                f"leaf {index}: status {record.status.name.lower()}, not accepted",
                index=index,
                expected="accepted",
                found=record.status.name.lower(),
            )
        if record.pseudonym in self.seen:
            self.duplicates.append((record.pseudonym, index, path))
        else:
            self.seen.add(record.pseudonym)
        if known and record.status is VoteStatus.ACCEPTED:
            self.counts[record.option_id] += 1

    def _report_duplicates(self) -> None:
        if not self.duplicates:
            return
        wanted = {pseudonym for pseudonym, _, _ in self.duplicates}
        first: dict[bytes, tuple[int, str]] = {}
        for context in self.lane_contexts:
            for start, path, pseudonyms in context.pseudonyms:
                for offset, pseudonym in enumerate(pseudonyms):
                    if pseudonym in wanted and pseudonym not in first:
                        first[pseudonym] = (start + offset, path)
        for pseudonym, index, path in self.duplicates:
            where = first.get(pseudonym)
            earlier = f"{where[1]} leaf {where[0]}" if where else "an earlier leaf"
            self.findings.add(
                "duplicate-pseudonym",
                path,
                f"leaf {index}: pseudonym {pseudonym.hex()} already voted at {earlier}",
                index=index,
                expected="one vote per pseudonym",
                found=earlier,
            )

    # -- the result certificate ----------------------------------------------------------------

    def _check_certificate(self, logs: list[_Log]) -> None:
        file = layout.CERTIFICATE
        signed = self.source.read(file)
        closed = self.closed
        if signed is None:
            if closed:
                self.findings.add(
                    "certificate-missing",
                    file,
                    "the admin log closes the poll, but there is no certificate",
                )
                self.report.certificate = "missing"
            else:
                self.report.certificate = "not-closed"
            return
        before = len(self.findings)
        origin = certificate_origin(self.prefix, self.poll)
        try:
            certificate = open_certificate(signed, [self.key.renamed(origin)], origin=origin)
        except note.NoteError as exc:
            self.findings.add("bad-signature", file, f"the certificate does not verify: {exc}")
            self.report.certificate = "invalid"
            return
        except CertificateError as exc:
            self.findings.add("bad-certificate", file, str(exc), expected=origin)
            self.report.certificate = "invalid"
            return
        if not closed:
            self.findings.add(
                "certificate-not-closed",
                file,
                "a result certificate is published, but the admin log does not close the poll",
            )
        if certificate.poll_id != self.poll:
            self.findings.add(
                "certificate-poll",
                file,
                f"the certificate is of poll {certificate.poll_id!r}",
                expected=self.poll,
                found=certificate.poll_id,
            )
        by_name = {log.name: log for log in logs}
        heads = [(layout.ADMIN_LOG, certificate.admin)]
        heads += [(layout.lane_log(n), head) for n, head in enumerate(certificate.lanes)]
        lanes = self.definition.lanes if self.definition is not None else None
        if lanes is not None and len(certificate.lanes) != lanes:
            self.findings.add(
                "certificate-log",
                file,
                f"the certificate names {len(certificate.lanes)} lanes, the poll has {lanes}",
                expected=str(lanes),
                found=str(len(certificate.lanes)),
            )
        for name, head in heads:
            log = by_name.get(name)
            latest = (
                None if log is None else (log.latest or (log.signed[-1] if log.signed else None))
            )
            if latest is None:
                continue  # the log's missing checkpoint is a finding already
            if (head.size, head.root) != (latest.size, latest.root):
                self.findings.add(
                    "certificate-log",
                    file,
                    f"log {name}: certified at size {head.size}, its latest checkpoint "
                    f"({latest.file}) is size {latest.size}",
                    expected=f"{latest.size} {_b64(latest.root)}",
                    found=f"{head.size} {_b64(head.root)}",
                )
        certified = dict(certificate.counts)
        if self.definition is not None:
            defined = [o.id for o in self.definition.options]
            if [option for option, _ in certificate.counts] != defined:
                self.findings.add(
                    "certificate-options",
                    file,
                    "the certificate does not count exactly the poll's options, in order",
                    expected=" ".join(defined),
                    found=" ".join(option for option, _ in certificate.counts),
                )
            options = defined
        else:
            options = list(certified)
        for option in options:
            recount = self.counts[option]
            claimed = certified.get(option)
            if claimed is not None and claimed != recount:
                self.findings.add(
                    "count-mismatch",
                    file,
                    f"option {option}: certified {claimed} votes, the leaves hold {recount}",
                    expected=str(recount),
                    found=str(claimed),
                )
        self.report.certificate = "verified" if len(self.findings) == before else "invalid"

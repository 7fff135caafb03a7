"""Step 1 of ``tally audit verify``: which poll, which logs, and their signed checkpoints.

Every later step trusts only what a verified checkpoint signs, so this one decides what there is
to check: the poll the admin log is signed for, every published log of it, and, per log, the
checkpoints (the history and the latest) that verify under the ledger key renamed to the log's
origin, by increasing size. Earlier copies of the ledger (``--known``) add their checkpoints to
the history, each named by its copy.

Witnesses (``--witness``, :class:`WitnessChecks`): the newest checkpoint of each log must carry
valid cosignatures (C2SP tlog-cosignature) from at least ``--min-witnesses`` of the given
witness keys. Only the newest, because it is the one that matters and the one that can be
required: it commits to every entry (every earlier checkpoint is checked against those entries
in step 3), and a witness cosigns it only if it extends what that witness cosigned before, so a
log rewritten after a witness saw it cannot show that witness's cosignature on its newest
checkpoint. An earlier checkpoint published while a witness was down lacks its line for good;
requiring it there would fail honest ledgers. Every cosignature by a given witness on any
checkpoint must still verify, carry a time that is not in the future, and not go back in time
as the log grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from tally.audit.source import History, Source
from tally.audit.verify_findings import Findings, b64
from tally.ledger import layout, note
from tally.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    admin_origin,
    lane_origin,
    open_checkpoint,
)
from tally.ledger.cosignature import CosignatureVerifier, check_cosignatures

__all__ = [
    "KNOWN",
    "MAX_WITNESS_SKEW_S",
    "CheckpointChecks",
    "Log",
    "Signed",
    "WitnessChecks",
    "with_known",
]

KNOWN = " (known): "  # names a checkpoint from an earlier copy: "<copy> (known): <file>"


@dataclass(frozen=True, slots=True)
class Signed:
    """A verified checkpoint and the path it is published under."""

    file: str
    checkpoint: Checkpoint
    note: bytes = b""  # the signed note itself, with any witness cosignatures

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


@dataclass(slots=True)
class Log:
    """One log of the poll, and its verified checkpoints (by increasing size)."""

    name: str
    lane: int | None
    origin: str
    verifier: note.Verifier
    signed: list[Signed] = field(default_factory=list)
    latest: Signed | None = None

    @property
    def size(self) -> int:
        """The size of the newest verified checkpoint: how far the log is checked."""
        return self.signed[-1].size if self.signed else 0


def with_known(history: History, known: Sequence[Source]) -> History:
    """The source's history plus every checkpoint of the known copies, each named by its
    copy, so a finding about one says which earlier copy it came from."""
    logs = {log: list(notes) for log, notes in history.logs.items()}
    for copy in known:
        for log, notes in copy.history().logs.items():
            logs.setdefault(log, []).extend(
                (f"{copy.location}{KNOWN}{file}", signed) for file, signed in notes
            )
    return replace(history, logs=logs)


class CheckpointChecks:
    """The poll, its logs, and each log's verified checkpoints, from one source and key."""

    def __init__(self, source: Source, key: note.Verifier, findings: Findings) -> None:
        self.source = source
        self.key = key
        self.prefix = key.name
        self.findings = findings

    # -- which poll ----------------------------------------------------------------------------

    def find_poll(self, history: History, wanted_poll: str | None) -> str | None:
        """The poll the admin log is signed for: from its origin ``<prefix>/<poll>/admin``."""
        notes = [self.source.read(layout.checkpoint_path(layout.ADMIN_LOG))]
        notes += [signed for _, signed in history.logs.get(layout.ADMIN_LOG, [])]
        signed_poll = next(filter(None, map(self._poll_of, notes)), None)
        poll = wanted_poll or signed_poll or history.poll_id
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
        return self._checked_poll(poll, history)

    def _checked_poll(self, poll: str, history: History) -> str | None:
        """``poll``, once the source's claim agrees with it and it makes an origin."""
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

    # -- which logs, and their checkpoints -----------------------------------------------------

    def logs(self, history: History, poll: str) -> list[Log]:
        """Every published log with its verified checkpoints, admin first, then lanes in order."""
        logs: list[Log] = []
        for name, notes in history.logs.items():
            lane = layout.parse_log(name)
            if lane is None:
                origin = admin_origin(self.prefix, poll)
            else:
                origin = lane_origin(self.prefix, poll, lane)
            log = Log(name, lane, origin, self.key.renamed(origin))
            self._verify_checkpoints(log, notes)
            logs.append(log)
        logs.sort(key=lambda log: -1 if log.lane is None else log.lane)
        return logs

    def _verify_checkpoints(self, log: Log, notes: list[tuple[str, bytes]]) -> None:
        verified = self._verify_history(log, notes)
        self._add_latest(log, verified)
        unique: list[Signed] = []
        for item, _ in verified:
            if unique and unique[-1].checkpoint == item.checkpoint:
                continue  # the same tree head listed twice
            unique.append(item)
        log.signed = unique

    def _verify_history(
        self, log: Log, notes: list[tuple[str, bytes]]
    ) -> list[tuple[Signed, bytes]]:
        """The history checkpoints that verify, by size, each with the note it was opened from."""
        verified: list[tuple[Signed, bytes]] = []
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
            verified.append((Signed(file, checkpoint, signed), signed))
        # By size; at equal sizes a known copy's checkpoint first, so the newest is the source's.
        verified.sort(key=lambda item: (item[0].size, KNOWN not in item[0].file))
        return verified

    def _add_latest(self, log: Log, verified: list[tuple[Signed, bytes]]) -> None:
        """Verify the log's latest checkpoint, and check that it is the newest in ``verified``."""
        latest_file = layout.checkpoint_path(log.name)
        latest = self.source.read(latest_file)
        if latest is None:
            self.findings.add("missing-file", latest_file, "the log's latest checkpoint is missing")
            return
        checkpoint = self._open(log, latest_file, latest)
        if checkpoint is None:
            return
        log.latest = Signed(latest_file, checkpoint, latest)
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
                (Signed(layout.history_path(log.name, checkpoint.size), checkpoint, latest), latest)
            )
        elif latest != verified[-1][1]:
            self._latest_mismatch(log.latest, latest, verified)

    def _latest_mismatch(
        self, latest: Signed, published: bytes, verified: list[tuple[Signed, bytes]]
    ) -> None:
        """The latest checkpoint (``published``) is not the newest verified: say so, and check
        the entries against it too if the history lacks it."""
        newest = verified[-1][0]
        self.findings.add(
            "latest-mismatch",
            latest.file,
            f"the latest checkpoint is not the newest in the history ({newest.file})",
            expected=f"size {newest.size} root {b64(newest.root)}",
            found=f"size {latest.size} root {b64(latest.root)}",
        )
        if all(signed != published for _, signed in verified):
            verified.append((latest, published))
            verified.sort(key=lambda item: item[0].size)

    # -- one checkpoint ------------------------------------------------------------------------

    def _open(self, log: Log, file: str, signed: bytes) -> Checkpoint | None:
        """The checkpoint ``signed`` if it verifies as one of ``log``; else a finding, and None."""
        try:
            return open_checkpoint(signed, [log.verifier], origin=log.origin)
        except note.UnverifiedNote as exc:
            self._unverified(log, file, signed, exc)
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
            self._malformed(log, file, signed, exc)
        return None

    def _unverified(self, log: Log, file: str, signed: bytes, exc: note.UnverifiedNote) -> None:
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
            return
        names = ", ".join(f"{name}+{kid:08x}" for name, kid in exc.unknown) or "none"
        self.findings.add(
            "bad-signature",
            file,
            f"not signed by the ledger key for {log.origin} (signed by: {names})",
            expected=str(log.verifier),
            found=names,
        )

    def _malformed(self, log: Log, file: str, signed: bytes, exc: CheckpointError) -> None:
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


# A witness's clock may run ahead of the auditor's by this much before its time is "future".
MAX_WITNESS_SKEW_S = 300


class WitnessChecks:
    """Each log's newest checkpoint carries ``required`` valid cosignatures of ``witnesses``."""

    def __init__(
        self,
        witnesses: Sequence[CosignatureVerifier],
        required: int,
        findings: Findings,
        now_s: float,
    ) -> None:
        self.witnesses = list(witnesses)
        self.required = required
        self.findings = findings
        self.now_s = now_s

    def check(self, logs: Sequence[Log]) -> None:
        for log in logs:
            self._check_log(log)

    def _check_log(self, log: Log) -> None:
        ours = [s for s in log.signed if KNOWN not in s.file]  # a known copy's is not published
        last: dict[str, tuple[int, int]] = {}  # witness name -> (size, time) cosigned last
        valid_on_newest = 0
        for signed in ours:
            valid_on_newest = 0
            try:
                check = check_cosignatures(signed.note, self.witnesses)
            except note.NoteError:
                continue  # reported as a malformed checkpoint already
            for name, key_id in check.invalid:
                self.findings.add(
                    "witness-bad-signature",
                    signed.file,
                    f"the cosignature of witness {name} does not verify",
                    expected=self._key(name, key_id),
                )
            for cosignature in check.valid:
                self._check_time(signed, cosignature.name, cosignature.timestamp, last)
            valid_on_newest = len(check.valid)
        newest = ours[-1] if ours else None
        if newest is not None and valid_on_newest < self.required:
            names = ", ".join(w.name for w in self.witnesses)
            self.findings.add(
                "witness-missing",
                newest.file,
                f"the log's newest checkpoint (size {newest.size}) carries {valid_on_newest} "
                f"valid witness cosignatures, {self.required} required (of: {names})",
                expected=str(self.required),
                found=str(valid_on_newest),
            )

    def _check_time(
        self, signed: Signed, name: str, timestamp: int, last: dict[str, tuple[int, int]]
    ) -> None:
        if timestamp > self.now_s + MAX_WITNESS_SKEW_S:
            self.findings.add(
                "witness-time",
                signed.file,
                f"witness {name} cosigned at {_utc(timestamp)}, in the future",
                found=str(timestamp),
            )
        before = last.get(name)
        if before is not None and timestamp < before[1]:
            self.findings.add(
                "witness-time",
                signed.file,
                f"witness {name} cosigned size {signed.size} at {_utc(timestamp)}, before its "
                f"cosignature of the smaller size {before[0]} ({_utc(before[1])})",
                expected=f">= {before[1]}",
                found=str(timestamp),
            )
        last[name] = (signed.size, timestamp)

    def _key(self, name: str, key_id: int) -> str:
        for witness in self.witnesses:
            if (witness.name, witness.key_id) == (name, key_id):
                return str(witness)
        return name


def _utc(timestamp: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(timestamp)

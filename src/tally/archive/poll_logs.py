"""A poll's logs as the archiver writes them: the admin log and one vote log per lane.

Synchronous and CPU/disk bound: the archiver runs these methods in a worker thread. Queue entries
become records here (:mod:`tally.ledger.leaf`, :mod:`tally.ledger.admin`), strictly: an entry
that does not make a valid record, or a seq out of order, stops the poll's archiving rather than
publish a log that differs from what was voted.
"""

from __future__ import annotations

from collections.abc import Sequence

from tally.archive.logs import LogWriter
from tally.domain.polls import Poll, PollState
from tally.ledger import layout, merkle
from tally.ledger.admin import AdminAction, AdminRecord, PollDefinition, PollOption, encode_admin
from tally.ledger.certificate import (
    LogHead,
    ResultCertificate,
    certificate_origin,
    sign_certificate,
)
from tally.ledger.checkpoint import admin_origin, lane_origin
from tally.ledger.leaf import LeafError, VoteRecord, encode_leaf
from tally.ledger.note import Signer
from tally.ports import PollFiles, QueuedAdminAction, QueuedEntry, QueuedVote

__all__ = ["ArchiveError", "PollLogs"]

_ACTIONS = {
    PollState.DRAFT: AdminAction.CREATED,
    PollState.OPEN: AdminAction.OPENED,
    PollState.CLOSED: AdminAction.CLOSED,
}


class ArchiveError(RuntimeError):
    """A queue entry cannot be archived as it is (out of order, or not a valid record)."""


def definition_of(poll: Poll) -> PollDefinition:
    options = tuple(PollOption(o.id, o.label) for o in poll.options)
    return PollDefinition(poll.title, poll.lanes, poll.closes_at_ms, options)


class PollLogs:
    """The writers of one poll's logs, resumed from disk."""

    def __init__(self, files: PollFiles, poll: Poll, signer: Signer) -> None:
        self.poll = poll
        self._files = files
        self._signer = signer
        prefix = signer.name
        self.admin = LogWriter.open(
            self._files, layout.ADMIN_LOG, admin_origin(prefix, poll.id), signer
        )
        self.lanes = [
            LogWriter.open(
                self._files, layout.lane_log(lane), lane_origin(prefix, poll.id, lane), signer
            )
            for lane in range(poll.lanes)
        ]

    @property
    def logs(self) -> list[int | None]:
        """Every log: None (admin), then the lanes."""
        return [None, *range(self.poll.lanes)]

    def writer(self, log: int | None) -> LogWriter:
        return self.admin if log is None else self.lanes[log]

    def next_seqs(self) -> list[int]:
        """The seq each log's next queue entry must carry, in `logs` order."""
        return [self.writer(log).appended + 1 for log in self.logs]

    def published_seqs(self) -> list[int]:
        """For each log, the first seq not yet covered by a published checkpoint."""
        return [self.writer(log).size + 1 for log in self.logs]

    def append(self, batches: Sequence[Sequence[QueuedEntry]]) -> int:
        """Append each log's batch (in `logs` order); returns the entries appended."""
        appended = 0
        for log, batch in zip(self.logs, batches, strict=True):
            writer = self.writer(log)
            for entry in batch:
                if entry.seq != writer.appended + 1:
                    raise ArchiveError(
                        f"poll {self.poll.id} log {_name(log)}: queue entry {entry.seq} follows "
                        f"{writer.appended}: entries are missing"
                    )
                data = self._admin_entry(entry) if log is None else self._vote_entry(log, entry)
                writer.append(data, merkle.leaf_hash(data))
            appended += len(batch)
        return appended

    def publish(self) -> int:
        """Publish a checkpoint of every log that grew (and a first one of every empty log);
        returns how many were published."""
        return sum(self.writer(log).publish() is not None for log in self.logs)

    def certify(self, counts: Sequence[tuple[str, int]]) -> bytes:
        """Sign and store the result certificate: `counts` bound to every log's latest checkpoint.
        Call only once every log is final (the poll closed and its queues drained)."""
        self.publish()
        origin = certificate_origin(self._signer.name, self.poll.id)
        certificate = ResultCertificate(
            origin,
            self.poll.id,
            LogHead(self.admin.size, self.admin.root()),
            tuple(LogHead(w.size, w.root()) for w in self.lanes),
            tuple(counts),
        )
        signed = sign_certificate(certificate, [self._signer.renamed(origin)])
        self._files.write_once(layout.CERTIFICATE, signed)
        self._files.sync()
        return signed

    def _vote_entry(self, lane: int, entry: QueuedEntry) -> bytes:
        if not isinstance(entry, QueuedVote):
            raise ArchiveError(f"poll {self.poll.id} lane {lane}: {entry!r} is not a vote")
        try:
            record = VoteRecord(
                self.poll.id, lane, entry.seq, entry.pseudonym, entry.option, entry.accepted_ms
            )
        except LeafError as exc:
            raise ArchiveError(f"poll {self.poll.id} lane {lane}: {exc}") from None
        return encode_leaf(record)

    def _admin_entry(self, entry: QueuedEntry) -> bytes:
        if not isinstance(entry, QueuedAdminAction):
            raise ArchiveError(f"poll {self.poll.id} admin log: {entry!r} is not an admin action")
        action = _ACTIONS[entry.state]
        if (action is AdminAction.CREATED) != (entry.seq == 1):
            raise ArchiveError(f"poll {self.poll.id}: the admin log must start with 'created'")
        definition = definition_of(self.poll) if action is AdminAction.CREATED else None
        try:
            record = AdminRecord(self.poll.id, action, entry.at_ms, entry.actor, definition)
            return encode_admin(record)
        except LeafError as exc:
            raise ArchiveError(f"poll {self.poll.id} admin entry {entry.seq}: {exc}") from None


def _name(log: int | None) -> str:
    return layout.ADMIN_LOG if log is None else layout.lane_log(log)

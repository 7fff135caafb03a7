"""A poll's logs as the archiver writes them: the admin log and one vote log per lane.

Synchronous and CPU/disk bound: the archiver runs these methods in a worker thread. Queue entries
become records here (:mod:`tally.ledger.leaf`, :mod:`tally.ledger.review`,
:mod:`tally.ledger.admin`), strictly: an entry that does not make a valid record, or a seq out of
order, stops the poll's archiving rather than publish a log that differs from what was voted.

Hold for review: a held vote is a vote record with status HELD, a reviewer's decision a review
record in the same lane and a REVIEWED record in the admin log. The poll's review state (held
votes still undecided, decisions not yet in the admin log) decides when it can be certified. It
is followed as entries are appended; an archiver that resumed a poll's logs reads it from the
published leaves once, when the poll is to be certified.
"""

from __future__ import annotations

from collections.abc import Sequence

from tally.archive.logs import LogWriter
from tally.domain.polls import Poll, PollState
from tally.ledger import layout, merkle
from tally.ledger.admin import (
    AdminAction,
    AdminRecord,
    PollDefinition,
    PollOption,
    ReviewedVote,
    decode_admin,
    encode_admin,
)
from tally.ledger.certificate import (
    LogHead,
    ResultCertificate,
    ReviewTotals,
    certificate_origin,
    sign_certificate,
)
from tally.ledger.checkpoint import admin_origin, lane_origin
from tally.ledger.leaf import LeafError, VoteRecord, VoteStatus, encode_leaf
from tally.ledger.note import Signer
from tally.ledger.review import (
    Decision,
    LaneReview,
    ReviewRecord,
    decode_lane_record,
    encode_review,
)
from tally.ledger.tiles import bundles_for_size, decode_bundle
from tally.ports import (
    PollFiles,
    QueuedAdminAction,
    QueuedDecision,
    QueuedEntry,
    QueuedReview,
    QueuedVote,
)

__all__ = ["ArchiveError", "PollLogs"]

_ACTIONS = {
    PollState.DRAFT: AdminAction.CREATED,
    PollState.OPEN: AdminAction.OPENED,
    PollState.CLOSED: AdminAction.CLOSED,
}


class ArchiveError(RuntimeError):
    """A queue entry cannot be archived as it is (out of order, or not a valid record)."""


# A held vote, as both logs name it: (lane, its seq).
HeldRef = tuple[int, int]
_HELD = VoteStatus.HELD


class PollReview:
    """The review state of a poll's logs: each lane's LaneReview, and the decisions the lanes and
    the admin log hold (each must have its twin in the other before the poll is certified)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = [LaneReview() for _ in range(lanes)]
        self.in_lanes: dict[HeldRef, Decision] = {}
        self.in_admin: dict[HeldRef, Decision] = {}

    def add(self, poll_id: str, record: VoteRecord | ReviewRecord | AdminRecord) -> None:
        """Follow one record appended to a log; ArchiveError if it breaks a review rule."""
        if type(record) is VoteRecord:  # nearly every record: one test, no allocation
            if record.status is _HELD:
                self.lanes[record.lane].vote(record)
        elif isinstance(record, ReviewRecord):
            problem = self.lanes[record.lane].decide(record)
            if problem is not None:
                raise ArchiveError(
                    f"poll {poll_id} lane {record.lane}: entry {record.seq} ({problem}): {record!r}"
                )
            self.in_lanes[record.lane, record.held_seq] = record.decision
        elif isinstance(record, AdminRecord) and record.review is not None:
            ref = (record.review.lane, record.review.held_seq)
            if ref in self.in_admin:
                raise ArchiveError(f"poll {poll_id} admin log: lane {ref[0]} entry {ref[1]} twice")
            self.in_admin[ref] = record.review.decision

    def waiting_for(self) -> str | None:
        """Why the poll cannot be certified yet (None: it can). Raises ArchiveError if a decision
        of the admin log can never reach its lane (no vote there waits for it)."""
        undecided = sum(len(lane.pending) for lane in self.lanes)
        if undecided:
            return f"{undecided} held votes are not decided yet"
        lanes, admin = self.in_lanes.items(), self.in_admin.items()
        unsigned = lanes - admin
        if unsigned:
            return f"{len(unsigned)} decisions are not in the admin log yet"
        if admin - lanes:
            raise ArchiveError(f"decisions {sorted(admin - lanes)} match no lane's")
        return None

    def totals(self) -> ReviewTotals:
        return ReviewTotals(
            sum(lane.held for lane in self.lanes),
            sum(lane.released for lane in self.lanes),
            sum(lane.voided for lane in self.lanes),
        )


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
        # Followed from the first entry on; a resumed poll's is read from the leaves when needed.
        fresh = all(writer.appended == 0 for writer in (self.admin, *self.lanes))
        self._review = PollReview(poll.lanes) if fresh else None

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
        review, poll_id = self._review, self.poll.id
        for log, batch in zip(self.logs, batches, strict=True):
            writer = self.writer(log)
            for entry in batch:
                if entry.seq != writer.appended + 1:
                    raise ArchiveError(
                        f"poll {poll_id} log {_name(log)}: queue entry {entry.seq} follows "
                        f"{writer.appended}: entries are missing"
                    )
                record = self._admin_entry(entry) if log is None else self._lane_entry(log, entry)
                if review is not None:
                    review.add(poll_id, record)
                data = _encode(record)
                writer.append(data, merkle.leaf_hash(data))
            appended += len(batch)
        return appended

    def publish(self) -> int:
        """Publish a checkpoint of every log that grew (and a first one of every empty log);
        returns how many were published."""
        return sum(self.writer(log).publish() is not None for log in self.logs)

    def review(self) -> PollReview:
        """The poll's review state, read from the published leaves if it was not followed from
        the start. Call after `publish` (every appended entry is then on disk)."""
        if self._review is None:
            self._review = self._read_review()
        return self._review

    def _read_review(self) -> PollReview:
        review = PollReview(self.poll.lanes)
        for log in self.logs:
            writer = self.writer(log)
            if writer.appended != writer.size:
                raise ArchiveError(f"poll {self.poll.id}: review state read before publishing")
            name = _name(log)
            for bundle in bundles_for_size(writer.size):
                data = self._files.read(f"{name}/{bundle.path}")
                if data is None:
                    raise ArchiveError(f"poll {self.poll.id}: {name}/{bundle.path} is missing")
                for entry in decode_bundle(data, bundle.width):
                    try:
                        record = decode_admin(entry) if log is None else decode_lane_record(entry)
                    except LeafError as exc:
                        raise ArchiveError(f"poll {self.poll.id} log {name}: {exc}") from None
                    review.add(self.poll.id, record)
        return review

    def certify(self, counts: Sequence[tuple[str, int]]) -> bytes:
        """Sign and store the result certificate: `counts` bound to every log's latest checkpoint,
        with the review totals. Call only once every log is final (the poll closed and its queues
        drained) and `review().waiting_for()` is None."""
        self.publish()
        review = self.review()
        waiting = review.waiting_for()
        if waiting is not None:
            raise ArchiveError(f"poll {self.poll.id} cannot be certified yet: {waiting}")
        origin = certificate_origin(self._signer.name, self.poll.id)
        certificate = ResultCertificate(
            origin,
            self.poll.id,
            LogHead(self.admin.size, self.admin.root()),
            tuple(LogHead(w.size, w.root()) for w in self.lanes),
            tuple(counts),
            review.totals(),
        )
        signed = sign_certificate(certificate, [self._signer.renamed(origin)])
        self._files.write_once(layout.CERTIFICATE, signed)
        self._files.sync()
        return signed

    def _lane_entry(self, lane: int, entry: QueuedEntry) -> VoteRecord | ReviewRecord:
        try:
            if isinstance(entry, QueuedVote):
                status = VoteStatus.HELD if entry.held else VoteStatus.ACCEPTED
                return VoteRecord(
                    self.poll.id,
                    lane,
                    entry.seq,
                    entry.pseudonym,
                    entry.option,
                    entry.accepted_ms,
                    status,
                )
            if isinstance(entry, QueuedDecision):
                return ReviewRecord(
                    self.poll.id, lane, entry.seq, entry.held_seq, _decision(entry), entry.at_ms
                )
        except LeafError as exc:
            raise ArchiveError(f"poll {self.poll.id} lane {lane}: {exc}") from None
        raise ArchiveError(f"poll {self.poll.id} lane {lane}: {entry!r} is not a vote or decision")

    def _admin_entry(self, entry: QueuedEntry) -> AdminRecord:
        if isinstance(entry, QueuedReview):
            if entry.seq == 1:
                raise ArchiveError(f"poll {self.poll.id}: the admin log must start with 'created'")
            try:
                reviewed = ReviewedVote(entry.lane, entry.held_seq, _decision(entry))
                return AdminRecord(
                    self.poll.id, AdminAction.REVIEWED, entry.at_ms, entry.actor, None, reviewed
                )
            except LeafError as exc:
                raise ArchiveError(f"poll {self.poll.id} admin entry {entry.seq}: {exc}") from None
        if not isinstance(entry, QueuedAdminAction):
            raise ArchiveError(f"poll {self.poll.id} admin log: {entry!r} is not an admin action")
        action = _ACTIONS[entry.state]
        if (action is AdminAction.CREATED) != (entry.seq == 1):
            raise ArchiveError(f"poll {self.poll.id}: the admin log must start with 'created'")
        definition = definition_of(self.poll) if action is AdminAction.CREATED else None
        try:
            return AdminRecord(self.poll.id, action, entry.at_ms, entry.actor, definition)
        except LeafError as exc:
            raise ArchiveError(f"poll {self.poll.id} admin entry {entry.seq}: {exc}") from None


def _decision(entry: QueuedDecision | QueuedReview) -> Decision:
    return Decision.RELEASED if entry.released else Decision.VOIDED


def _encode(record: VoteRecord | ReviewRecord | AdminRecord) -> bytes:
    if isinstance(record, VoteRecord):
        return encode_leaf(record)
    if isinstance(record, ReviewRecord):
        return encode_review(record)
    return encode_admin(record)


def _name(log: int | None) -> str:
    return layout.ADMIN_LOG if log is None else layout.lane_log(log)

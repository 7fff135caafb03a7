"""A poll's logs as the archiver writes them: the admin log and one vote log per lane.

Synchronous and CPU/disk bound: the archiver runs these methods in a worker thread. Queue entries
become records here (:mod:`tally.ledger.leaf`, :mod:`tally.ledger.review`,
:mod:`tally.ledger.admin`), strictly: an entry that does not make a valid record, or a seq out of
order, stops the poll's archiving rather than publish a log that differs from what was voted.

Hold for review: a held vote is a vote record with status HELD, a reviewer's decision a review
record in the same lane and a REVIEWED record in the admin log. The poll's review state (held
votes still undecided, decisions not yet in the admin log) decides when it can be certified.

The recount (:class:`PollReview` again: it follows every record): per lane and option, accepted
votes plus released held votes, less any vote whose admission signature fails (in a poll whose
admin log names admission keys). The result certificate is built from it, and the archiver holds
the live counters against it (integrity alarms, :mod:`tally.domain.integrity`). Review state and
recount are followed as entries are appended; an archiver that resumes a poll's logs rebuilds
them from the published leaves when it opens them (the leaves are what auditors recount, so a
rebuilt recount is exactly theirs; a recount saved beside the checkpoint would be one more file
to trust). That costs one read of the poll's bundles per takeover.

A gap in a log's queue (an entry deleted: seq 7 followed by 9) no longer stops the poll: that log
stops at the gap (`gaps`, and it is read no further), every other log goes on, and the archiver
raises a ledger-gap alarm. What was archived stays published and verifiable.

The admission check is nearly all of the recount's cost (an Ed25519 verification per vote, some
60 us of CPU on a quiet core): :meth:`PollLogs.append` checks every vote of a cycle's lane batches
in one :func:`~tally.ledger.admission.check_admissions` call, on the thread pool the archiver
lends (TALLY_ARCHIVER_VERIFY_THREADS; pyca/cryptography releases the interpreter lock while it
verifies), and the rebuild at takeover does the same. The admin log's batch is applied first, so
the keys it names in that cycle are in effect for the lanes, as they were when each vote was
checked as it was added. Results come back in order, so the recount, its refusals and the alarms
are the same whatever the pool's size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import Enum

from tally.archive.logs import LogWriter
from tally.domain.polls import Poll, PollState
from tally.domain.turnout import minute_of
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
from tally.ledger.admission import (
    AdmissionKey,
    check_admission,
    check_admissions,
    keys_from_admin,
)
from tally.ledger.certificate import (
    Integrity,
    LogHead,
    ResultCertificate,
    ReviewTotals,
    certificate_origin,
    sign_certificate,
)
from tally.ledger.checkpoint import admin_origin, lane_origin
from tally.ledger.leaf import Admission, LeafError, VoteRecord, VoteStatus, encode_leaf
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
    QueuedAdmissionKey,
    QueuedDecision,
    QueuedEntry,
    QueuedReview,
    QueuedVote,
)

__all__ = ["ArchiveError", "Gap", "LaneCount", "PollLogs", "Refused"]

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
# Votes per task on the verify pool: ~15 ms of Ed25519 verification on a quiet core, so the
# pool's cost per task (tens of us) is lost in it, and a cycle's few thousand votes still make
# enough tasks to keep every thread busy.
CHECK_CHUNK = 256
# Votes decoded from the published bundles and checked at once when a recount is rebuilt: 16
# full bundles, so a large poll's rebuild never holds all of its records.
REBUILD_BATCH = 4096


class _Unchecked(Enum):
    UNCHECKED = "unchecked"


# PollReview.add's `admission` when the caller has not checked the vote: add checks it.
UNCHECKED = _Unchecked.UNCHECKED
Admitted = str | None | _Unchecked


@dataclass(frozen=True, slots=True)
class LaneCount:
    """A lane's recount after its entry `seq`: counts per option (accepted + released, less
    votes whose admission fails) and held votes not decided yet."""

    seq: int
    counts: dict[str, int]
    held: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A vote the recount does not count: its admission check failed with `reason`."""

    lane: int
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """A log's queue skips entries: the log holds entries up to `expected - 1`, and the next
    entry its queue holds is `found` (> expected)."""

    expected: int
    found: int


class PollReview:
    """The review state and recount of a poll's logs: each lane's LaneReview and counts, and the
    decisions the lanes and the admin log hold (each must have its twin in the other before the
    poll is certified)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = [LaneReview() for _ in range(lanes)]
        self.in_lanes: dict[HeldRef, Decision] = {}
        self.in_admin: dict[HeldRef, Decision] = {}
        self.accepted: list[Counter[str]] = [Counter() for _ in range(lanes)]
        # Votes refused by the admission check, by lane: held ones (seq -> option) are not
        # counted when released; released ones are taken off the counts.
        self._refused_held: list[dict[int, str]] = [{} for _ in range(lanes)]
        self._uncounted: list[Counter[str]] = [Counter() for _ in range(lanes)]
        self.refused: list[Refused] = []  # since the caller last took them
        # Ballots per minute of their accepted time (domain.turnout), and the minutes changed
        # since the caller last took them (every minute after a rebuild).
        self.turnout: Counter[int] = Counter()
        self.turnout_changed: set[int] = set()
        self._key_records: list[AdminRecord] = []
        self._keys: dict[int, AdmissionKey] = {}

    def add(
        self,
        poll_id: str,
        record: VoteRecord | ReviewRecord | AdminRecord,
        admission: Admitted = UNCHECKED,
    ) -> None:
        """Follow one record appended to a log; ArchiveError if it breaks a review rule.
        `admission`: a vote's admission check as :meth:`check` gave it under the keys in effect
        now (None: it passed); left out, it is checked here."""
        if type(record) is VoteRecord:  # nearly every record: one test, no allocation
            if admission is UNCHECKED:
                reason = check_admission(record, self._keys) if self._keys else None
            else:
                reason = admission
            if record.status is _HELD:
                self.lanes[record.lane].vote(record)
                if reason is not None:
                    self._refused_held[record.lane][record.seq] = record.option_id
            elif reason is None:
                self.accepted[record.lane][record.option_id] += 1
            if reason is not None:
                self.refused.append(Refused(record.lane, record.seq, reason))
            else:
                minute = minute_of(record.accepted_ms)
                self.turnout[minute] += 1
                self.turnout_changed.add(minute)
        elif isinstance(record, ReviewRecord):
            problem = self.lanes[record.lane].decide(record)
            if problem is not None:
                raise ArchiveError(
                    f"poll {poll_id} lane {record.lane}: entry {record.seq} ({problem}): {record!r}"
                )
            self.in_lanes[record.lane, record.held_seq] = record.decision
            option = self._refused_held[record.lane].pop(record.held_seq, None)
            if option is not None and record.decision is Decision.RELEASED:
                self._uncounted[record.lane][option] += 1
        elif isinstance(record, AdminRecord):
            if record.review is not None:
                ref = (record.review.lane, record.review.held_seq)
                if ref in self.in_admin:
                    raise ArchiveError(
                        f"poll {poll_id} admin log: lane {ref[0]} entry {ref[1]} twice"
                    )
                self.in_admin[ref] = record.review.decision
            elif record.action is AdminAction.ADMISSION_KEY:
                self._key_records.append(record)
                try:
                    self._keys = keys_from_admin(self._key_records)
                except LeafError as exc:
                    raise ArchiveError(f"poll {poll_id} admin log: {exc}") from None

    @property
    def signed(self) -> bool:
        """Whether the poll's votes must carry admission signatures (its admin log names keys)."""
        return bool(self._keys)

    def check(
        self, votes: Sequence[VoteRecord], executor: Executor | None = None
    ) -> list[str | None]:
        """The admission check `add` would make of each vote now (under the keys the records
        added so far name), in order; chunks of them side by side on `executor` if given. A
        poll whose admin log names no key checks nothing (all None)."""
        if not self._keys:
            return [None] * len(votes)
        return check_admissions(votes, self._keys, executor, chunk=CHECK_CHUNK)

    def lane_count(self, lane: int, seq: int) -> LaneCount:
        """The lane's recount now, which is after its entry `seq`."""
        review = self.lanes[lane]
        counts = self.accepted[lane] + review.released_counts
        counts.subtract(self._uncounted[lane])
        return LaneCount(seq, dict(counts), len(review.pending))

    def counts(self, options: Sequence[str]) -> list[tuple[str, int]]:
        """The recount of the whole poll, option by option in `options` order."""
        total: Counter[str] = Counter()
        for lane in range(len(self.lanes)):
            total.update(self.accepted[lane])
            total.update(self.lanes[lane].released_counts)
            total.subtract(self._uncounted[lane])
        return [(option, total[option]) for option in options]

    def waiting_for(self, stopped: frozenset[int] = frozenset()) -> str | None:
        """Why the poll cannot be certified yet (None: it can). Raises ArchiveError if a decision
        of the admin log can never reach its lane (no vote there waits for it). `stopped`: lanes
        stopped at a gap, whose decisions past the gap can never be archived: not waited for."""
        undecided = sum(len(lane.pending) for n, lane in enumerate(self.lanes) if n not in stopped)
        if undecided:
            return f"{undecided} held votes are not decided yet"
        lanes = {ref: d for ref, d in self.in_lanes.items() if ref[0] not in stopped}
        admin = {ref: d for ref, d in self.in_admin.items() if ref[0] not in stopped}
        unsigned = lanes.items() - admin.items()
        if unsigned:
            return f"{len(unsigned)} decisions are not in the admin log yet"
        if admin.items() - lanes.items():
            raise ArchiveError(f"decisions {sorted(admin.items() - lanes.items())} match no lane's")
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

    def __init__(
        self, files: PollFiles, poll: Poll, signer: Signer, verify: Executor | None = None
    ) -> None:
        """`verify`: threads to check admission signatures on (the archiver's; None: here)."""
        self.poll = poll
        self._files = files
        self._signer = signer
        self._verify = verify
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
        self.gaps: dict[int | None, Gap] = {}  # logs stopped at a gap in their queue
        # Lane -> the seq at which to keep the lane's recount (`mark`), and the recounts kept.
        self._marks: dict[int, int] = {}
        self.marked: dict[int, LaneCount] = {}
        self._review = self._read_review()

    @property
    def logs(self) -> list[int | None]:
        """Every log: None (admin), then the lanes."""
        return [None, *range(self.poll.lanes)]

    def reading(self) -> list[int | None]:
        """The logs still read from their queues: every log but those stopped at a gap."""
        return [log for log in self.logs if log not in self.gaps]

    @property
    def stopped_lanes(self) -> frozenset[int]:
        return frozenset(log for log in self.gaps if log is not None)

    def writer(self, log: int | None) -> LogWriter:
        return self.admin if log is None else self.lanes[log]

    def next_seqs(self) -> list[int]:
        """The seq each log's next queue entry must carry, in `reading` order."""
        return [self.writer(log).appended + 1 for log in self.reading()]

    def published_seqs(self) -> list[int]:
        """For each log, the first seq not yet covered by a published checkpoint."""
        return [self.writer(log).size + 1 for log in self.logs]

    def mark(self, seqs: Sequence[int]) -> None:
        """Keep each lane's recount as it is after its entry `seqs[lane]` (the seq the lane's
        live counters were read at) in `marked`: now if the lane is there already, else as
        `append` passes it. A lane already past its mark is kept at once too (its counters are
        behind the ledger: the caller compares the seqs)."""
        self._marks.clear()
        self.marked.clear()
        for lane, seq in enumerate(seqs):
            appended = self.lanes[lane].appended
            if seq <= appended:
                self.marked[lane] = self._review.lane_count(lane, appended)
            else:
                self._marks[lane] = seq

    def append(self, batches: Sequence[Sequence[QueuedEntry]]) -> int:
        """Append each log's batch (in the `reading` order they were read in); returns the
        entries appended. A log whose batch skips a seq stops there (`gaps`).

        The admin log's batch first, so that the keys it names are in effect; then the lanes'
        votes are checked all at once (on the verify pool), and the lanes appended in order with
        those results. An entry that is not a valid record stops the batch there, as if each
        entry had been appended as it was read: what came before it is appended, then
        ArchiveError."""
        appended = 0
        lanes: list[tuple[int, list[VoteRecord | ReviewRecord], Gap | None]] = []
        failed: ArchiveError | None = None
        for log, batch in zip(self.reading(), batches, strict=True):
            if log is None:
                appended += self._append_admin(batch)
            elif failed is None:
                records, gap, failed = self._lane_records(log, batch)
                lanes.append((log, records, gap))
        votes = [r for _, records, _ in lanes for r in records if type(r) is VoteRecord]
        reasons = iter(self._review.check(votes, self._verify))
        for log, records, gap in lanes:
            appended += self._append_lane(log, records, reasons)
            if gap is not None:
                self.gaps[log] = gap
        if failed is not None:
            raise failed
        return appended

    def _append_admin(self, batch: Sequence[QueuedEntry]) -> int:
        writer, review = self.admin, self._review
        for n, entry in enumerate(batch):
            if entry.seq != writer.appended + 1:
                self.gaps[None] = Gap(writer.appended + 1, entry.seq)
                return n
            record = self._admin_entry(entry)
            review.add(self.poll.id, record)
            data = encode_admin(record)
            writer.append(data, merkle.leaf_hash(data))
        return len(batch)

    def _lane_records(
        self, lane: int, batch: Sequence[QueuedEntry]
    ) -> tuple[list[VoteRecord | ReviewRecord], Gap | None, ArchiveError | None]:
        """The batch's records up to a gap (returned) or an entry that is not a valid record
        (its ArchiveError returned)."""
        expected = self.lanes[lane].appended + 1
        records: list[VoteRecord | ReviewRecord] = []
        for entry in batch:
            if entry.seq != expected:
                return records, Gap(expected, entry.seq), None
            try:
                records.append(self._lane_entry(lane, entry))
            except ArchiveError as exc:
                return records, None, exc
            expected += 1
        return records, None, None

    def _append_lane(
        self, lane: int, records: Sequence[VoteRecord | ReviewRecord], reasons: Iterator[str | None]
    ) -> int:
        """Append a lane's records; `reasons` yields each vote's admission check, in order."""
        writer, review, poll_id = self.lanes[lane], self._review, self.poll.id
        mark = self._marks.get(lane, 0)
        for record in records:
            if type(record) is VoteRecord:
                review.add(poll_id, record, next(reasons))
                data = encode_leaf(record)
            else:
                review.add(poll_id, record)
                data = _encode(record)
            writer.append(data, merkle.leaf_hash(data))
            if record.seq == mark:
                self.marked[lane] = review.lane_count(lane, mark)
        return len(records)

    def take_turnout(self) -> dict[int, int]:
        """The ballots of each minute (domain.turnout) whose count changed since the last call:
        minute start -> its whole count so far, so saving them is idempotent."""
        review = self._review
        changed, review.turnout_changed = review.turnout_changed, set()
        return {minute: review.turnout[minute] for minute in changed}

    def take_refused(self) -> list[Refused]:
        """The votes the recount refused since the last call."""
        refused, self._review.refused = self._review.refused, []
        return refused

    def publish(self) -> int:
        """Publish a checkpoint of every log that grew (and a first one of every empty log);
        returns how many were published."""
        return sum(self.writer(log).publish() is not None for log in self.logs)

    def review(self) -> PollReview:
        """The poll's review state and recount."""
        return self._review

    def _read_review(self) -> PollReview:
        """The recount rebuilt from the published leaves: the admin log first (its keys are
        then all in effect, as an auditor applies them), then the lanes, whose votes are
        checked REBUILD_BATCH at a time on the verify pool."""
        review = PollReview(self.poll.lanes)
        pending: list[VoteRecord | ReviewRecord | AdminRecord] = []
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
                        self._follow(review, pending)  # what came before it, as if one by one
                        raise ArchiveError(f"poll {self.poll.id} log {name}: {exc}") from None
                    pending.append(record)
                if len(pending) >= REBUILD_BATCH:
                    self._follow(review, pending)
                    pending = []
            if log is None:  # the admin log's keys, in effect before any vote is checked
                self._follow(review, pending)
                pending = []
        self._follow(review, pending)
        return review

    def _follow(
        self, review: PollReview, records: Sequence[VoteRecord | ReviewRecord | AdminRecord]
    ) -> None:
        """`review.add` each record, its votes checked at once first: `records` must not mix
        votes with admin records (which may name keys)."""
        reasons = iter(review.check([r for r in records if type(r) is VoteRecord], self._verify))
        for record in records:
            if type(record) is VoteRecord:
                review.add(self.poll.id, record, next(reasons))
            else:
                review.add(self.poll.id, record)

    def certify(self, integrity: Integrity | None = None) -> bytes:
        """Sign and store the result certificate: the recount bound to every log's latest
        checkpoint, with the review totals, and `integrity` (what the integrity check found) if
        any. Call only once every log is final (the poll closed and its queues drained) and
        `review().waiting_for(stopped_lanes)` is None."""
        self.publish()
        review = self.review()
        waiting = review.waiting_for(self.stopped_lanes)
        if waiting is not None:
            raise ArchiveError(f"poll {self.poll.id} cannot be certified yet: {waiting}")
        origin = certificate_origin(self._signer.name, self.poll.id)
        certificate = ResultCertificate(
            origin,
            self.poll.id,
            LogHead(self.admin.size, self.admin.root()),
            tuple(LogHead(w.size, w.root()) for w in self.lanes),
            tuple(review.counts([o.id for o in self.poll.options])),
            review.totals(),
            integrity,
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
                    _admission(entry),
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
        if isinstance(entry, QueuedAdmissionKey):
            if entry.seq == 1:
                raise ArchiveError(f"poll {self.poll.id}: the admin log must start with 'created'")
            try:
                key = AdmissionKey(
                    entry.name, entry.public_key, entry.not_before_ms, entry.not_after_ms
                )
                return AdminRecord(
                    self.poll.id, AdminAction.ADMISSION_KEY, entry.at_ms, entry.actor,
                    admission_key=key,
                )  # fmt: skip
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


def _admission(entry: QueuedVote) -> Admission | None:
    """The gateway's admission signature of a queued vote, as its ledger record holds it."""
    signed = entry.admission
    if signed is None:
        return None
    return Admission(signed.admitted_ms, signed.key_id, signed.signature)


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

"""Step 3 of ``tally audit verify``: what the leaves say, and whether it is what the poll allows.

The admin log is ``created`` (with the poll's definition), then ``opened`` and ``closed`` in
order, with ``reviewed`` records once the poll is opened; the definition says which lanes must be
published. In lane ``l``, leaf ``i`` is a record of this poll, lane ``l``, seq ``i + 1``: a vote
for an option of the poll, accepted (or held) before the deadline, from a pseudonym that maps to
lane ``l``, or a review record (:mod:`~tally.audit.verify_review` checks those and the held
votes); no pseudonym votes twice in the whole poll. The accepted votes that pass, and the held
ones released, are counted here, for step 4's recount. Each vote's admission signature is checked
against the admission keys of the admin log by :mod:`~tally.audit.verify_admission`, on a thread
pool beside this pass; once every lane is read (:meth:`MeaningChecks.finish_review`), the votes
it refuses are taken off the counts again, as the archiver's recount never counted them
(docs/ledger-format.md §14.3): the certificate is compared with the same recount that made it.

Speed: :meth:`MeaningChecks.check_vote_bundle` is called once per bundle of every lane. It runs
the checks over the whole bundle with C-level builtins (``map``, ``set``, ``Counter``,
``bytes.translate``) and falls back to a leaf-by-leaf pass, which words the findings, only for a
bundle that fails them.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from operator import attrgetter
from typing import cast

from tally.audit.verify_admission import AdmissionChecks
from tally.audit.verify_checkpoints import Log
from tally.audit.verify_entries import BundleCheck
from tally.audit.verify_findings import Findings
from tally.audit.verify_lane import LaneContext, report_duplicates
from tally.audit.verify_review import ReviewChecks
from tally.ledger import layout
from tally.ledger.admin import AdminAction, AdminRecord, PollDefinition, decode_admin
from tally.ledger.leaf import LeafError, VoteRecord, VoteStatus
from tally.ledger.review import Decision, ReviewRecord, decode_lane_record

__all__ = ["MeaningChecks"]

_SEQ = attrgetter("seq")
_LANE = attrgetter("lane")
_POLL = attrgetter("poll_id")
_STATUS = attrgetter("status")
_PSEUDONYM = attrgetter("pseudonym")
_OPTION = attrgetter("option_id")
_ACCEPTED_MS = attrgetter("accepted_ms")
_ACCEPTED = frozenset({VoteStatus.ACCEPTED})
_VOTES_ONLY = {VoteRecord}
_WRITTEN = frozenset({VoteStatus.ACCEPTED, VoteStatus.HELD})  # VOIDED is reserved, never written
_REVIEWED_AFTER = frozenset({AdminAction.OPENED, AdminAction.CLOSED})  # votes held only once open
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


class MeaningChecks:
    """The meaning of every leaf of one poll: the admin log's lifecycle, then each lane's votes."""

    def __init__(
        self, poll: str, findings: Findings, admission: AdmissionChecks | None = None
    ) -> None:
        self.poll = poll
        self.findings = findings
        self.admission = admission if admission is not None else AdmissionChecks(findings)
        self.definition: PollDefinition | None = None  # from the admin log's created record
        # Each admin leaf that could be read: (leaf index, record or None if invalid, bundle).
        self.admin_records: list[tuple[int, AdminRecord | None, str]] = []
        self.closed = False
        self.counts: Counter[str] = Counter()  # option id -> votes counted
        self.review = ReviewChecks(findings)
        self.seen: set[bytes] = set()
        self.duplicates: list[tuple[bytes, int, str]] = []  # pseudonym, leaf index, bundle path
        self.lane_contexts: list[LaneContext] = []

    # -- the admin log -------------------------------------------------------------------------

    def check_admin_bundle(self, start: int, entries: list[bytes], path: str) -> None:
        for offset, entry in enumerate(entries):
            index = start + offset
            try:
                record = decode_admin(entry)
            except LeafError as exc:
                self.findings.add("bad-record", path, f"leaf {index}: {exc}", index=index)
                self.admin_records.append((index, None, path))
                continue
            self.review.admin(index, record, path)
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

    def check_admin_order(self) -> str | None:
        """created first (with the definition), then opened and/or closed, in that order.

        Returns the poll's state as the report names it, None if the log does not start right.
        """
        previous: AdminAction | None = None
        for index, record, path in self.admin_records:
            if record is None:
                continue  # a bad record, reported already
            action = record.action
            if action is AdminAction.REVIEWED and previous in _REVIEWED_AFTER:
                continue  # a reviewer's decision: the poll's state stays
            if action is AdminAction.ADMISSION_KEY and previous is not None:
                continue  # a gateway key registered (or retired) for the poll: its state stays
            if index == 0 and action is AdminAction.CREATED:
                self.definition = record.definition
                previous = action
                continue
            if index == 0:
                expected = "created"
            elif previous is None:
                continue  # the log does not start right: that is reported, the rest cannot be judged
            elif action is AdminAction.REVIEWED:
                expected = "opened before any reviewed"
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
        self.closed = previous is AdminAction.CLOSED
        self.admission.use_admin_log(
            record
            for _, record, _ in self.admin_records
            if record is not None and record.poll_id == self.poll
        )
        return _STATE_NAMES[previous] if previous is not None else None

    def check_lane_set(self, logs: list[Log]) -> None:
        """The published lanes are those of the poll's definition, no more, no fewer."""
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

    # -- the votes (the hot path) --------------------------------------------------------------

    def vote_check(self, lane: int) -> BundleCheck:
        """The check of each bundle of ``lane``, once the admin log has given the definition."""
        context = LaneContext.of(lane, self.poll, self.definition)
        self.lane_contexts.append(context)
        return partial(self.check_vote_bundle, context)

    def check_vote_bundle(
        self, context: LaneContext, start: int, entries: list[bytes], path: str
    ) -> None:
        try:
            records = list(map(decode_lane_record, entries))
        except LeafError:
            self._check_votes_one_by_one(context, start, entries, path)
            return
        self.admission.check_bundle(start, records, path, lane=context.lane)
        if not self._bundle_passes(context, start, records, path):
            self._check_votes_one_by_one(context, start, entries, path, records)

    def _bundle_passes(
        self,
        context: LaneContext,
        start: int,
        records: list[VoteRecord | ReviewRecord],
        path: str,
    ) -> bool:
        """Every check over the whole bundle at once; False (and nothing recorded) if any fails.
        Held votes and review records (rare) pass here too, so that they do not send every
        bundle holding one down the leaf-by-leaf path."""
        count = len(records)
        if not (
            list(map(_SEQ, records)) == list(range(start + 1, start + count + 1))
            and set(map(_LANE, records)) == context.lane_set
            and set(map(_POLL, records)) == context.poll_set
        ):
            return False
        only_votes = set(map(type, records)) == _VOTES_ONLY
        votes: list[VoteRecord] = (
            cast("list[VoteRecord]", records)
            if only_votes
            else [r for r in records if isinstance(r, VoteRecord)]
        )
        pseudonyms = list(map(_PSEUDONYM, votes))
        options = Counter(map(_OPTION, votes))
        statuses = set(map(_STATUS, votes))
        seen = self.seen
        if not (
            statuses <= _WRITTEN
            and (context.options is None or options.keys() <= context.options)
            and (
                context.deadline is None
                or not votes
                or max(map(_ACCEPTED_MS, votes)) < context.deadline
            )
            and context.placed(pseudonyms)
            and seen.isdisjoint(pseudonyms)
        ):
            return False
        before = len(seen)
        seen.update(pseudonyms)
        if len(seen) - before != len(votes):
            seen.difference_update(pseudonyms)  # they were all new: undo, then go leaf by leaf
            return False
        if statuses <= _ACCEPTED:
            self.counts.update(options)
        else:
            for vote in votes:
                if vote.status is VoteStatus.ACCEPTED:
                    self.counts[vote.option_id] += 1
                else:
                    self.review.vote(context.lane, vote)
        if only_votes:
            context.pseudonyms.append((start, path, pseudonyms))
            return True
        context.pseudonyms.append(
            (start, path, [r.pseudonym if type(r) is VoteRecord else None for r in records])
        )
        for offset, record in enumerate(records):
            if isinstance(record, ReviewRecord):
                self.review.decision(context.lane, start + offset, record, path)
        return True

    # -- the votes, leaf by leaf (a bundle that fails, to word its findings) -------------------

    def _check_votes_one_by_one(
        self,
        context: LaneContext,
        start: int,
        entries: list[bytes],
        path: str,
        decoded: list[VoteRecord | ReviewRecord] | None = None,
    ) -> None:
        pseudonyms: list[bytes | None] = []
        read: list[VoteRecord | ReviewRecord | None] = []  # for the admission check
        for offset, entry in enumerate(entries):
            index = start + offset
            record: VoteRecord | ReviewRecord
            if decoded is not None:
                record = decoded[offset]
            else:
                try:
                    record = decode_lane_record(entry)
                except LeafError as exc:
                    self.findings.add("bad-record", path, f"leaf {index}: {exc}", index=index)
                    pseudonyms.append(None)
                    read.append(None)
                    continue
                read.append(record)
            if isinstance(record, ReviewRecord):
                pseudonyms.append(None)  # a decision, not a voter
                self._check_vote_place(context, index, record, path)
                self.review.decision(context.lane, index, record, path)
                continue
            pseudonyms.append(record.pseudonym)
            self._check_vote(context, index, record, path)
        context.pseudonyms.append((start, path, pseudonyms))
        if decoded is None:  # a decoded bundle's admissions were checked with it
            self.admission.check_bundle(start, read, path, lane=context.lane)

    def _check_vote(self, context: LaneContext, index: int, record: VoteRecord, path: str) -> None:
        self._check_vote_place(context, index, record, path)
        known = self._check_vote_option(context, index, record, path)
        self._check_vote_acceptance(context, index, record, path)
        if record.pseudonym in self.seen:
            self.duplicates.append((record.pseudonym, index, path))
        else:
            self.seen.add(record.pseudonym)
        if known and record.status is VoteStatus.ACCEPTED:
            self.counts[record.option_id] += 1
        elif record.status is VoteStatus.HELD:
            self.review.vote(context.lane, record)

    def _check_vote_place(
        self, context: LaneContext, index: int, record: VoteRecord | ReviewRecord, path: str
    ) -> None:
        """The record is of this poll, this lane, and in its place in the lane."""
        add = self.findings.add
        if record.poll_id != self.poll:
            add(
                "record-poll",
                path,
                f"leaf {index}: a record of poll {record.poll_id!r}",
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

    def _check_vote_option(
        self, context: LaneContext, index: int, record: VoteRecord, path: str
    ) -> bool:
        """Whether the vote is for an option of the poll (True if the options are unknown)."""
        known = context.options is None or record.option_id in context.options
        if not known:
            self.findings.add(
                "unknown-option",
                path,
                f"leaf {index}: a vote for {record.option_id!r}, not an option of the poll",
                index=index,
                expected=", ".join(sorted(context.options or ())),
                found=record.option_id,
            )
        return known

    def _check_vote_acceptance(
        self, context: LaneContext, index: int, record: VoteRecord, path: str
    ) -> None:
        """The vote's pseudonym belongs in this lane, and it was accepted, before the deadline."""
        add = self.findings.add
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
        if record.status not in _WRITTEN:
            add(
                "vote-status",
                path,
                f"leaf {index}: status {record.status.name.lower()}, not accepted or held (a "
                "voided vote is a held vote and a review record, never a status)",
                index=index,
                expected="accepted or held",
                found=record.status.name.lower(),
            )

    def finish_review(self) -> None:
        """Once every lane is read and every admission checked: the decisions and their admin
        twins, and the released votes counted with the accepted ones (the recount is accepted +
        released), less the votes whose admission the recount refuses."""
        self.review.check_twins()
        self.counts.update(self.review.released)
        self._uncount_refused()

    def _uncount_refused(self) -> None:
        """Take off the counts each vote the admission check refuses (the archiver's rule,
        ``PollReview``): an accepted one if it was counted (an option of the poll), a held one
        if a valid review record released it. The review totals stay the logs' (held vote
        records and valid decisions, refused or not), as the archiver certifies them."""
        options = None if self.definition is None else {o.id for o in self.definition.options}
        counts = self.counts
        for option, votes in self.admission.refused_accepted.items():
            if options is None or option in options:  # votes for another option: not counted
                counts[option] -= votes
        for lane, seq, option in self.admission.refused_held:
            review = self.review.lanes.get(lane)
            if review is not None and review.decided.get(seq) is Decision.RELEASED:
                counts[option] -= 1

    # -- one vote per pseudonym, across lanes --------------------------------------------------

    def report_duplicates(self) -> None:
        """Name, for each pseudonym that voted again, where it voted first."""
        if self.duplicates:
            report_duplicates(self.findings, self.duplicates, self.lane_contexts)

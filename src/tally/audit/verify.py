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
   ``closed`` in order, with ``reviewed`` records once opened. In lane ``l``, leaf ``i`` is a
   record of this poll, lane ``l``, seq ``i + 1``: a vote (accepted or held) for an option of the
   poll, accepted before the deadline, from a pseudonym that maps to lane ``l``, signed by one of
   the poll's admission keys valid at its admission (unless the poll predates admission keys),
   or a review record deciding an earlier held vote of the lane once, with its twin ``reviewed``
   record in the admin log; no pseudonym votes twice in the whole poll.
4. **Result.** The votes (accepted + released) are recounted and compared with the signed result
   certificate, whose log lines must be each log's latest checkpoint and whose held, released
   and voided totals must be the logs'; no certificate may be published while votes are held.

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

Each step is a module of its own, and this one runs them (2 and 3 together, a log at a time):
:mod:`~tally.audit.verify_checkpoints` (1), :mod:`~tally.audit.verify_entries` with the rebuilt
tree of :mod:`~tally.audit.verify_tree` (2), :mod:`~tally.audit.verify_meaning` with
:mod:`~tally.audit.verify_lane` and, for hold for review, :mod:`~tally.audit.verify_review` (3),
and :mod:`~tally.audit.verify_result` (4); :mod:`~tally.audit.verify_findings` records what they find.
They sit beside this module, not in a package, so that the auditor's import rule
(``tests/audit/test_no_server_imports.py``, which reads ``tally/audit/*.py``) covers them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tally.audit.report import Report
from tally.audit.source import Source
from tally.audit.verify_admission import ADMISSION_CODES, AdmissionChecks
from tally.audit.verify_checkpoints import CheckpointChecks, Log, WitnessChecks, with_known
from tally.audit.verify_entries import EntryChecks
from tally.audit.verify_findings import Findings
from tally.audit.verify_meaning import MeaningChecks
from tally.audit.verify_result import INTEGRITY_CODES, ResultChecks, recount
from tally.audit.verify_tree import partial_tiles
from tally.ledger import layout, note
from tally.ledger.checkpoint import admin_origin
from tally.ledger.cosignature import CosignatureVerifier

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
    "vote-status": "a vote's status is not 'accepted' or 'held' (0x03 voided is never written)",
    "review-target-not-held": "a review record decides no held vote of its lane with a lower seq",
    "review-duplicate": "a review record decides a held vote that was decided already",
    "review-unsigned": "a review record has no matching 'reviewed' record in the signed admin log (a forged review decision)",
    "review-unlogged": "a 'reviewed' admin record has no matching review record in its lane's log",
    "admin-order": "the admin log is not 'created', then 'opened' and/or 'closed', in order ('reviewed' only once opened)",
    "missing-definition": "the admin log holds no 'created' record, so the poll's definition is unknown",
    "certificate-missing": "the poll is closed but no result certificate is published",
    "certificate-not-closed": "a result certificate is published but the admin log does not close the poll",
    "bad-certificate": "the certificate is malformed, or signed for another origin",
    "certificate-poll": "the certificate names another poll",
    "certificate-log": "a certificate log line is not that log's latest checkpoint",
    "certificate-options": "the certificate does not count exactly the poll's options, in order",
    "count-mismatch": "a certified count differs from the recount of the leaves (accepted + released, less votes failing their admission check)",
    "review-totals": "the certificate's held, released or voided total differs from the logs'",
    "held-undecided": "a result certificate is published while held votes are still undecided",
    "witness-missing": "a log's newest checkpoint has fewer valid cosignatures of the given witnesses than required",
    "witness-bad-signature": "a cosignature by a given witness's key does not verify (a forged or copied cosignature)",
    "witness-time": "a witness's cosignature time is in the future, or earlier than its cosignature of a smaller size",
    "too-many": "more findings of one kind in one log than are listed",
    **ADMISSION_CODES,
    **INTEGRITY_CODES,
}

ProgressCallback = Callable[[int, int], None]  # (leaves done, leaves in total)


def verify(
    source: Source,
    key: note.Verifier,
    *,
    poll_id: str | None = None,
    progress: ProgressCallback | None = None,
    known: Sequence[Source] = (),
    admission_keys: Sequence[note.Verifier] = (),
    jobs: int | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    min_witnesses: int | None = None,
) -> Report:
    """Check the poll's ledger at ``source`` against ``key`` (named by the origin prefix).

    ``admission_keys``, when given, are the only admission keys whose signatures count (the
    gateways' published keys, say): a vote signed by another key of the admin log is a finding,
    and so is an unsigned vote even in a poll whose admin log has no admission key. ``jobs`` is
    the number of threads that verify admission signatures (default: one per CPU).

    ``poll_id``, when given, is the poll the ledger must be of. ``known`` are earlier copies of
    the ledger (say, exports the auditor made during the vote): each of their checkpoints is
    checked as if it were in the history, so a ledger rewritten *with* its history, and re-signed
    with the right key, is caught by the checkpoints it no longer extends. Raises
    :class:`~tally.audit.source.SourceError` when the source cannot be read at all, ValueError
    when the key's name cannot be an origin prefix; every other problem is a finding.
    """
    admin_origin(key.name, "poll")  # ValueError: the key's name is not an origin prefix
    admission = (admission_keys, jobs)
    audit = _Audit(source, key, poll_id, progress, known, admission)
    if witnesses:  # each log's newest checkpoint needs min_witnesses (default: all) of them
        required = len(witnesses) if min_witnesses is None else min_witnesses
        audit.witnesses = WitnessChecks(witnesses, required, audit.findings, time.time())
    return audit.run()


class _Audit:
    """One run of ``verify``: the steps in order, and the report they fill."""

    def __init__(
        self,
        source: Source,
        key: note.Verifier,
        wanted_poll: str | None,
        progress: ProgressCallback | None,
        known: Sequence[Source] = (),
        admission: tuple[Sequence[note.Verifier], int | None] = ((), None),
    ) -> None:
        self.source = source
        self.known = known
        self.key = key
        self.wanted_poll = wanted_poll
        self.progress = progress
        self.findings = Findings()
        self.admission = AdmissionChecks(self.findings, admission[0], admission[1])
        self.report = Report(source.location)
        self.witnesses: WitnessChecks | None = None
        self.done = 0
        self.total = 0

    def run(self) -> Report:
        checkpoints = CheckpointChecks(self.source, self.key, self.findings)
        history = with_known(self.source.history(), self.known)
        poll = checkpoints.find_poll(history, self.wanted_poll)
        if poll is None:
            return self._finish(None)
        self.report.poll_id = poll
        logs = checkpoints.logs(history, poll)
        for log in logs:
            self.report.logs[log.name] = log.size
        if self.witnesses is not None:
            self.witnesses.check(logs)
        meaning = MeaningChecks(poll, self.findings, self.admission)
        try:
            self._check_logs(logs, meaning)
        finally:
            self.admission.finish()
        meaning.finish_review()
        meaning.report_duplicates()
        result = ResultChecks(self.source, self.key, self.findings)
        self.report.certificate = result.check(poll, logs, meaning)
        return self._finish(meaning)

    def _check_logs(self, logs: list[Log], meaning: MeaningChecks) -> None:
        """Steps 2 and 3, log by log: the admin log first, for the definition the lanes need."""
        entries = EntryChecks(self.source, self.findings, self._tick)
        self.total = sum(log.size for log in logs)
        self._tick(0)
        admin = logs[0] if logs and logs[0].lane is None else None
        if admin is not None:
            entries.check_log(admin, meaning.check_admin_bundle)
            self.report.state = meaning.check_admin_order()
        else:
            self.findings.add(
                "missing-log",
                layout.checkpoint_path(layout.ADMIN_LOG),
                "the admin log is not published: the poll's definition is unknown",
            )
        meaning.check_lane_set(logs)
        for log in logs:
            if log.lane is not None:
                entries.check_log(log, meaning.vote_check(log.lane))

    def _finish(self, meaning: MeaningChecks | None) -> Report:
        report = self.report
        if meaning is not None:
            report.counts = recount(meaning.definition, meaning.counts)
            report.review = meaning.review.totals()
        report.votes = sum(report.counts.values())
        report.admission = self.admission.state()
        report.admission_keys = self.admission.listing()
        report.admission_signed = self.admission.signed
        report.findings = self.findings.finish()
        return report

    def _tick(self, leaves: int) -> None:
        self.done += leaves
        if self.progress is not None:
            self.progress(self.done, self.total)

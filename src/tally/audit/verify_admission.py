"""Step 3 of ``tally audit verify``, the admission part: every vote carries a gateway's valid
admission signature (docs/ledger-format.md §14).

The poll's admission keys are the ``admission-key`` records of its admin log
(:func:`tally.ledger.admission.keys_from_admin`); ``--admission-key`` pins which of them are
acceptable, so that a key an insider slipped into the admin log signs nothing that passes. Each
vote record is checked with :func:`tally.ledger.admission.check_admission`: signed, by a known
(and pinned) key, valid at the admitted time, admitted shortly before the store accepted it. A
poll whose admin log holds no admission key and whose votes are all version 0x01 is a
pre-admission poll: it verifies as before, and the report says it is unsigned. With pinned keys,
every vote must be signed whatever the admin log says.

The recount follows the archiver's rule (:class:`tally.archive.poll_logs.PollReview`, which makes
the result certificate): in a poll whose admin log names admission keys, a vote that fails
:func:`~tally.ledger.admission.check_admission` against *those* keys is not counted, accepted or
released (:attr:`AdmissionChecks.refused_accepted` and ``refused_held``, taken off the counts by
:mod:`~tally.audit.verify_meaning`). The
keys of the admin log, not the pinned ones: the archiver knows no others, so a vote signed by a
logged key that is not pinned is an ``admission-key-not-pinned`` finding but still counted, and
the certificate is not blamed for counting it; a poll whose admin log names no key counts every
vote, whatever is pinned. Two keys sharing a key id leave no vote attributable: none counts.

Speed: an Ed25519 verification costs ~50 µs, several times the rest of a leaf's audit, and
OpenSSL runs it without Python's lock. So each bundle's votes are checked on a thread pool
(``jobs`` threads, by default one per CPU this process may use) while the main thread reads,
hashes and checks the next bundles; at most ``4 * jobs`` bundles are in flight, so memory stays
bounded, and their findings are added in bundle order.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from tally.audit.report import KeyListing
from tally.audit.verify_findings import Findings
from tally.ledger import layout, note
from tally.ledger.admin import AdminRecord
from tally.ledger.admission import AdmissionKey, check_admission, keys_from_admin
from tally.ledger.leaf import LeafError, VoteRecord, VoteStatus
from tally.ledger.review import ReviewRecord

__all__ = ["ADMISSION_CODES", "AdmissionChecks", "default_jobs"]

# Every finding code of the admission check, with what it means (part of FINDING_CODES).
ADMISSION_CODES = {
    "admission-unsigned": "a vote carries no admission signature, in a poll whose votes must be signed",
    "admission-unknown-key": "a vote is signed under a key id that is none of the poll's admission keys",
    "admission-key-not-pinned": "a vote is signed by an admission key of the admin log that --admission-key does not allow",
    "admission-key-not-valid": "a vote was admitted outside its admission key's validity period",
    "admission-bad-signature": "a vote's admission signature does not verify under its key",
    "admission-time": "a vote was accepted by the store too long after (or before) the gateway admitted it",
    "admission-key-conflict": "two different admission keys of the admin log share a key id",
}

# check_admission's reason -> the finding code.
_CODE_OF_REASON = {
    "unsigned": "admission-unsigned",
    "unknown-key": "admission-unknown-key",
    "key-not-valid-then": "admission-key-not-valid",
    "bad-signature": "admission-bad-signature",
    "admitted-too-early": "admission-time",
    "admitted-too-late": "admission-time",
}
_IN_FLIGHT_PER_JOB = 4
_ACCEPTED, _HELD = VoteStatus.ACCEPTED, VoteStatus.HELD
_ADMIN_CHECKPOINT = layout.checkpoint_path(layout.ADMIN_LOG)

# One bundle's failures: (leaf index, reason, record, whether the recount leaves the vote out).
_Failures = list[tuple[int, str, VoteRecord, bool]]


def default_jobs() -> int:
    """One thread per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


class AdmissionChecks:
    """The admission signature of every vote of one poll, checked on a thread pool."""

    def __init__(
        self, findings: Findings, pinned: Sequence[note.Verifier] = (), jobs: int | None = None
    ) -> None:
        self.findings = findings
        self.pinned = {(key.name, key.public_key) for key in pinned}
        self.jobs = default_jobs() if jobs is None else max(1, jobs)
        self.logged: dict[int, AdmissionKey] = {}  # every key of the admin log, by key id
        self.keys: dict[int, AdmissionKey] = {}  # those that may sign (pinned, if pins given)
        self.signed = 0  # votes with a valid admission signature
        self.unsigned = 0  # version 0x01 votes of a pre-admission poll
        self.failed = 0  # votes with a finding
        # The votes the recount leaves out (see the module doc): accepted ones by option, and
        # held ones as (lane, seq, option), in log order. Counters, so that a lane of stuffed
        # votes costs no memory per vote (its findings are capped too).
        self.refused_accepted: Counter[str] = Counter()
        self.refused_held: list[tuple[int, int, str]] = []
        self._conflict = False  # two keys of the admin log share a key id
        # The keys the recount checks votes against (the archiver's), None: it counts every vote.
        self._recount_keys: dict[int, AdmissionKey] | None = None
        self._pool: ThreadPoolExecutor | None = None
        # Bundles being checked: path, lane, votes, check.
        self._pending: deque[tuple[str, int, int, Future[_Failures]]] = deque()

    @property
    def required(self) -> bool:
        """Whether every vote must be signed: the poll has admission keys, or keys are pinned."""
        return bool(self.logged) or bool(self.pinned) or self._conflict

    def use_admin_log(self, records: Iterable[AdminRecord]) -> None:
        """Take the poll's admission keys from its admin log (call before any vote)."""
        listed = list(records)
        try:
            self.logged = keys_from_admin(listed)
        except LeafError as exc:
            # Which of the two keys signed a vote cannot be told: neither counts.
            self.findings.add("admission-key-conflict", _ADMIN_CHECKPOINT, str(exc))
            self._conflict = True
            self.logged = {}
        if self.pinned:
            self.keys = {
                kid: key
                for kid, key in self.logged.items()
                if (key.name, key.public_key) in self.pinned
            }
        else:
            self.keys = dict(self.logged)
        self._recount_keys = self.logged if self.logged or self._conflict else None

    def listing(self) -> list[KeyListing]:
        return [
            KeyListing(
                key.name,
                key.key_id,
                str(key.verifier),
                key.not_before_ms,
                key.not_after_ms,
                key.key_id in self.keys,
            )
            for key in self.logged.values()
        ]

    def state(self) -> str:
        """A key of :data:`tally.audit.report.ADMISSION_STATES` (once every vote is checked)."""
        if self.failed or self._conflict:
            return "invalid"
        return "signed" if self.required or self.signed else "unsigned"

    # -- the votes -----------------------------------------------------------------------------

    def check_bundle(
        self,
        start: int,
        records: Sequence[VoteRecord | ReviewRecord | None],
        path: str,
        *,
        lane: int,
    ) -> None:
        """Check the votes among ``records`` (leaf ``start`` on of ``lane``'s log; None: a leaf
        that did not decode, reported elsewhere); the findings and refused votes come in bundle
        order, a little later."""
        votes = [
            (start + offset, record)
            for offset, record in enumerate(records)
            if type(record) is VoteRecord
        ]
        if not self.required:
            # No key names a signer: an unsigned vote is a pre-admission vote, nothing to check;
            # a signed one (under no key it can pass) is checked and reported. Vote by vote, so
            # the findings do not depend on which bundle holds a signed vote.
            signed = [vote for vote in votes if vote[1].admission is not None]
            self.unsigned += len(votes) - len(signed)
            votes = signed
        if not votes:
            return
        if self.jobs == 1:
            self._report(path, lane, len(votes), _check(votes, self.keys, self._recount_keys))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="tally-admission")
        while len(self._pending) >= self.jobs * _IN_FLIGHT_PER_JOB:
            self._drain_one()
        check = self._pool.submit(_check, votes, self.keys, self._recount_keys)
        self._pending.append((path, lane, len(votes), check))

    def finish(self) -> None:
        """Wait for every bundle still being checked, and add its findings (and refused votes)."""
        while self._pending:
            self._drain_one()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _drain_one(self) -> None:
        path, lane, votes, future = self._pending.popleft()
        self._report(path, lane, votes, future.result())

    def _report(self, path: str, lane: int, votes: int, failures: _Failures) -> None:
        self.signed += votes - len(failures)
        self.failed += len(failures)
        for index, reason, record, refused in failures:
            self._add(path, index, reason, record)
            if not refused:
                continue
            if record.status is _ACCEPTED:
                self.refused_accepted[record.option_id] += 1
            elif record.status is _HELD:
                self.refused_held.append((lane, record.seq, record.option_id))

    def _add(self, path: str, index: int, reason: str, record: VoteRecord) -> None:
        admission = record.admission
        code = _CODE_OF_REASON.get(reason, "admission-bad-signature")
        if code == "admission-unknown-key" and admission and admission.key_id in self.logged:
            code = "admission-key-not-pinned"
        if admission is None:
            message, found = "the vote carries no admission signature (a version 0x01 record)", None
        else:
            key = self.logged.get(admission.key_id)
            signer = f"key {admission.key_id:08x}" + (f" ({key.name})" if key else "")
            found = f"{admission.key_id:08x}"
            message = {
                "admission-unknown-key": f"signed by {signer}, not an admission key of the poll",
                "admission-key-not-pinned": f"signed by {signer}, not a pinned --admission-key",
                "admission-key-not-valid": f"admitted at {admission.admitted_ms} ms, outside the "
                f"validity of {signer}",
                "admission-bad-signature": f"the signature by {signer} does not verify",
                "admission-time": f"admitted at {admission.admitted_ms} ms, accepted at "
                f"{record.accepted_ms} ms ({reason})",
            }[code]
        self.findings.add(
            code,
            path,
            f"leaf {index}: pseudonym {record.pseudonym.hex()}: {message}",
            index=index,
            expected="a valid admission signature",
            found=found or "none",
        )


def _check(
    votes: list[tuple[int, VoteRecord]],
    keys: Mapping[int, AdmissionKey],
    recount_keys: Mapping[int, AdmissionKey] | None,
) -> _Failures:
    """The votes that fail, with why and whether the recount leaves them out (run on the pool:
    check_admission's Ed25519 verification runs without the interpreter lock).

    ``keys`` (the pinned keys of the admin log, or all of them) is a subset of ``recount_keys``
    (all of them), the same key objects: a vote that fails under ``keys`` for any reason but an
    unknown key fails alike under ``recount_keys``; only one signed by a logged key that is not
    pinned is checked again."""
    failures: _Failures = []
    for index, record in votes:
        reason = check_admission(record, keys)
        if reason is not None:
            refused = recount_keys is not None and (
                reason != "unknown-key" or check_admission(record, recount_keys) is not None
            )
            failures.append((index, reason, record, refused))
    return failures

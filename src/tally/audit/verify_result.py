"""Step 4 of ``tally audit verify``: the recount, against the signed result certificate.

The votes step 3 counted (accepted + released) are the result. A closed poll publishes a
certificate, signed for the poll's certificate origin, whose log lines must be each log's latest
checkpoint (so it certifies the very leaves checked), whose counts, option by option in the
poll's order, must be the recount, and whose held, released and voided totals must be the logs'.
A poll that is not closed must publish none; nor may a closed poll while votes are still held:
it waits for the reviewers, and a missing certificate is then no finding.

A ``tally-result/v3`` certificate also records the integrity alarms the archiver raised on the
poll (its live counters disagreed with the ledger, its queue lost entries, a vote failed its
admission check) and, when they disagreed at close, what the counters counted. Its counts are
still checked against the recount like any other; each recorded alarm is a finding of its own
(``integrity-alarm``), so a poll whose ledger lost a vote never audits as OK, while everything
that was archived is still checked, and found consistent if it is.
"""

from __future__ import annotations

from collections import Counter

from tally.audit.source import Source
from tally.audit.verify_checkpoints import Log
from tally.audit.verify_findings import Findings, b64
from tally.audit.verify_meaning import MeaningChecks
from tally.ledger import layout, note
from tally.ledger.admin import PollDefinition
from tally.ledger.certificate import (
    CertificateError,
    ResultCertificate,
    ReviewTotals,
    certificate_origin,
    open_certificate,
)

__all__ = ["INTEGRITY_CODES", "ResultChecks", "recount"]

INTEGRITY_CODES = {
    "integrity-alarm": "the certificate records an integrity alarm: the live counters disagreed "
    "with the ledger, the ledger's queue lost entries, or a vote failed its admission check",
}
# What each alarm kind of a v3 certificate means, for the finding's message.
_ALARMS = {
    "counter-mismatch": "the live counters disagreed with the ledger's count",
    "ledger-gap": "entries were missing from the ledger's queue; the log ends where they went "
    "missing",
    "unsigned-vote": "a vote failed its admission check (archived, not counted)",
}


def recount(definition: PollDefinition | None, counts: Counter[str]) -> dict[str, int]:
    """The votes per option, in the poll's order (every option, if the definition is known)."""
    if definition is not None:
        return {o.id: counts[o.id] for o in definition.options}
    return dict(counts)


class ResultChecks:
    """The result certificate of one poll, checked against the logs and the recount."""

    def __init__(self, source: Source, key: note.Verifier, findings: Findings) -> None:
        self.source = source
        self.key = key
        self.prefix = key.name
        self.findings = findings

    def check(self, poll: str, logs: list[Log], meaning: MeaningChecks) -> str:
        """Check the certificate; returns its state, a key of ``report.CERTIFICATE_STATES``."""
        file = layout.CERTIFICATE
        signed = self.source.read(file)
        closed = meaning.closed
        undecided = meaning.review.undecided
        if signed is None:
            if closed and undecided:
                return "awaiting-review"
            if closed:
                self.findings.add(
                    "certificate-missing",
                    file,
                    "the admin log closes the poll, but there is no certificate",
                )
                return "missing"
            return "not-closed"
        before = len(self.findings)
        certificate = self._open(signed, poll)
        if certificate is None:
            return "invalid"
        if not closed:
            self.findings.add(
                "certificate-not-closed",
                file,
                "a result certificate is published, but the admin log does not close the poll",
            )
        if certificate.poll_id != poll:
            self.findings.add(
                "certificate-poll",
                file,
                f"the certificate is of poll {certificate.poll_id!r}",
                expected=poll,
                found=certificate.poll_id,
            )
        self._check_heads(certificate, logs, meaning.definition)
        self._check_counts(certificate, meaning.definition, meaning.counts)
        self._check_review(certificate, meaning.review.totals())
        state = "verified" if len(self.findings) == before else "invalid"
        self._report_integrity(certificate, meaning.definition)
        return state

    def _open(self, signed: bytes, poll: str) -> ResultCertificate | None:
        file = layout.CERTIFICATE
        origin = certificate_origin(self.prefix, poll)
        try:
            return open_certificate(signed, [self.key.renamed(origin)], origin=origin)
        except note.NoteError as exc:
            self.findings.add("bad-signature", file, f"the certificate does not verify: {exc}")
        except CertificateError as exc:
            self.findings.add("bad-certificate", file, str(exc), expected=origin)
        return None

    def _report_integrity(
        self, certificate: ResultCertificate, definition: PollDefinition | None
    ) -> None:
        """Each alarm a v3 certificate records is a finding; the counters it states are shown
        beside the certified (recounted) counts."""
        integrity = certificate.integrity
        if integrity is None:
            return
        file = layout.CERTIFICATE
        counted = dict(certificate.counts)
        shown = dict(integrity.counters)
        for kind, log in integrity.alarms:
            name = "admin log" if log == "admin" else f"lane {log}"
            message = f"{kind} on {name}: {_ALARMS.get(kind, 'an alarm of a kind unknown here')}"
            expected = found = None
            if kind == "counter-mismatch" and shown:
                options = [o.id for o in definition.options] if definition else list(counted)
                expected = " ".join(f"{o}={counted.get(o, 0)}" for o in options)
                found = " ".join(f"{o}={shown.get(o, 0)}" for o in options)
                message += f" (the counters showed {found}, the ledger counts {expected})"
            self.findings.add("integrity-alarm", file, message, expected=expected, found=found)

    def _check_heads(
        self, certificate: ResultCertificate, logs: list[Log], definition: PollDefinition | None
    ) -> None:
        """Each certified log line is that log's latest checkpoint, for every lane of the poll."""
        file = layout.CERTIFICATE
        by_name = {log.name: log for log in logs}
        heads = [(layout.ADMIN_LOG, certificate.admin)]
        heads += [(layout.lane_log(n), head) for n, head in enumerate(certificate.lanes)]
        lanes = definition.lanes if definition is not None else None
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
                    expected=f"{latest.size} {b64(latest.root)}",
                    found=f"{head.size} {b64(head.root)}",
                )

    def _check_review(self, certificate: ResultCertificate, totals: ReviewTotals) -> None:
        """No certificate while votes are held; its review totals are the logs'."""
        file = layout.CERTIFICATE
        if totals.undecided:
            self.findings.add(
                "held-undecided",
                file,
                f"the poll is certified while {totals.undecided} held votes are undecided",
                expected="0 undecided",
                found=str(totals.undecided),
            )
        # A v1 certificate predates holding votes: it states none.
        stated = certificate.review or ReviewTotals(0, 0, 0)
        for name in ("held", "released", "voided"):
            claimed, recounted = getattr(stated, name), getattr(totals, name)
            if claimed != recounted:
                self.findings.add(
                    "review-totals",
                    file,
                    f"certified {claimed} {name} votes, the logs hold {recounted}",
                    expected=str(recounted),
                    found=str(claimed),
                )

    def _check_counts(
        self,
        certificate: ResultCertificate,
        definition: PollDefinition | None,
        counts: Counter[str],
    ) -> None:
        """The certificate counts the poll's options, in order, as the leaves do."""
        file = layout.CERTIFICATE
        certified = dict(certificate.counts)
        if definition is not None:
            defined = [o.id for o in definition.options]
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
            recounted = counts[option]
            claimed = certified.get(option)
            if claimed is not None and claimed != recounted:
                self.findings.add(
                    "count-mismatch",
                    file,
                    f"option {option}: certified {claimed} votes, the recount of the leaves gives {recounted}",
                    expected=str(recounted),
                    found=str(claimed),
                )

"""The result certificate: a poll's final counts, bound to the final checkpoint of each of its logs.

Pure: no I/O, no clock. Signed by the archiver when a poll closes, once every log's final
checkpoint is out, as a C2SP signed note under the key name ``<prefix>/<poll id>/certificate``
(the ledger key, renamed, as for checkpoints). The note text, each line ending in ``\\n``::

    <prefix>/<poll id>/certificate       the certificate's origin (the same as its key name)
    tally-result/v2                      format and version
    poll <poll id>
    log admin <size> <root>              the admin log's final checkpoint: size and base64 root
    log 0 <size> <root>                  then every lane, 0 .. lanes-1, in order
    ...
    count <option id> <votes>            every option of the poll, in the order it was defined:
    ...                                  its accepted votes plus its released held votes
    total <votes>                        the sum of the counts
    held <votes>                         votes held for review, whatever became of them
    released <votes>                     held votes a reviewer released (counted above)
    voided <votes>                       held votes a reviewer voided (not counted)

Sizes and counts are ASCII decimal without leading zeros; roots are canonical base64 of 32 bytes.
An auditor checks each ``log`` line against that log's latest checkpoint and each ``count``
against a recount of the leaves: the counts are what the poll announced as its result. A poll is
certified only once every held vote is decided, so held = released + voided in what Tally signs.

``tally-result/v1``, written before votes could be held, is the same without the last three
lines; it still parses (``review`` is None), so ledgers certified then can still be audited.

``tally-result/v3`` is written instead of v2 only when the archiver's integrity check raised an
alarm on the poll (:mod:`tally.domain.integrity`). Its counts are still the recount of the
leaves; after the ``voided`` line it adds::

    alarm <kind> <log>                   one per alarm, at least one: kind counter-mismatch,
    ...                                  ledger-gap or unsigned-vote; log admin or a lane number
    counter <option id> <votes>          only when the live counters disagree with the recount at
    ...                                  close: what they counted, every option in poll order

so that what the poll displayed and what the ledger holds are both signed, side by side.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tally.ledger import note
from tally.ledger.merkle import HASH_SIZE

__all__ = [
    "FORMAT",
    "FORMAT_V3",
    "CertificateError",
    "Integrity",
    "LogHead",
    "ResultCertificate",
    "ReviewTotals",
    "certificate_origin",
    "open_certificate",
    "sign_certificate",
]

FORMAT = "tally-result/v2"
FORMAT_V1 = "tally-result/v1"  # read, never written: no review totals
FORMAT_V3 = "tally-result/v3"  # v2 plus the integrity section: written only with an alarm
_DECIMAL = r"(0|[1-9][0-9]{0,19})"
_LOG_RE = re.compile(rf"log (admin|{_DECIMAL}) {_DECIMAL} (\S+)")
_COUNT_RE = re.compile(rf"count (\S+) {_DECIMAL}")
_TOTAL_RE = re.compile(rf"total {_DECIMAL}")
_POLL_RE = re.compile(r"poll (\S+)")
_ALARM_RE = re.compile(rf"alarm ([a-z]+(?:-[a-z]+)*) (admin|{_DECIMAL})")
_COUNTER_RE = re.compile(rf"counter (\S+) {_DECIMAL}")
_REVIEW_RES = tuple(re.compile(rf"{name} {_DECIMAL}") for name in ("held", "released", "voided"))


class CertificateError(ValueError):
    """A certificate is malformed, or is not of the poll expected."""


@dataclass(frozen=True, slots=True)
class LogHead:
    """A log's tree size and root hash, as its checkpoint states them."""

    size: int
    root: bytes

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.root) != HASH_SIZE:
            raise CertificateError(f"a log head is a size >= 0 and a {HASH_SIZE}-byte root")


@dataclass(frozen=True, slots=True)
class ReviewTotals:
    """The poll's votes held for review, and what reviewers decided about them."""

    held: int
    released: int
    voided: int

    def __post_init__(self) -> None:
        if min(self.held, self.released, self.voided) < 0:
            raise CertificateError("review totals are >= 0")
        if self.released + self.voided > self.held:
            raise CertificateError(
                f"{self.released} released + {self.voided} voided is more than {self.held} held"
            )

    @property
    def undecided(self) -> int:
        """Held votes no reviewer decided (0 in any certificate Tally signs)."""
        return self.held - self.released - self.voided


@dataclass(frozen=True, slots=True)
class Integrity:
    """A v3 certificate's integrity section: the alarms raised on the poll, as (kind, log)
    pairs, and what the live counters counted when they disagree with the recount (else empty)."""

    alarms: tuple[tuple[str, str], ...]
    counters: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.alarms:
            raise CertificateError("an integrity section names at least one alarm")
        for kind, log in self.alarms:
            if _ALARM_RE.fullmatch(f"alarm {kind} {log}") is None:
                raise CertificateError(f"alarm {kind!r} on log {log!r} is malformed")
        if any(n < 0 for _, n in self.counters):
            raise CertificateError("counters are >= 0")


@dataclass(frozen=True, slots=True)
class ResultCertificate:
    """What a closed poll's certificate says; ``review`` is None only in a v1 certificate,
    ``integrity`` is set only in a v3 one."""

    origin: str
    poll_id: str
    admin: LogHead
    lanes: tuple[LogHead, ...]
    counts: tuple[tuple[str, int], ...]
    review: ReviewTotals | None = None
    integrity: Integrity | None = None

    def __post_init__(self) -> None:
        if self.integrity is not None:
            if self.review is None:
                raise CertificateError("an integrity section comes with review totals (v3)")
            counted = [option for option, _ in self.counts]
            if self.integrity.counters and [o for o, _ in self.integrity.counters] != counted:
                raise CertificateError("counter lines name exactly the counted options, in order")
        if not self.lanes:
            raise CertificateError("a certificate names at least one lane")
        ids = [option for option, _ in self.counts]
        if not ids or len(set(ids)) != len(ids) or any(n < 0 for _, n in self.counts):
            raise CertificateError("a certificate counts each option once, with counts >= 0")
        for text in (self.origin, self.poll_id, *ids):
            if not text or any(c.isspace() or ord(c) < 0x20 for c in text):
                raise CertificateError(f"{text!r} must be non-empty, without spaces")

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def format(self) -> str:
        review, integrity = self.review, self.integrity
        version = FORMAT_V1 if review is None else FORMAT if integrity is None else FORMAT_V3
        lines = [self.origin, version, f"poll {self.poll_id}", _log_line("admin", self.admin)]
        lines += [_log_line(str(lane), head) for lane, head in enumerate(self.lanes)]
        lines += [f"count {option} {n}" for option, n in self.counts]
        lines.append(f"total {self.total}")
        if review is not None:
            lines += [f"held {review.held}", f"released {review.released}"]
            lines.append(f"voided {review.voided}")
        if integrity is not None:
            lines += [f"alarm {kind} {log}" for kind, log in integrity.alarms]
            lines += [f"counter {option} {n}" for option, n in integrity.counters]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> ResultCertificate:
        """Parse a certificate's note text strictly; CertificateError on any deviation."""
        if not text.endswith("\n"):
            raise CertificateError("certificate text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 6 or lines[1] not in (FORMAT, FORMAT_V1, FORMAT_V3):
            raise CertificateError(f"not a {FORMAT} (or {FORMAT_V1}, {FORMAT_V3}) certificate")
        review: ReviewTotals | None = None
        integrity: Integrity | None = None
        if lines[1] == FORMAT_V3:
            integrity, lines = _integrity(lines)
        if lines[1] in (FORMAT, FORMAT_V3):
            if len(lines) < 9:
                raise CertificateError(f"a {FORMAT} certificate has at least 9 lines")
            review = _review_totals(lines[-3:], len(lines) - 3)
            lines = lines[:-3]
        origin, poll_line = lines[0], _POLL_RE.fullmatch(lines[2])
        if poll_line is None:
            raise CertificateError(f"line 3 must be 'poll <id>', got {lines[2]!r}")
        heads: list[tuple[str, LogHead]] = []
        counts: list[tuple[str, int]] = []
        position = 3
        while position < len(lines) and (match := _LOG_RE.fullmatch(lines[position])):
            heads.append((match[1], LogHead(int(match[3]), _root(match[4], position))))
            position += 1
        while position < len(lines) and (match := _COUNT_RE.fullmatch(lines[position])):
            counts.append((match[1], int(match[2])))
            position += 1
        total = _TOTAL_RE.fullmatch(lines[position]) if position == len(lines) - 1 else None
        if total is None:
            raise CertificateError(f"line {position + 1} is not a log, count or final total line")
        names = [name for name, _ in heads]
        if names != ["admin", *(str(lane) for lane in range(len(heads) - 1))]:
            raise CertificateError("log lines must be admin, then lanes 0, 1, ... in order")
        certificate = cls(
            origin,
            poll_line[1],
            heads[0][1],
            tuple(h for _, h in heads[1:]),
            tuple(counts),
            review,
            integrity,
        )
        if int(total[1]) != certificate.total:
            raise CertificateError(
                f"total {total[1]} is not the sum of the counts ({certificate.total})"
            )
        return certificate


def _integrity(lines: list[str]) -> tuple[Integrity, list[str]]:
    """The alarm and counter lines that end a v3 certificate, and the lines before them."""
    end = len(lines)
    counters: list[tuple[str, int]] = []
    while end > 0 and (match := _COUNTER_RE.fullmatch(lines[end - 1])):
        counters.insert(0, (match[1], int(match[2])))
        end -= 1
    alarms: list[tuple[str, str]] = []
    while end > 0 and (match := _ALARM_RE.fullmatch(lines[end - 1])):
        alarms.insert(0, (match[1], match[2]))
        end -= 1
    if not alarms:
        raise CertificateError(f"a {FORMAT_V3} certificate ends with its alarm lines")
    return Integrity(tuple(alarms), tuple(counters)), lines[:end]


def _review_totals(lines: list[str], first: int) -> ReviewTotals:
    """The held, released and voided lines that end a v2 certificate, in that order."""
    values = []
    for offset, (line, pattern) in enumerate(zip(lines, _REVIEW_RES, strict=True)):
        match = pattern.fullmatch(line)
        if match is None:
            name = pattern.pattern.partition(" ")[0]
            raise CertificateError(f"line {first + offset + 1} must be '{name} <votes>'")
        values.append(int(match[1]))
    return ReviewTotals(*values)


def _log_line(name: str, head: LogHead) -> str:
    return f"log {name} {head.size} {base64.b64encode(head.root).decode('ascii')}"


def _root(text: str, position: int) -> bytes:
    try:
        root = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        root = b""
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != text:
        raise CertificateError(f"line {position + 1}: root must be canonical base64 of 32 bytes")
    return root


def certificate_origin(prefix: str, poll_id: str) -> str:
    """The certificate's origin and key name: ``<prefix>/<poll id>/certificate``."""
    origin = f"{prefix}/{poll_id}/certificate"
    if not note.is_valid_name(origin):
        raise ValueError(f"{origin!r} is not a valid key name")
    return origin


def sign_certificate(certificate: ResultCertificate, signers: Sequence[note.Signer]) -> bytes:
    return note.sign(certificate.format(), signers)


def open_certificate(
    signed: bytes, verifiers: Iterable[note.Verifier], *, origin: str
) -> ResultCertificate:
    """Verify a signed certificate and parse it; it must carry ``origin``.

    Raises a ``note.NoteError`` if no known key signed it, CertificateError if malformed."""
    certificate = ResultCertificate.parse(note.open(signed, verifiers).text)
    if certificate.origin != origin:
        raise CertificateError(f"certificate is {certificate.origin!r}, expected {origin!r}")
    return certificate

"""``tally audit receipt``: check that one vote, as its receipt states it, is in the published log.

A receipt (what ``POST /v1/polls/{id}/votes`` answers, bare or as ``{"receipt": {...}}``)::

    {"poll_id": "final-2026", "lane": 2, "entry_id": 17, "option": "red",
     "accepted_at": "2026-01-01T00:00:00.000Z", "leaf_hash": "<64 lowercase hex digits>"}

names leaf ``entry_id - 1`` of the lane's log. Online (a SOURCE), the lane's latest checkpoint
must verify under the ledger key and cover that leaf; the entry read from its bundle must hash to
``leaf_hash`` and decode to the receipt's poll, lane, seq, option and time; and the inclusion
proof built from the published tiles must lead from ``leaf_hash`` to the signed root
(docs/ledger-format.md §5.5). Offline (``--proof``), a C2SP tlog-proof (what
``GET /v1/polls/{id}/receipts/{lane}/{entry}/proof`` serves as ``tlog_proof``) is checked the same
way against the key alone: its checkpoint, its index, the entry in its ``extra`` line, its proof.

The report shows the vote's status: ``accepted``, or for a vote held for review ``held``, then
``released`` or ``voided`` once the lane's log holds a reviewer's decision on it
(:mod:`~tally.audit.receipt_review`). A receipt may carry ``"status"`` (a vote cast held does);
if it does, the log must agree: the record is held, and a released or voided receipt's decision
is in the lane's log. ``tally audit verify`` checks the decisions themselves.

A receipt of a signed vote also carries its pseudonym and the gateway's admission signature
(:mod:`~tally.audit.receipt_admission`): the record rebuilt from the receipt must hash to its
``leaf_hash``, and the signature must verify under the gateway's admission key (pinned, or as
``GET /ledger/keys`` publishes it). On a closed poll whose signed result certificate is
published, the certificate's line for the lane is the lane's final log: a receipt whose seq is
beyond its size, or whose leaf there holds another record, is **missing from the final log**, a
verdict of its own (``missing``), distinct from "not yet in a checkpoint" (``pending``): no later
checkpoint can add it, and with a valid admission signature the receipt proves to anyone that
the gateway admitted a vote that the final log does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tally.audit.receipt_admission import AdmissionVerdict, check_receipt_admission
from tally.audit.receipt_parse import Receipt, ReceiptError, iso_ms, parse_receipt
from tally.audit.receipt_review import STATUS_TEXT, decision_of
from tally.audit.report import Finding
from tally.audit.source import Source
from tally.ledger import layout, merkle, note
from tally.ledger.admission import AdmissionKey
from tally.ledger.certificate import (
    CertificateError,
    LogHead,
    certificate_origin,
    open_certificate,
)
from tally.ledger.checkpoint import Checkpoint, CheckpointError, lane_origin, open_checkpoint
from tally.ledger.leaf import LeafError, VoteStatus
from tally.ledger.proof import InclusionProofText, ProofFormatError
from tally.ledger.review import ReviewRecord, decode_lane_record
from tally.ledger.tiles import TILE_WIDTH, Bundle, Tile, TileError, TileReader, decode_bundle

__all__ = [
    "RECEIPT_CODES",
    "Receipt",
    "ReceiptError",
    "ReceiptReport",
    "check_receipt",
    "parse_receipt",
]

RECEIPT_CODES = {
    "not-in-checkpoint": "the lane's latest signed checkpoint does not cover the vote yet",
    "missing-file": "a file needed to check the vote is not published",
    "bad-signature": "the checkpoint is not validly signed by the ledger key for the lane",
    "malformed-checkpoint": "the checkpoint is malformed, or of another log",
    "bad-bundle": "the entry bundle does not split into its entries",
    "tile-size": "a tile the inclusion proof needs has the wrong length",
    "bad-proof": "the tlog-proof file is malformed",
    "leaf-hash-mismatch": "the entry in the log does not hash to the receipt's leaf hash",
    "bad-record": "the entry in the log is not a valid vote record",
    "receipt-mismatch": "the vote in the log differs from the receipt in one field",
    "inclusion-failed": "the inclusion proof does not lead to the signed root",
    "receipt-inconsistent": "the vote record rebuilt from the receipt's fields does not hash to its leaf hash",
    "admission-unknown-key": "the receipt's admission is signed under a key id none of the admission keys has",
    "admission-key-not-valid": "the vote was admitted outside its admission key's validity period",
    "admission-bad-signature": "the receipt's admission signature does not verify under its key",
    "admission-time": "the vote was accepted too long after (or before) the gateway admitted it",
    "missing-from-final-log": "the poll is closed and certified, and the lane's final log does not hold the vote",
}


@dataclass(slots=True)
class ReceiptReport:
    """What checking one receipt found."""

    receipt: Receipt
    checked: list[str] = field(default_factory=list)  # what was checked, for the summary
    checkpoint_size: int | None = None
    root: bytes | None = None
    status: str | None = None  # once read: accepted, held, or what became of it (released...)
    admission: str | None = None  # what the admission signature showed, for people
    admitted_by: str | None = None  # the verifier key whose valid signature the receipt carries
    final_size: int | None = None  # the lane's certified final size, once the poll is certified
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def missing(self) -> bool:
        """The poll is closed and certified, and the lane's final log does not hold the vote."""
        return any(f.code == "missing-from-final-log" for f in self.findings)

    @property
    def pending(self) -> bool:
        """The vote is not in a signed checkpoint yet (it may be later: ask again)."""
        return any(f.code == "not-in-checkpoint" for f in self.findings)

    def add(
        self,
        code: str,
        file: str,
        message: str,
        *,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.findings.append(Finding(code, file, message, self.receipt.index, expected, found))

    def to_json(self) -> dict[str, object]:
        receipt = self.receipt
        return {
            "ok": self.ok,
            "poll_id": receipt.poll_id,
            "lane": receipt.lane,
            "entry_id": receipt.entry_id,
            "index": receipt.index,
            "leaf_hash": receipt.leaf_hash.hex(),
            "checkpoint_size": self.checkpoint_size,
            "root": None if self.root is None else self.root.hex(),
            "status": self.status,
            "verdict": self.verdict,
            "pseudonym": None if receipt.pseudonym is None else receipt.pseudonym.hex(),
            "admission": self.admission,
            "admitted_by": self.admitted_by,
            "final_size": self.final_size,
            "checked": list(self.checked),
            "findings": [f.to_json() for f in self.findings],
        }

    @property
    def verdict(self) -> str:
        """``ok``, ``missing`` (from the final log), ``pending`` (not yet in a checkpoint) or
        ``failed``: what the exit status of ``tally audit receipt`` says."""
        if self.ok:
            return "ok"
        if self.missing:
            return "missing"
        return "pending" if self.pending else "failed"

    def render_text(self) -> str:
        receipt = self.receipt
        lines = [f.line() for f in self.findings]
        if lines:
            lines.append("")
        lines.append(
            f"receipt      poll {receipt.poll_id}, lane {receipt.lane}, entry {receipt.entry_id} "
            f"(leaf {receipt.index}), option {receipt.option}, accepted {receipt.accepted_at}"
        )
        if self.checkpoint_size is not None and self.root is not None:
            lines.append(
                f"checkpoint   lane {receipt.lane} at size {self.checkpoint_size}, root "
                f"{self.root.hex()}"
            )
        if self.status is not None:
            lines.append(f"status       {STATUS_TEXT.get(self.status, self.status)}")
        if self.admission is not None:
            lines.append(f"admission    {self.admission}")
        lines.append(f"checked      {', '.join(self.checked) or 'nothing'}")
        if self.ok:
            verdict = "OK: the vote is in the lane's signed log, as the receipt says"
        elif self.missing:
            verdict = (
                f"MISSING FROM THE FINAL LOG: the poll is closed and certified, and lane "
                f"{receipt.lane}'s final log ({self.final_size} leaves) does not hold this vote"
            )
            if self.admitted_by is not None:
                verdict += (
                    f". The receipt carries the admission signature of {self.admitted_by}, "
                    "valid: the gateway admitted this vote, so the log lost or dropped an "
                    "admitted vote (anyone can check this with the receipt and the key)"
                )
            else:
                verdict += (
                    ". Check its admission signature against the gateway's published key "
                    "(--admission-key) to prove the vote was admitted"
                )
        elif self.pending:
            verdict = "FAIL: not yet in a checkpoint (try again after the next checkpoint)"
        else:
            verdict = f"FAIL: {len(self.findings)} finding(s)"
        lines.append(f"result       {verdict}")
        return "\n".join(lines) + "\n"


def check_receipt(
    receipt: Receipt,
    key: note.Verifier,
    *,
    source: Source | None = None,
    proof: bytes | None = None,
    proof_name: str = "proof",
    admission_keys: Mapping[int, AdmissionKey] | None = None,
) -> ReceiptReport:
    """Check ``receipt`` against the lane's published log (``source``), a tlog-proof (``proof``,
    named ``proof_name`` in findings), or both. ``key`` is named by the origin prefix.
    ``admission_keys`` (by key id) are the gateways' keys its admission signature is checked
    against; None: not checked (none given or published)."""
    report = ReceiptReport(receipt)
    origin = lane_origin(key.name, receipt.poll_id, receipt.lane)  # ValueError: bad key name
    verifier = key.renamed(origin)
    _check_itself(report, admission_keys)
    if proof is not None:
        _check_proof(report, verifier, origin, proof, proof_name)
    if source is not None:
        _check_online(report, verifier, origin, source, _final_head(report, key, source))
    return report


def _check_itself(report: ReceiptReport, keys: Mapping[int, AdmissionKey] | None) -> None:
    """What the receipt alone proves: its fields give its leaf hash, and its admission
    signature verifies under the gateway's key."""
    receipt = report.receipt
    record = receipt.record()
    if record is None:
        report.admission = "none: an older receipt, without the vote's pseudonym or admission"
        return
    rebuilt = receipt.rebuilt_leaf_hash()
    if rebuilt != receipt.leaf_hash:
        report.add(
            "receipt-inconsistent",
            "receipt",
            "the vote record rebuilt from the receipt's fields hashes to "
            f"{rebuilt.hex() if rebuilt else '?'}, not to its leaf hash",
            expected=receipt.leaf_hash.hex(),
            found=rebuilt.hex() if rebuilt else None,
        )
    else:
        report.checked.append("receipt fields give its leaf hash")
    admission = receipt.admission
    if admission is None:
        report.admission = "none: the vote carries no admission signature (a version 0x01 record)"
        return
    when = receipt.admitted_at or iso_ms(admission.admitted_ms)
    if keys is None:
        report.admission = (
            f"key id {admission.key_id:08x}, admitted {when}: NOT CHECKED, no admission key "
            "given (--admission-key) or published by the source"
        )
        return
    verdict: AdmissionVerdict = check_receipt_admission(record, admission, keys)
    if verdict.code is not None:
        report.add(verdict.code, "receipt", verdict.message, found=f"{admission.key_id:08x}")
        report.admission = f"INVALID: {verdict.message}"
        return
    report.admitted_by = str(verdict.key.verifier) if verdict.key else None
    report.admission = f"valid: {verdict.message}, admitted {when}: the gateway admitted this vote"
    report.checked.append("admission signature")


def _final_head(report: ReceiptReport, key: note.Verifier, source: Source) -> LogHead | None:
    """The lane's certified final head, when the poll's result certificate is published and
    verifies (a certificate that does not is `tally audit verify`'s to report)."""
    receipt = report.receipt
    signed = source.read(layout.CERTIFICATE)
    if signed is None:
        return None
    origin = certificate_origin(key.name, receipt.poll_id)
    try:
        certificate = open_certificate(signed, [key.renamed(origin)], origin=origin)
    except (note.NoteError, CertificateError):
        return None
    if certificate.poll_id != receipt.poll_id or receipt.lane >= len(certificate.lanes):
        return None
    report.checked.append("result certificate")
    head = certificate.lanes[receipt.lane]
    report.final_size = head.size
    return head


def _stands_alone(report: ReceiptReport) -> bool:
    """Whether the receipt alone describes one whole vote record: its fields (pseudonym
    included) give its leaf hash, and its admission signature, if checked, verifies. Only then
    does another record at its leaf make the vote missing rather than the receipt wrong."""
    return report.receipt.pseudonym is not None and not any(
        f.code == "receipt-inconsistent" or f.code.startswith("admission-") for f in report.findings
    )


def _missing(report: ReceiptReport, file: str, message: str, found: str) -> None:
    receipt = report.receipt
    report.add(
        "missing-from-final-log",
        file,
        f"entry {receipt.entry_id} of lane {receipt.lane} is missing from the final log: "
        + message,
        expected=receipt.leaf_hash.hex(),
        found=found,
    )


def _open(
    report: ReceiptReport, verifier: note.Verifier, origin: str, file: str, signed: bytes
) -> Checkpoint | None:
    try:
        return open_checkpoint(signed, [verifier], origin=origin)
    except note.NoteError as exc:
        report.add(
            "bad-signature",
            file,
            f"the checkpoint does not verify under {verifier}: {exc}",
            expected=str(verifier),
        )
    except CheckpointError as exc:
        report.add("malformed-checkpoint", file, str(exc), expected=origin)
    return None


def _covers(report: ReceiptReport, file: str, checkpoint: Checkpoint) -> bool:
    report.checkpoint_size, report.root = checkpoint.size, checkpoint.root
    if report.receipt.index < checkpoint.size:
        return True
    report.add(
        "not-in-checkpoint",
        file,
        f"entry {report.receipt.entry_id} is not yet in a checkpoint: the lane's latest signed "
        f"checkpoint has {checkpoint.size} leaves",
        expected=f"size > {report.receipt.index}",
        found=str(checkpoint.size),
    )
    return False


def _check_entry(report: ReceiptReport, file: str, entry: bytes) -> None:
    """The log's entry is the receipt's vote: same leaf hash, same fields."""
    receipt = report.receipt
    digest = merkle.leaf_hash(entry)
    if digest != receipt.leaf_hash:
        report.add(
            "leaf-hash-mismatch",
            file,
            f"leaf {receipt.index} hashes to {digest.hex()}, the receipt says "
            f"{receipt.leaf_hash.hex()}",
            expected=receipt.leaf_hash.hex(),
            found=digest.hex(),
        )
    try:
        record = decode_lane_record(entry)
    except LeafError as exc:
        report.add("bad-record", file, f"leaf {receipt.index}: {exc}")
        return
    if isinstance(record, ReviewRecord):
        report.add("bad-record", file, f"leaf {receipt.index} is a review record, not a vote")
        return
    report.status = record.status.name.lower()
    if record.status not in (VoteStatus.ACCEPTED, VoteStatus.HELD):
        report.add("bad-record", file, f"leaf {receipt.index}: status {report.status} is reserved")
    pairs = (
        ("poll", receipt.poll_id, record.poll_id),
        ("lane", str(receipt.lane), str(record.lane)),
        ("entry seq", str(receipt.entry_id), str(record.seq)),
        ("option", receipt.option, record.option_id),
        ("accepted time", iso_ms(receipt.accepted_ms), iso_ms(record.accepted_ms)),
        ("status", _recorded_as(receipt.status) or report.status, report.status),
    )
    for name, expected, found in pairs:
        if expected != found:
            report.add(
                "receipt-mismatch",
                file,
                f"leaf {receipt.index}: {name} is {found} in the log, {expected} in the receipt",
                expected=expected,
                found=found,
            )
    report.checked.append("entry")


def _recorded_as(status: str | None) -> str | None:
    """The record's status a receipt's status implies: a vote cast held stays a held record."""
    return "held" if status in ("released", "voided") else status


def _check_decision(report: ReceiptReport, source: Source, log: str, size: int) -> None:
    """A held vote: what the lane's log says became of it, and whether the receipt agrees."""
    receipt = report.receipt
    decision = decision_of(source, log, size, receipt.index)
    if decision is not None:
        report.status = decision.name.lower()
    if receipt.status in ("released", "voided") and receipt.status != report.status:
        report.add(
            "receipt-mismatch",
            layout.checkpoint_path(log),
            f"the receipt says {receipt.status}, but lane {receipt.lane}'s log up to size {size} "
            + (f"holds {report.status}" if decision else "holds no decision on it"),
            expected=receipt.status,
            found=report.status,
        )
    report.checked.append("review decision")


def _include(
    report: ReceiptReport, file: str, proof: list[bytes], checkpoint: Checkpoint, how: str
) -> None:
    receipt = report.receipt
    try:
        merkle.verify_inclusion(
            receipt.leaf_hash, receipt.index, checkpoint.size, proof, checkpoint.root
        )
    except merkle.ProofError as exc:
        report.add(
            "inclusion-failed",
            file,
            f"the inclusion proof of leaf {receipt.index} ({how}) does not verify: {exc}",
            expected=checkpoint.root.hex(),
        )
    else:
        report.checked.append(f"inclusion proof ({how})")


def _check_proof(
    report: ReceiptReport, verifier: note.Verifier, origin: str, data: bytes, name: str
) -> None:
    receipt = report.receipt
    try:
        text = InclusionProofText.parse(data)
    except ProofFormatError as exc:
        report.add("bad-proof", name, str(exc))
        return
    checkpoint = _open(report, verifier, origin, name, text.checkpoint)
    if checkpoint is None:
        return
    report.checked.append("checkpoint signature (proof)")
    if text.index != receipt.index:
        report.add(
            "receipt-mismatch",
            name,
            f"the proof is of leaf {text.index}, the receipt names leaf {receipt.index}",
            expected=str(receipt.index),
            found=str(text.index),
        )
        return
    if not _covers(report, name, checkpoint):
        return
    if text.extra is not None:
        _check_entry(report, name, text.extra)
    _include(report, name, list(text.hashes), checkpoint, "from the tlog-proof")


def _check_online(
    report: ReceiptReport,
    verifier: note.Verifier,
    origin: str,
    source: Source,
    final: LogHead | None,
) -> None:
    receipt = report.receipt
    log = layout.lane_log(receipt.lane)
    file = layout.checkpoint_path(log)
    if final is not None and receipt.index >= final.size:
        report.checkpoint_size, report.root = final.size, final.root
        _missing(
            report,
            layout.CERTIFICATE,
            f"the certificate closes lane {receipt.lane} at {final.size} leaves",
            str(final.size),
        )
        return
    signed = source.read(file)
    if signed is None:
        report.add("missing-file", file, f"lane {receipt.lane} has no published checkpoint")
        return
    checkpoint = _open(report, verifier, origin, file, signed)
    if checkpoint is None:
        return
    report.checked.append("checkpoint signature")
    if not _covers(report, file, checkpoint):
        return
    size, index = checkpoint.size, receipt.index
    bundle = Bundle(index // TILE_WIDTH, min(TILE_WIDTH, size - index // TILE_WIDTH * TILE_WIDTH))
    bundle_file = f"{log}/{bundle.path}"
    data = source.read(bundle_file)
    if data is None:
        report.add("missing-file", bundle_file, "the entry bundle holding the vote is missing")
    else:
        try:
            entries = decode_bundle(data, bundle.width)
        except TileError as exc:
            report.add("bad-bundle", bundle_file, str(exc))
        else:
            entry = entries[index % TILE_WIDTH]
            _check_entry(report, bundle_file, entry)
            if (
                final is not None
                and merkle.leaf_hash(entry) != receipt.leaf_hash
                and _stands_alone(report)
            ):
                _missing(
                    report,
                    bundle_file,
                    f"the certified final log holds another record at leaf {index}",
                    merkle.leaf_hash(entry).hex(),
                )
            if report.status == "held":
                _check_decision(report, source, log, size)

    def fetch(tile: Tile) -> bytes:
        path = f"{log}/{tile.path}"
        data = source.read(path)
        if data is None:
            raise _TileProblem("missing-file", path, "a tile the inclusion proof needs is missing")
        if len(data) != tile.width * merkle.HASH_SIZE:
            raise _TileProblem(
                "tile-size", path, f"a tile of width {tile.width} is {len(data)} bytes"
            )
        return data

    try:
        proof = merkle.inclusion_proof(index, size, TileReader(size, fetch))
    except _TileProblem as problem:
        report.add(problem.code, problem.path, problem.message)
        return
    _include(report, file, proof, checkpoint, "from the tiles")


class _TileProblem(Exception):
    """A tile the proof needs cannot be used; raised through TileReader to the check."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.code, self.path, self.message = code, path, message

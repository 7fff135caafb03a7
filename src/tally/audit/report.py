"""What an audit found, and how it is shown: findings, the verify report, and a progress bar.

A :class:`Finding` is one discrepancy, named so that someone else can check it by hand: a stable
``code``, the ``file`` at fault (a path relative to the poll's ledger root, as
:mod:`tally.ledger.layout` names it), the leaf ``index`` when one leaf is at fault, and what was
expected and found. The codes are part of the auditor's interface (scripts match on them), so
they never change meaning; the messages are for people and may be reworded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from tally.ledger.certificate import ReviewTotals

__all__ = ["ADMISSION_STATES", "CERTIFICATE_STATES", "Finding", "KeyListing", "Progress", "Report"]

# What the report says of the result certificate.
CERTIFICATE_STATES = {
    "verified": "verified: signed, bound to every log's final checkpoint, counts match the recount",
    "not-closed": "none: the poll is not closed, so it has no certificate yet",
    "missing": "MISSING: the poll is closed but publishes no certificate",
    "awaiting-review": "none yet: the poll is closed, but held votes await a reviewer's decision",
    "invalid": "INVALID: see the findings",
}

# What the report says of the poll's admission signatures (tally.audit.verify_admission).
ADMISSION_STATES = {
    "signed": "signed: every vote carries a valid signature by an admission key valid at its time",
    "unsigned": "unsigned: a pre-admission poll (no admission key in its admin log, votes unsigned)",
    "invalid": "INVALID: votes without a valid admission signature, see the findings",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One discrepancy between the published ledger and what it must be."""

    code: str
    file: str
    message: str
    index: int | None = None
    expected: str | None = None
    found: str | None = None

    def line(self) -> str:
        """The human form: ``FAIL <file> [<code>] <message>``."""
        return f"FAIL {self.file} [{self.code}] {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "file": self.file,
            "index": self.index,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class KeyListing:
    """One admission key of the poll's admin log, as the report lists it: observers compare it
    with the keys the gateways' operators publish (``--admission-key`` pins them)."""

    name: str
    key_id: int
    verifier: str  # the verifier key string (docs/ledger-format.md §4.4)
    not_before_ms: int
    not_after_ms: int  # 0: no end
    accepted: bool  # False: in the admin log, but not among the pinned keys

    def line(self) -> str:
        until = _iso(self.not_after_ms) if self.not_after_ms else "no end"
        pinned = "" if self.accepted else " (NOT PINNED: its signatures do not count)"
        return f"{self.verifier} valid {_iso(self.not_before_ms)} to {until}{pinned}"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "key_id": f"{self.key_id:08x}",
            "verifier": self.verifier,
            "not_before_ms": self.not_before_ms,
            "not_after_ms": self.not_after_ms or None,
            "accepted": self.accepted,
        }


def _iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(slots=True)
class Report:
    """The outcome of ``tally audit verify``: what the ledger says, and every finding."""

    source: str
    poll_id: str | None = None
    state: str | None = None  # created / open / closed, from the admin log
    logs: dict[str, int] = field(default_factory=dict)  # log name -> latest verified tree size
    votes: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # option id -> recounted votes
    review: ReviewTotals = field(default_factory=lambda: ReviewTotals(0, 0, 0))
    certificate: str = "missing"  # a key of CERTIFICATE_STATES
    admission: str = "unsigned"  # a key of ADMISSION_STATES
    admission_keys: list[KeyListing] = field(default_factory=list)  # from the admin log
    admission_signed: int = 0  # votes whose admission signature verified
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "poll_id": self.poll_id,
            "logs": dict(self.logs),
            "votes": self.votes,
            "counts": dict(self.counts),
            "review": {
                "held": self.review.held,
                "released": self.review.released,
                "voided": self.review.voided,
                "undecided": self.review.undecided,
            },
            "certificate": self.certificate,
            "admission": {
                "state": self.admission,
                "signed_votes": self.admission_signed,
                "keys": [k.to_json() for k in self.admission_keys],
            },
            "findings": [f.to_json() for f in self.findings],
        }

    def render_text(self) -> str:
        """One line per finding, then a summary of what was checked."""
        lines = [f.line() for f in self.findings]
        if lines:
            lines.append("")
        state = f" ({self.state})" if self.state else ""
        review = self.review
        lines += [
            f"poll         {self.poll_id or '?'}{state}",
            f"source       {self.source}",
            f"logs         {_pairs(self.logs) or 'none'}",
            f"votes        {self.votes}",
            f"counts       {_pairs(self.counts) or 'none'} (accepted + released)",
            f"review       held {review.held}, released {review.released}, voided "
            f"{review.voided}, undecided {review.undecided}",
            f"certificate  {CERTIFICATE_STATES.get(self.certificate, self.certificate)}",
            f"admission    {ADMISSION_STATES.get(self.admission, self.admission)}"
            + (f" ({self.admission_signed} signed votes)" if self.admission_signed else ""),
        ]
        lines += [f"admission key {key.line()}" for key in self.admission_keys]
        verdict = "OK: no findings" if self.ok else f"FAIL: {len(self.findings)} finding(s)"
        lines.append(f"result       {verdict}")
        return "\n".join(lines) + "\n"


def _pairs(values: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


class Progress:
    """A one-line progress bar on a terminal stream: ``done / total`` items, redrawn in place.

    Redraws at most ten times a second, so that drawing never shows in the throughput. A
    disabled bar does nothing, so callers need not test for it. Call it as ``bar(done, total)``,
    or ``bar(done, total, size)`` with the bytes written so far, shown with their rate.

    Rates are over the time since the bar was made, when the work began: timing from the first
    call left out the work before it (an export's first fetch) and overstated the rate.
    """

    __slots__ = ("_done", "_enabled", "_label", "_last", "_size", "_started", "_stream", "_total")

    WIDTH = 30
    INTERVAL_S = 0.1

    def __init__(self, stream: TextIO, *, enabled: bool, label: str = "leaves") -> None:
        self._stream = stream
        self._enabled = enabled
        self._label = label
        self._done = 0
        self._total = 0
        self._size: int | None = None
        self._started = time.monotonic()
        self._last: float | None = None

    def __call__(self, done: int, total: int, size: int | None = None) -> None:
        self._done, self._total, self._size = done, total, size
        if not self._enabled:
            return
        now = time.monotonic()
        if self._last is not None and now - self._last < self.INTERVAL_S:
            return
        self._draw(now)

    def _draw(self, now: float) -> None:
        self._last = now
        done, total = self._done, max(self._total, 1)
        filled = min(self.WIDTH, self.WIDTH * done // total)
        elapsed = max(now - self._started, 1e-9)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = (
            f"\r[{bar}] {done:,}/{self._total:,} {self._label} "
            f"{min(100, 100 * done // total):3d}% {done / elapsed:,.0f}/s "
        )
        if self._size is not None:
            line += f"{_megabytes(self._size)} at {_megabytes(self._size / elapsed)}/s "
        self._stream.write(line)
        self._stream.flush()

    def finish(self) -> None:
        """Draw the final state and end the line, so that later output starts on a new line."""
        if not self._enabled or self._last is None:
            return
        self._draw(time.monotonic())
        self._stream.write("\n")
        self._stream.flush()


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"

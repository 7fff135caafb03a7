"""Checkpoint witnesses, the archiver's side: collect cosignatures on each checkpoint it signs.

For every checkpoint a log publishes, each configured witness (TALLY_WITNESSES: its URL and
verifier key) gets a C2SP tlog-witness ``add-checkpoint`` request: the size it cosigned last for
that log, a consistency proof from that size, and the signed checkpoint. Its cosignature lines
are checked against its key and appended to the note, which is then published (a cosigned
checkpoint is the same note with more signature lines: docs/ledger-format.md, checkpoint
witnesses).

The size each witness last cosigned is remembered per log. After a restart it is the size of
the log's newest published checkpoint if that one carries the witness's cosignature, else 0;
a wrong guess costs one round trip, as the witness answers 409 with its size and the request is
sent again from there.

A witness never stops archiving. One that cannot be reached, times out or answers 5xx is
skipped for BACKOFF_S (so a dead witness costs one timeout per back-off, not one per log); one
that refuses a checkpoint (409 with a size we cannot prove from, 4xx) or answers with a
cosignature that does not verify is logged loudly. Either way the checkpoint is published
without that witness's cosignature and the failure is counted (``WitnessStats``, exported as
metrics): an auditor who requires that witness will then flag the log's final checkpoint if no
later one of it gets cosigned.

Blocking (urllib, short timeouts): call from the archiver's worker thread.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tally.ledger import note
from tally.ledger.checkpoint import Checkpoint
from tally.ledger.cosignature import (
    CosignatureVerifier,
    add_cosignatures,
    check_cosignatures,
    note_text,
)
from tally.witness.protocol import ProtocolError, format_add_checkpoint, parse_size

__all__ = ["BACKOFF_S", "TIMEOUT_S", "CheckpointWitnesses", "WitnessEndpoint", "WitnessStats"]

log = logging.getLogger("tally.archiver.witness")

TIMEOUT_S = 2.0
BACKOFF_S = 30.0

# proof(old size) -> the consistency proof from that size to the checkpoint being witnessed.
ProofSource = Callable[[int], Sequence[bytes]]


@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    """One witness: where to send checkpoints, and the key its cosignatures must verify under."""

    url: str  # the submission prefix: POST <url>/add-checkpoint
    key: CosignatureVerifier

    @classmethod
    def parse(cls, entry: str) -> WitnessEndpoint:
        """``<url> <verifier key>`` (as TALLY_WITNESSES lists them); ValueError if malformed."""
        parts = entry.split()
        if len(parts) != 2:
            raise ValueError(f"a witness is '<url> <verifier key>', got {entry!r}")
        url, vkey = parts
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a witness URL starts with http:// or https://, got {url!r}")
        try:
            key = CosignatureVerifier.parse(vkey)
        except note.NoteError as exc:
            raise ValueError(f"witness key {vkey!r}: {exc}") from None
        return cls(url.rstrip("/"), key)


@dataclass
class WitnessStats:
    """Counters since start, over every witness (metrics)."""

    cosignatures: int = 0  # cosignatures collected and published
    unavailable: int = 0  # requests not answered (down, timeout, 5xx) or skipped in back-off
    refused: int = 0  # checkpoints a witness refused, or answered with a bad cosignature


@dataclass(slots=True)
class _Witness:
    endpoint: WitnessEndpoint
    sizes: dict[str, int] = field(default_factory=dict)  # origin -> size it cosigned last
    down_until: float = 0.0


class _Unavailable(Exception):
    """The witness did not answer usefully (transport error, timeout, 5xx)."""


class CheckpointWitnesses:
    """Every configured witness, with what each cosigned last per log."""

    def __init__(
        self,
        endpoints: Sequence[WitnessEndpoint],
        *,
        timeout_s: float = TIMEOUT_S,
        backoff_s: float = BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._witnesses = [_Witness(endpoint) for endpoint in endpoints]
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._clock = clock
        self.stats = WitnessStats()

    @property
    def endpoints(self) -> list[WitnessEndpoint]:
        return [w.endpoint for w in self._witnesses]

    def cosign(
        self, signed: bytes, checkpoint: Checkpoint, previous: bytes | None, proof: ProofSource
    ) -> bytes:
        """``signed`` with every cosignature the witnesses give; ``previous`` is the log's
        newest published checkpoint before this one (None: none), ``proof`` builds
        consistency proofs to ``checkpoint``."""
        lines: list[str] = []
        for witness in self._witnesses:
            if self._clock() < witness.down_until:
                self.stats.unavailable += 1
                continue
            try:
                line = self._ask(witness, signed, checkpoint, previous, proof)
            except _Unavailable as exc:
                self.stats.unavailable += 1
                witness.down_until = self._clock() + self._backoff_s
                log.warning(
                    "witness %s unavailable (%s): %s size %d published without its "
                    "cosignature; retrying it in %.0f s",
                    witness.endpoint.url, exc, checkpoint.origin, checkpoint.size,
                    self._backoff_s,
                )  # fmt: skip
                continue
            if line is None:
                self.stats.refused += 1
            else:
                self.stats.cosignatures += 1
                lines.append(line)
        return add_cosignatures(signed, lines) if lines else signed

    def _ask(
        self,
        witness: _Witness,
        signed: bytes,
        checkpoint: Checkpoint,
        previous: bytes | None,
        proof: ProofSource,
    ) -> str | None:
        """The witness's cosignature line, or None (refused: logged)."""
        origin, size = checkpoint.origin, checkpoint.size
        old = witness.sizes.get(origin)
        if old is None:
            old = self._guess(witness, previous)
        for attempt in range(2):
            if old > size:
                break
            path = proof(old) if 0 < old < size else ()
            status, body = self._post(witness, format_add_checkpoint(old, path, signed))
            if status == 200:
                line = self._check(witness, signed, body)
                if line is not None:
                    witness.sizes[origin] = size
                return line
            if status == 409 and attempt == 0:
                try:
                    reported = parse_size(body)
                except ProtocolError:
                    reported = -1
                if reported >= 0 and reported != old:
                    old = reported
                    continue
            log.error(
                "witness %s refused %s size %d (sent old size %d): %d %s",
                witness.endpoint.url, origin, size, old, status,
                body[:300].decode("utf-8", "replace"),
            )  # fmt: skip
            return None
        log.error(
            "witness %s has cosigned %s up to size %d, beyond this checkpoint's %d: the log "
            "lost entries the witness saw",
            witness.endpoint.url, origin, old, size,
        )  # fmt: skip
        return None

    def _guess(self, witness: _Witness, previous: bytes | None) -> int:
        """The size the witness cosigned last, from the log's newest published checkpoint."""
        if previous is None:
            return 0
        try:
            if check_cosignatures(previous, [witness.endpoint.key]).valid:
                return Checkpoint.parse(note_text(previous)).size
        except (note.NoteError, ValueError):
            pass
        return 0

    def _check(self, witness: _Witness, signed: bytes, body: bytes) -> str | None:
        """The witness's own valid cosignature line in its 200 answer, or None (logged)."""
        key = witness.endpoint.key
        try:
            lines = body.decode("utf-8").splitlines(keepends=True)
            mine = [line for line in lines if line.startswith(f"\N{EM DASH} {key.name} ")]
            for line in mine:
                check = check_cosignatures(add_cosignatures(signed, [line]), [key])
                if check.valid and not check.invalid:
                    return line
        except (UnicodeDecodeError, note.NoteError) as exc:
            log.error("witness %s answered a malformed cosignature: %s", witness.endpoint.url, exc)
            return None
        log.error("witness %s answered no valid cosignature by %s", witness.endpoint.url, key)
        return None

    def _post(self, witness: _Witness, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 (the URL's scheme is checked at parse)
            f"{witness.endpoint.url}/add-checkpoint",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:  # noqa: S310
                return int(answer.status), answer.read(64 * 1024)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise _Unavailable(f"HTTP {exc.code}") from None
            return exc.code, exc.read(64 * 1024)
        except (OSError, TimeoutError) as exc:  # URLError is an OSError
            raise _Unavailable(str(getattr(exc, "reason", exc))) from None

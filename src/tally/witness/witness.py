"""The witness's rules (C2SP tlog-witness §add-checkpoint): cosign a log's checkpoint only if it
is consistent with the last one the witness cosigned for that log.

Which logs: each configured ledger key (a Tally ledger's verifier key, named by its origin
prefix, as ``GET /ledger/keys`` serves it) admits the origins ``<prefix>/<poll>/<log>``, and a
checkpoint of such an origin must carry a valid signature by that key renamed to the origin
(docs/ledger-format.md §4.2): the witness holds the same trust a Tally auditor holds.

The checks, in the spec's order, and the answer to each failure:

====  ========================  ==============================================================
400   ``malformed-request``     the body is not ``old``, proof lines, an empty line, a note
400   ``malformed-checkpoint``  the note or its checkpoint body does not parse
404   ``unknown-log``           no configured key's prefix covers the origin
403   ``bad-log-signature``     no valid signature by the log's key, or one that fails
400   ``old-size-too-large``    ``old`` is larger than the checkpoint's size
409   (size body)               ``old`` is not the size this witness cosigned last (0: never)
422   ``not-empty-root``        a checkpoint of size 0 whose root is not SHA-256("")
422   ``inconsistent``          the consistency proof does not verify, or at the same size the
                                root differs (a fork)
====  ========================  ==============================================================

Checking ``old`` and saving the new state happen under one lock per origin, so two concurrent
requests cannot roll the state back (the race the spec spells out). The state is saved before
the cosignature is returned. A cosignature's time is the clock's, but never earlier than the
witness's previous cosignature of the same log, so its times increase with the tree size.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tally.ledger import merkle, note
from tally.ledger.checkpoint import Checkpoint, CheckpointError
from tally.ledger.cosignature import Cosigner, add_cosignatures, check_cosignatures, note_text
from tally.witness.protocol import (
    SIZE_CONTENT_TYPE,
    ProtocolError,
    format_size,
    parse_add_checkpoint,
)
from tally.witness.state import StateFiles, origin_hash

__all__ = ["Answer", "LogKeys", "Witness", "problem"]

log = logging.getLogger("tally.witness")
_LOG_PART = re.compile(r"[^/\s+]+/[^/\s+]+")  # <poll>/<log> after the prefix


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, content type, body (a problem's ``code`` for errors)."""

    status: int
    content_type: str
    body: bytes
    code: str | None = None


class LogKeys:
    """The ledgers this witness follows: each ledger key covers ``<its name>/<poll>/<log>``."""

    def __init__(self, keys: Sequence[note.Verifier]) -> None:
        self._by_prefix = {key.name: key for key in keys}

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def verifier(self, origin: str) -> note.Verifier | None:
        """The log's key (the ledger key renamed to ``origin``), or None for an unknown origin."""
        for prefix, key in self._by_prefix.items():
            rest = origin[len(prefix) + 1 :]
            if origin.startswith(f"{prefix}/") and _LOG_PART.fullmatch(rest):
                return key.renamed(origin)
        return None


@dataclass(slots=True)
class _LogState:
    size: int
    root: bytes
    timestamp: int  # of this witness's cosignature
    note: bytes


class Witness:
    """Cosigns checkpoints of the configured logs; thread-safe (one lock per origin)."""

    def __init__(
        self,
        cosigner: Cosigner,
        logs: LogKeys,
        state: StateFiles,
        clock: Callable[[], float],
    ) -> None:
        self.cosigner = cosigner
        self._logs = logs
        self._state = state
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._cache: dict[str, _LogState | None] = {}
        self.cosigned = 0
        self.refused = 0

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one add-checkpoint request (blocking: it fsyncs)."""
        answer = self._add(body)
        if answer.status == 200:
            self.cosigned += 1
        else:
            self.refused += 1
        return answer

    def latest(self, digest: str) -> bytes | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``digest``."""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        return self._state.load(digest)

    def _add(self, body: bytes) -> Answer:
        try:
            request = parse_add_checkpoint(body)
            text = note_text(request.checkpoint)
            origin = text.split("\n", 1)[0]
        except (ProtocolError, note.NoteError) as exc:
            return problem(400, "malformed-request", str(exc))
        key = self._logs.verifier(origin)
        if key is None:
            return problem(404, "unknown-log", f"this witness does not follow {origin!r}")
        try:
            opened = note.open(request.checkpoint, [key])
            checkpoint = Checkpoint.parse(opened.text)
        except (note.UnverifiedNote, note.BadSignature) as exc:
            return problem(403, "bad-log-signature", str(exc))
        except (note.NoteError, CheckpointError) as exc:
            return problem(400, "malformed-checkpoint", str(exc))
        if request.old_size > checkpoint.size:
            return problem(
                400,
                "old-size-too-large",
                f"old size {request.old_size} is larger than the checkpoint's {checkpoint.size}",
            )
        digest = origin_hash(origin)
        with self._lock(digest):
            state = self._load(digest)
            size = 0 if state is None else state.size
            if request.old_size != size:
                return Answer(409, SIZE_CONTENT_TYPE, format_size(size))
            if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
                return problem(422, "not-empty-root", "a checkpoint of size 0 has the empty root")
            old_root = merkle.EMPTY_ROOT if state is None or size == 0 else state.root
            try:
                merkle.verify_consistency(
                    size, checkpoint.size, request.proof, old_root, checkpoint.root
                )
            except merkle.ProofError as exc:
                log.warning(
                    "witness: refused %s at size %d (cosigned %d): %s",
                    origin, checkpoint.size, size, exc,
                )  # fmt: skip
                return problem(422, "inconsistent", f"not consistent with size {size}: {exc}")
            timestamp = max(int(self._clock()), 1 if state is None else state.timestamp)
            line = self.cosigner.cosign(opened.text, timestamp)
            cosigned = add_cosignatures(request.checkpoint, [line])
            self._state.save(digest, cosigned)
            self._cache[digest] = _LogState(checkpoint.size, checkpoint.root, timestamp, cosigned)
        return Answer(200, "text/plain; charset=utf-8", line.encode())

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(digest)
            if lock is None:
                lock = self._locks[digest] = threading.Lock()
            return lock

    def _load(self, digest: str) -> _LogState | None:
        """The log's state (call with its lock held): cached, else read from the state dir."""
        if digest in self._cache:
            return self._cache[digest]
        stored = self._state.load(digest)
        state = None
        if stored is not None:
            checkpoint = Checkpoint.parse(note_text(stored))
            own = check_cosignatures(stored, [self.cosigner.verifier]).valid
            if not own:
                raise RuntimeError(f"state of {checkpoint.origin} lacks this witness's cosignature")
            state = _LogState(checkpoint.size, checkpoint.root, own[0].timestamp, stored)
        self._cache[digest] = state
        return state


def problem(status: int, code: str, detail: str) -> Answer:
    """An RFC 9457 problem document with a stable ``code``."""
    document = {"type": "about:blank", "title": _TITLES[code], "status": status, "code": code}
    document["detail"] = detail
    return Answer(status, "application/problem+json", json.dumps(document).encode(), code)


_TITLES = {
    "malformed-request": "The request is not a tlog-witness add-checkpoint body",
    "malformed-checkpoint": "The checkpoint is not a well-formed signed checkpoint",
    "unknown-log": "This witness does not follow that log",
    "bad-log-signature": "The checkpoint is not validly signed by the log's key",
    "old-size-too-large": "The old size is larger than the checkpoint's",
    "not-empty-root": "A checkpoint of size 0 must have the empty tree's root",
    "inconsistent": "The checkpoint is not consistent with the one this witness cosigned",
    "too-large": "The request body is too large",
}

"""C2SP tlog-checkpoint: the signed tree head of one log (c2sp.org/tlog-checkpoint §Note text).

Pure: no I/O, no clock. A checkpoint is the text of a signed note (see :mod:`tally.ledger.note`)::

    <origin>\\n             non-empty; names the log
    <tree size>\\n          ASCII decimal, no leading zeros ("0" for the empty tree)
    <root hash>\\n          base64 of the 32-byte RFC 6962 Merkle tree hash at that size
    <extension>\\n ...      optional, opaque, non-empty lines (we write none)

Our origins
-----------
The origin is the log's serving prefix with the scheme removed and no trailing slash
(tlog-tiles §Parameters), so the ``prefix`` below is e.g. ``tally.example/ledger``:

- a lane's vote log: ``<prefix>/<poll id>/<lane>``, e.g. ``tally.example/ledger/final-2025/3``
- a poll's admin log: ``<prefix>/<poll id>/admin``

Checkpoints of a log are signed under a key *named after its origin* (tlog-checkpoint
§Signatures: the key name SHOULD match the origin): one Ed25519 key, renamed per log with
:meth:`tally.ledger.note.Signer.renamed`. An origin check is what stops a checkpoint of lane 3
being passed off as lane 4's: always open with the origin you expect.

Errors
------
::

    ValueError
     ├── CheckpointError    a checkpoint body is malformed, or not of the expected log
     └── note.NoteError     its signed note is malformed or does not verify (see that module)
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
    "MAX_TREE_SIZE",
    "Checkpoint",
    "CheckpointError",
    "admin_origin",
    "lane_origin",
    "open_checkpoint",
    "sign_checkpoint",
]

MAX_TREE_SIZE = 2**64 - 1  # sizes are uint64 in every tlog implementation
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL_RE = re.compile(r"[\x00-\x1f]")
_PREFIX_RE = re.compile(r"[^\s+/][^\s+]*[^\s+/]|[^\s+/]")


class CheckpointError(ValueError):
    """A checkpoint body is malformed, or belongs to another log than expected."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size, root hash and opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or not _is_line(self.origin):
            raise CheckpointError("the origin must be a non-empty line with no control characters")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size must be 0 to {MAX_TREE_SIZE}, got {self.size}")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or not _is_line(line):
                raise CheckpointError(
                    "extension lines must be non-empty with no control characters"
                )

    def format(self) -> str:
        """Return the checkpoint's note text, each line ending in a newline."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint's note text strictly; raise CheckpointError on any deviation."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("a checkpoint has an origin, a tree size and a root hash line")
        origin, size, root64, *extensions = lines
        if not _SIZE_RE.fullmatch(size):
            raise CheckpointError(f"tree size must be decimal with no leading zeros: {size!r}")
        return cls(origin, int(size), _parse_root(root64), tuple(extensions))


def _parse_root(line: str) -> bytes:
    try:
        root = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"root hash is not base64: {line!r}") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != line:
        raise CheckpointError(f"root hash must be canonical base64 of {HASH_SIZE} bytes")
    return root


def _is_line(value: str) -> bool:
    return not _CONTROL_RE.search(value) and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def lane_origin(prefix: str, poll_id: str, lane: int) -> str:
    """Return the origin of a lane's vote log: ``<prefix>/<poll id>/<lane>``."""
    if lane < 0:
        raise ValueError(f"lane must be >= 0, got {lane}")
    return _origin(prefix, poll_id, str(lane))


def admin_origin(prefix: str, poll_id: str) -> str:
    """Return the origin of a poll's admin log: ``<prefix>/<poll id>/admin``."""
    return _origin(prefix, poll_id, "admin")


def _origin(prefix: str, poll_id: str, log: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix) or "://" in prefix:
        raise ValueError(f"origin prefix must be a URL without scheme or end slash: {prefix!r}")
    origin = f"{prefix}/{poll_id}/{log}"
    if not note.is_valid_name(origin) or "/" in poll_id or not poll_id:
        raise ValueError(f"poll id {poll_id!r} does not make a valid origin")
    return origin


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[note.Signer]) -> bytes:
    """Return ``checkpoint`` as a signed note."""
    return note.sign(checkpoint.format(), signers)


def open_checkpoint(
    signed: bytes, verifiers: Iterable[note.Verifier], *, origin: str
) -> Checkpoint:
    """Verify a signed checkpoint and parse it; it must be of the log named ``origin``.

    Raises a ``note.NoteError`` if no known key signed it, CheckpointError if its body is
    malformed or its origin is not ``origin``.
    """
    opened = note.open(signed, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is of log {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint

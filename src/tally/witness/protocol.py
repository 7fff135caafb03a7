"""The C2SP tlog-witness ``add-checkpoint`` request and answers, as bytes (pure: no I/O).

Request body (tlog-witness §add-checkpoint)::

    old <size>\\n                 the size of the checkpoint the witness cosigned last (0: none)
    <base64 hash>\\n ...          0 to 63 consistency proof lines, from that size to the new one
    \\n                           an empty line
    <signed checkpoint note>     the new checkpoint, with the log's signature(s)

Answers: 200 with one or more cosignature lines (``— <name> <base64>\\n``); 409 Conflict with
``<size>\\n`` (``Content-Type: text/x.tlog.size``) when ``old`` is not the witness's size; 400,
403, 404 and 422 otherwise (see :mod:`tally.witness.witness`). Both the witness and the
archiver's client use this module, so they agree on every byte.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import NamedTuple

from tally.ledger.merkle import HASH_SIZE

__all__ = [
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "ProtocolError",
    "format_add_checkpoint",
    "format_size",
    "parse_add_checkpoint",
    "parse_size",
]

MAX_PROOF_LINES = 63  # tlog-witness: a client MUST NOT send more
# A checkpoint note of ours is ~200 bytes plus ~100 per signature; 63 proof lines ~2.8 KB.
MAX_REQUEST_BYTES = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_SIZE_RE = re.compile(rb"0|[1-9][0-9]{0,19}")


class ProtocolError(ValueError):
    """A request or answer body is not in the tlog-witness format."""


class AddCheckpoint(NamedTuple):
    """A parsed add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed note, exactly as sent


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], checkpoint: bytes) -> bytes:
    """The request body for ``checkpoint`` with a consistency proof from ``old_size``."""
    if old_size < 0:
        raise ProtocolError("the old size is not negative")
    if len(proof) > MAX_PROOF_LINES:
        raise ProtocolError(f"at most {MAX_PROOF_LINES} consistency proof lines")
    lines = [f"old {old_size}\n".encode()]
    lines += [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + checkpoint


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body strictly; ProtocolError names the first thing wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"the request is over {MAX_REQUEST_BYTES} bytes")
    head, sep, checkpoint = body.partition(b"\n\n")
    if not sep:
        raise ProtocolError("no empty line after the old size and proof lines")
    first, *proof_lines = head.split(b"\n")
    if not first.startswith(b"old ") or not _SIZE_RE.fullmatch(first[4:]):
        raise ProtocolError("the first line is 'old <size>' in decimal, no leading zeros")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise ProtocolError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for n, line in enumerate(proof_lines):
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"proof line {n + 1} is not base64") from None
        if len(digest) != HASH_SIZE or base64.b64encode(digest) != line:
            raise ProtocolError(f"proof line {n + 1} is not canonical base64 of a 32-byte hash")
        proof.append(digest)
    if not checkpoint:
        raise ProtocolError("no checkpoint after the empty line")
    return AddCheckpoint(int(first[4:]), tuple(proof), checkpoint)


def format_size(size: int) -> bytes:
    """A 409 Conflict body: the size of the witness's latest cosigned checkpoint."""
    return f"{size}\n".encode()


def parse_size(body: bytes) -> int:
    """The size in a 409 Conflict body."""
    if not body.endswith(b"\n") or not _SIZE_RE.fullmatch(body[:-1]):
        raise ProtocolError("a size answer is one decimal number and a newline")
    return int(body[:-1])

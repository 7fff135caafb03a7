"""C2SP tlog-proof: one entry's inclusion proof, with the checkpoint it proves against, as text.

Pure: no I/O. Format (c2sp.org/tlog-proof, v1), lines separated by ``\\n``::

    c2sp.org/tlog-proof@v1
    extra <base64>              optional: here, the entry itself (the vote record's bytes)
    index <leaf index>          decimal, no leading zeros
    <base64 hash>               zero or more: the RFC 6962 inclusion proof, leaf's sibling first
    <blank line>
    <signed checkpoint>         verbatim

The extra data is not authenticated by the proof: a verifier hashes it and checks that the leaf
hash is included, which is what authenticates it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from tally.ledger.merkle import HASH_SIZE

__all__ = ["HEADER", "InclusionProofText", "ProofFormatError"]

HEADER = "c2sp.org/tlog-proof@v1"
_INDEX_RE = re.compile(r"index (0|[1-9][0-9]{0,19})")


class ProofFormatError(ValueError):
    """A tlog-proof text is malformed."""


@dataclass(frozen=True, slots=True)
class InclusionProofText:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def format(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {_b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines += [_b64(h) for h in self.hashes]
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> InclusionProofText:
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep or not checkpoint:
            raise ProofFormatError("a tlog-proof has a blank line, then a checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise ProofFormatError("the proof lines must be ASCII") from None
        if lines[0] != HEADER:
            raise ProofFormatError(f"the first line must be {HEADER!r}")
        position, extra = 1, None
        if len(lines) > 1 and lines[1].startswith("extra "):
            extra = _unb64(lines[1][6:], None)
            position = 2
        index = _INDEX_RE.fullmatch(lines[position]) if position < len(lines) else None
        if index is None:
            raise ProofFormatError(f"line {position + 1} must be 'index <n>'")
        hashes = tuple(_unb64(line, HASH_SIZE) for line in lines[position + 1 :])
        return cls(int(index[1]), hashes, checkpoint, extra)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, size: int | None) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProofFormatError(f"not base64: {text!r}") from None
    if _b64(data) != text or (size is not None and len(data) != size):
        raise ProofFormatError(
            f"not canonical base64{'' if size is None else f' of {size} bytes'}: {text!r}"
        )
    return data

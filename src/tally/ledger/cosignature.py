"""C2SP tlog-cosignature v1 with Ed25519: a witness's timestamped signature on a checkpoint.

Pure: no I/O, no clock (the caller passes the time). A cosignature is one more signature line of
the checkpoint's signed note (see :mod:`tally.ledger.note`)::

    — <cosigner name> base64(key ID (4 bytes) || timestamp (u64, big-endian) || Ed25519 signature)

The Ed25519 signature is over the *cosigned message* (tlog-cosignature §Ed25519 signed message)::

    cosignature/v1\\n
    time <timestamp, ASCII decimal, no leading zeros>\\n
    <the checkpoint's note text, final newline included>

and the key ID commits to the cosignature type, 0x04, not to the note signature type 0x01::

    key ID        = SHA-256(name || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4]
    verifier key  = <name>+<8 hex digits of key ID>+<base64(0x04 || public key)>
    signer key    = PRIVATE+KEY+<name>+<8 hex digits of key ID>+<base64(0x04 || 32-byte seed)>

So a log's own verifier never mistakes a cosignature for a log signature (the key IDs differ),
and a cosigned checkpoint still opens with :func:`tally.ledger.note.open` under the log's key:
signed-note verifiers ignore signature lines by keys they do not know. The verifier-key string
is the vkey of c2sp.org/signed-note with signature type 0x04; the signer-key string is ours, in
the shape of sumdb/note's.

A v1 cosignature states that, at ``timestamp``, the checkpoint is the largest consistent tree
head the cosigner has seen for its origin (the witness checked a consistency proof from the one
it saw before): see :mod:`tally.witness`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.ledger import note

# The signed-note parsing and key-string helpers are note.py's own: one parser for both kinds of
# signature line, so a note the ledger accepts is a note the cosignature code accepts.
from tally.ledger.note import _b64, _parse_signature_line, _split, _unb64

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_TIMESTAMP",
    "Cosignature",
    "CosignatureError",
    "CosignatureVerifier",
    "Cosigner",
    "CosignerCheck",
    "add_cosignatures",
    "check_cosignatures",
    "cosigned_message",
    "cosigner_key_id",
    "generate_cosigner_key",
    "note_text",
]

ALG_COSIGNATURE_V1 = 0x04
MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1
_HEADER = b"cosignature/v1\n"
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_ED25519_SIZE = 32
_SIGNATURE_SIZE = 4 + 8 + 64  # key ID, timestamp, Ed25519 signature


class CosignatureError(note.NoteError):
    """A cosigner key string is malformed, or a cosignature line cannot be made or added."""


def cosigner_key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x04 || public key)[:4], big-endian (tlog-cosignature §Format)."""
    digest = hashlib.sha256(
        name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs: header, time line, then the checkpoint's note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"a cosignature timestamp is 0 to 2^63-1, got {timestamp}")
    return _HEADER + f"time {timestamp}\n".encode() + text.encode()


class Cosignature(NamedTuple):
    """A verified cosignature: who made it (name as in the note) and when (POSIX seconds)."""

    name: str
    key_id: int
    timestamp: int


class CosignatureVerifier:
    """A cosigner's Ed25519 public key under its name: checks its v1 cosignatures."""

    __slots__ = ("_ed25519", "_key_id")

    def __init__(self, name: str, public_key: bytes) -> None:
        # note.Verifier checks the name and the key and does the Ed25519 verification; only
        # the key ID differs (it commits to type 0x04).
        self._ed25519 = note.Verifier(name, public_key)
        self._key_id = cosigner_key_id(name, self._ed25519.public_key)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``<name>+<hex key ID>+<base64(0x04 || public key)>``."""
        name, _, rest = vkey.strip().partition("+")
        hex_id, _, key64 = rest.partition("+")
        claimed, public = _key_material(name, hex_id, key64, "verifier")
        verifier = cls(name, public)
        if verifier.key_id != claimed:
            raise CosignatureError(f"cosigner verifier key ID {hex_id} does not match its key")
        return verifier

    @property
    def name(self) -> str:
        return self._ed25519.name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._ed25519.public_key

    def verify(self, text: str, timestamp: int, signature: bytes) -> bool:
        """Whether ``signature`` is this cosigner's Ed25519 signature of the cosigned message."""
        return 0 <= timestamp <= MAX_TIMESTAMP and self._ed25519.verify(
            cosigned_message(text, timestamp), signature
        )

    def __str__(self) -> str:
        return _key_string(self.name, self._key_id, self.public_key)

    def __repr__(self) -> str:
        return f"CosignatureVerifier({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CosignatureVerifier):
            return NotImplemented
        return (self.name, self.public_key) == (other.name, other.public_key)

    def __hash__(self) -> int:
        return hash((self.name, self.public_key, ALG_COSIGNATURE_V1))


class Cosigner:
    """A cosigner's Ed25519 private key under its name. Its ``repr`` never shows the key."""

    __slots__ = ("_seed", "_signer", "_verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        self._signer = note.Signer(name, seed)
        self._seed = bytes(seed)
        self._verifier = CosignatureVerifier(name, self._signer.verifier.public_key)

    @classmethod
    def parse(cls, skey: str) -> Cosigner:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>``."""
        skey = skey.strip()
        if not skey.startswith(_PRIVATE_PREFIX):
            raise CosignatureError("a cosigner signer key starts with PRIVATE+KEY+")
        name, _, rest = skey[len(_PRIVATE_PREFIX) :].partition("+")
        hex_id, _, key64 = rest.partition("+")
        claimed, seed = _key_material(name, hex_id, key64, "signer")
        cosigner = cls(name, seed)
        if cosigner.verifier.key_id != claimed:
            raise CosignatureError(f"cosigner signer key ID {hex_id} does not match its key")
        return cosigner

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def cosign(self, text: str, timestamp: int) -> str:
        """The signature line (ending in a newline) cosigning the checkpoint note ``text``."""
        if timestamp <= 0:  # tlog-witness: the cosignature MUST NOT omit the timestamp
            raise CosignatureError("a witness cosignature carries a time after the epoch")
        signature = self._signer.sign(cosigned_message(text, timestamp))
        raw = self._verifier.key_id.to_bytes(4, "big") + timestamp.to_bytes(8, "big") + signature
        return f"\N{EM DASH} {self.name} {_b64(raw)}\n"

    def private_key_string(self) -> str:
        """The secret signer key string: keep it out of logs."""
        return _PRIVATE_PREFIX + _key_string(self.name, self._verifier.key_id, self._seed)

    def __repr__(self) -> str:
        return f"Cosigner({self.name!r}, key_id={self._verifier.key_id:08x})"


def generate_cosigner_key(name: str) -> tuple[str, str]:
    """A new (signer key string, verifier key string) pair for a cosigner named ``name``."""
    cosigner = Cosigner(name, Ed25519PrivateKey.generate().private_bytes_raw())
    return cosigner.private_key_string(), str(cosigner.verifier)


def note_text(signed: bytes) -> str:
    """The text of a signed note (its checkpoint body), checking only the note's format."""
    return _split(signed)[0]


class CosignerCheck(NamedTuple):
    """What one note holds from the given cosigners: verified cosignatures, and the
    (name, key ID) of each line by a given cosigner's key whose signature does not verify."""

    valid: tuple[Cosignature, ...]
    invalid: tuple[tuple[str, int], ...]


def check_cosignatures(signed: bytes, verifiers: Iterable[CosignatureVerifier]) -> CosignerCheck:
    """Check every cosignature in the note ``signed`` by one of ``verifiers``.

    Lines by other keys (the log's own signature, unknown witnesses) are ignored, as
    signed-note says; a cosigner is known only if both its name and key ID match. A known
    cosigner's second line is ignored, as note.open does. Raises note.MalformedNote if the note
    itself is malformed."""
    known = {(v.name, v.key_id): v for v in verifiers}
    text, lines = _split(signed)
    valid: list[Cosignature] = []
    invalid: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for name, kid, raw in map(_parse_signature_line, lines):
        verifier = known.get((name, kid))
        if verifier is None or (name, kid) in seen:
            continue
        seen.add((name, kid))
        if len(raw) != _SIGNATURE_SIZE - 4:
            invalid.append((name, kid))
            continue
        timestamp = int.from_bytes(raw[:8], "big")
        if verifier.verify(text, timestamp, raw[8:]):
            valid.append(Cosignature(name, kid, timestamp))
        else:
            invalid.append((name, kid))
    return CosignerCheck(tuple(valid), tuple(invalid))


def add_cosignatures(signed: bytes, lines: Sequence[str]) -> bytes:
    """The note ``signed`` with the signature ``lines`` appended (tlog-witness: a cosigned
    checkpoint is the same note with more signature lines). Each line must be a well-formed
    signature line ending in a newline; a line the note already holds is not added twice."""
    _, existing = _split(signed)
    present = set(existing)
    added: list[str] = []
    for line in lines:
        if not line.endswith("\n") or "\n" in line[:-1]:
            raise CosignatureError(f"a signature line is one line ending in a newline: {line!r}")
        _parse_signature_line(line[:-1])
        if line[:-1] not in present:
            present.add(line[:-1])
            added.append(line)
    if len(existing) + len(added) > note.MAX_SIGNATURES:
        raise CosignatureError(f"a note holds at most {note.MAX_SIGNATURES} signatures")
    return signed + "".join(added).encode()


def _key_material(name: str, hex_id: str, key64: str, what: str) -> tuple[int, bytes]:
    if not note.is_valid_name(name):
        raise CosignatureError(f"invalid cosigner key name {name!r}")
    if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
        raise CosignatureError(f"cosigner {what} key ID must be 8 hex digits, got {hex_id!r}")
    raw = _unb64(key64)
    if raw is None or not raw:
        raise CosignatureError(f"cosigner {what} key material is not canonical base64")
    if raw[0] != ALG_COSIGNATURE_V1:
        raise CosignatureError(
            f"cosigner {what} key type is 0x{raw[0]:02x}, not 0x04 (an Ed25519 cosignature "
            "key); a 0x01 key is a log's note key"
        )
    if len(raw) != 1 + _ED25519_SIZE:
        raise CosignatureError(f"an Ed25519 cosigner {what} key is 0x04 and 32 bytes")
    return int(hex_id, 16), raw[1:]


def _key_string(name: str, kid: int, key: bytes) -> str:
    return f"{name}+{kid:08x}+{_b64(bytes([ALG_COSIGNATURE_V1]) + key)}"

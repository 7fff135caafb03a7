"""C2SP signed notes with Ed25519 keys (c2sp.org/signed-note, as golang.org/x/mod/sumdb/note does it).

Pure: no I/O, no clock. A signed note is text followed by signature lines (signed-note §Format)::

    <text: one or more lines, each ending in "\\n">
    <a blank line: "\\n">
    — <key name> <base64(4-byte big-endian key ID || 64-byte Ed25519 signature)>\\n   (1 to 100)

The signature covers the text, final newline included, blank line excluded. The whole note is
UTF-8 with no control character below U+0020 other than newline; the text is separated from the
signatures by the *last* blank line, so the text itself may hold blank lines.

Keys (signed-note §Signatures, §Ed25519 signatures; the strings are sumdb/note's)::

    key ID        = first 4 bytes, big-endian, of SHA-256(key name || 0x0A || 0x01 || public key)
    verifier key  = <name>+<8 hex digits of key ID>+<base64(0x01 || 32-byte public key)>
    signer key    = PRIVATE+KEY+<name>+<8 hex digits of key ID>+<base64(0x01 || 32-byte seed)>

A key name is non-empty UTF-8 with no Unicode white space (the White_Space property, as Go's
``unicode.IsSpace``), no ``+`` and (since it sits in a note) no control character.

Opening follows §Signatures: signatures by unknown keys (name *and* ID not both known) are ignored;
a known key's signature must verify or the whole note is rejected; a repeat of a known key's
signature is ignored, as sumdb/note does; at least one known signature must verify. We are
stricter than sumdb/note in one way: base64 must be canonical (zero padding bits), so each note and
key has exactly one spelling.

Errors
------
::

    ValueError
     └── NoteError
          ├── MalformedNote    the note, or a text given to sign, breaks the format
          ├── InvalidKey       a key string or key name is malformed, or keys are inconsistent
          ├── BadSignature     a signature by a known key does not verify
          └── UnverifiedNote   no signature in the note is by a known key
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "BadSignature",
    "InvalidKey",
    "MalformedNote",
    "NoteError",
    "OpenedNote",
    "Signer",
    "UnverifiedNote",
    "Verifier",
    "generate_key",
    "is_valid_name",
    "key_id",
    "open",
    "sign",
]

ALG_ED25519 = 0x01
# The spec asks verifiers to accept at least 16; sumdb/note stops at 100.
MAX_SIGNATURES = 100

_SIG_PREFIX = "\N{EM DASH} "
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_KEY_ID_RE = re.compile(r"[0-9a-fA-F]{8}")
_ED25519_SIZE = 32
# Unicode's White_Space property (stable since Unicode 4.1): what Go's unicode.IsSpace matches.
_WHITE_SPACE = frozenset(
    (
        *range(0x09, 0x0E),
        0x20,
        0x85,
        0xA0,
        0x1680,
        *range(0x2000, 0x200B),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    )
)
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A signed note or key failed to parse or verify."""


class MalformedNote(NoteError):
    """The note, or a text given to sign, breaks the signed-note format."""


class InvalidKey(NoteError):
    """A key string or key name is malformed, or two keys are inconsistent."""


class BadSignature(NoteError):
    """A signature by a known key does not verify: the whole note is rejected."""

    def __init__(self, name: str, key_id: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_id:08x}")
        self.name = name
        self.key_id = key_id


class UnverifiedNote(NoteError):
    """No signature in the note is by a known key; ``unknown`` lists the (name, key ID) seen."""

    def __init__(self, unknown: tuple[tuple[str, int], ...]) -> None:
        seen = ", ".join(f"{name}+{kid:08x}" for name, kid in unknown)
        super().__init__(f"note has no signature by a known key (found: {seen})")
        self.unknown = unknown


class OpenedNote(NamedTuple):
    """A verified note: its text and the names of the known keys whose signatures verified."""

    text: str
    signers: tuple[str, ...]


def is_valid_name(name: str) -> bool:
    """Return whether ``name`` is a valid key name (non-empty, no white space, ``+`` or controls)."""
    return bool(name) and all(
        ch != "+" and ord(ch) >= 0x20 and ord(ch) not in _WHITE_SPACE and not _is_surrogate(ch)
        for ch in name
    )


def key_id(name: str, public_key: bytes) -> int:
    """Return the Ed25519 key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


class Verifier:
    """An Ed25519 public key under a name: checks signatures made by the matching :class:`Signer`."""

    __slots__ = ("_key", "_key_id", "_name", "_public")

    def __init__(self, name: str, public_key: bytes) -> None:
        _check_name(name)
        if len(public_key) != _ED25519_SIZE:
            raise InvalidKey(f"an Ed25519 public key is {_ED25519_SIZE} bytes")
        self._name = name
        self._public = bytes(public_key)
        self._key_id = key_id(name, self._public)
        self._key = Ed25519PublicKey.from_public_bytes(self._public)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse a verifier key ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        name, _, rest = vkey.partition("+")
        hex_id, _, key64 = rest.partition("+")
        return cls(name, _parse_key_material(name, hex_id, key64, what="verifier")[1])

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 32-bit key ID (key hash)."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    def renamed(self, name: str) -> Verifier:
        """Return the same public key under another name (and so another key ID)."""
        return Verifier(name, self._public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __str__(self) -> str:
        return _key_string(self._name, self._key_id, self._public)

    def __repr__(self) -> str:
        return f"Verifier({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return (self._name, self._public) == (other._name, other._public)

    def __hash__(self) -> int:
        return hash((self._name, self._public))


class Signer:
    """An Ed25519 private key under a name. Its ``repr`` never shows the key."""

    __slots__ = ("_key", "_seed", "_verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        if len(seed) != _ED25519_SIZE:
            raise InvalidKey(f"an Ed25519 seed is {_ED25519_SIZE} bytes")
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._verifier = Verifier(name, public)

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Parse a signer key ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""
        if not skey.startswith(_PRIVATE_PREFIX):
            raise InvalidKey("a signer key starts with PRIVATE+KEY+")
        name, _, rest = skey[len(_PRIVATE_PREFIX) :].partition("+")
        hex_id, _, key64 = rest.partition("+")
        claimed, seed = _parse_key_material(name, hex_id, key64, what="signer")
        signer = cls(name, seed)
        if signer.key_id != claimed:  # the ID is over the public key: check after deriving it
            raise InvalidKey(f"signer key ID {hex_id} does not match its key")
        return signer

    @property
    def name(self) -> str:
        """The key name."""
        return self._verifier.name

    @property
    def key_id(self) -> int:
        """The 32-bit key ID (key hash) of the public key."""
        return self._verifier.key_id

    @property
    def verifier(self) -> Verifier:
        """The matching public key."""
        return self._verifier

    def renamed(self, name: str) -> Signer:
        """Return the same private key under another name (and so another key ID)."""
        return Signer(name, self._seed)

    def sign(self, message: bytes) -> bytes:
        """Return the raw 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def private_key_string(self) -> str:
        """Return the secret signer key string (``PRIVATE+KEY+...``): keep it out of logs."""
        return _PRIVATE_PREFIX + _key_string(self.name, self.key_id, self._seed)

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key_id={self.key_id:08x})"


def generate_key(name: str) -> tuple[str, str]:
    """Return a new (signer key string, verifier key string) pair for ``name``."""
    _check_name(name)
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    signer = Signer(name, seed)
    return signer.private_key_string(), str(signer.verifier)


def sign(text: str, signers: Sequence[Signer]) -> bytes:
    """Return the signed note of ``text``, with one signature line per signer in order."""
    _check_text(text)
    if not signers:
        raise MalformedNote("a signed note needs at least one signature")
    if len(signers) > MAX_SIGNATURES:
        raise MalformedNote(f"a note holds at most {MAX_SIGNATURES} signatures")
    if len({(s.name, s.key_id) for s in signers}) != len(signers):
        raise InvalidKey("two signers share a key name and key ID")
    message = text.encode()
    lines = [
        f"{_SIG_PREFIX}{s.name} {_b64(s.key_id.to_bytes(4, 'big') + s.sign(message))}\n"
        for s in signers
    ]
    return message + b"\n" + "".join(lines).encode()


def open(note: bytes, verifiers: Iterable[Verifier]) -> OpenedNote:  # sumdb/note's Open
    """Parse ``note`` and check its signatures against ``verifiers`` (signed-note §Signatures)."""
    known = _index(verifiers)
    text, lines = _split(note)
    message = text.encode()
    verified: list[str] = []
    unknown: dict[tuple[str, int], None] = {}
    seen: set[tuple[str, int]] = set()
    for name, kid, signature in map(_parse_signature_line, lines):
        verifier = known.get((name, kid))
        if verifier is None:
            unknown[(name, kid)] = None
            continue
        if (name, kid) in seen:
            continue
        seen.add((name, kid))
        if not verifier.verify(message, signature):
            raise BadSignature(name, kid)
        verified.append(name)
    if not verified:
        raise UnverifiedNote(tuple(unknown))
    return OpenedNote(text, tuple(verified))


def _index(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other != v:
            raise InvalidKey(f"ambiguous key {v.name}+{v.key_id:08x}: two public keys share it")
    return known


def _split(note: bytes) -> tuple[str, list[str]]:
    """Split a note into its text and signature lines (without the newlines)."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNote("a note must be valid UTF-8") from None
    if _CONTROL_RE.search(decoded):
        raise MalformedNote("a note must not hold control characters other than newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNote("no blank line separates the text from the signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNote("the signature block must be non-empty and end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"a note holds at most {MAX_SIGNATURES} signatures")
    return text, lines


def _parse_signature_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNote(f"a signature line starts with an em dash and a space: {line!r}")
    name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not is_valid_name(name):
        raise MalformedNote(f"invalid key name in signature line: {name!r}")
    raw = _unb64(encoded)
    if raw is None or len(raw) < 5:
        raise MalformedNote(f"signature of {name} is not base64 of a key ID and a signature")
    return name, int.from_bytes(raw[:4], "big"), raw[4:]


def _parse_key_material(name: str, hex_id: str, key64: str, *, what: str) -> tuple[int, bytes]:
    """Check the name, ID and ``base64(0x01 || 32 bytes)`` of a key string; return (ID, bytes)."""
    _check_name(name)
    if not _KEY_ID_RE.fullmatch(hex_id):
        raise InvalidKey(f"{what} key ID must be 8 hex digits, got {hex_id!r}")
    raw = _unb64(key64)
    if raw is None or not raw:
        raise InvalidKey(f"{what} key material is not canonical base64")
    if raw[0] != ALG_ED25519:
        raise InvalidKey(f"unknown {what} key algorithm 0x{raw[0]:02x} (only 0x01 Ed25519)")
    if len(raw) != 1 + _ED25519_SIZE:
        raise InvalidKey(f"an Ed25519 {what} key is 0x01 and {_ED25519_SIZE} bytes")
    claimed = int(hex_id, 16)
    if what == "verifier" and claimed != key_id(name, raw[1:]):
        raise InvalidKey(f"verifier key ID {hex_id} does not match its key")
    return claimed, raw[1:]


def _check_name(name: str) -> None:
    if not is_valid_name(name):
        raise InvalidKey(f"invalid key name {name!r}: non-empty, no spaces, '+' or controls")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text must end in a newline")
    if _CONTROL_RE.search(text) or any(map(_is_surrogate, text)):
        raise MalformedNote("note text must be UTF-8 with no control characters but newline")


def _is_surrogate(ch: str) -> bool:
    return 0xD800 <= ord(ch) <= 0xDFFF


def _key_string(name: str, kid: int, key: bytes) -> str:
    return f"{name}+{kid:08x}+{_b64(bytes([ALG_ED25519]) + key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Decode standard base64 (RFC 4648 §4); None unless ``text`` is its canonical encoding."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None

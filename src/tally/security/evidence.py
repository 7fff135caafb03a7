"""Network evidence of held votes, sealed: AES-256-GCM under a key ring with key ids.

A vote held for review keeps what a reviewer needs to judge it (the client's address, its subnet,
its user agent) only in this sealed form, never in clear: neither in Valkey (the lane's held
index, whose third field is the sealed evidence) nor in any file under the data dir.

    field   = "e1." base64url(key id u32 || nonce 12 || AES-256-GCM(key, nonce, plaintext, aad))
    aad     = "tally-evidence/v1\\n" || u8 P || poll id || u32 lane || u64 seq
    plaintext = JSON {"a": address, "s": subnet, "u": user agent}

The associated data binds a blob to its vote (poll, lane, entry seq): moved to another vote's
slot, or to another lane or poll, it no longer opens. The field holds no '|' (the held index's
separator) and no clear text but the format prefix.

Key ring: the newest key (highest id) seals, any known key opens. Keys come from the data dir
(`secrets/evidence/<id>.key`, 32 random bytes, each made once by security.keys.read_or_create:
rotating adds a file, dropping a key removes its file) or from TALLY_EVIDENCE_KEYS
(`<id>:<base64url key>,...`, for deployments whose gateways share no data dir). Dropping a key no
blob uses any more also makes every leftover copy of blobs sealed with it (an AOF not yet
rewritten, a backup) unreadable: crypto-shredding.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tally.security.keys import parse_key_ring, read_or_create

__all__ = [
    "DELETED",
    "EvidenceError",
    "EvidenceKeys",
    "FieldState",
    "KeyRing",
    "NetworkEvidence",
    "evidence_aad",
    "evidence_keys_dir",
    "field_key_id",
    "field_state",
    "open_field",
    "parse_env_keys",
    "seal_field",
]

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce, random per blob (2**32 blobs per key stay far off)
MAX_KEY_ID = 2**32 - 1
PREFIX = "e1."
AAD_CONTEXT = b"tally-evidence/v1\n"
# A user agent is kept to this many characters: enough to tell clients apart, bounded in size.
MAX_USER_AGENT = 512
DELETED = "-"  # the field of a held vote whose evidence the retention sweep deleted
_KEY_FILE = re.compile(r"^([1-9][0-9]{0,9})\.key$")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class EvidenceError(Exception):
    """A sealed field that does not open; `code` is stable: malformed, unknown-key, tampered."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True, slots=True)
class NetworkEvidence:
    """What the request showed of the network: the client's address after trusted-proxy
    resolution ("" when unknown), its /24 or /48 (security.addresses.subnet_key) and its user
    agent (at most MAX_USER_AGENT characters)."""

    address: str = ""
    subnet: str = ""
    user_agent: str = ""

    def __bool__(self) -> bool:
        return bool(self.address or self.subnet or self.user_agent)


class FieldState(StrEnum):
    """What a held vote's evidence field holds."""

    NONE = "none"  # nothing was kept (no address nor agent, or sealing failed)
    SEALED = "sealed"  # sealed evidence (this module's format)
    DELETED = "deleted"  # deleted by the retention sweep
    LEGACY = "legacy"  # a clear subnet, as held votes before sealing kept it


def field_state(field: str) -> FieldState:
    if not field:
        return FieldState.NONE
    if field == DELETED:
        return FieldState.DELETED
    if field.startswith(PREFIX):
        return FieldState.SEALED
    return FieldState.LEGACY


class KeyRing:
    """AES-256-GCM keys by id: the highest id seals, any of them opens."""

    def __init__(self, keys: Mapping[int, bytes]) -> None:
        if not keys:
            raise ValueError("an evidence key ring needs at least one key")
        for key_id, key in keys.items():
            if not 1 <= key_id <= MAX_KEY_ID:
                raise ValueError(f"evidence key id {key_id} is not 1 to {MAX_KEY_ID}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"evidence key {key_id} is {len(key)} bytes, not {KEY_BYTES}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_id = max(keys)

    @property
    def ids(self) -> list[int]:
        return sorted(self._ciphers)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """key id || nonce || ciphertext and tag, under the current key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext, aad)
        return self.current_id.to_bytes(4, "big") + nonce + sealed

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of `blob`; EvidenceError if it is cut short, names a key this ring does
        not hold, or fails authentication (altered, or bound to other associated data)."""
        if len(blob) < 4 + NONCE_BYTES + 16:
            raise EvidenceError("malformed", "too short for a sealed blob")
        key_id = int.from_bytes(blob[:4], "big")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise EvidenceError("unknown-key", f"no evidence key {key_id} in the ring")
        try:
            return cipher.decrypt(blob[4 : 4 + NONCE_BYTES], blob[4 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise EvidenceError("tampered", "authentication failed (altered or moved)") from None


def evidence_aad(poll_id: str, lane: int, seq: int) -> bytes:
    """The associated data binding a blob to one vote: its poll, lane and entry seq."""
    poll = poll_id.encode()
    return (
        AAD_CONTEXT + len(poll).to_bytes(1, "big") + poll
        + lane.to_bytes(4, "big") + seq.to_bytes(8, "big")
    )  # fmt: skip


def seal_field(ring: KeyRing, poll_id: str, lane: int, seq: int, evidence: NetworkEvidence) -> str:
    """The held index's evidence field for vote `seq` of the lane: "" when there is nothing to
    keep."""
    if not evidence:
        return ""
    document = {
        "a": evidence.address,
        "s": evidence.subnet,
        "u": evidence.user_agent[:MAX_USER_AGENT],
    }
    plaintext = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    blob = ring.seal(plaintext, evidence_aad(poll_id, lane, seq))
    return PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def _b64url(text: str) -> bytes:
    """Strict base64url without padding; ValueError for anything else."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def _blob(field: str) -> bytes:
    if not field.startswith(PREFIX):
        raise EvidenceError("malformed", "not a sealed evidence field")
    try:
        return _b64url(field[len(PREFIX) :])
    except ValueError:
        raise EvidenceError("malformed", "not base64url") from None


def field_key_id(field: str) -> int:
    """The id of the key that sealed `field` (no key needed); EvidenceError if malformed."""
    blob = _blob(field)
    if len(blob) < 4:
        raise EvidenceError("malformed", "too short for a sealed blob")
    return int.from_bytes(blob[:4], "big")


def open_field(ring: KeyRing, field: str, poll_id: str, lane: int, seq: int) -> NetworkEvidence:
    """The evidence sealed in `field` for vote `seq` of the lane; EvidenceError when it does not
    open (malformed, unknown key, tampered, or sealed for another vote)."""
    plaintext = ring.open(_blob(field), evidence_aad(poll_id, lane, seq))
    try:
        document = json.loads(plaintext)
        return NetworkEvidence(str(document["a"]), str(document["s"]), str(document["u"]))
    except (ValueError, KeyError, TypeError):
        raise EvidenceError("malformed", "sealed evidence is not the expected document") from None


def evidence_keys_dir(data_dir: Path) -> Path:
    return data_dir / "secrets" / "evidence"


def parse_env_keys(raw: str) -> dict[int, bytes]:
    """TALLY_EVIDENCE_KEYS: `<id>:<base64url 32-byte key>` pairs separated by commas; ValueError
    naming what is wrong (never the key itself)."""
    return parse_key_ring(
        raw,
        key_id=_key_id,
        id_rule=f"id 1 to {MAX_KEY_ID}",
        decode=_b64url,
        key_bytes=KEY_BYTES,
    )


def _key_id(text: str) -> int | None:
    return int(text) if text.isdigit() and 1 <= int(text) <= MAX_KEY_ID else None


class EvidenceKeys:
    """The key ring as configured: TALLY_EVIDENCE_KEYS if set (fixed for the process's life),
    else the data dir's key files, made on first use and re-read whenever the folder changes
    (a rotation or a dropped key reaches running processes without a restart; checking costs
    one stat, and only held votes and reviewers' listings ask)."""

    def __init__(self, data_dir: Path, env_keys: str | None = None) -> None:
        self.directory = evidence_keys_dir(data_dir)
        self._fixed = KeyRing(parse_env_keys(env_keys)) if env_keys else None
        self._ring: KeyRing | None = None
        self._seen: tuple[int, int] | None = None

    @property
    def from_env(self) -> bool:
        return self._fixed is not None

    def ring(self) -> KeyRing:
        if self._fixed is not None:
            return self._fixed
        try:
            stat = self.directory.stat()
            seen = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            seen = None
        if self._ring is None or seen != self._seen or seen is None:
            self._ring = KeyRing(self._read())
            stat = self.directory.stat()
            self._seen = (stat.st_mtime_ns, stat.st_ino)
        return self._ring

    def _read(self) -> dict[int, bytes]:
        keys = self._files()
        if not keys:  # the first key, made once (racing first starts agree on one)
            keys = {1: read_or_create(self.directory / "1.key", _new_key)}
        return keys

    def _files(self) -> dict[int, bytes]:
        if not self.directory.is_dir():
            return {}
        keys = {}
        for path in self.directory.iterdir():
            found = _KEY_FILE.match(path.name)
            if found:
                keys[int(found[1])] = path.read_bytes()
        return keys

    def rotate(self) -> int:
        """Add a key with the next id, which seals from now on; returns its id."""
        self._refuse_env("rotate")
        key_id = max(self.ring().ids) + 1
        read_or_create(self.directory / f"{key_id}.key", _new_key)
        return key_id

    def drop(self, key_id: int) -> None:
        """Remove key `key_id`'s file (the caller checked no blob uses it). ValueError for the
        current key or an unknown one."""
        self._refuse_env("drop a key")
        ring = self.ring()
        if key_id not in ring.ids:
            raise ValueError(f"there is no evidence key {key_id} (keys: {ring.ids})")
        if key_id == ring.current_id:
            raise ValueError(f"key {key_id} is the current key: rotate first, then re-encrypt")
        (self.directory / f"{key_id}.key").unlink()
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the removal must be durable: that is the point of dropping a key
        finally:
            os.close(fd)

    def _refuse_env(self, action: str) -> None:
        if self._fixed is not None:
            raise ValueError(
                f"cannot {action}: the keys come from TALLY_EVIDENCE_KEYS; change that variable "
                "(add `<new id>:<key>`, or remove an unused one) and restart"
            )


def _new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)

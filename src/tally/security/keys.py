"""Every key and secret file Tally keeps in its data directory, and the one way they are made.

A key file is made once and never rewritten: `read_or_create` writes it atomically (a private
temporary file, fsynced, then hard-linked into place, so a crash never leaves half a key and two
processes starting at once agree on one), mode 0600 in a 0700 directory, and reads back whatever
won. The files:

    data/keys/            the dev issuer's PEM keys and jwks.json (`tally token`), ledger.key
    data/secrets/         pseudonym.key (embedded mode only; otherwise TALLY_PSEUDONYM_SECRET)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["keys_dir", "ledger_key_file", "pseudonym_secret_file", "read_or_create"]


def keys_dir(data_dir: Path) -> Path:
    """The dev issuer's keys and the ledger's signing key."""
    return data_dir / "keys"


def ledger_key_file(data_dir: Path) -> Path:
    return keys_dir(data_dir) / "ledger.key"


def pseudonym_secret_file(data_dir: Path) -> Path:
    return data_dir / "secrets" / "pseudonym.key"


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of the key file at `path`, made with `make()` if there is none yet.

    `make` runs only when the file is missing. If another process creates the file meanwhile,
    its content wins and ours is dropped: the returned bytes are always what is on disk."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_exclusive(path, make())
    return path.read_bytes()


def _create_exclusive(path: Path, data: bytes) -> None:
    """Writes a 0600 file at `path` unless one appears first; never leaves a half-written file."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # A hard link never replaces an existing file, so racing first starts agree on one key.
        with contextlib.suppress(FileExistsError):
            path.hardlink_to(temporary)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the new name durable too: without it a crash could lose a key already handed out."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


K = TypeVar("K")


def parse_key_ring(
    raw: str,
    *,
    key_id: Callable[[str], K | None],
    id_rule: str,
    decode: Callable[[str], bytes],
    key_bytes: int,
    skip_empty: bool = False,
) -> dict[K, bytes]:
    """A key ring from the environment: `<id>:<base64url key>` entries separated by commas, in
    their order. `key_id` parses an id (None: not one; `id_rule` says what one is), `decode` the
    key; `skip_empty` passes over empty entries. ValueError naming the entry or the key id at
    fault, never the key itself."""
    keys: dict[K, bytes] = {}
    entries = [part.strip() for part in raw.split(",")]
    for i, part in enumerate(p for p in entries if p or not skip_empty):
        text, sep, encoded = part.partition(":")
        parsed = key_id(text) if sep else None
        if parsed is None:
            raise ValueError(f"entry {i + 1} is not <id>:<base64url key> with {id_rule}")
        try:
            key = decode(encoded)
        except ValueError:
            raise ValueError(f"key {text} is not base64url") from None
        if len(key) != key_bytes:
            raise ValueError(f"key {text} is {len(key)} bytes, not {key_bytes}")
        if parsed in keys:
            raise ValueError(f"key id {text} appears twice")
        keys[parsed] = key
    return keys

"""The witness's durable state: the latest checkpoint it cosigned, per log, in its state dir.

One file per origin, ``<state dir>/logs/<SHA-256 of the origin, hex>``, holding the cosigned
checkpoint note exactly as the witness served it (the log's signature and the witness's
cosignature): the full note, not only size and root, so the witness can show others what a log
signed if it later signs something inconsistent. tlog-witness asks that a checkpoint be
persisted before its cosignature is returned: :meth:`StateFiles.save` writes a private temporary
file, fsyncs it, renames it over the old one and fsyncs the directory, so a crash leaves the old
state or the new one, never half of one. Files are 0600 in 0700 directories.

One process owns a state dir: :meth:`StateFiles.lock` takes an exclusive ``flock`` on
``<state dir>/lock`` for the process's lifetime, so a second witness started on the same state
(which could fork it) refuses to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["StateFiles", "StateLocked", "origin_hash"]


class StateLocked(RuntimeError):
    """Another process holds the state dir."""


def origin_hash(origin: str) -> str:
    """The name tlog-witness gives a log in URLs: SHA-256 of its origin, lowercase hex."""
    return hashlib.sha256(origin.encode()).hexdigest()


class StateFiles:
    """The state dir's per-log files (blocking: call from a worker thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._logs = root / "logs"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Create the state dir (0700) and hold its lock; StateLocked if another process has it."""
        for directory in (self.root, self._logs):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(f"another witness is running on {self.root}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def load(self, origin_digest: str) -> bytes | None:
        """The cosigned checkpoint stored for the log with this origin hash, if any."""
        try:
            return (self._logs / origin_digest).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, origin_digest: str, cosigned: bytes) -> None:
        """Durably replace the log's state with ``cosigned``."""
        path = self._logs / origin_digest
        tmp = path.with_name(f".{origin_digest}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(cosigned)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        tmp.replace(path)
        dir_fd = os.open(self._logs, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

"""Durable file writes: what the archiver may publish only once it is on disk.

Immutable files (tiles, bundles, old checkpoints, the certificate) are written once, atomically,
and never changed: writing one again with the same bytes is a no-op (a resumed archiver rebuilds
what it had), and with different bytes is refused, loudly. Mutable ones (a log's latest
checkpoint) are replaced atomically. Nothing counts as written until its file *and directory*
are fsynced: callers batch files, then call :meth:`DurableFiles.sync`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DurableFiles", "LedgerConflict"]


class LedgerConflict(RuntimeError):
    """An immutable ledger file exists with other bytes than the archiver computes for it.

    Either the files were tampered with, or the data the archiver reads changed: either way the
    archiver stops that log rather than publish over what auditors may have seen.
    """


class DurableFiles:
    """One directory's files (implements ports.PollFiles): writes under ``root``, tracking the
    directories to fsync before the writes count, and reads back."""

    __slots__ = ("_dirty", "root")

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirty: set[Path] = set()

    def write_once(self, relative: str, data: bytes) -> None:
        """Create ``relative`` with ``data`` unless it holds exactly that already."""
        path = self.root / relative
        existing = _read_or_none(path)
        if existing is not None:
            if existing != data:
                raise LedgerConflict(f"{path} exists with other contents: refusing to change it")
            return
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic and never replaces: a racing writer cannot clobber it
        except FileExistsError:
            if path.read_bytes() != data:
                raise LedgerConflict(f"{path} appeared with other contents") from None
        finally:
            tmp.unlink()
        self._dirty.add(path.parent)

    def read(self, relative: str) -> bytes | None:
        """The file's bytes; None if it does not exist."""
        try:
            return (self.root / relative).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def names(self, relative_dir: str) -> list[str]:
        """The entries of a directory (none if it does not exist), temporary files included."""
        try:
            return [p.name for p in (self.root / relative_dir).iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def replace(self, relative: str, data: bytes) -> None:
        """Atomically set ``relative`` to ``data`` (readers see the old or the new file)."""
        path = self.root / relative
        tmp = self._write_temp(path, data)
        tmp.replace(path)
        self._dirty.add(path.parent)

    def sync(self) -> None:
        """fsync every directory an entry was added to since the last sync."""
        for directory in sorted(self._dirty, key=lambda p: len(p.parts), reverse=True):
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._dirty.clear()

    def _write_temp(self, path: Path, data: bytes) -> Path:
        if not path.parent.is_dir():
            self._make_dirs(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            self._dirty.add(new.parent)  # the new entry lives in its parent


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None

"""``tally audit export``: copy a poll's whole published ledger into a directory.

The copy has the directory layout (:mod:`tally.ledger.layout`) and every file ``verify`` reads:
each history checkpoint as ``<log>/checkpoints/<size>``, each log's latest ``checkpoint``, every
tile and entry bundle of the newest size, the partial tiles and bundles of every earlier
checkpoint size, and the certificate if there is one. So ``verify DIR`` later gives the result
``verify URL`` gives now, and the copy keeps the evidence if the server changes or goes away.

Nothing is verified here (that is ``verify``'s job, and export needs no key): files are copied
as published. Each is written to a temporary name, then renamed, so an interrupted export never
leaves a half-written file under a real name; running it again completes the copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tally.audit.source import Source, unverified_size
from tally.audit.verify import partial_tiles
from tally.ledger import layout
from tally.ledger.tiles import TILE_WIDTH, Bundle, bundles_for_size, tiles_for_size

__all__ = ["ExportResult", "export", "published_files"]


@dataclass(slots=True)
class ExportResult:
    """What an export copied, and what the source should have had but did not."""

    files: int = 0
    bytes: int = 0
    logs: dict[str, int] = field(default_factory=dict)  # log -> the newest size copied
    missing: list[str] = field(default_factory=list)


def published_files(log: str, sizes: list[int]) -> list[str]:
    """Every tile and bundle path of ``log`` that its checkpoints of ``sizes`` need."""
    if not sizes:
        return []
    newest = max(sizes)
    paths = [f"{log}/{tile.path}" for tile in tiles_for_size(newest)]
    paths += [f"{log}/{bundle.path}" for bundle in bundles_for_size(newest)]
    for size in sorted(set(sizes)):
        paths += [f"{log}/{tile.path}" for tile in partial_tiles(size)]
        if size % TILE_WIDTH:
            paths.append(f"{log}/{Bundle(size // TILE_WIDTH, size % TILE_WIDTH).path}")
    return list(dict.fromkeys(paths))  # each once, in order


def export(
    source: Source, destination: Path, *, progress: Callable[[int, int, int], None] | None = None
) -> ExportResult:
    """Copy the poll's ledger at ``source`` into ``destination`` (the poll root). ``progress``
    is told (files looked at, files to look at, bytes written) after each file."""
    result = ExportResult()
    history = source.history()
    copies: list[tuple[str, bytes | None]] = []  # (path, bytes when already read)
    for log, notes in history.logs.items():
        sizes: list[int] = []
        for path, signed in notes:
            size = unverified_size(signed)
            if size is not None:
                sizes.append(size)
                copies.append((layout.history_path(log, size), signed))
            else:
                result.missing.append(path)  # not a checkpoint: nothing to file it under
        latest_path = layout.checkpoint_path(log)
        latest = source.read(latest_path)
        if latest is None:
            result.missing.append(latest_path)
        else:
            copies.append((latest_path, latest))
            size = unverified_size(latest)
            if size is not None:
                sizes.append(size)
        result.logs[log] = max(sizes, default=0)
        copies += [(path, None) for path in published_files(log, sizes)]
    copies.append((layout.CERTIFICATE, None))

    to_read = [path for path, data in copies if data is None]
    fetched = source.read_many(to_read)
    total = len(copies)
    for done, (path, data) in enumerate(copies, start=1):
        if data is None:
            data = next(fetched)
        if data is None:
            if path != layout.CERTIFICATE:  # only a closed poll has one
                result.missing.append(path)
        else:
            _write_atomically(destination / path, data)
            result.files += 1
            result.bytes += len(data)
        if progress is not None:
            progress(done, total, result.bytes)
    return result


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)

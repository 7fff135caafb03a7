"""Where a poll's ledger files live, relative to the poll's ledger root (served at ``/ledger/<poll>``).

Pure: names only, no I/O. The archiver writes this layout under ``<data dir>/ledger/<poll>/``, the
gateway serves it read-only, ``tally audit export`` copies it, and the auditor reads it from a
URL or a directory alike::

    <log>/checkpoint                 the log's latest signed checkpoint (replaced as it grows)
    <log>/checkpoints/<size>         every checkpoint ever published, by tree size (immutable)
    <log>/tile/...                   C2SP tlog-tiles: Merkle tiles and entry bundles (immutable)
    certificate                      the signed result certificate, once the poll is closed
    checkpoints                      (served only) every log's history as one JSON document

``<log>`` is ``admin`` for the admin log and the lane number in decimal (``0``, ``1``, ...) for a
lane's vote log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "ADMIN_LOG",
    "CERTIFICATE",
    "HISTORY",
    "LayoutError",
    "checkpoint_path",
    "decode_history",
    "encode_history",
    "history_dir",
    "history_path",
    "lane_log",
    "parse_log",
    "parse_size",
]

ADMIN_LOG = "admin"
CERTIFICATE = "certificate"
HISTORY = "checkpoints"
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,19}")


class LayoutError(ValueError):
    """A log name, size or history document is malformed."""


def lane_log(lane: int) -> str:
    """The log name of a lane: its number in decimal."""
    if lane < 0:
        raise LayoutError(f"lane must be >= 0, got {lane}")
    return str(lane)


def parse_log(name: str) -> int | None:
    """The lane a log name stands for, None for the admin log; LayoutError for anything else."""
    if name == ADMIN_LOG:
        return None
    if not _DECIMAL_RE.fullmatch(name) or int(name) > 0xFFFF:
        raise LayoutError(f"not a log name: {name!r}")
    return int(name)


def parse_size(text: str) -> int:
    """A tree size as written in a history file name: decimal, no leading zeros."""
    if not _DECIMAL_RE.fullmatch(text):
        raise LayoutError(f"not a tree size: {text!r}")
    return int(text)


def checkpoint_path(log: str) -> str:
    return f"{log}/checkpoint"


def history_dir(log: str) -> str:
    return f"{log}/{HISTORY}"


def history_path(log: str, size: int) -> str:
    return f"{log}/{HISTORY}/{size}"


def encode_history(poll_id: str, logs: Mapping[str, Sequence[bytes]]) -> bytes:
    """The served history: ``{"poll_id": ..., "logs": {<log>: [<signed checkpoint>, ...]}}``,
    each log's checkpoints as note text in increasing tree size."""
    logs_text = {log: [n.decode() for n in notes] for log, notes in logs.items()}
    document = {"poll_id": poll_id, "logs": logs_text}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_history(data: bytes) -> tuple[str, dict[str, list[bytes]]]:
    """Parse a served history document strictly: the poll id and each log's checkpoints."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayoutError(f"checkpoint history is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"poll_id", "logs"}:
        raise LayoutError("checkpoint history must have exactly 'poll_id' and 'logs'")
    poll_id, logs = doc["poll_id"], doc["logs"]
    if not isinstance(poll_id, str) or not isinstance(logs, dict):
        raise LayoutError("checkpoint history: 'poll_id' must be a string, 'logs' an object")
    history: dict[str, list[bytes]] = {}
    for log, notes in logs.items():
        parse_log(log)
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise LayoutError(f"checkpoint history of log {log}: expected a list of notes")
        history[log] = [n.encode() for n in notes]
    return poll_id, history

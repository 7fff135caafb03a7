"""Where the auditor reads a poll's published ledger from: a running Tally, or a directory copy.

Both hold the same layout (:mod:`tally.ledger.layout`), addressed by paths relative to the poll's
ledger root (``0/tile/entries/000``, ``admin/checkpoint``, ``certificate``). A missing file reads
as ``None``, which the verifier reports as a finding; a source that cannot be read at all (no
such directory, a server that does not answer or answers with an error) raises
:class:`SourceError`, which the command line turns into exit status 2.

The one difference is the checkpoint history: a directory keeps every checkpoint as
``<log>/checkpoints/<size>``, a server serves them all as one JSON document at ``checkpoints``
(:func:`tally.ledger.layout.decode_history`), since HTTP cannot list a directory. :meth:`history`
hides it.

Only the standard library: the auditor must run where the server's dependencies are not installed.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tally.ledger import layout

__all__ = [
    "DirectorySource",
    "History",
    "HttpSource",
    "Source",
    "SourceError",
    "open_source",
    "unverified_size",
]

TIMEOUT_S = 10.0
# Requests kept in flight by read_many: a tile costs one round trip, so a little parallelism
# turns a latency-bound crawl into a bandwidth-bound one without hammering the server.
HTTP_PARALLEL = 8
_LOOKAHEAD = 4 * HTTP_PARALLEL


class SourceError(Exception):
    """The source cannot be read at all: the audit cannot start or go on."""


@dataclass(frozen=True, slots=True)
class History:
    """Every published checkpoint of every log, as the source lists them.

    ``logs`` maps a log name to its signed checkpoints in the order listed, each with the path
    it is published under (``<log>/checkpoints/<size>``). Nothing here is verified yet.
    ``poll_id`` is the poll the source claims to hold (a server says it; a directory does not).
    """

    poll_id: str | None
    logs: dict[str, list[tuple[str, bytes]]]


class Source(Protocol):
    """A poll's published ledger, file by file."""

    @property
    def location(self) -> str:
        """Where the files come from, for messages."""
        ...

    def read(self, path: str) -> bytes | None:
        """The file at ``path`` (relative to the poll root), or None if it does not exist."""
        ...

    def read_many(self, paths: Iterable[str]) -> Iterator[bytes | None]:
        """:meth:`read` of each path, in order (possibly fetched ahead, in parallel)."""
        ...

    def history(self) -> History:
        """Every log's published checkpoints; SourceError if the source holds no ledger."""
        ...


def open_source(text: str, *, ca_file: str | None = None) -> Source:
    """A source for a URL (``http://`` or ``https://``, trusting ``ca_file`` if given) or a
    directory path."""
    if text.startswith(("http://", "https://")):
        return HttpSource(text, ca_file=ca_file)
    return DirectorySource(Path(text))


class DirectorySource:
    """A poll's ledger root on disk: an archiver's poll directory or a ``tally audit export``."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SourceError(f"{root}: not a directory")
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise SourceError(f"{self.root / path}: {exc.strerror or exc}") from None

    def read_many(self, paths: Iterable[str]) -> Iterator[bytes | None]:
        return map(self.read, paths)

    def history(self) -> History:
        logs: dict[str, list[tuple[str, bytes]]] = {}
        for name in self._log_names():
            entries: list[tuple[int, str]] = []
            directory = self.root / layout.history_dir(name)
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for child in (entry.name for entry in directory.iterdir()):
                    with contextlib.suppress(layout.LayoutError):
                        # Anything not named by a tree size is not a checkpoint (the archiver's
                        # temporary files start with a dot).
                        entries.append((layout.parse_size(child), child))
            notes: list[tuple[str, bytes]] = []
            for _, child in sorted(entries):
                path = f"{layout.history_dir(name)}/{child}"
                data = self.read(path)
                if data is not None:
                    notes.append((path, data))
            logs[name] = notes
        if not logs:
            raise SourceError(f"{self.root}: no ledger here (no admin or lane directory)")
        return History(None, logs)

    def _log_names(self) -> list[str]:
        lanes: list[int] = []
        admin = False
        for child in self.root.iterdir():
            if not child.is_dir():
                continue
            try:
                lane = layout.parse_log(child.name)
            except layout.LayoutError:
                continue
            if lane is None:
                admin = True
            elif layout.lane_log(lane) == child.name:
                lanes.append(lane)
        return ([layout.ADMIN_LOG] if admin else []) + [layout.lane_log(n) for n in sorted(lanes)]


class HttpSource:
    """A poll's ledger root served by Tally: ``<base>/ledger/<poll id>``, read with urllib."""

    def __init__(
        self, url: str, *, timeout_s: float = TIMEOUT_S, ca_file: str | None = None
    ) -> None:
        """``ca_file`` (else TALLY_CA_FILE, else the system's): the CA certificates to trust for
        an https URL, e.g. a server with a private CA."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SourceError(f"{url}: not an http(s) URL")
        if parsed.query or parsed.fragment:
            raise SourceError(f"{url}: a ledger root URL has no query or fragment")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.ca_file = ca_file or os.environ.get("TALLY_CA_FILE") or None
        self._tls: ssl.SSLContext | None = None
        if parsed.scheme == "https" and self.ca_file is not None:
            try:
                self._tls = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise SourceError(f"cannot use the CA file {self.ca_file}: {exc}") from None

    @property
    def location(self) -> str:
        return self.url

    def read(self, path: str) -> bytes | None:
        url = f"{self.url}/{path}"
        request = urllib.request.Request(  # noqa: S310  # the scheme was checked to be http(s)
            url, headers={"User-Agent": "tally-audit", "Accept": "*/*"}
        )
        try:
            with urllib.request.urlopen(  # noqa: S310  # http(s) only, checked above
                request, timeout=self.timeout_s, context=self._tls
            ) as reply:
                body: bytes = reply.read()
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise SourceError(f"{url}: cannot connect: {exc.reason}") from None
        except TimeoutError:
            raise SourceError(f"{url}: no answer within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"{url}: {exc}") from None

    def read_many(self, paths: Iterable[str]) -> Iterator[bytes | None]:
        with ThreadPoolExecutor(HTTP_PARALLEL, thread_name_prefix="tally-audit") as pool:
            pending: deque[Future[bytes | None]] = deque()
            try:
                for path in paths:
                    pending.append(pool.submit(self.read, path))
                    if len(pending) >= _LOOKAHEAD:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:  # abandoned early (an error, or the caller stopped)
                    future.cancel()

    def history(self) -> History:
        data = self.read(layout.HISTORY)
        if data is None:
            raise SourceError(f"{self.url}: no ledger here ({layout.HISTORY} not found)")
        try:
            poll_id, logs = layout.decode_history(data)
        except layout.LayoutError as exc:
            raise SourceError(f"{self.url}/{layout.HISTORY}: {exc}") from None
        return History(
            poll_id,
            {
                log: [(_history_label(log, signed), signed) for signed in notes]
                for log, notes in logs.items()
            },
        )


def _history_label(log: str, signed: bytes) -> str:
    """The path a served checkpoint is published under, from its (not yet verified) size."""
    size = unverified_size(signed)
    return layout.HISTORY if size is None else layout.history_path(log, size)


def unverified_size(signed: bytes) -> int | None:
    """The tree size a signed checkpoint states, signature unchecked: only to name its file."""
    body, sep, _ = signed.rpartition(b"\n\n")
    lines = body.split(b"\n")
    if sep and len(lines) >= 2:
        with contextlib.suppress(layout.LayoutError, UnicodeDecodeError):
            return layout.parse_size(lines[1].decode("ascii"))
    return None

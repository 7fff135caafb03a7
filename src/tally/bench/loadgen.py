"""A lean HTTP/1.1 load generator for `tally bench`.

The generator shares two cores with the server and Valkey it measures, so every microsecond it
spends per request is taken from the system under test. Hence no HTTP client library: requests are
pre-built bytes (`build_request`), and each keep-alive connection is an `asyncio.Protocol` that
sends the next request straight from the parser's message-complete callback, with no task switch,
future or timer per request. Results are only ever compared as ratios within one run.

Guarantees of `run_requests`:

- one request at a time per connection (no pipelining, as real clients do);
- `LoadResult.replies[i]` answers `requests[i]`, or is `None` when request `i` failed at the
  transport level, and `transport_errors` counts those failures by kind, so
  `sum(transport_errors.values()) == replies.count(None)`;
- a request that meets a connection closed before any byte of its response arrived (the keep-alive
  race: the server closed an idle connection) is retried once on a new connection, and its
  latency is that of the retry;
- every connection is closed when the call returns, also when it is cancelled;
- with `rate_per_s`, request `i` is not written before `i / rate_per_s` seconds into the run,
  so the load is paced (an open-loop schedule, as long as `concurrency` covers rate x latency).

Not supported (the benchmarks never send them): HEAD requests, `Expect: 100-continue`, upgrades.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

import httptools

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_DEFAULT_PERCENTILES = (50.0, 95.0, 99.0)
# Headers the generator writes itself; a caller's copy would make the request ambiguous.
_RESERVED_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete HTTP response.

    `headers` maps lower-cased names to values (repeats joined with `b", "`). All headers are
    kept, not only the content type: the parser hands each one over anyway, so one small dict per
    reply is the whole cost, and benchmarks can then check `retry-after` or `location` as well.
    """

    status: int
    body: bytes
    latency_s: float
    headers: Mapping[bytes, bytes]
    # `time.perf_counter()` when the body was complete: when the client knew the outcome.
    completed_at: float = 0.0

    @property
    def content_type(self) -> bytes:
        """The `content-type` header, or `b""` when the response has none."""
        return self.headers.get(b"content-type", b"")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one `run_requests` call observed.

    `reconnects` counts connections opened beyond the first one per concurrency slot: after the
    server closed one (announced with `Connection: close` or not), after a timeout or parse error,
    or after a failed connect. A keep-alive benchmark should see zero.
    """

    replies: list[Reply | None]
    transport_errors: dict[str, int]
    elapsed_s: float
    reconnects: int

    def completed(self) -> list[Reply]:
        """The replies that arrived, in request order."""
        return [reply for reply in self.replies if reply is not None]

    def throughput(self) -> float:
        """Completed replies per second of wall-clock time."""
        if self.elapsed_s <= 0.0:
            return 0.0
        return len(self.completed()) / self.elapsed_s

    def latency_percentiles_ms(self, *qs: float) -> dict[str, float]:
        """Latency percentiles of completed replies in milliseconds, keyed like `"p99.9"`.

        Without arguments: p50, p95 and p99. Interpolates linearly between the two nearest
        ranks (numpy's default). Raises ValueError when no reply completed, because a benchmark
        with nothing to measure should say so rather than print a made-up number.
        """
        latencies = sorted(reply.latency_s for reply in self.completed())
        if not latencies:
            raise ValueError("no completed replies to take latency percentiles of")
        return {f"p{q:g}": 1000.0 * quantile(latencies, q) for q in qs or _DEFAULT_PERCENTILES}

    def by_status(self) -> dict[int, int]:
        """How many completed replies carried each status code, in status order."""
        return dict(sorted(Counter(reply.status for reply in self.completed()).items()))


def quantile(ordered: Sequence[float], q: float) -> float:
    """The `q`th percentile of sorted values, interpolated linearly between the nearest ranks."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    position = q / 100.0 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def build_request(
    method: str,
    path: str,
    *,
    host: str,
    headers: Mapping[str, str] = _NO_HEADERS,
    body: bytes = b"",
) -> bytes:
    """The exact bytes of one HTTP/1.1 request.

    Layout: request line, `Host`, the caller's headers in their order, `Content-Length` (always,
    also `0`, so every server knows where the request ends), `Connection: keep-alive`, blank
    line, body. Raises ValueError for anything that would smuggle a line break into the head or
    for a header the generator writes itself.
    """
    if not method.isascii() or not method.isalpha():
        raise ValueError(f"not an HTTP method: {method!r}")
    _check_field("path", path)
    _check_field("host", host)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by build_request itself")
        _check_field("header name", name)
        if ":" in name:
            raise ValueError(f"header name contains ':': {name!r}")
        _check_field("header value", value, allow_space=True)
        lines.append(f"{name}: {value}")
    lines += [f"Content-Length: {len(body)}", "Connection: keep-alive", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _check_field(what: str, text: str, *, allow_space: bool = False) -> None:
    forbidden = "\r\n\0" if allow_space else "\r\n\0 \t"
    if not text or any(char in forbidden for char in text):
        raise ValueError(f"{what} is empty or contains whitespace or control characters: {text!r}")


async def run_requests(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    timeout_s: float = 30.0,
    rate_per_s: float | None = None,
) -> LoadResult:
    """Send every request over `concurrency` keep-alive connections and collect the replies.

    Each connection takes the next unsent request index from a shared counter, so the load stays
    at `concurrency` requests in flight until the list runs out. `timeout_s` bounds each connect
    and each request (write to complete body); a request past it fails as `"timeout"` and its
    connection is replaced. Latency runs from the write to the complete body (`perf_counter`).
    `rate_per_s` paces the writes (module docstring); None sends as fast as replies come back.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if timeout_s <= 0.0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if rate_per_s is not None and rate_per_s <= 0.0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    started = time.perf_counter()
    run = _Run(requests, timeout_s, started, 0.0 if rate_per_s is None else 1.0 / rate_per_s)
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(requests))):
            group.create_task(_drive(run, host, port))
    elapsed_s = time.perf_counter() - started
    return LoadResult(run.replies, dict(run.errors), elapsed_s, run.reconnects)


class _Run:
    """State shared by the connections of one `run_requests` call (one event loop: no locks)."""

    __slots__ = (
        "errors",
        "interval_s",
        "next_index",
        "reconnects",
        "replies",
        "requests",
        "started",
        "timeout_s",
    )

    def __init__(
        self, requests: Sequence[bytes], timeout_s: float, started: float, interval_s: float
    ) -> None:
        self.requests = requests
        self.timeout_s = timeout_s
        self.started = started
        self.interval_s = interval_s  # 0.0: unpaced
        self.replies: list[Reply | None] = [None] * len(requests)
        self.errors: Counter[str] = Counter()
        self.next_index = 0
        self.reconnects = 0

    def take(self) -> int | None:
        """The next request index nobody has sent yet, or None when all are taken."""
        index = self.next_index
        if index >= len(self.requests):
            return None
        self.next_index = index + 1
        return index

    def due_in(self, index: int) -> float:
        """Seconds until request `index` may be written (zero or less: now)."""
        if not self.interval_s:
            return 0.0
        return self.started + index * self.interval_s - time.perf_counter()


# What a finished connection hands back to its driver: the request to send on the next
# connection (None: nothing left) and whether that request may still be retried once.
_Handover = tuple[int | None, bool]


async def _drive(run: _Run, host: str, port: int) -> None:
    """One concurrency slot: open connections one after another until no request is left."""
    loop = asyncio.get_running_loop()
    index, retry_allowed = run.take(), True
    first = True
    while index is not None:
        if not first:
            run.reconnects += 1
        first = False
        try:
            async with asyncio.timeout(run.timeout_s):
                _, connection = await loop.create_connection(lambda: _Connection(run), host, port)
        except TimeoutError:
            run.errors["timeout"] += 1
            index, retry_allowed = run.take(), True
            continue
        except OSError as exc:
            run.errors[type(exc).__name__] += 1
            index, retry_allowed = run.take(), True
            continue
        index, retry_allowed = await connection.serve(index, retry_allowed)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    The parser's callbacks drive it: a complete response records the reply and writes the next
    request at once. It ends by resolving `serve()`'s future with a `_Handover`, after which
    late transport events are ignored.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._done: asyncio.Future[_Handover] = self._loop.create_future()
        # One lazily re-armed timer per connection instead of one per request: it fires at most
        # once per timeout period and then checks whichever request is in flight.
        self._timer: asyncio.TimerHandle | None = None
        # A paced request waiting for its time: nothing is in flight meanwhile.
        self._pending: asyncio.TimerHandle | None = None
        self._index = -1
        self._retry_allowed = True
        self._started = 0.0
        self._received = False
        self._headers_done = False
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    async def serve(self, index: int, retry_allowed: bool) -> _Handover:
        """Send `index` first, then keep taking requests until this connection is done."""
        self._send(index, retry_allowed)
        try:
            return await self._done
        except asyncio.CancelledError:
            self._end(None, abort=True)
            raise

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection always makes a stream transport; uvloop's is not an asyncio.Transport
        # subclass, so this is a cast rather than an isinstance check.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(type(exc).__name__)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done.done():
            return
        if self._headers_done and self._is_close_delimited():
            self._record_reply()
            self._end(self._run.take())
        elif not self._received and self._retry_allowed:
            self._end(self._index, retry_allowed=False)
        else:
            self._fail("closed" if exc is None else type(exc).__name__)

    # httptools.HttpResponseParser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        previous = self._headers.get(name)
        self._headers[name] = value if previous is None else previous + b", " + value

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._record_reply()
        following = self._run.take()
        if following is None or not self._parser.should_keep_alive():
            self._end(following)
        else:
            self._send(following, retry_allowed=True)

    # internals

    def _send(self, index: int, retry_allowed: bool) -> None:
        # The request becomes this connection's at once, so a close while it waits for its time
        # hands it over for a retry like any request nothing was received for.
        self._index, self._retry_allowed = index, retry_allowed
        self._received = self._headers_done = False
        self._headers, self._body = {}, []
        delay_s = self._run.due_in(index)
        if delay_s > 0.0:
            self._pending = self._loop.call_later(delay_s, self._write)
        else:
            self._write()

    def _write(self) -> None:
        assert self._transport is not None
        self._pending = None
        self._started = time.perf_counter()
        self._transport.write(self._run.requests[self._index])
        if self._timer is None:
            self._timer = self._loop.call_later(self._run.timeout_s, self._check_timeout)

    def _record_reply(self) -> None:
        completed_at = time.perf_counter()
        status = self._parser.get_status_code()
        body = b"".join(self._body)
        self._run.replies[self._index] = Reply(
            status, body, completed_at - self._started, self._headers, completed_at
        )

    def _is_close_delimited(self) -> bool:
        """True when the body ends at connection close (neither a length nor chunking)."""
        return b"content-length" not in self._headers and b"transfer-encoding" not in self._headers

    def _check_timeout(self) -> None:
        self._timer = None
        if self._done.done():
            return
        if self._pending is not None:  # nothing in flight: look again a period later
            self._timer = self._loop.call_later(self._run.timeout_s, self._check_timeout)
            return
        remaining_s = self._started + self._run.timeout_s - time.perf_counter()
        if remaining_s > 0.0:
            self._timer = self._loop.call_later(remaining_s, self._check_timeout)
        else:
            self._fail("timeout")

    def _fail(self, kind: str) -> None:
        """The request in flight failed; the connection is unusable and gets replaced."""
        self._run.errors[kind] += 1
        self._end(self._run.take(), abort=True)

    def _end(self, index: int | None, *, retry_allowed: bool = True, abort: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()
        if not self._done.done():
            self._done.set_result((index, retry_allowed))

"""The HTTP edge of one gateway process: what a connection may cost before the app sees it.

uvicorn's httptools protocol, with these limits added where the bytes arrive (uvicorn's `http=`):

- **Request head size** (request line + headers, `max_head_bytes`): bytes are counted before
  they reach the parser, and a chunk that would pass the limit is fed only up to it. A head that
  is still incomplete there gets `431 headers-too-large` and the connection is closed. httptools
  joins the pieces of a header value with `+=`, so without this a 64 MB header sent in small
  reads costs quadratic time; with it, every byte is looked at once and at most ~one read's
  worth (uvloop reads 256 KiB) plus the limit is ever held.
- **Deadlines**: a connection must deliver a complete request head within `head_timeout_s` of
  opening (or of the first byte of a later request's head), and a request's body within
  `body_timeout_s` of its head. A slow sender is closed (`408 request-timeout` when nothing else
  is being answered on the connection). A request that arrives in one read, as nearly all do,
  arms no timer at all; idle keep-alive connections are uvicorn's (`timeout_keep_alive`).
- **Open HTTP connections per address** (`max_connections_per_ip`, IPv6 by /64): one more gets
  `429 too-many-connections` and is closed. A trusted proxy's connections are not capped: it
  carries many clients (the live WebSocket/SSE limits still count each forwarded client).
- **One Authorization header**: a request with two or more gets
  `400 duplicate-authorization` in place of the app (HTTP routes, the vote path, the WebSocket
  upgrade and SSE alike), before any of them is read: a proxy, a framework and Tally could each
  pick a different one, so which credential the request carries would depend on who reads it.
- **Token bucket per address** (`rate`/s, `burst`; security/buckets.py), taken when a request's
  head is complete, before its body or credentials are read: an empty bucket answers
  `429 rate-limited` with Retry-After in place of the app, and the connection stays usable. The
  address is the client's as client_address.py resolves it.

Every refusal is counted by reason (`Refusal`, /metrics `tally_edge_refusals_total`). Per request
the edge adds a few attribute checks, one pass over the header names and one bucket take to
uvicorn's own work.

**Over TLS** (gateway/tls.py) the edge sees the decrypted bytes, so every limit above applies
as it does over plain HTTP; a connection only reaches the edge once its TLS handshake is done,
and the handshake itself has the head deadline (server.py). The edge's own answers carry the
HSTS header then (`extra_headers`), as uvicorn's do.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from tally.gateway.client_address import FORWARDED_FOR, ClientAddresses
from tally.gateway.problems import MEDIA_TYPE, TITLES, TYPE_PREFIX
from tally.security.addresses import address_key
from tally.security.buckets import TokenBuckets


class Refusal(enum.StrEnum):
    """Why the edge refused a request or closed a connection (the metric's `reason` label)."""

    HEAD_TOO_LARGE = "head-too-large"
    HEAD_TIMEOUT = "head-timeout"
    BODY_TIMEOUT = "body-timeout"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    RATE_LIMITED = "rate-limited"
    MALFORMED = "malformed"
    DUPLICATE_AUTHORIZATION = "duplicate-authorization"


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_head_bytes: int = 16384
    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections_per_ip: int = 256
    rate: float = 100.0  # tokens per second per address; 0: no edge bucket
    burst: int = 200

    def __post_init__(self) -> None:
        if self.max_head_bytes < 1 or self.max_connections_per_ip < 1:
            raise ValueError("edge limits must be positive")
        if not (self.head_timeout_s > 0 and self.body_timeout_s > 0):
            raise ValueError("edge deadlines must be positive")


class Edge:
    """One gateway process's edge: limits, client addresses, the open HTTP connections per
    address, the token buckets and the refusal counter; `protocol` is the class for uvicorn's
    `http=` setting, bound to this edge. Used on the serving event loop only."""

    def __init__(
        self,
        limits: EdgeLimits,
        addresses: ClientAddresses,
        count: Callable[[str], None] = lambda reason: None,
        *,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """`extra_headers`: added to every answer the edge writes itself (HSTS over TLS)."""
        self.limits = limits
        self.addresses = addresses
        self.count = count
        self.buckets = (
            TokenBuckets(limits.rate, limits.burst)
            if limits.rate > 0 and limits.burst > 0
            else None
        )
        self.connections: dict[str, int] = {}  # address key -> open HTTP connections
        self.answers = _Answers.with_headers(
            [b"%s: %s\r\n" % (k.lower().encode(), v.encode()) for k, v in extra_headers]
        )
        edge = self

        class BoundEdgeProtocol(EdgeProtocol):
            _edge = edge

        self.protocol: type[asyncio.Protocol] = BoundEdgeProtocol

    @property
    def open_connections(self) -> int:
        """HTTP connections holding a per-address slot (a trusted proxy's hold none)."""
        return sum(self.connections.values())


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's limits (module docstring). Subclassed per
    Edge (`Edge.protocol`), which sets `_edge`."""

    _edge: ClassVar[Edge]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = self._edge.limits.max_head_bytes
        self._buckets = self._edge.buckets
        self._in_head = True  # between requests or inside a head; False: inside a body
        self._head_bytes = 0  # of the current head, counted before the parser sees them
        self._heads = 0  # heads completed on this connection
        self._deadline: asyncio.TimerHandle | None = None
        self._slot = ""  # the address key whose connection slot this connection holds
        self._bucket_key = ""  # the socket peer's address key ("" behind a proxy, or none)
        self._behind_proxy = False
        self._done = False  # refused, or handed over to a WebSocket: no more bytes through here
        self._refused_upgrade: bytes | None = None
        self._answers = self._edge.answers

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        edge = self._edge
        peer = self.client[0] if self.client else ""
        if edge.addresses.any_trusted and edge.addresses.is_trusted(peer):
            self._behind_proxy = True
        elif peer:
            key = address_key(peer) or peer
            self._bucket_key = key
            held = edge.connections.get(key, 0)
            if held >= edge.limits.max_connections_per_ip:
                self._refuse(Refusal.TOO_MANY_CONNECTIONS, self._answers.too_many_connections)
                return
            edge.connections[key] = held + 1
            self._slot = key
        self._arm(edge.limits.head_timeout_s)  # a connection that never speaks is closed too

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self._in_head:
            head_bytes = self._head_bytes + len(data)
            if head_bytes > self._max_head:
                self._feed_past_limit(data, self._max_head - self._head_bytes)
                return
            self._head_bytes = head_bytes
        self._parse(data)
        # Only a read that leaves a head or a body unfinished arms a deadline.
        if self._deadline is None and (self._head_bytes or not self._in_head) and not self._done:
            limits = self._edge.limits
            self._arm(limits.head_timeout_s if self._in_head else limits.body_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        super().connection_lost(exc)

    # uvicorn's hooks

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        if self._deadline is not None:
            self._disarm()
        authorizations = 0
        for name, _ in self.headers:
            if name == b"authorization":
                authorizations += 1
        if authorizations > 1:
            self._answer_instead(Refusal.DUPLICATE_AUTHORIZATION, _DUPLICATE_AUTHORIZATION_APP)
            return
        buckets = self._buckets
        if buckets is not None:
            key = self._forwarded_key() if self._behind_proxy else self._bucket_key
            if key:
                wait = buckets.take(key, self.loop.time())
                if wait:
                    self._rate_limited(wait)
                    return
        _headers_complete(self)
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = _WholeResponseCycle  # the request's cycle, just made

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self._deadline is not None:
            self._disarm()
        _message_complete(self)

    def handle_websocket_upgrade(self) -> None:
        if self._refused_upgrade is not None:
            self._refuse(None, self._refused_upgrade)
            return
        # The WebSocket protocol owns the transport from here, and the live limits count it.
        self._done = True
        self._disarm()
        self._release()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._refuse(Refusal.MALFORMED, self._answers.malformed)

    def _parse(self, data: bytes) -> None:
        """uvicorn's data_received, minus its log line per malformed request (a flood of them
        would be a flood of log lines): the edge counts them in its metric instead."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._refuse(Refusal.MALFORMED, self._answers.malformed)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # the limits

    def _forwarded_key(self) -> str:
        """Behind a trusted proxy: the bucket of the client it names, per request."""
        forwarded = [value for name, value in self.headers if name == FORWARDED_FOR]
        client = self._edge.addresses.resolve(self.client[0] if self.client else "", forwarded)
        return address_key(client) or client

    def _rate_limited(self, wait_s: float) -> None:
        """Answer this request with 429 in place of the app (an upgrade: in place of it)."""
        retry_after = max(1, math.ceil(wait_s))
        self._answer_instead(Refusal.RATE_LIMITED, _RateLimitedApp(retry_after))

    def _answer_instead(self, reason: Refusal, answer: _Answer) -> None:
        """Answer this request with `answer` in place of the app; an upgrade request is
        answered in place of the upgrade, and its connection closed."""
        self._edge.count(reason)
        if self.parser.should_upgrade():
            self._refused_upgrade = answer.raw(self._answers.extra)
        app, self.app = self.app, answer  # this request only
        try:
            _headers_complete(self)
        finally:
            self.app = app

    def _feed_past_limit(self, data: bytes, room: int) -> None:
        """Feed up to the head limit; refuse if the head is still incomplete there, else go on
        with the rest (a body, or the next request's head, counted afresh)."""
        heads = self._heads
        self._head_bytes += room
        self._parse(data[:room])
        if self._done:
            return
        if self._in_head and self._heads == heads:
            self._refuse(Refusal.HEAD_TOO_LARGE, self._answers.head_too_large)
            return
        self.data_received(data[room:])

    def _arm(self, timeout_s: float) -> None:
        self._deadline = self.loop.call_later(timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._in_head:
            self._refuse(Refusal.HEAD_TIMEOUT, self._answers.request_timeout)
        else:  # the app may be waiting on this body: it hears a disconnect, nobody to answer
            self._refuse(Refusal.BODY_TIMEOUT, None)

    def _refuse(self, reason: Refusal | None, response: bytes | None) -> None:
        """Answer `response` unless another answer is under way on this connection; close."""
        self._done = True
        self._disarm()
        if reason is not None:
            self._edge.count(reason)
        transport = self.transport
        if transport.is_closing():
            return
        if response is not None and (self.cycle is None or self.cycle.response_complete):
            transport.write(response)
        transport.close()

    def _release(self) -> None:
        if self._slot:
            connections = self._edge.connections
            held = connections[self._slot] - 1
            if held:
                connections[self._slot] = held
            else:
                del connections[self._slot]
            self._slot = ""


# uvicorn's own steps, called directly (cheaper than super() on the per-request path).
_headers_complete = HttpToolsProtocol.on_headers_complete
_message_complete = HttpToolsProtocol.on_message_complete
_send = RequestResponseCycle.send


class _WholeResponseCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing a response of known length (a
    `content-length` header) as one write, head and body together.

    uvicorn writes the head as soon as the app sends `http.response.start`, and uvloop sends
    each write at once: two TCP segments and two syscalls per response (a vote's answer
    included), where the head alone is ~77 bytes. So the start of such a response is held until
    its first body message and written in front of it; uvicorn's own send still checks and
    frames both. A streamed response (SSE: no length) and HEAD keep uvicorn's order. An app that
    fails between the two messages now gets uvicorn's 500 instead of a cut response."""

    _held: Any = None  # the `http.response.start` not written yet

    async def send(self, message: Any) -> None:
        if (
            message["type"] == "http.response.start"
            and not self.response_started
            and self.scope["method"] != "HEAD"
            and _has_length(message.get("headers", ()))
        ):
            self._held = message
            return
        start = self._held
        if start is None:
            await _send(self, message)
            return
        self._held = None
        transport = self.transport
        head = _HeadFirst(transport)
        self.transport = head  # type: ignore[assignment]
        try:
            await _send(self, start)  # checks and frames the head into `head`
            head.holding = False
            await _send(self, message)  # the body's write carries the head in front
        finally:
            self.transport = transport
            head.flush()  # nothing else was written: the head alone


def _has_length(headers: Any) -> bool:
    for name, _ in headers:  # ASGI names are lower case; uvicorn lowers them anyway
        if name == b"content-length" or name.lower() == b"content-length":
            return True
    return False


class _HeadFirst:
    """The cycle's transport while a held head is framed: it keeps what is written until the
    head is complete, then puts it in front of the next write."""

    __slots__ = ("holding", "parts", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []
        self.holding = True

    def write(self, data: bytes) -> None:
        if self.holding:
            self.parts.append(data)
            return
        self.parts.append(data)
        self.flush()

    def flush(self) -> None:
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class _Answer:
    """A problem answered in place of the app (uvicorn writes it, with its default headers);
    the body, if any, is never read (uvicorn discards it once the response is complete)."""

    __slots__ = ("_body", "_headers", "_status")

    def __init__(self, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
        self._status = status
        self._body = body
        self._headers = [
            (b"content-type", MEDIA_TYPE.encode()),
            (b"content-length", b"%d" % len(body)),
            *headers,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self._status, "headers": self._headers}
        )
        await send({"type": "http.response.body", "body": self._body})

    def raw(self, extra: Sequence[bytes]) -> bytes:
        """The same answer as bytes that close the connection (for a refused upgrade)."""
        lines = [b"%s: %s\r\n" % header for header in self._headers[2:]]
        return _response(self._status, self._body, *lines, *extra)


class _RateLimitedApp(_Answer):
    __slots__ = ()

    def __init__(self, retry_after: int) -> None:
        super().__init__(429, _RATE_LIMITED, (b"retry-after", b"%d" % retry_after))


def _problem(status: int, code: str, detail: str, **extensions: object) -> bytes:
    document = {"type": TYPE_PREFIX + code, "title": TITLES[code], "status": status, "code": code}
    return orjson.dumps({**document, "detail": detail, **extensions})


def _response(status: int, body: bytes, *headers: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    head = [STATUS_LINE[status], b"content-type: ", MEDIA_TYPE.encode(), b"\r\n"]
    head += [b"content-length: %d\r\n" % len(body), *headers, b"connection: close\r\n\r\n"]
    return b"".join(head) + body


_RATE_LIMITED = _problem(
    429, "rate-limited", "too many requests from this address", scope="address"
)
_DUPLICATE_AUTHORIZATION_APP = _Answer(
    400,
    _problem(
        400,
        "duplicate-authorization",
        "the request carries more than one Authorization header; send exactly one",
    ),
)


@dataclass(frozen=True, slots=True)
class _Answers:
    """The edge's own complete answers, with one edge's extra header lines (HSTS over TLS)."""

    extra: tuple[bytes, ...]
    head_too_large: bytes
    request_timeout: bytes
    too_many_connections: bytes
    malformed: bytes

    @classmethod
    def with_headers(cls, extra: Sequence[bytes]) -> _Answers:
        return cls(
            tuple(extra),
            _response(
                431,
                _problem(431, "headers-too-large", "the request line and headers exceed the limit"),
                *extra,
            ),
            _response(
                408,
                _problem(408, "request-timeout", "the request head or body came too slowly"),
                *extra,
            ),
            _response(
                429,
                _problem(
                    429, "too-many-connections", "too many open connections from this address"
                ),
                b"retry-after: 1\r\n",
                *extra,
            ),
            _response(
                400, _problem(400, "invalid-request", "not a valid HTTP/1.1 request"), *extra
            ),
        )

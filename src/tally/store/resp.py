"""A small pipelined Valkey client: one connection, every command queued in the same event-loop
tick leaves in one write, replies matched in order.

Why not redis-py: its per-call machinery (connection pool checkout, command objects, response
callbacks) dominates the vote path; batching per tick on one connection measured ~2x faster here
(ARCHITECTURE.md §7). Parsing is hiredis (C).

Guarantees: replies resolve futures in the order commands were submitted; a lost connection fails
every command still waiting with StoreUnavailable (the caller cannot know whether a write landed,
which is why every Tally write is idempotent); the next command reconnects, with backoff.
Implements ports.StoreClient.

Durability belongs to the connection that confirms it: when the server is known to fsync before
it replies (`appendfsync always`, no replicas required) a write's reply is the proof
(`durability` None). Otherwise every tick's write that carries `durable()` commands ends with one
`WAITAOF 1 <replicas> <timeout>`, and none of those commands' replies is handed out unless it
confirms. With replicas, a `WAIT <replicas>` goes first, in the same write (WaitAof.commands).
One confirmation is in flight per connection at a time: durable writes made while one is under
way go out at once but are confirmed together by the next WAIT/WAITAOF, sent when the current
one answers. Both block the connection on the server until they are answered, so a
confirmation per tick would queue up behind each other while a replica cannot confirm (a
partition), and the n-th vote would wait n timeouts; this way a vote waits at most for the
confirmation in flight and then its own: twice the WAITAOF timeout.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import hiredis

from tally.domain.errors import StoreUnavailable
from tally.ports import Arg, ReplyError

__all__ = [
    "Arg",
    "Endpoint",
    "ReplyError",
    "TlsFiles",
    "Valkey",
    "WaitAof",
    "connect_error",
    "raise_first_error",
]


@dataclass(frozen=True, slots=True)
class WaitAof:
    """Confirm each batch of durable writes with `WAITAOF 1 <replicas> <timeout_ms>`.

    With replicas, `WAIT <replicas>` comes first in the same write. Why: a replica reports its
    fsynced offset only when the primary asks (once per blocked WAIT/WAITAOF) or once a second,
    and when asked together with the write it has not fsynced it yet, so a lone WAITAOF took
    ~1 s (Valkey 9.1). WAIT returns once the replica has the write, which it fsyncs before its
    answer leaves (appendfsync always); the WAITAOF then asks again and is answered at once:
    ~1.4 ms against ~0.9 s on loopback (BENCHMARKS.md, "The WAITAOF finding"). The timeout is split between the two."""

    replicas: int
    timeout_ms: int

    def commands(self) -> list[bytes]:
        """What ends a batch: the last reply is the one `check` reads."""
        if self.replicas == 0:
            return [encode((b"WAITAOF", b"1", b"0", b"%d" % self.timeout_ms))]
        wait_ms = max(1, self.timeout_ms // 2)
        replicas = b"%d" % self.replicas
        return [
            encode((b"WAIT", replicas, b"%d" % wait_ms)),
            encode((b"WAITAOF", b"1", replicas, b"%d" % max(1, self.timeout_ms - wait_ms))),
        ]

    def check(self, reply: Any) -> StoreUnavailable | None:
        """Why the reply does not confirm the batch, or None if it does."""
        if isinstance(reply, ReplyError):
            return StoreUnavailable(f"durability not confirmed: {reply}")
        if reply[0] < 1 or reply[1] < self.replicas:
            return StoreUnavailable(f"durability not confirmed: WAITAOF answered {reply}")
        return None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """How a `rediss://` connection checks Valkey and shows itself (TALLY_VALKEY_TLS_CA,
    TALLY_VALKEY_TLS_CERT, TALLY_VALKEY_TLS_KEY): the CA bundle that signs Valkey's certificate
    (None: the system's), and a client certificate with its key for servers that require one
    (`tls-auth-clients yes`). The server's name is always checked against its certificate
    (the host of the URL, or of a cluster node as CLUSTER SHARDS names it), and TLS 1.2 is the
    oldest version offered."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        return _tls_context(self)


@functools.lru_cache(maxsize=8)
def _tls_context(files: TlsFiles) -> ssl.SSLContext:
    # One context per settings, shared by every connection (each reads no file again).
    context = ssl.create_default_context(cafile=files.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert is not None:
        context.load_cert_chain(files.cert, files.key)
    return context


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    password: str | None = None
    username: str | None = None
    db: int = 0
    tls: bool = False
    tls_files: TlsFiles = TlsFiles()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of a `rediss://` endpoint, None for plain TCP."""
        return self.tls_files.context() if self.tls else None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        db = int(parts.path.lstrip("/") or 0)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            password=unquote(parts.password) if parts.password else None,
            username=unquote(parts.username) if parts.username else None,
            db=db,
            tls=parts.scheme in ("rediss", "valkeys"),
        )

    @property
    def url(self) -> str:
        """As TALLY_VALKEY_URL would name it (credentials quoted)."""
        scheme = "rediss" if self.tls else "redis"
        user = quote(self.username or "", safe="")
        credentials = f"{user}:{quote(self.password, safe='')}@" if self.password else ""
        db = f"/{self.db}" if self.db else ""
        return f"{scheme}://{credentials}{self.host}:{self.port}{db}"


def connect_error(endpoint: Endpoint, exc: BaseException) -> StoreUnavailable:
    """Why a connection could not be made, saying plainly when TLS refused the server."""
    where = f"{endpoint.host}:{endpoint.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return StoreUnavailable(
            f"cannot connect to Valkey at {where}: its TLS certificate is not trusted "
            f"({exc.verify_message}; TALLY_VALKEY_TLS_CA names the CA that signs it)"
        )
    if isinstance(exc, ssl.SSLError):
        return StoreUnavailable(f"cannot connect to Valkey at {where}: TLS failed: {exc}")
    return StoreUnavailable(f"cannot connect to Valkey at {where}: {exc}")


def encode(args: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, command_timeout_s: float) -> None:
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self.command_timeout_s = command_timeout_s
        # A WAIT/WAITAOF confirming a batch of durable writes is waiting for its reply.
        self.confirming = False
        # A server that stops answering (hung, SIGSTOPped, partitioned) must not hang every vote:
        # when replies are owed and none has come for command_timeout_s, drop the connection,
        # which fails every waiting command with StoreUnavailable. One timer per connection,
        # nothing per command.
        self.last_progress = loop.time()
        self._watchdog = loop.call_later(command_timeout_s, self._check_progress)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def _check_progress(self) -> None:
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        if self.waiting and loop.time() - self.last_progress >= self.command_timeout_s:
            self.transport.abort()
            return
        self._watchdog = loop.call_later(self.command_timeout_s / 4, self._check_progress)

    def expect_reply(self, future: asyncio.Future[Any]) -> None:
        if not self.waiting:  # the clock for a reply starts when the first one is owed
            self.last_progress = asyncio.get_running_loop().time()
        self.waiting.append(future)

    def data_received(self, data: bytes) -> None:
        self.last_progress = asyncio.get_running_loop().time()
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if not future.done():  # the caller may have timed out and gone
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._watchdog.cancel()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(StoreUnavailable(f"connection to Valkey lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


class Valkey:
    """One pipelined connection to one Valkey node."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 5.0,
        on_connect: Callable[[Valkey], Awaitable[None]] | None = None,
        durability: WaitAof | None = None,
    ) -> None:
        self.endpoint = endpoint
        # None: every reply already implies an fsync (see the module docstring).
        self.durability = durability
        self._durable: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._on_connect = on_connect
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._retry_at = 0.0
        self._backoff_s = 0.05
        # Told how many commands each write carried (the gateway's batch-size metric).
        self.on_flush: Callable[[int], None] | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.transport is not None

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply; an error reply raises ReplyError."""
        if not self.connected:
            await self.connect()
        reply = await self.submit(args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def call(self, *args: Arg) -> Any:
        """execute(), with an error reply (OOM, READONLY during a failover...) raised as
        StoreUnavailable: what stores want, since the caller can only retry."""
        try:
            return await self.execute(*args)
        except ReplyError as exc:
            raise StoreUnavailable(f"Valkey error: {exc}") from exc

    def submit(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue a command on the live connection; its future gets the raw reply (a ReplyError
        object for an error reply, not raised, so a pipeline can read each reply on its own)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise StoreUnavailable("not connected to Valkey")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.expect_reply(future)
        self._outbox.append(encode(args))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return future

    def durable(self, args: Sequence[Arg]) -> Awaitable[Any]:
        """A write's raw reply, handed out only once the write is durable (module docstring);
        StoreUnavailable if that cannot be confirmed. On the vote path, connected and with
        replies that imply an fsync, this is the reply's own future: no coroutine in between."""
        if not self.connected:
            return self._durable_after_connect(args)
        reply = self.submit(args)
        if self.durability is None:
            return reply
        confirmed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._durable.append((reply, confirmed))
        return confirmed

    async def _durable_after_connect(self, args: Sequence[Arg]) -> Any:
        await self.connect()
        return await self.durable(args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send commands back to back; return their raw replies (ReplyError objects included)."""
        if not self.connected:
            await self.connect()
        return list(await asyncio.gather(*(self.submit(c) for c in commands)))

    async def connect(self) -> None:
        """Connect (or join a connect already under way); raises StoreUnavailable on failure."""
        if self.connected:
            return
        if self._connecting is None or self._connecting.done():
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise StoreUnavailable("Valkey unreachable; retrying shortly")
            self._connecting = loop.create_task(self._connect())
        await asyncio.shield(self._connecting)

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        protocol = self._protocol
        # While a confirmation is in flight the durable writes wait for the next (docstring).
        if self._durable and (protocol is None or not protocol.confirming):
            self._seal_durable_batch(protocol, outbox)
        if protocol is not None and protocol.transport is not None and outbox:
            protocol.transport.write(b"".join(outbox))
            if self.on_flush is not None:
                self.on_flush(len(outbox))

    def _seal_durable_batch(self, protocol: _Protocol | None, outbox: list[bytes]) -> None:
        """End this tick's write with the WAITAOF that confirms its durable commands."""
        assert self.durability is not None
        batch, self._durable = self._durable, []
        policy = self.durability
        if protocol is None or protocol.transport is None:
            lost = StoreUnavailable("connection to Valkey lost before durability was confirmed")
            for _, confirmed in batch:
                if not confirmed.done():
                    confirmed.set_exception(lost)
            return
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[Any] = loop.create_future()
        confirming = policy.commands()
        for _ in confirming[:-1]:  # WAIT: its reply only paces the WAITAOF
            pace: asyncio.Future[Any] = loop.create_future()
            pace.add_done_callback(_ignore_outcome)
            protocol.expect_reply(pace)
        protocol.expect_reply(ack)
        protocol.confirming = True
        outbox.extend(confirming)

        def release(ack: asyncio.Future[Any]) -> None:
            protocol.confirming = False
            if self._durable and not self._flush_scheduled:  # writes that waited for this one
                self._flush_scheduled = True
                loop.call_soon(self._flush)
            # Replies come in order, so every command of the batch has its reply by now.
            error = ack.exception() if not ack.cancelled() else StoreUnavailable("cancelled")
            if error is None:
                error = policy.check(ack.result())
            for reply, confirmed in batch:
                failed = reply.exception() if reply.done() and not reply.cancelled() else None
                if confirmed.done():
                    continue
                failure = error or failed
                if failure is not None:
                    confirmed.set_exception(failure)
                elif reply.done():
                    confirmed.set_result(reply.result())
                else:
                    confirmed.set_exception(StoreUnavailable("no reply before WAITAOF's"))

        ack.add_done_callback(release)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self._command_timeout_s),
                    ep.host,
                    ep.port,
                    ssl=ep.ssl_context(),
                ),
                self._connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            self._retry_at = loop.time() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, 1.0)
            raise connect_error(ep, exc) from exc
        self._protocol = protocol
        self._outbox.clear()  # commands queued for a dead connection already failed
        try:
            if ep.password is not None:
                auth: list[Arg] = (
                    ["AUTH", ep.username, ep.password] if ep.username else ["AUTH", ep.password]
                )
                await self._checked(auth)
            if ep.db:
                await self._checked(["SELECT", ep.db])
            if self._on_connect is not None:
                await self._on_connect(self)
        except ReplyError as exc:
            # e.g. -LOADING while a restarted server replays its AOF: not ready yet, retry later.
            await self.close()
            self._retry_at = loop.time() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, 1.0)
            raise StoreUnavailable(f"Valkey is not ready: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        self._backoff_s = 0.05

    async def _checked(self, args: Sequence[Arg]) -> Any:
        reply = await self.submit(args)
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"Valkey refused {args[0]!r}: {reply}")
        return reply


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    """Mark the outcome read, so a lost connection's error is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()


def raise_first_error(replies: list[Any]) -> None:
    """Raise StoreUnavailable for the first error reply of a pipeline, if any."""
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"Valkey error: {reply}")

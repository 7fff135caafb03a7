"""Cheap WebSocket watchers for the fan-out benchmarks: many sockets that only read frames.

A watcher is a non-blocking socket plus a read callback on the event loop (`loop.add_reader`),
with no transport, stream or task of its own. Tens of thousands fit in one process, and each
readable event costs one `recvmsg`. A watcher sends the opening handshake (RFC 6455 §4.1, no
extensions), checks the 101 and `Sec-WebSocket-Accept`, and answers pings. Every snapshot frame
becomes an `Arrival` with two times:

- `received_at`: when the kernel queued the bytes on the socket (SO_TIMESTAMPNS). This is when
  the frame reached the watcher, however busy the watcher's own process is.
- `read_at`: when this process read it.

Both are on the `time.perf_counter()` clock. The kernel's wall-clock stamp is moved onto that
clock with one offset taken when the fleet is made.

Linux only: SO_TIMESTAMPNS, and a perf_counter (CLOCK_MONOTONIC) that all processes share.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import resource
import socket
import struct
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

import orjson

from tally.bench.visibility import Arrival

__all__ = ["WatcherFleet", "raise_open_files"]

# <asm-generic/socket.h>: the option, and also the type of the control message it adds.
SO_TIMESTAMPNS = 35
# <linux/in.h>: bind() picks only the address; the port is chosen at connect() by the 4-tuple.
IP_BIND_ADDRESS_NO_PORT = 24
# SO_LINGER on, zero seconds: close() resets the connection instead of leaving a TIME_WAIT.
_ABORT_ON_CLOSE = struct.pack("ii", 1, 0)
_TIMESPEC = struct.Struct("qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
_READ_SIZE = 65536
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_NO_MASK = b"\0\0\0\0"  # a valid mask key that leaves the payload as it is: nothing to hide here


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (never past the hard limit, which
    only a privileged process can raise); returns the soft limit now in force. Child processes
    started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _frame(opcode: int, payload: bytes = b"") -> bytes:
    """A client-to-server frame: FIN, masked (as RFC 6455 requires of clients), short payload."""
    if len(payload) > 125:
        raise ValueError("control frames carry at most 125 bytes")
    return bytes((0x80 | opcode, 0x80 | len(payload))) + _NO_MASK + payload


_CLOSE_NORMAL = _frame(_OP_CLOSE, (1000).to_bytes(2, "big"))


class _NotUpgraded(ConnectionError):
    """The connection ended before the 101; `reason` is what `WatcherFleet.failures` counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Watcher:
    """One connection: the opening handshake, then frames (see the module docstring)."""

    __slots__ = (
        "arrivals",
        "buffer",
        "fleet",
        "key",
        "open",
        "partial",
        "sock",
        "total",
        "upgraded",
    )

    def __init__(self, fleet: WatcherFleet, sock: socket.socket, key: bytes) -> None:
        self.fleet = fleet
        self.sock = sock
        self.key = key
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.open = True
        self.arrivals: list[Arrival] = []
        self.total = -1
        self.partial: bytearray | None = None  # a fragmented message so far

    def on_readable(self) -> None:
        try:
            data, ancdata, _, _ = self.sock.recvmsg(_READ_SIZE, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.end(type(exc).__name__)
            return
        read_at = time.perf_counter()
        if not data:
            self.end("eof")
            return
        received_at = read_at
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack(cdata)
                received_at = seconds - self.fleet.wall_offset + nanoseconds * 1e-9
        self.buffer += data
        if not self.upgraded.done() and not self._handshake():
            return
        self._frames(read_at, received_at)

    def end(self, why: str | None, *, abort: bool = False) -> None:
        """Stop reading and close the socket (with a reset if `abort`); `why` (None: we closed
        it) is counted once."""
        if not self.open:
            return
        self.open = False
        self.fleet.loop.remove_reader(self.sock.fileno())
        if abort:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_ON_CLOSE)
        self.sock.close()
        if not self.upgraded.done():
            self.upgraded.set_exception(_NotUpgraded(why or "closed"))
        elif why is not None:
            self.fleet.lost(self, why)

    def _handshake(self) -> bool:
        """Consume the 101 response; False while it is incomplete or when it was refused."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > 16384:
                self.end("oversized-response")
            return False
        head = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        parts = head[0].split(b" ", 2)
        status = parts[1].decode(errors="replace") if len(parts) > 1 else "?"
        if status != "101":
            self.end(f"status-{status}")
            return False
        expected = base64.b64encode(hashlib.sha1(self.key + _GUID).digest())  # noqa: S324  # RFC 6455 mandates SHA-1 here
        headers = dict(line.split(b":", 1) for line in head[1:] if b":" in line)
        accept = {k.strip().lower(): v.strip() for k, v in headers.items()}.get(
            b"sec-websocket-accept"
        )
        if accept != expected:
            self.end("bad-accept")
            return False
        self.upgraded.set_result(None)
        return True

    def _frames(self, read_at: float, received_at: float) -> None:
        buf, pos = self.buffer, 0
        while self.open and len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                self.end("masked-server-frame")
                return
            length, head = b1 & 0x7F, 2
            if length == 126:
                head = 4
            elif length == 127:
                head = 10
            if len(buf) - pos < head:
                break
            if head > 2:
                length = int.from_bytes(buf[pos + 2 : pos + head], "big")
            if len(buf) - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._message(b0 & 0x80 != 0, b0 & 0x0F, payload, read_at, received_at)
        del buf[:pos]

    def _message(
        self, fin: bool, opcode: int, payload: bytes, read_at: float, received_at: float
    ) -> None:
        if opcode == _OP_PING:
            with contextlib.suppress(OSError):  # a full send buffer: the server's next ping retries
                self.sock.send(_frame(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            with contextlib.suppress(OSError):
                self.sock.send(_CLOSE_NORMAL)
            self.end(f"close-{code}")
        elif opcode in (_OP_TEXT, _OP_BINARY, _OP_CONTINUATION):
            if opcode != _OP_CONTINUATION:
                self.partial = bytearray()
            if self.partial is None:
                self.end("stray-continuation")
                return
            self.partial += payload
            if fin:
                document, self.partial = bytes(self.partial), None
                self.fleet.on_document(self, document, read_at, received_at)


class WatcherFleet:
    """N watchers of one WebSocket path on one server, all on the running event loop.

    `connect` opens them; `wait_total` waits until every open watcher has seen a snapshot with at
    least a given total; `arrivals` lists what each one received; `close` closes them all. A
    watcher whose connection ends early stays in `arrivals` and is counted in `lost`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> None:
        """`source`: the local address to connect from (on loopback, any 127.x.y.z; each one
        has its own range of ephemeral ports); None lets the kernel choose."""
        self.loop = asyncio.get_running_loop()
        self.address = (host, port)
        self.source = source
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._request_head = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{extra}Sec-WebSocket-Key: "
        ).encode()
        # perf_counter = wall clock - wall_offset; taken once, so all stamps share one offset.
        self.wall_offset = time.time() - time.perf_counter()
        self.watchers: list[_Watcher] = []
        self.failures: Counter[str] = Counter()  # connections that never upgraded, by reason
        self.lost_by: Counter[str] = Counter()  # upgraded connections that ended, by reason
        self.other_documents = 0  # messages that were not snapshots
        self.ts_ms: dict[int, int] = {}  # seq -> the snapshot's `ts`, ms since the epoch
        self._target = -1
        self._behind = 0
        self._caught_up = asyncio.Event()

    @property
    def open_count(self) -> int:
        return sum(1 for w in self.watchers if w.open)

    async def connect(self, n: int, *, concurrency: int = 256, timeout_s: float = 10.0) -> int:
        """Open `n` more watchers, at most `concurrency` handshakes at a time; returns how many
        upgraded (the others are counted in `failures`)."""
        before = len(self.watchers)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await self._open_one(timeout_s)

        async with asyncio.TaskGroup() as group:
            for _ in range(n):
                group.create_task(one())
        return len(self.watchers) - before

    async def _open_one(self, timeout_s: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        watcher: _Watcher | None = None
        try:
            if self.source is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.source, 0))
            async with asyncio.timeout(timeout_s):
                await self.loop.sock_connect(sock, self.address)
                key = base64.b64encode(os.urandom(16))
                watcher = _Watcher(self, sock, key)
                self.loop.add_reader(sock.fileno(), watcher.on_readable)
                request = self._request_head + key + b"\r\n\r\n"
                # A fresh socket's send buffer takes a few hundred bytes whole.
                if sock.send(request) != len(request):
                    raise _NotUpgraded("short-write")
                await watcher.upgraded
        except (OSError, TimeoutError) as exc:
            self.failures[exc.reason if isinstance(exc, _NotUpgraded) else type(exc).__name__] += 1
            if watcher is not None:
                watcher.end(None)
            else:
                sock.close()
            return
        self.watchers.append(watcher)

    def on_document(self, watcher: _Watcher, document: bytes, read_at: float, at: float) -> None:
        try:
            doc = orjson.loads(document)
            seq, total = int(doc["seq"]), int(doc["total"])
            if doc["type"] != "snapshot":
                raise ValueError(doc["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.other_documents += 1
            return
        watcher.arrivals.append(Arrival(seq, total, read_at, at))
        if seq not in self.ts_ms:
            self.ts_ms[seq] = _epoch_ms(doc.get("ts"))
        if watcher.total < self._target <= total:
            self._caught_up_one()
        watcher.total = max(watcher.total, total)

    def lost(self, watcher: _Watcher, why: str) -> None:
        self.lost_by[why] += 1
        if watcher.total < self._target:
            self._caught_up_one()  # nothing more will come: stop waiting for it

    def _caught_up_one(self) -> None:
        self._behind -= 1
        if self._behind <= 0:
            self._caught_up.set()

    async def wait_total(self, total: int, timeout_s: float) -> int:
        """Wait until every open watcher has seen a snapshot with at least `total` votes, or
        `timeout_s`; returns how many open watchers had not. Not while `connect` runs."""
        self._target = total
        self._behind = sum(1 for w in self.watchers if w.open and w.total < total)
        if self._behind:
            self._caught_up.clear()
        else:
            self._caught_up.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._caught_up.wait()
        self._target = -1
        return self._behind

    def arrivals(self) -> list[list[Arrival]]:
        return [w.arrivals for w in self.watchers]

    def close(self) -> None:
        """Send every open watcher's close frame, then reset its connection without waiting for
        the server's answer. The server sees the close frame, then a reset. A reset leaves no
        TIME_WAIT behind, which would otherwise hold one of loopback's ~28k ephemeral ports
        per watcher for a minute and starve the next run."""
        for watcher in self.watchers:
            if watcher.open:
                with contextlib.suppress(OSError):
                    watcher.sock.send(_CLOSE_NORMAL)
                watcher.end(None, abort=True)


def _epoch_ms(ts: object) -> int:
    if not isinstance(ts, str):
        return 0
    try:
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    except ValueError:
        return 0

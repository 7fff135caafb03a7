"""How a gateway process hears about snapshots: one Valkey connection in sharded-subscribe mode
(SSUBSCRIBE) for every poll it watches (`keys.live_channel`), and the stored latest snapshot for
when it may have missed some. Both implement the ports in `tally.gateway.fanout`.

Snapshots are published with SPUBLISH on the poll's own slot (tally_snapshot in tally.lua): on a
single node that is plain pub/sub; on a cluster the message stays on the shard that owns the
poll instead of crossing the whole cluster bus, and `ClusterLiveFeed` (store.cluster_pubsub)
keeps one of these feeds per primary.

Guarantees of `ValkeyLiveFeed` (what the fan-out hub relies on):
- `subscribe(poll_id)` returns only once the server has confirmed the subscription, so every
  snapshot published after it returns is delivered (while the connection holds);
- a poll's messages reach `on_message(poll_id, doc)` in publish order, on the event loop, never
  concurrently;
- a lost or silent connection (no PONG within `ping_interval_s`) is dropped and re-established
  with backoff, every wanted channel is subscribed again, and then `on_resubscribed` is called:
  messages published while disconnected are lost, so the caller must re-read stored state.

One connection multiplexes every channel: RESP2 subscribe mode answers SSUBSCRIBE, SUNSUBSCRIBE
and PING with pushes, in the order the commands were sent, so confirmations are matched in FIFO
order; `smessage` pushes interleave freely. A `sunsubscribe` nobody asked for (a cluster moved the
channel's slot to another node) is told to `on_dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import hiredis

from tally.domain.errors import StoreUnavailable
from tally.store import keys
from tally.store.resp import Arg, Endpoint, ReplyError, connect_error, encode

log = logging.getLogger("tally.pubsub")

OnMessage = Callable[[str, bytes], None]
OnResubscribed = Callable[[list[str]], None]
OnDropped = Callable[[str], None]

_MESSAGE = b"smessage"
_SUBSCRIBE = b"ssubscribe"
_UNSUBSCRIBE = b"sunsubscribe"
_MIN_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0


class _SubscribeProtocol(asyncio.Protocol):
    """The wire: replies and confirmations resolve futures in order, messages go to a callback."""

    def __init__(self, on_message: OnMessage, on_dropped: OnDropped) -> None:
        self.reader = hiredis.Reader(replyError=ReplyError)
        # One entry per reply owed, in order: the command's name, and its future (None where
        # nobody waits for it: SUNSUBSCRIBE).
        self.waiting: deque[tuple[bytes, asyncio.Future[Any] | None]] = deque()
        self.on_message = on_message
        self.on_dropped = on_dropped
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it

    def send(self, args: Iterable[Arg]) -> asyncio.Future[Any]:
        """Send a command; its reply resolves the returned future."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._write(args, future)
        return future

    def send_ignoring_reply(self, args: Iterable[Arg]) -> None:
        self._write(args, None)

    def _write(self, args: Iterable[Arg], future: asyncio.Future[Any] | None) -> None:
        if self.transport is None or self.transport.is_closing():
            raise StoreUnavailable("the pub/sub connection to Valkey is down")
        command = list(args)
        name = command[0] if isinstance(command[0], bytes) else str(command[0]).encode()
        self.waiting.append((name.lower(), future))
        self.transport.write(encode(command))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            push = reply[0] if isinstance(reply, list) and len(reply) == 3 else None
            if push == _MESSAGE:
                try:
                    self.on_message(reply[1].decode(), reply[2])
                except Exception:  # one bad listener must not take the connection down
                    log.exception("live message handler failed")
            elif push == _UNSUBSCRIBE and (not self.waiting or self.waiting[0][0] != push):
                self.on_dropped(reply[1].decode())  # the server dropped it: its slot moved
            elif self.waiting:
                _, future = self.waiting.popleft()
                if future is not None and not future.done():
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiting:
            _, future = self.waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(StoreUnavailable(f"pub/sub connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


class ValkeyLiveFeed:
    """One SSUBSCRIBE-mode connection per node, shared by every watched poll (module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout_s: float = 2.0,
        ping_interval_s: float = 5.0,
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        # Told the poll id when the server drops a subscription by itself (a cluster moved its
        # slot); the feed forgets the poll, and the caller subscribes it where it now lives.
        self._on_dropped = on_dropped
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._wanted: dict[str, str] = {}  # channel -> poll id
        self._protocol: _SubscribeProtocol | None = None
        self._up = asyncio.Event()
        self._on_message: OnMessage = _ignore_message
        self._on_resubscribed: OnResubscribed = _ignore_resubscribed
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self, on_message: OnMessage, on_resubscribed: OnResubscribed) -> None:
        """Begin connecting (and reconnecting, until `close`) in the background."""
        if self._task is not None:
            raise RuntimeError("the subscriber is already started")
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tally-pubsub")

    async def subscribe(self, poll_id: str) -> None:
        """Subscribe and wait for the server's confirmation; StoreUnavailable if Valkey is down.

        The poll stays wanted even when this fails (it is subscribed again at the next connect):
        whoever gives up on it calls `unsubscribe`, as the hub does when a channel closes. (Were
        a failure to drop it here, a cancelled subscribe could drop a newer one's wish.)"""
        channel = keys.live_channel(poll_id)
        self._wanted[channel] = poll_id
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._up.wait()
                reply = await self._live().send(("SSUBSCRIBE", channel))
        except TimeoutError:
            raise StoreUnavailable("Valkey did not confirm a subscription in time") from None
        _check(reply, _SUBSCRIBE)

    @property
    def polls(self) -> list[str]:
        """The polls this feed is asked to deliver."""
        return list(self._wanted.values())

    def unsubscribe(self, poll_id: str) -> None:
        """Stop listening to the poll (the confirmation is not awaited: nothing depends on it).

        Safe to call for a poll whose subscribe is still under way or failed: an SUNSUBSCRIBE
        follows any SSUBSCRIBE already sent on the same connection, so the server ends up clean."""
        channel = keys.live_channel(poll_id)
        self._wanted.pop(channel, None)
        protocol = self._protocol
        if self._up.is_set() and protocol is not None:
            with contextlib.suppress(StoreUnavailable):
                protocol.send_ignoring_reply(("SUNSUBSCRIBE", channel))

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    def _message(self, channel: str, payload: bytes) -> None:
        poll_id = self._wanted.get(channel)
        if poll_id is not None:  # else a late message for a poll nobody watches any more
            self._on_message(poll_id, payload)

    def _dropped(self, channel: str) -> None:
        poll_id = self._wanted.pop(channel, None)
        if poll_id is not None:
            log.info("Valkey dropped the live channel of poll %s (its slot moved)", poll_id)
            if self._on_dropped is not None:
                self._on_dropped(poll_id)

    def _live(self) -> _SubscribeProtocol:
        if self._protocol is None:
            raise StoreUnavailable("the pub/sub connection to Valkey is down")
        return self._protocol

    async def _run(self) -> None:
        backoff = _MIN_BACKOFF_S
        first = True
        while True:
            try:
                protocol = await self._connect()
                channels = sorted(self._wanted)
                replies = await asyncio.gather(
                    *(protocol.send(("SSUBSCRIBE", c)) for c in channels)
                )
                for channel, reply in zip(channels, replies, strict=True):
                    if isinstance(reply, ReplyError) and str(reply).startswith("MOVED "):
                        # The slot lives elsewhere now (a cluster failover or migration): one
                        # refused channel must not fail every other poll on this node.
                        self._dropped(channel)
                        continue
                    _check(reply, _SUBSCRIBE)
                channels = [c for c in channels if c in self._wanted]
                self._up.set()
                backoff = _MIN_BACKOFF_S
                if not first:
                    log.info("pub/sub reconnected; %d channels subscribed again", len(channels))
                    self._on_resubscribed([self._wanted[c] for c in channels if c in self._wanted])
                first = False
                await self._keep_alive(protocol)
            except (StoreUnavailable, OSError, TimeoutError) as exc:
                log.warning("pub/sub connection to Valkey failed: %s", exc)
            except Exception:  # a bug here must not end live updates for the whole process
                log.exception("pub/sub connection failed unexpectedly")
            finally:
                self._up.clear()
                await self._disconnect()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            first = False

    async def _connect(self) -> _SubscribeProtocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _SubscribeProtocol(self._message, self._dropped),
                    ep.host,
                    ep.port,
                    ssl=ep.ssl_context(),
                )
                self._protocol = protocol
                if ep.password is not None:
                    auth: list[Arg] = ["AUTH", ep.password]
                    if ep.username:
                        auth = ["AUTH", ep.username, ep.password]
                    _check(await protocol.send(auth), None)
                _check(await protocol.send(("CLIENT", "SETNAME", "tally-live")), None)
        except (OSError, TimeoutError) as exc:
            raise connect_error(ep, exc) from exc
        return protocol

    async def _keep_alive(self, protocol: _SubscribeProtocol) -> None:
        """Return when the connection is lost, or drop it when the server stops answering PING."""
        while True:
            done, _ = await asyncio.wait({protocol.closed}, timeout=self._ping_interval_s)
            if done:
                return
            try:
                async with asyncio.timeout(self._ping_interval_s):
                    await protocol.send(("PING",))
            except TimeoutError:
                raise StoreUnavailable(
                    "Valkey stopped answering PING on the pub/sub connection"
                ) from None

    async def _disconnect(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
            await protocol.closed


def _check(reply: Any, kind: bytes | None) -> None:
    if isinstance(reply, ReplyError):
        raise StoreUnavailable(f"Valkey refused a pub/sub command: {reply}")
    if kind is not None and not (isinstance(reply, list) and reply and reply[0] == kind):
        raise StoreUnavailable(f"unexpected pub/sub reply {reply!r}")


def _ignore_message(poll_id: str, payload: bytes) -> None:
    """Default listener before `start`: nothing subscribes before then."""


def _ignore_resubscribed(poll_ids: list[str]) -> None:
    """Default listener before `start`."""

"""The fan-out hub: per poll, ONE upstream subscription shared by every watcher in this process.

Channels are reference counted (as in encode/broadcaster and Litestar's channels): the first
watcher of a poll opens its channel (look the poll up, subscribe upstream, read the stored latest
snapshot) and later watchers share that work; the last one to leave releases the subscription.

Delivery guarantees to a watcher:
- only snapshots of its poll, each with a seq higher than any it was offered before;
- the latest snapshot when it joins (if the poll has one), then every newer one the hub hears of;
- backlog policy LATEST_ONLY: the hub never queues. `Watcher.deliver` is called synchronously for
  every watcher and must not await; a watcher that cannot send now keeps only the newest snapshot
  in a one-slot buffer. So one slow watcher never delays another, and the work per snapshot is
  one call per watcher, however many votes the snapshot sums up.
- after the upstream connection comes back the hub re-reads each channel's stored latest
  snapshot, since messages published during the outage were lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import Poll
from tally.gateway.live.snapshot import LiveSnapshot, live_snapshot

log = logging.getLogger("tally.live")

_RESYNC_ATTEMPTS = 5


class Watcher(Protocol):
    def deliver(self, snapshot: LiveSnapshot) -> None:
        """Take a snapshot; never await or block. Keep only the newest one if it cannot be sent now."""


class SnapshotFeed(Protocol):
    """Published snapshot documents per poll (implemented by store.pubsub.ValkeyLiveFeed).

    `subscribe` returns once every later publication will be delivered; a poll's documents arrive
    in publish order; after a reconnect `on_resubscribed` names the polls whose documents may have
    been missed meanwhile."""

    def start(
        self,
        on_message: Callable[[str, bytes], None],
        on_resubscribed: Callable[[list[str]], None],
    ) -> None: ...

    async def subscribe(self, poll_id: str) -> None: ...

    def unsubscribe(self, poll_id: str) -> None: ...

    async def close(self) -> None: ...


class LatestSnapshots(Protocol):
    async def latest_doc(self, poll_id: str) -> bytes | None:
        """The poll's latest stored snapshot document, or None before its first snapshot."""


class PollDirectory(Protocol):
    async def get_poll(self, poll_id: str) -> Poll:
        """The poll; raises PollNotFound (the VotingService satisfies this)."""


class _Channel:
    __slots__ = ("latest", "poll", "poll_id", "ready", "watchers")

    def __init__(self, poll_id: str) -> None:
        self.poll_id = poll_id
        self.poll: Poll | None = None  # its definition, once opened: its result visibility
        self.watchers: set[Watcher] = set()
        self.latest: LiveSnapshot | None = None
        self.ready: asyncio.Future[None] | None = None


class LiveHub:
    """Channels of live snapshots, one per watched poll (module docstring)."""

    def __init__(self, feed: SnapshotFeed, latest: LatestSnapshots, polls: PollDirectory) -> None:
        self._feed = feed
        self._latest = latest
        self._polls = polls
        self._channels: dict[str, _Channel] = {}
        self._resyncs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start listening upstream (connects in the background, reconnects until `close`)."""
        self._feed.start(self._on_message, self._on_resubscribed)

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def watcher_count(self) -> int:
        return sum(len(c.watchers) for c in self._channels.values())

    def latest(self, poll_id: str) -> LiveSnapshot | None:
        channel = self._channels.get(poll_id)
        return None if channel is None else channel.latest

    async def join(self, poll_id: str, watcher: Watcher) -> None:
        """Add a watcher; on return it has been offered the latest snapshot (if any) and will be
        offered every newer one until `leave`. Raises PollNotFound or StoreUnavailable, and then
        the watcher is not joined. Returns quietly if the watcher left while the poll's channel
        was still opening (the caller knows: it made the watcher leave)."""
        channel = self._channels.get(poll_id)
        if channel is None:
            channel = self._channels[poll_id] = _Channel(poll_id)
            channel.ready = asyncio.ensure_future(self._open(channel))
        channel.watchers.add(watcher)  # before waiting, so nothing published meanwhile is missed
        assert channel.ready is not None
        already_open = channel.ready.done()
        try:
            await asyncio.shield(channel.ready)
        except asyncio.CancelledError:
            self.leave(poll_id, watcher)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller is being cancelled, not just the channel's opening
            return  # every watcher left before the channel opened, this one too
        except BaseException:
            self.leave(poll_id, watcher)
            raise
        # A watcher that waited for the opening was offered the latest by the opening itself.
        if already_open and channel.latest is not None:
            watcher.deliver(channel.latest)

    def leave(self, poll_id: str, watcher: Watcher) -> None:
        """Remove a watcher (idempotent); the last one out releases the upstream subscription."""
        channel = self._channels.get(poll_id)
        if channel is None or watcher not in channel.watchers:
            return
        channel.watchers.discard(watcher)
        if channel.watchers:
            return
        del self._channels[poll_id]
        if channel.ready is not None and not channel.ready.done():
            channel.ready.cancel()
        self._feed.unsubscribe(poll_id)

    async def close(self) -> None:
        """Stop listening upstream; watchers are the gateway's to close, before this."""
        for task in self._resyncs:
            task.cancel()
        for channel in self._channels.values():
            if channel.ready is not None:
                channel.ready.cancel()
        await asyncio.gather(*self._resyncs, return_exceptions=True)
        self._channels.clear()
        await self._feed.close()

    async def _open(self, channel: _Channel) -> None:
        channel.poll = await self._polls.get_poll(channel.poll_id)
        await self._feed.subscribe(channel.poll_id)
        await self._refresh(channel)

    async def _refresh(self, channel: _Channel) -> None:
        doc = await self._latest.latest_doc(channel.poll_id)
        if doc is not None:
            self._offer(channel, doc)

    def _on_message(self, poll_id: str, doc: bytes) -> None:
        channel = self._channels.get(poll_id)
        if channel is not None:
            self._offer(channel, doc)

    def _offer(self, channel: _Channel, doc: bytes) -> None:
        poll = channel.poll
        if poll is None:  # nothing is heard before the channel's poll is read (_open)
            return
        try:
            snapshot = live_snapshot(channel.poll_id, doc, poll.visibility)
        except ValueError as exc:
            log.warning("dropped a malformed snapshot: %s", exc)
            return
        if channel.latest is not None and snapshot.seq <= channel.latest.seq:
            return  # a repeat, or a stale stored read racing a newer publication
        channel.latest = snapshot
        for watcher in list(channel.watchers):  # a delivery may close its watcher
            try:
                watcher.deliver(snapshot)
            except Exception:  # one broken watcher must not stop the broadcast
                log.exception("delivering a snapshot of poll %s failed", channel.poll_id)

    def _on_resubscribed(self, poll_ids: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._resync(poll_ids))
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resync(self, poll_ids: list[str]) -> None:
        """Re-read the stored latest of every channel: publications during the outage were lost."""
        pending = list(poll_ids)
        for attempt in range(_RESYNC_ATTEMPTS):
            failed = []
            for poll_id in pending:
                channel = self._channels.get(poll_id)
                if channel is None:
                    continue
                try:
                    await self._refresh(channel)
                except StoreUnavailable:
                    failed.append(poll_id)
            if not failed:
                return
            pending = failed
            await asyncio.sleep(0.1 * 2**attempt)
        log.warning("could not re-read the latest snapshot of %d polls", len(pending))

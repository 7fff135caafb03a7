"""Live snapshots from a Valkey Cluster: SSUBSCRIBE each poll's channel on the primary that owns
its slot (snapshots are SPUBLISHed there), with one `ValkeyLiveFeed` per primary.

Same guarantees as ValkeyLiveFeed (what the fan-out hub relies on), across failovers: when a
primary fails, its feed cannot reconnect, so the feed's polls are re-homed. Re-homing happens
after every topology change the cluster client sees, after the server drops a channel whose slot
moved (`sunsubscribe` push), and when a feed has been down for REHOME_AFTER_S (then the topology
is read again first). A re-homed poll is subscribed on its new primary and named in
`on_resubscribed`, since snapshots published meanwhile were missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tally.domain.errors import StoreUnavailable
from tally.store import keys
from tally.store.cluster import ValkeyCluster
from tally.store.pubsub import OnMessage, OnResubscribed, ValkeyLiveFeed
from tally.store.resp import Endpoint

log = logging.getLogger("tally.pubsub")

REHOME_AFTER_S = 1.0


class ClusterLiveFeed:
    """SnapshotFeed over a cluster (module docstring)."""

    def __init__(
        self,
        cluster: ValkeyCluster,
        *,
        connect_timeout_s: float = 2.0,
        ping_interval_s: float = 5.0,
    ) -> None:
        self._cluster = cluster
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._feeds: dict[Endpoint, ValkeyLiveFeed] = {}
        self._home: dict[str, Endpoint] = {}  # poll id -> the primary its channel is on
        self._orphans: set[str] = set()  # polls whose channel the server dropped
        self._on_message: OnMessage = _ignore_message
        self._on_resubscribed: OnResubscribed = _ignore_resubscribed
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return all(feed.connected for feed in self._feeds.values())

    def start(self, on_message: OnMessage, on_resubscribed: OnResubscribed) -> None:
        if self._task is not None:
            raise RuntimeError("the subscriber is already started")
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._cluster.topology_changed = self._wake
        self._task = asyncio.get_running_loop().create_task(
            self._rehome_loop(), name="tally-cluster-pubsub"
        )

    async def subscribe(self, poll_id: str) -> None:
        endpoint = await self._owner(poll_id)
        self._home[poll_id] = endpoint
        await self._feed(endpoint).subscribe(poll_id)

    def unsubscribe(self, poll_id: str) -> None:
        endpoint = self._home.pop(poll_id, None)
        feed = self._feeds.get(endpoint) if endpoint is not None else None
        if feed is not None:
            feed.unsubscribe(poll_id)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        feeds, self._feeds = list(self._feeds.values()), {}
        await asyncio.gather(*(feed.close() for feed in feeds))

    async def _owner(self, poll_id: str) -> Endpoint:
        channel = keys.live_channel(poll_id)
        if self._cluster.endpoint_of(channel) is None:
            await self._cluster.connect()
        endpoint = self._cluster.endpoint_of(channel)
        if endpoint is None:
            raise StoreUnavailable("the cluster topology is not known yet")
        return endpoint

    def _feed(self, endpoint: Endpoint) -> ValkeyLiveFeed:
        feed = self._feeds.get(endpoint)
        if feed is None:
            feed = ValkeyLiveFeed(
                endpoint,
                connect_timeout_s=self._connect_timeout_s,
                ping_interval_s=self._ping_interval_s,
                on_dropped=self._dropped,
            )
            feed.start(self._on_message, self._on_resubscribed)
            self._feeds[endpoint] = feed
        return feed

    def _dropped(self, poll_id: str) -> None:
        """The server dropped the poll's channel (its slot moved): subscribe it where it is now."""
        self._home.pop(poll_id, None)
        self._orphans.add(poll_id)
        self._wake.set()

    async def _rehome_loop(self) -> None:
        down_since: dict[Endpoint, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REHOME_AFTER_S / 2):
                    await self._wake.wait()
            self._wake.clear()
            try:
                now = loop.time()
                for endpoint, feed in self._feeds.items():
                    if feed.connected:
                        down_since.pop(endpoint, None)
                    else:
                        down_since.setdefault(endpoint, now)
                if any(now - since >= REHOME_AFTER_S for since in down_since.values()):
                    await self._cluster.refresh()
                await self._rehome()
            except StoreUnavailable as exc:
                log.warning("cannot re-home live channels yet: %s", exc)
            except Exception:  # a bug here must not end live updates for the whole process
                log.exception("re-homing live channels failed")

    async def _rehome(self) -> None:
        moved: list[str] = []
        wanted: dict[str, Endpoint | None] = {**self._home, **dict.fromkeys(self._orphans)}
        for poll_id, home in wanted.items():
            owner = self._cluster.endpoint_of(keys.live_channel(poll_id))
            if owner is None or owner == home:
                continue
            if home is not None and home in self._feeds:
                self._feeds[home].unsubscribe(poll_id)
            self._home[poll_id] = owner
            self._orphans.discard(poll_id)
            # On failure the feed keeps it wanted and subscribes it when it connects.
            with contextlib.suppress(StoreUnavailable):
                await self._feed(owner).subscribe(poll_id)
            moved.append(poll_id)
        for endpoint in [e for e, f in self._feeds.items() if not f.polls]:
            await self._feeds.pop(endpoint).close()  # a failed primary: nothing left to hear
        if moved:
            log.info("live channels of %d polls moved to their new primaries", len(moved))
            self._on_resubscribed(moved)


def _ignore_message(poll_id: str, payload: bytes) -> None:
    """Default listener before `start`."""


def _ignore_resubscribed(poll_ids: list[str]) -> None:
    """Default listener before `start`."""


__all__ = ["REHOME_AFTER_S", "ClusterLiveFeed"]

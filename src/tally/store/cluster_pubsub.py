"""Live snapshots from a Valkey Cluster: SSUBSCRIBE each poll's channel on the primary that owns
its slot (snapshots are SPUBLISHed there), with one `ValkeyLiveFeed` per primary.

Same guarantees as ValkeyLiveFeed (what the fan-out hub relies on), across failovers: when a
primary fails, its feed cannot reconnect, so the feed's polls are re-homed. Re-homing happens
after every topology change the cluster client sees, after the server drops a channel whose slot
moved (`sunsubscribe` push), and when a feed has been down for REHOME_AFTER_S; in the last two
cases the topology is read again first (from the node that dropped the channel, which knows
where its slot went, if there is one). A re-homed poll is named in `on_resubscribed` once its
new primary has confirmed the subscription, since snapshots published meanwhile were missed; one
whose subscription is not confirmed (the new primary's feed not up yet, or a refusal because our
topology is behind) is retried every round, after reading the topology again, and is not left
wanted on the node that refused it meanwhile (a refused channel fails a ValkeyLiveFeed's whole
reconnect). `subscribe`, if the owner it was sent to refuses or does not confirm, reads the
topology and tries once more where the slot is now.
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
        # Polls wanted but subscribed nowhere (re-homed every round until confirmed), each with
        # the primary that dropped or refused its channel: the topology is read from it first.
        self._orphans: dict[str, Endpoint] = {}
        self._on_message: OnMessage = _ignore_message
        self._on_resubscribed: OnResubscribed = _ignore_resubscribed
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Every watched poll is subscribed on a connected feed."""
        return not self._orphans and all(feed.connected for feed in self._feeds.values())

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
        """Subscribe on the primary that owns the poll's channel; StoreUnavailable if it cannot
        be confirmed (the poll stays wanted until `unsubscribe`, as with ValkeyLiveFeed).

        If that primary refuses (MOVED: the slot moved and our topology is behind) or does not
        confirm, the topology is read again, and if it names another primary now, the poll is
        subscribed there instead."""
        endpoint = await self._owner(poll_id)
        try:
            await self._subscribe_on(endpoint, poll_id)
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):  # the refusing node knows the owner
                await self._cluster.refresh(force=True, ask_first=(endpoint.host, endpoint.port))
            owner = self._cluster.endpoint_of(keys.live_channel(poll_id))
            wanted = poll_id in self._home or poll_id in self._orphans
            if owner is None or owner == endpoint or not wanted:
                raise
            # (The re-homing loop may have moved it meanwhile: subscribing again is harmless.)
            if self._home.get(poll_id) == endpoint and endpoint in self._feeds:
                self._feeds[endpoint].unsubscribe(poll_id)
            await self._subscribe_on(owner, poll_id)

    async def _subscribe_on(self, endpoint: Endpoint, poll_id: str) -> None:
        self._home[poll_id] = endpoint
        self._orphans.pop(poll_id, None)
        await self._feed(endpoint).subscribe(poll_id)

    def unsubscribe(self, poll_id: str) -> None:
        self._orphans.pop(poll_id, None)
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
        if self._cluster.topology_changed is self._wake:
            self._cluster.topology_changed = None
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
                on_dropped=lambda poll_id: self._dropped(poll_id, endpoint),
            )
            feed.start(self._on_message, self._on_resubscribed)
            self._feeds[endpoint] = feed
        return feed

    def _dropped(self, poll_id: str, endpoint: Endpoint) -> None:
        """The server dropped the poll's channel (its slot moved): subscribe it where it is now,
        once the topology says where that is."""
        if self._home.get(poll_id) != endpoint:
            return  # unsubscribed, or already subscribed elsewhere
        del self._home[poll_id]
        self._orphans[poll_id] = endpoint
        self._wake.set()

    async def _rehome_loop(self) -> None:
        down_since: dict[Endpoint, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REHOME_AFTER_S / 2):
                    await self._wake.wait()
            self._wake.clear()
            now = loop.time()
            for endpoint, feed in self._feeds.items():
                if feed.connected:
                    down_since.pop(endpoint, None)
                else:
                    down_since.setdefault(endpoint, now)
            for endpoint in [e for e in down_since if e not in self._feeds]:
                del down_since[endpoint]
            # A node that dropped or refused a channel knows where its slot went: ask it first.
            dropped_by = next(iter(self._orphans.values()), None)
            try:
                if dropped_by is not None:
                    await self._cluster.refresh(
                        force=True, ask_first=(dropped_by.host, dropped_by.port)
                    )
                elif any(now - since >= REHOME_AFTER_S for since in down_since.values()):
                    await self._cluster.refresh()
            except StoreUnavailable as exc:  # e.g. mid-failover: slots not served yet
                log.warning("cannot read the cluster topology for live channels yet: %s", exc)
            try:
                await self._rehome()
            except Exception:  # a bug here must not end live updates for the whole process
                log.exception("re-homing live channels failed")

    async def _rehome(self) -> None:
        """Subscribe every poll whose channel's primary is not where it is subscribed (or that
        is subscribed nowhere) on the primary the topology names now."""
        plan: dict[str, Endpoint] = {}
        for poll_id, home in self._home.items():
            owner = self._cluster.endpoint_of(keys.live_channel(poll_id))
            if owner is not None and owner != home:
                plan[poll_id] = owner
        for poll_id in self._orphans:
            owner = self._cluster.endpoint_of(keys.live_channel(poll_id))
            if owner is not None:
                plan[poll_id] = owner
        for poll_id, owner in plan.items():
            was = self._home.get(poll_id)
            if was is not None and was in self._feeds:
                self._feeds[was].unsubscribe(poll_id)
            self._home[poll_id] = owner
            self._orphans.pop(poll_id, None)
        outcomes = await asyncio.gather(
            *(self._feed(owner).subscribe(poll_id) for poll_id, owner in plan.items()),
            return_exceptions=True,
        )
        moved: list[str] = []
        for (poll_id, owner), outcome in zip(plan.items(), outcomes, strict=True):
            if self._home.get(poll_id) != owner:
                continue  # unsubscribed, or moved again, meanwhile
            if outcome is None:
                moved.append(poll_id)
                continue
            # Not confirmed (refused, or that feed is not up): try again next round.
            feed = self._feeds.get(owner)
            if feed is not None:
                feed.unsubscribe(poll_id)
            del self._home[poll_id]
            self._orphans[poll_id] = owner
            log.warning("live channel of poll %s not subscribed yet: %s", poll_id, outcome)
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

"""The aggregator role: the aggregator (lane counters into published snapshots, one active per
poll through a lease) and the deadline sweep (formally closing polls whose deadline passed).

The sweep lives in this role so that a split deployment (`tally gateway` + `tally aggregator`)
still closes polls at their deadline; `tally serve` runs it too, with its own aggregator. Several
sweeps at once are harmless: a poll's move to closed is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tally.aggregator import Aggregator, new_owner_id
from tally.config import Settings
from tally.domain.errors import StoreUnavailable
from tally.gateway.metrics import Metrics
from tally.service import VotingService, system_clock_ms
from tally.service.deadlines import close_expired
from tally.store.polls import ValkeyPolls
from tally.store.snapshots import ValkeySnapshots
from tally.wiring.store import StoreConnection
from tally.wiring.supervisor import Duty, Restart, Step

log = logging.getLogger("tally")

DEADLINE_SWEEP_S = 1.0
# A crashed loop (a bug, or data it cannot read) runs again this many times a minute at most;
# then the process exits 1, so an orchestrator restarts it and the crash is not looped on quietly.
LOOP_RESTARTS = Restart(limit=3, window_s=60.0)


@dataclass
class AggregatorRole:
    aggregator: Aggregator
    close_expired: Callable[[], Awaitable[list[str]]]

    def duties(self) -> list[Duty]:
        """The aggregator loop and the deadline sweep: each restarted after a crash (a few times)."""
        return [
            Duty("aggregator", self.aggregator.run, LOOP_RESTARTS),
            Duty("deadline sweep", self.sweep_deadlines, LOOP_RESTARTS),
        ]

    def release_step(self, timeout_s: float) -> Step:
        """After its loop ended: hand every lease over at once, rather than after the lease TTL."""
        return Step("aggregator: release its leases", timeout_s, then=self.aggregator.stop)

    async def sweep_deadlines(self) -> None:
        """Formally close polls whose deadline passed (the vote function already refuses their
        votes), once a second."""
        while True:
            await asyncio.sleep(DEADLINE_SWEEP_S)
            try:
                for poll_id in await self.close_expired():
                    log.info("poll %s closed at its deadline", poll_id)
            except StoreUnavailable as exc:
                log.warning("deadline sweep skipped: %s", exc)


def new_aggregator(client: StoreConnection, settings: Settings) -> Aggregator:
    return Aggregator(
        ValkeyPolls(client),
        ValkeySnapshots(client),
        owner=new_owner_id(),
        tick_ms=settings.tick_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )


def build_aggregator(
    client: StoreConnection, settings: Settings, service: VotingService | None = None
) -> AggregatorRole:
    """The role on its own connection (a tick's batch must not queue behind votes). `service` is
    the gateway's when both run in one process; otherwise the sweep moves polls itself."""
    if service is not None:
        return AggregatorRole(new_aggregator(client, settings), service.close_expired)
    polls = ValkeyPolls(client)
    return AggregatorRole(
        new_aggregator(client, settings), lambda: close_expired(polls, system_clock_ms)
    )


def observe_aggregator(metrics: Metrics, aggregator: Aggregator) -> None:
    """What /metrics reads from the aggregator at each scrape."""
    metrics.sample(
        "tally_aggregator_leading_polls",
        "Polls whose lease this process's aggregator holds.",
        "gauge",
        lambda: len(aggregator.leading),
    )
    metrics.sample(
        "tally_aggregator_ticks_total",
        "Aggregator ticks run.",
        "counter",
        lambda: aggregator.stats.ticks,
    )
    metrics.sample(
        "tally_aggregator_snapshots_total",
        "Snapshots this aggregator published.",
        "counter",
        lambda: aggregator.stats.published,
    )
    metrics.sample(
        "tally_aggregator_store_errors_total",
        "Aggregator steps that failed on the store.",
        "counter",
        lambda: aggregator.stats.store_errors,
    )

"""The aggregator role: the aggregator (lane counters into published snapshots, one active per
poll through a lease) and the deadline sweep (formally closing polls whose deadline passed).

The sweep lives in this role so that a split deployment (`tally gateway` + `tally aggregator`)
still closes polls at their deadline; `tally serve` runs it too, with its own aggregator. Several
sweeps at once are harmless: a poll's move to closed is idempotent.

The evidence retention sweep lives here too, beside the deadline sweep that already walks the
polls by their close: it deletes held votes' network evidence TALLY_EVIDENCE_RETENTION_S after
the poll closed (service.evidence). Not the archiver's: it certifies a poll only once nothing is
held, so the evidence that outlives a poll is exactly that of polls it never certifies; and every
deployment runs an aggregator. It needs no evidence key (it deletes, never opens).
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
from tally.service.evidence import EvidenceMaintenance
from tally.store.evidence import ValkeyHeldEvidence
from tally.store.polls import ValkeyPolls
from tally.store.review import ValkeyReviews
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
    evidence: EvidenceMaintenance | None = None
    evidence_retention_ms: int = 30 * 86_400_000

    def duties(self) -> list[Duty]:
        """The aggregator loop and the deadline sweep: each restarted after a crash (a few times)."""
        return [
            Duty("aggregator", self.aggregator.run, LOOP_RESTARTS),
            Duty("deadline sweep", self.sweep_deadlines, LOOP_RESTARTS),
            *(
                [Duty("evidence retention sweep", self.sweep_evidence, LOOP_RESTARTS)]
                if self.evidence is not None
                else []
            ),
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

    async def sweep_evidence(self) -> None:
        """Delete the network evidence of polls closed longer ago than the retention, a few
        times per retention period (at most every 5 minutes, at least 1 s apart)."""
        assert self.evidence is not None
        interval_s = min(300.0, max(1.0, self.evidence_retention_ms / 4000))
        while True:
            await asyncio.sleep(interval_s)
            try:
                purged = await self.evidence.purge(system_clock_ms(), self.evidence_retention_ms)
            except StoreUnavailable as exc:
                log.warning("evidence retention sweep skipped: %s", exc)
                continue
            for poll_id, n in purged.items():
                log.info(
                    "poll %s: network evidence of %d held votes deleted (retention)", poll_id, n
                )


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
    polls = ValkeyPolls(client)
    evidence = EvidenceMaintenance(polls, ValkeyReviews(client), ValkeyHeldEvidence(client))
    retention_ms = settings.evidence_retention_s * 1000
    if service is not None:
        return AggregatorRole(
            new_aggregator(client, settings), service.close_expired, evidence, retention_ms
        )
    return AggregatorRole(
        new_aggregator(client, settings),
        lambda: close_expired(polls, system_clock_ms),
        evidence,
        retention_ms,
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

"""The aggregator role: turns lane counters into versioned snapshots, one active aggregator per poll.

Every tick (TALLY_TICK_MS) it takes or renews the lease of every watched poll; for the polls it
leads it sums the lane counters and publishes a snapshot only when state or counts changed.
Watched: open polls (and those past their deadline), plus closed ones until their final snapshot
(closed, no vote under review) is published. A poll whose aggregator dies without releasing its lease is taken over by another
one when the lease expires (TALLY_LEASE_TTL_MS) and its `seq` continues from the stored snapshot.

Cost per tick: one lease FCALL per watched poll; for each led poll one pipelined read of its lanes
(2 commands per lane) and, on a change, one FCALL. Polls are handled in concurrent batches, so
each batch's commands leave in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import STATE_RANK, Poll, PollState
from tally.domain.results import Results, sum_lanes
from tally.domain.snapshots import Snapshot, next_snapshot
from tally.ports import NotLeader, PollStore, Published, SnapshotStore, Stale
from tally.service import system_clock_ms

log = logging.getLogger("tally.aggregator")

# How often the list of polls is read again (new and newly opened polls show up this late at most;
# a close is noticed at the next tick, through the poll record's `updated_at`).
REFRESH_MS = 1000
# The newest polls considered; older ones are neither watched nor remembered.
MAX_POLLS = 10_000
# Polls handled concurrently in one tick: bounds the commands in flight (~2 per lane each).
BATCH = 256
# A poll past its deadline whose record nobody closed is final this long after the deadline: the
# vote function refuses votes by Valkey's clock, which may lag ours by up to this much.
DEADLINE_GRACE_MS = 5_000


def new_owner_id() -> str:
    """A lease owner id unique to this aggregator instance (host, pid and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class AggregatorStats:
    """Counters since start, for metrics and logs."""

    ticks: int = 0
    published: int = 0
    store_errors: int = 0


@dataclass
class _Watch:
    """What this aggregator knows of one watched poll."""

    poll: Poll
    leading: bool = False
    # The last snapshot this aggregator published or read back from the store.
    previous: Snapshot | None = None
    # Read the stored snapshot and the poll again before the next publish (after gaining the
    # lease, a refusal or an error), since another aggregator may have published meanwhile.
    reload: bool = True
    stored_seq: int = 0
    # The poll record's `updated_at` as of the last tick; a change means its state moved.
    changed_at: int | None = None


class Aggregator:
    """Run one per process (`run()` until cancelled, then `stop()`); any number may run at once."""

    def __init__(
        self,
        polls: PollStore,
        snapshots: SnapshotStore,
        *,
        owner: str,
        tick_ms: int,
        lease_ttl_ms: int,
        clock_ms: Callable[[], int] = system_clock_ms,
        refresh_ms: int = REFRESH_MS,
    ) -> None:
        if lease_ttl_ms < 2 * tick_ms:
            raise ValueError(
                f"TALLY_LEASE_TTL_MS ({lease_ttl_ms}) must be at least twice TALLY_TICK_MS "
                f"({tick_ms}): the lease is renewed once a tick"
            )
        self._polls = polls
        self._snapshots = snapshots
        self._owner = owner
        self._tick_s = tick_ms / 1000
        self._lease_ttl_ms = lease_ttl_ms
        self._clock_ms = clock_ms
        self._refresh_s = refresh_ms / 1000
        self._refreshed_at: float | None = None
        self._watched: dict[str, _Watch] = {}
        self._finished: set[str] = set()  # closed polls whose final snapshot is stored
        self._failing = False
        self._tick_errors: list[str] = []
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self.stats = AggregatorStats()

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def leading(self) -> frozenset[str]:
        """Ids of the polls whose lease this aggregator held at its last tick."""
        return frozenset(poll_id for poll_id, w in self._watched.items() if w.leading)

    async def run(self) -> None:
        """Tick every tick_ms until cancelled or stopped. A late tick is not made up for."""
        loop = asyncio.get_running_loop()
        self._running = True
        try:
            next_at = loop.time()
            while not self._stopping.is_set():
                await self.tick()
                next_at += self._tick_s
                delay = next_at - loop.time()
                if delay < 0:
                    log.debug("aggregator tick overran by %.0f ms", -delay * 1000)
                    next_at, delay = loop.time(), 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        """Let `run()` finish its tick and return, then release every lease held, so another
        aggregator takes over at once rather than after the lease TTL."""
        self._stopping.set()
        if self._running:
            await self._stopped.wait()
        led = [w for w in self._watched.values() if w.leading]
        released = await asyncio.gather(
            *(self._snapshots.release(w.poll.id, self._owner) for w in led),
            return_exceptions=True,
        )
        for watch, outcome in zip(led, released, strict=True):
            watch.leading = False
            if isinstance(outcome, StoreUnavailable):
                log.warning(
                    "lease of poll %s not released (it expires): %s", watch.poll.id, outcome
                )
            elif isinstance(outcome, BaseException):
                raise outcome

    async def tick(self) -> None:
        """One round: re-read the poll list if due, then lease, sum and publish for every watched
        poll. `run()` calls it; call it directly only when nothing runs `run()` (tests)."""
        self.stats.ticks += 1
        self._tick_errors.clear()
        now = asyncio.get_running_loop().time()
        if self._refreshed_at is None or now - self._refreshed_at >= self._refresh_s:
            try:
                await self._refresh()
                self._refreshed_at = now
            except StoreUnavailable as exc:  # keep the list we have; retry next tick
                self._failed("the poll list", exc)
        watches = list(self._watched.values())
        for start in range(0, len(watches), BATCH):
            await asyncio.gather(*(self._step(w) for w in watches[start : start + BATCH]))
        self._log_errors()

    async def _refresh(self) -> None:
        polls = await self._polls.recent(MAX_POLLS)
        watched: dict[str, _Watch] = {}
        for poll in polls:
            if poll.id in self._finished or poll.state is PollState.DRAFT:
                continue
            watch = self._watched.get(poll.id)
            if watch is None:
                watch = _Watch(poll)
            else:
                watch.poll = poll
            watched[poll.id] = watch
        self._finished &= {poll.id for poll in polls}
        self._watched = watched

    async def _step(self, watch: _Watch) -> None:
        poll_id = watch.poll.id
        try:
            watch.leading = await self._snapshots.acquire(poll_id, self._owner, self._lease_ttl_ms)
            if not watch.leading:
                watch.reload = True
                return
            if watch.reload and not await self._reload(watch):
                return
            now = self._clock_ms()
            results = await self._results(watch, now)
            if await self._publish(watch, results) and self._final(watch, now):
                await self._finish(watch)
        except StoreUnavailable as exc:
            # A publish may or may not have landed: read the store again before the next one.
            watch.reload = True
            self._failed(f"poll {poll_id}", exc)

    async def _reload(self, watch: _Watch) -> bool:
        """Catch up with the store: its latest snapshot and the poll. False if the poll is gone."""
        stored, poll = await asyncio.gather(
            self._snapshots.latest(watch.poll.id), self._polls.get(watch.poll.id)
        )
        if poll is None:
            self._watched.pop(watch.poll.id, None)
            return False
        watch.poll = poll
        watch.previous = stored
        if stored is not None:
            watch.stored_seq = max(watch.stored_seq, stored.seq)
        watch.reload = False
        return True

    async def _results(self, watch: _Watch, now: int) -> Results:
        """The poll's results, from lanes read after the state was: so 'closed' counts are final."""
        lanes, changed_at = await self._polls.tallies(watch.poll)
        if watch.changed_at is not None and changed_at != watch.changed_at:
            # The poll record moved (opened or closed) since we read it: read it again, then
            # the lanes once more, since they may have been read before the move.
            poll = await self._polls.get(watch.poll.id)
            if poll is not None:
                watch.poll = poll
                lanes, changed_at = await self._polls.tallies(poll)
        watch.changed_at = changed_at
        state = watch.poll.effective_state(now)
        previous = watch.previous
        if previous is not None and STATE_RANK[previous.state] > STATE_RANK[state]:
            # States only move forward: our view of the poll may lag what was already published.
            state = previous.state
        return sum_lanes(watch.poll, state, lanes, changed_at)

    async def _publish(self, watch: _Watch, results: Results) -> bool:
        """Publish if anything changed; True when the store holds what `watch.previous` says."""
        # ts is when the counts last changed (newest vote or state move), not when we looked:
        # it is what /results reports as `updated_at`, and the same whoever publishes.
        snapshot = next_snapshot(watch.previous, results, results.updated_at_ms, watch.stored_seq)
        if snapshot is None:
            return True
        outcome = await self._snapshots.publish(watch.poll.id, self._owner, snapshot)
        if isinstance(outcome, Published):
            watch.previous = snapshot
            watch.stored_seq = outcome.seq
            self.stats.published += 1
            return True
        if isinstance(outcome, Stale):
            # Another aggregator published past us during a lease gap: continue after its seq.
            log.info(
                "poll %s: stored seq %d is past ours (%d); catching up",
                watch.poll.id, outcome.stored_seq, snapshot.seq,
            )  # fmt: skip
            watch.stored_seq = max(watch.stored_seq, outcome.stored_seq)
        elif isinstance(outcome, NotLeader):
            watch.leading = False
        watch.reload = True
        return False

    def _final(self, watch: _Watch, now: int) -> bool:
        """The published snapshot is closed, from counts no vote can change any more, and no
        vote is under review (a reviewer's decision after the close still changes the counts,
        so such a poll stays watched until every held vote is decided)."""
        previous, poll = watch.previous, watch.poll
        if previous is None or not previous.final or previous.under_review:
            return False
        if poll.state is PollState.CLOSED:
            return True
        return poll.closes_at_ms is not None and now >= poll.closes_at_ms + DEADLINE_GRACE_MS

    async def _finish(self, watch: _Watch) -> None:
        poll_id = watch.poll.id
        self._finished.add(poll_id)
        self._watched.pop(poll_id, None)
        watch.leading = False
        await self._snapshots.release(poll_id, self._owner)

    def _failed(self, what: str, exc: StoreUnavailable) -> None:
        self.stats.store_errors += 1
        self._tick_errors.append(f"{what}: {exc}")

    def _log_errors(self) -> None:
        """One line when ticks start failing and one when they recover, not one per poll."""
        if self._tick_errors and not self._failing:
            log.warning(
                "aggregator tick: %d store error(s), retrying every tick; first: %s",
                len(self._tick_errors), self._tick_errors[0],
            )  # fmt: skip
        elif not self._tick_errors and self._failing:
            log.warning("aggregator tick: store errors cleared")
        self._failing = bool(self._tick_errors)

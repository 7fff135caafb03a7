"""The archiver role: turns each poll's queues into its published, signed ledger.

Every TALLY_CHECKPOINT_INTERVAL_MS, for each poll whose lease it holds (one archiver per poll), it
reads every log's queue (the admin stream and each lane's ledger stream) from where the archive
ends, appends the entries as leaves, makes the tiles durable, signs a checkpoint of each log that
grew, and only then trims the queues up to what the checkpoints cover. When the poll is closed it
drains the queues one last time (no vote can be added to a closed lane) and signs the result
certificate, which binds the announced counts to every log's final checkpoint. A closed poll with
votes still held for review waits: its lanes keep receiving reviewers' decisions, and it is
certified on the first cycle after every held vote is decided (and every decision is in both the
lane's log and the admin log).

The archive on disk is the state: an archiver killed at any point resumes from the newest
checkpoint of each log, and reads again from the queue what it had not published.

Counts come from the ledger (issue 11): the certificate states the archiver's recount of the
leaves (PollLogs.review), never the live counters. Every cycle, the integrity check holds the
counters against it: before draining, it reads each lane's counters with the seq they stand at
(one atomic read per lane), has the recount kept at exactly that seq while the drain passes it,
and compares the two. Votes keep arriving meanwhile, but only what is comparable is compared, so
an honest busy poll never raises an alarm; a forged counter is found within one cycle. A gap in a
log's queue stops that log only. Each finding raises an integrity alarm once per kind and log
(IntegrityStore: the gateways show it on the poll and its results; a metric; an ERROR line), and
a poll certified with alarms gets a v3 certificate recording them and, when they disagree at
close, the counters' totals beside the recount.

Checking each vote's admission signature is most of the recount's CPU: the archiver owns a small
pool of threads (TALLY_ARCHIVER_VERIFY_THREADS, default one per core) that PollLogs checks each
cycle's votes on, side by side (the Ed25519 verification releases the interpreter lock). The
results come back in order, so what is certified and alarmed does not depend on the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from tally.archive.durable import LedgerConflict
from tally.archive.poll_logs import ArchiveError, PollLogs
from tally.archive.witnessing import CheckpointWitnesses
from tally.domain.errors import StoreUnavailable
from tally.domain.integrity import AlarmKind, IntegrityAlarm, LaneCounters
from tally.domain.polls import Poll, PollState
from tally.ledger import layout
from tally.ledger.certificate import Integrity
from tally.ledger.note import Signer
from tally.ports import (
    IntegrityStore,
    LedgerQueue,
    LedgerStore,
    PollStore,
    QueuedAdminAction,
    TurnoutStore,
)

log = logging.getLogger("tally.archiver")
DRAFT = PollState.DRAFT  # the state a poll enters with 'created', its admin log's first entry

MAX_POLLS = 10_000
# Entries read per log and round trip; a backlog is read in as many rounds as it needs.
READ_BATCH = 4096
# How long stop() waits for file work already running in the worker thread.
STOP_WAIT_S = 30.0
T = TypeVar("T")


class PreLedgerPoll(Exception):
    """The poll was created by a Tally without a ledger: it has no admin log to start from."""


@dataclass
class ArchiverStats:
    """Counters since start, for metrics and logs."""

    cycles: int = 0
    leaves: int = 0
    checkpoints: int = 0
    certificates: int = 0
    store_errors: int = 0
    failed_polls: int = 0
    awaiting_review: int = 0  # closed polls not certified yet: held votes undecided (a gauge)
    integrity_checks: int = 0  # lanes whose counters were compared with the recount


class Archiver:
    """Run one per process (`run()` until cancelled, then `stop()`); any number may run at once."""

    def __init__(
        self,
        polls: PollStore,
        queue: LedgerQueue,
        files: LedgerStore,
        signer: Signer,
        integrity: IntegrityStore,
        *,
        owner: str,
        interval_ms: int,
        on_alarm: Callable[[str, IntegrityAlarm], None] | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        witnesses: CheckpointWitnesses | None = None,
        verify_threads: int | None = None,
        turnout: TurnoutStore | None = None,
    ) -> None:
        """`on_alarm(poll id, alarm)` is told of each alarm this archiver raises (metrics).
        `verify_threads`: threads that check admission signatures (None: one per core; 1: the
        worker thread checks them itself). `turnout`: where each poll's ballots per minute, as
        the recount buckets them from the ledger, are saved (None: not kept)."""
        self._polls = polls
        self._turnout = turnout
        self._integrity = integrity
        self.on_alarm = on_alarm
        self._clock_ms = clock_ms
        self._raised: set[tuple[str, str]] = set()  # (poll, alarm slot) stored by this process
        self._queue = queue
        self._files = files
        self._signer = signer
        self.witnesses = witnesses  # TALLY_WITNESSES: who cosigns each checkpoint (or None)
        self._owner = owner
        self._interval_s = interval_ms / 1000
        # Long enough that a slow cycle (a backlog, a slow disk) keeps it; a successor waits this
        # long after a crash, which delays checkpoints but never loses an entry.
        self._lease_ttl_ms = max(15_000, 3 * interval_ms)
        self._open: dict[str, PollLogs] = {}
        self._done: set[str] = set()  # certified, or broken until restart
        self._waiting: set[str] = set()  # closed, waiting for reviewers (logged once)
        self._stopping = asyncio.Event()
        # The file work in a worker thread goes on if the task awaiting it is cancelled: stop()
        # waits for it, so no write lands after the lease is handed over.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archiver")
        self._busy: Future[Any] | None = None
        threads = verify_threads if verify_threads is not None else _cores()
        self.verify_threads = threads
        self._verify = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="archiver-verify")
            if threads > 1
            else None
        )
        self.stats = ArchiverStats()

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def leading(self) -> frozenset[str]:
        return frozenset(self._open)

    async def run(self) -> None:
        """Archive every interval until stopped; a late cycle is not made up for."""
        await self._in_thread(self._publish_key)
        while not self._stopping.is_set():
            await self.cycle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    async def stop(self) -> None:
        self._stopping.set()
        if self._busy is not None and not self._busy.done():
            await asyncio.wait([asyncio.wrap_future(self._busy)], timeout=STOP_WAIT_S)
        self._worker.shutdown(wait=False)
        if self._verify is not None:
            self._verify.shutdown(wait=False)
        for poll_id in list(self._open):
            with contextlib.suppress(StoreUnavailable):
                await self._queue.release(poll_id, self._owner)
        self._open.clear()

    async def cycle(self) -> None:
        """One round over every poll not yet certified."""
        self.stats.cycles += 1
        try:
            polls = await self._polls.recent(MAX_POLLS)
        except StoreUnavailable as exc:
            self.stats.store_errors += 1
            log.warning("archiver: cannot list polls: %s", exc)
            return
        for poll in polls:
            if poll.id in self._done or self._stopping.is_set():
                continue
            try:
                await self._archive(poll)
            except StoreUnavailable as exc:
                self.stats.store_errors += 1
                self._open.pop(poll.id, None)  # re-read our state from disk next time
                log.warning("archiver: poll %s skipped this round: %s", poll.id, exc)
            except PreLedgerPoll:
                self._done.add(poll.id)
                self._open.pop(poll.id, None)
                await self._queue.release(poll.id, self._owner)
                log.warning("archiver: poll %s predates the ledger; it has none", poll.id)
            except (ArchiveError, LedgerConflict, ValueError, OSError) as exc:
                self._fail(poll.id, str(exc))
            except Exception:  # a bug: stop this poll, loudly, but keep archiving the others
                log.exception("archiver: unexpected error on poll %s", poll.id)
                self._fail(poll.id, "unexpected error (see the traceback above)")

    def _fail(self, poll_id: str, reason: str) -> None:
        self.stats.failed_polls += 1
        self._waiting.discard(poll_id)
        self.stats.awaiting_review = len(self._waiting)
        self._done.add(poll_id)
        self._open.pop(poll_id, None)
        log.error("archiver: STOPPED archiving poll %s: %s", poll_id, reason)

    async def _archive(self, poll: Poll) -> None:
        if not await self._queue.acquire(poll.id, self._owner, self._lease_ttl_ms):
            self._open.pop(poll.id, None)  # another archiver writes it: our view goes stale
            return
        logs = self._open.get(poll.id)
        if logs is None:
            if await self._in_thread(self._files.read, poll.id, layout.CERTIFICATE):
                self._done.add(poll.id)
                await self._queue.release(poll.id, self._owner)
                return
            poll_files = self._files.poll_files(poll.id)
            logs = await self._in_thread(PollLogs, poll_files, poll, self._signer, self._verify)
            for each in logs.logs:  # each checkpoint is cosigned before it is published
                logs.writer(each).witnesses = self.witnesses
            if logs.admin.appended == 0:
                await self._check_admin_queue(poll)
            self._open[poll.id] = logs
        # Read the state before draining: once closed, every lane is closed, so what we drain
        # next is all the poll will ever hold. The counters likewise: the drain then reaches the
        # seq each was read at.
        final = poll.state is PollState.CLOSED
        counters = await self._integrity.lane_counters(poll)
        await self._in_thread(logs.mark, [c.seq for c in counters])
        await self._drain(logs)
        self.stats.checkpoints += await self._in_thread(logs.publish)
        await self._queue.trim(poll.id, logs.logs, logs.published_seqs())
        await self._check_integrity(logs, counters)
        if self._turnout is not None:
            changed = await self._in_thread(logs.take_turnout)
            if changed:
                await self._turnout.save(poll.id, changed)
        if final:
            await self._certify(poll, logs)

    async def _check_admin_queue(self, poll: Poll) -> None:
        """A poll's admin queue starts with 'created' (written with the poll record itself) until
        the archiver trims it; a poll made before the ledger existed has no such entry."""
        [admin] = await self._queue.read(poll.id, [None], [1], 1)
        first = admin[0] if admin else None
        if not (isinstance(first, QueuedAdminAction) and first.seq == 1 and first.state is DRAFT):
            raise PreLedgerPoll(poll.id)

    async def _drain(self, logs: PollLogs) -> None:
        while True:
            reading = logs.reading()  # a log stopped at a gap is read no further
            batches = await self._queue.read(logs.poll.id, reading, logs.next_seqs(), READ_BATCH)
            self.stats.leaves += await self._in_thread(logs.append, batches)
            if all(
                len(batch) < READ_BATCH or log in logs.gaps
                for log, batch in zip(reading, batches, strict=True)
            ):
                return

    async def _check_integrity(self, logs: PollLogs, counters: list[LaneCounters]) -> None:
        """Raise an alarm for each gap, refused vote, and lane whose counters differ from the
        recount at the seq they were read at (a lane stopped at a gap cannot be compared)."""
        poll = logs.poll
        for log, gap in logs.gaps.items():
            name = "admin log" if log is None else f"lane {log}"
            await self._alarm(
                poll.id,
                AlarmKind.LEDGER_GAP,
                log,
                f"{name}: the queue holds entry {gap.found} after entry {gap.expected - 1} "
                f"(entries {gap.expected}..{gap.found - 1} are missing); archived up to "
                f"{gap.expected - 1}, the log stops there",
            )
        refused = await self._in_thread(logs.take_refused)
        for lane in sorted({r.lane for r in refused}):
            first = next(r for r in refused if r.lane == lane)
            count = sum(r.lane == lane for r in refused)
            await self._alarm(
                poll.id,
                AlarmKind.UNSIGNED_VOTE,
                lane,
                f"lane {lane} entry {first.seq}: admission check failed ({first.reason}); "
                f"{count} vote(s) of the lane not counted",
            )
        options = [o.id for o in poll.options]
        for lane, live in enumerate(counters):
            if lane in logs.gaps:
                continue
            kept = logs.marked.get(lane)
            appended = logs.lanes[lane].appended
            if kept is None:  # the queue ended before the seq the counters stand at
                await self._alarm(
                    poll.id,
                    AlarmKind.LEDGER_GAP,
                    lane,
                    f"lane {lane}: the counters include entries up to {live.seq}, the queue "
                    f"ends at {appended} (entries {appended + 1}..{live.seq} are missing)",
                )
                continue
            self.stats.integrity_checks += 1
            ledger = [kept.counts.get(o, 0) for o in options]
            shown = [live.counts.get(o, 0) for o in options]
            if kept.seq != live.seq or ledger != shown or kept.held != live.held:
                await self._alarm(
                    poll.id,
                    AlarmKind.COUNTER_MISMATCH,
                    lane,
                    f"lane {lane} at entry {live.seq}: counters {_pairs(options, shown)} "
                    f"held {live.held}; the ledger at entry {kept.seq} counts "
                    f"{_pairs(options, ledger)} held {kept.held}",
                )

    async def _alarm(self, poll_id: str, kind: AlarmKind, lane: int | None, details: str) -> None:
        """Store the alarm (first seen kept), log it and count it, once per process."""
        alarm = IntegrityAlarm(kind, lane, details, self._clock_ms())
        if (poll_id, alarm.slot) in self._raised:
            return
        await self._integrity.raise_alarm(poll_id, alarm)
        self._raised.add((poll_id, alarm.slot))
        log.error("archiver: INTEGRITY ALARM on poll %s: %s: %s", poll_id, kind.value, details)
        if self.on_alarm is not None:
            self.on_alarm(poll_id, alarm)

    async def _certify(self, poll: Poll, logs: PollLogs) -> None:
        # Nothing held is undecided, so no count can change any more: the recount is final.
        waiting = await self._in_thread(lambda: logs.review().waiting_for(logs.stopped_lanes))
        if waiting is not None:
            if poll.id not in self._waiting:
                log.info("poll %s is closed but not certified yet: %s", poll.id, waiting)
            self._waiting.add(poll.id)
            self.stats.awaiting_review = len(self._waiting)
            return
        self._waiting.discard(poll.id)
        self.stats.awaiting_review = len(self._waiting)
        integrity = await self._final_integrity(poll, logs)
        if not await self._queue.acquire(poll.id, self._owner, self._lease_ttl_ms):
            return
        await self._in_thread(logs.certify, integrity)
        self.stats.certificates += 1
        self._done.add(poll.id)
        self._open.pop(poll.id, None)
        await self._queue.release(poll.id, self._owner)
        total = sum(n for _, n in logs.review().counts([o.id for o in poll.options]))
        log.info("poll %s: result certificate signed (%d votes)", poll.id, total)

    async def _final_integrity(self, poll: Poll, logs: PollLogs) -> Integrity | None:
        """The certificate's integrity section: every alarm the poll raised (by any archiver),
        and the counters' totals when they disagree with the recount. A closed poll's counters
        with no held vote undecided are final, so each lane's are compared with all its log
        holds (a lane stopped at a gap disagrees here if votes came after the gap)."""
        options = [o.id for o in poll.options]
        live = await self._integrity.lane_counters(poll)
        review = logs.review()
        for lane, counters in enumerate(live):
            kept = await self._in_thread(review.lane_count, lane, logs.lanes[lane].appended)
            ledger = [kept.counts.get(o, 0) for o in options]
            shown = [counters.counts.get(o, 0) for o in options]
            if ledger != shown:
                await self._alarm(
                    poll.id,
                    AlarmKind.COUNTER_MISMATCH,
                    lane,
                    f"lane {lane} at close: counters {_pairs(options, shown)}; the ledger "
                    f"({kept.seq} entries) counts {_pairs(options, ledger)}",
                )
        recount = await self._in_thread(review.counts, options)
        totals = [(o, sum(c.counts.get(o, 0) for c in live)) for o in options]
        alarms = await self._integrity.alarms(poll.id)
        if not alarms:
            return None
        return Integrity(
            tuple((a.kind.value, a.log) for a in alarms),
            tuple(totals) if totals != recount else (),
        )

    def _in_thread(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run blocking file and CPU work in the archiver's worker thread, remembered for stop()
        (cancelling the awaiting task does not stop work already running there)."""
        work = self._worker.submit(function, *args)
        self._busy = work
        return asyncio.wrap_future(work)

    def _publish_key(self) -> None:
        """Serve the verifier key at /ledger/keys (auditors should get it out of band too)."""
        self._files.publish_key(str(self._signer.verifier))


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pairs(options: list[str], counts: list[int]) -> str:
    return ", ".join(f"{option}={n}" for option, n in zip(options, counts, strict=True))

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from tally.archive.durable import LedgerConflict
from tally.archive.poll_logs import ArchiveError, PollLogs
from tally.domain.errors import StoreUnavailable
from tally.domain.polls import Poll, PollState
from tally.domain.results import sum_lanes
from tally.ledger import layout
from tally.ledger.note import Signer
from tally.ports import LedgerQueue, LedgerStore, PollStore, QueuedAdminAction

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


class Archiver:
    """Run one per process (`run()` until cancelled, then `stop()`); any number may run at once."""

    def __init__(
        self,
        polls: PollStore,
        queue: LedgerQueue,
        files: LedgerStore,
        signer: Signer,
        *,
        owner: str,
        interval_ms: int,
    ) -> None:
        self._polls = polls
        self._queue = queue
        self._files = files
        self._signer = signer
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
            logs = await self._in_thread(PollLogs, poll_files, poll, self._signer)
            if logs.admin.appended == 0:
                await self._check_admin_queue(poll)
            self._open[poll.id] = logs
        # Read the state before draining: once closed, every lane is closed, so what we drain
        # next is all the poll will ever hold.
        final = poll.state is PollState.CLOSED
        await self._drain(logs)
        self.stats.checkpoints += await self._in_thread(logs.publish)
        await self._queue.trim(poll.id, logs.logs, logs.published_seqs())
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
            batches = await self._queue.read(logs.poll.id, logs.logs, logs.next_seqs(), READ_BATCH)
            self.stats.leaves += await self._in_thread(logs.append, batches)
            if all(len(batch) < READ_BATCH for batch in batches):
                return

    async def _certify(self, poll: Poll, logs: PollLogs) -> None:
        # Nothing held is undecided, so no count can change any more: the store's counts are final.
        waiting = await self._in_thread(lambda: logs.review().waiting_for())
        if waiting is not None:
            if poll.id not in self._waiting:
                log.info("poll %s is closed but not certified yet: %s", poll.id, waiting)
            self._waiting.add(poll.id)
            self.stats.awaiting_review = len(self._waiting)
            return
        self._waiting.discard(poll.id)
        self.stats.awaiting_review = len(self._waiting)
        lanes, changed_at = await self._polls.tallies(poll)
        results = sum_lanes(poll, PollState.CLOSED, lanes, changed_at)
        counts = [(o.id, results.counts.get(o.id, 0)) for o in poll.options]
        if not await self._queue.acquire(poll.id, self._owner, self._lease_ttl_ms):
            return
        await self._in_thread(logs.certify, counts)
        self.stats.certificates += 1
        self._done.add(poll.id)
        self._open.pop(poll.id, None)
        await self._queue.release(poll.id, self._owner)
        log.info("poll %s: result certificate signed (%d votes)", poll.id, results.total)

    def _in_thread(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run blocking file and CPU work in the archiver's worker thread, remembered for stop()
        (cancelling the awaiting task does not stop work already running there)."""
        work = self._worker.submit(function, *args)
        self._busy = work
        return asyncio.wrap_future(work)

    def _publish_key(self) -> None:
        """Serve the verifier key at /ledger/keys (auditors should get it out of band too)."""
        self._files.publish_key(str(self._signer.verifier))

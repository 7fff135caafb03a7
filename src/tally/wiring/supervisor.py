"""The supervisor: every long-running task of a Tally process has an owner, a crash policy and a
place in the shutdown order.

`Supervisor.run()` starts each `Duty` in one `asyncio.TaskGroup` and waits for SIGINT/SIGTERM or
for a duty to fail. Then it shuts down in numbered `Step`s, each with its own timeout, logging
the step it is at, the way uvicorn's `Server.shutdown` does; a step that fails or times out is
logged, the next one runs anyway (stopping Valkey must not depend on a lease release), and the
exit status becomes 1: the shutdown was not clean. A second signal calls the `force` hooks
(uvicorn stops waiting for requests in flight).

A duty that raises (a CancelledError included, unless the shutdown caused it), or returns while
nothing asked it to, has crashed. Its traceback is logged, and then its policy decides:

- no `Restart` (the HTTP servers, the embedded Valkey's supervisor): the process shuts down in
  order and `run()` returns exit status 1;
- `Restart(limit, window_s, ...)` (the aggregator, the archiver, the deadline sweep): it runs
  again after a backoff, and the restart is logged; its `limit + 1`-th crash within `window_s`
  shuts the process down with exit status 1 instead.

A crash is never silent and never swallowed: there is no `gather(return_exceptions=True)` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger("tally.supervisor")

EXIT_OK = 0
EXIT_CRASHED = 1


@dataclass(frozen=True, slots=True)
class Restart:
    """Run a crashed duty again after `backoff_s` (doubling up to `max_backoff_s`); more than
    `limit` crashes within `window_s` seconds stop the process instead."""

    limit: int = 3
    window_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Duty:
    """A task the process runs until shutdown. `run` is called again on each restart."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    restart: Restart | None = None  # None: a crash stops the process (exit status 1)


@dataclass(frozen=True, slots=True)
class Step:
    """One numbered shutdown step, given `timeout_s` at most.

    The duties named in `ends` end here: `ask()` asks them to return (without it they are
    cancelled at once), and whatever still runs at the timeout is cancelled. `then()` runs after
    they ended: release what the role holds, close connections, stop a server."""

    what: str
    timeout_s: float
    ends: tuple[str, ...] = ()
    ask: Callable[[], None] | None = None
    then: Callable[[], Awaitable[object]] | None = None


class Supervisor:
    """Owns a process's duties from start to exit status (module docstring)."""

    def __init__(
        self,
        duties: Sequence[Duty],
        shutdown: Sequence[Step],
        *,
        force: Sequence[Callable[[], None]] = (),
        report: TextIO | None = None,
    ) -> None:
        """`report`: where to print, once shut down, what was stopped (a person's terminal; the
        log may be off or elsewhere). None for a process whose parent reports for it."""
        names = [duty.name for duty in duties]
        if len(set(names)) != len(names):
            raise ValueError(f"duty names must be unique: {names}")
        unknown = {name for step in shutdown for name in step.ends} - set(names)
        if unknown:
            raise ValueError(f"shutdown steps end unknown duties: {sorted(unknown)}")
        self._duties = tuple(duties)
        self._steps = tuple(shutdown)
        self._force = tuple(force)
        self._report = report
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._signals = 0
        self.exit_status = EXIT_OK
        self.restarts: dict[str, int] = {duty.name: 0 for duty in duties}

    def request_stop(self) -> None:
        """Begin the shutdown (what SIGINT and SIGTERM do)."""
        self._stop.set()

    async def run(self) -> int:
        """Run every duty until a signal or a fatal crash, then shut down; the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            async with asyncio.TaskGroup() as group:
                for duty in self._duties:
                    self._tasks[duty.name] = group.create_task(self._keep(duty), name=duty.name)
                await self._stop.wait()
                await self._shut_down()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return self.exit_status

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: shutting down (again to stop waiting for requests in flight)", sig.name)
            self.request_stop()
            return
        log.warning("%s again: no longer waiting for requests in flight", sig.name)
        for force in self._force:
            force()

    async def _keep(self, duty: Duty) -> None:
        """Run `duty` under its policy; return when it ends for the shutdown or fatally."""
        crashes: deque[float] = deque()
        backoff = duty.restart.backoff_s if duty.restart is not None else 0.0
        while await self._crashed(duty):
            policy = duty.restart
            if policy is None:
                self._fatal(f"{duty.name} is not restarted")
                return
            now = time.monotonic()
            crashes.append(now)
            while crashes[0] < now - policy.window_s:
                crashes.popleft()
            if len(crashes) > policy.limit:
                self._fatal(
                    f"{duty.name} crashed {len(crashes)} times within {policy.window_s:g} s"
                )
                return
            log.warning(
                "restarting %s in %.1f s (crash %d of %d allowed within %g s)",
                duty.name, backoff, len(crashes), policy.limit, policy.window_s,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):  # a shutdown cuts the backoff short
                await asyncio.wait_for(self._stop.wait(), backoff)
            if self._stop.is_set():
                return
            backoff = min(backoff * 2, policy.max_backoff_s)
            self.restarts[duty.name] += 1
            log.warning("%s restarted", duty.name)

    async def _crashed(self, duty: Duty) -> bool:
        """Run `duty` once: False when it ended because the process stops, True (logged, with
        its traceback) when it crashed: raised, or returned while nobody asked it to."""
        try:
            await duty.run()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the shutdown (or the TaskGroup) ends it
            log.error("%s was cancelled from within", duty.name)
        except Exception as exc:
            if self._stop.is_set():  # it ends anyway, but not cleanly
                log.error("%s failed while stopping", duty.name, exc_info=exc)
                self.exit_status = EXIT_CRASHED
                return False
            log.error("%s crashed", duty.name, exc_info=exc)
        except SystemExit as exc:  # uvicorn exits this way when it cannot listen
            if self._stop.is_set():
                return False
            log.error("%s exited (status %s)", duty.name, exc.code)
        else:
            if self._stop.is_set():
                return False
            log.error("%s returned while the process was running", duty.name)
        return not self._stop.is_set()

    def _fatal(self, why: str) -> None:
        log.critical("%s: stopping the process (exit status %d)", why, EXIT_CRASHED)
        self.exit_status = EXIT_CRASHED
        self.request_stop()

    async def _shut_down(self) -> None:
        """The steps in order; then any duty no step ended is cancelled (it should not be)."""
        began = time.monotonic()
        stopped: list[str] = []
        for number, step in enumerate(self._steps, start=1):
            log.info("shutdown %d/%d: %s", number, len(self._steps), step.what)
            step_began, outcome = time.monotonic(), "done"
            try:
                async with asyncio.timeout(step.timeout_s):
                    await self._end(step)
                    if step.then is not None:
                        await step.then()
            except TimeoutError:
                log.error(
                    "shutdown %d (%s) took over %g s; going on", number, step.what, step.timeout_s
                )
                self.exit_status, outcome = EXIT_CRASHED, "TIMED OUT"
            except Exception as exc:
                log.error("shutdown %d (%s) failed; going on", number, step.what, exc_info=exc)
                self.exit_status, outcome = EXIT_CRASHED, "FAILED"
            ended = f" ({', '.join(step.ends)})" if step.ends else ""
            took = time.monotonic() - step_began
            stopped.append(f"  {number}. {outcome:<9} {step.what}{ended}: {took:.2f} s\n")
            for name in step.ends:  # what outlived its step is cancelled, never left behind
                self._tasks[name].cancel()
        leftover = [name for name, task in self._tasks.items() if not task.done()]
        if leftover:
            log.warning("no shutdown step ended %s; cancelling", ", ".join(leftover))
            for name in leftover:
                self._tasks[name].cancel()
        if self._report is not None:
            verdict = "stopped" if self.exit_status == EXIT_OK else "stopped, not cleanly"
            took = time.monotonic() - began
            self._report.write(f"tally: {verdict} in {took:.1f} s:\n{''.join(stopped)}")
            self._report.flush()

    async def _end(self, step: Step) -> None:
        tasks = [self._tasks[name] for name in step.ends]
        if step.ask is not None:
            step.ask()
        else:
            for task in tasks:
                task.cancel()
        if tasks:  # wait() neither raises their cancellation nor hides a cancellation of ours
            await asyncio.wait(tasks)

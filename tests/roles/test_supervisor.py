"""The supervisor with real asyncio tasks: a crashed duty is restarted (and says so) or stops the
process with exit status 1, never silently; the shutdown runs its steps in order, each within
its timeout, whatever happened before."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tally.wiring.supervisor import Duty, Restart, Step, Supervisor

QUICK = Restart(limit=2, window_s=60.0, backoff_s=0.01, max_backoff_s=0.02)


class Boom(RuntimeError):
    """The bug a duty hits."""


async def forever() -> None:
    await asyncio.Event().wait()


def crash_times(times: int, ran: list[int]) -> Duty:
    """A duty that crashes on its first `times` runs, then runs until cancelled."""

    async def run() -> None:
        ran.append(len(ran) + 1)
        if len(ran) <= times:
            raise Boom(f"run {len(ran)} failed")
        await forever()

    return Duty("loop", run, QUICK)


async def run_until(supervisor: Supervisor, condition: asyncio.Event) -> int:
    """Run the supervisor, asking it to stop once `condition` is set (as SIGTERM would)."""
    running = asyncio.create_task(supervisor.run())
    waiting = asyncio.create_task(condition.wait())
    await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
    supervisor.request_stop()
    waiting.cancel()
    async with asyncio.timeout(5):
        return await running


async def test_a_crashed_duty_is_restarted_and_the_restart_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A duty that crashes twice (its limit) runs a third time; each crash is logged with its
    traceback, each restart is logged, and the process exits 0 when asked to stop."""
    ran: list[int] = []
    third_run = asyncio.Event()
    duty = crash_times(2, ran)

    async def watched() -> None:
        if len(ran) == 2:
            third_run.set()
        await duty.run()

    supervisor = Supervisor([Duty("loop", watched, QUICK)], [Step("stop", 1, ends=("loop",))])
    with caplog.at_level(logging.INFO, "tally.supervisor"):
        status = await run_until(supervisor, third_run)
    assert (status, ran, supervisor.restarts["loop"]) == (0, [1, 2, 3], 2)
    crashes = [r for r in caplog.records if r.getMessage() == "loop crashed"]
    assert [str(r.exc_info[1]) for r in crashes if r.exc_info] == ["run 1 failed", "run 2 failed"]
    assert [r.getMessage() for r in caplog.records].count("loop restarted") == 2


async def test_a_duty_crashing_past_its_limit_stops_the_process_with_status_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The third crash within the window (limit 2) is fatal: the shutdown runs, exit status 1."""
    ran: list[int] = []
    steps: list[str] = []

    async def note(what: str) -> None:
        steps.append(what)

    supervisor = Supervisor(
        [crash_times(10, ran), Duty("server", forever)],
        [
            Step("server", 1, ends=("server",), then=lambda: note("server")),
            Step("loop", 1, ends=("loop",), then=lambda: note("loop")),
        ],
    )
    async with asyncio.timeout(5):
        status = await supervisor.run()
    assert (status, ran, steps) == (1, [1, 2, 3], ["server", "loop"])
    assert "loop crashed 3 times within 60 s: stopping the process (exit status 1)" in [
        r.getMessage() for r in caplog.records
    ]


async def test_a_crash_of_a_duty_without_restart_stops_the_process_at_once() -> None:
    """No restart policy (an HTTP server, the Valkey supervisor): the first crash is fatal, and
    the other duties are ended by their shutdown steps."""
    other_ended = asyncio.Event()

    async def server() -> None:
        await asyncio.sleep(0.01)
        raise Boom("cannot serve")

    async def other() -> None:
        try:
            await forever()
        finally:
            other_ended.set()

    supervisor = Supervisor(
        [Duty("server", server), Duty("other", other, QUICK)],
        [Step("stop the others", 1, ends=("other",))],
    )
    async with asyncio.timeout(5):
        assert await supervisor.run() == 1
    assert other_ended.is_set()


async def test_a_duty_that_returns_on_its_own_has_crashed(caplog: pytest.LogCaptureFixture) -> None:
    """A loop that stops without being asked is not a quiet success: it is logged, restarted."""
    returned_twice = asyncio.Event()
    runs: list[int] = []

    async def quits() -> None:
        runs.append(1)
        if len(runs) == 2:
            returned_twice.set()
            await forever()

    supervisor = Supervisor([Duty("loop", quits, QUICK)], [Step("stop", 1, ends=("loop",))])
    assert await run_until(supervisor, returned_twice) == 0
    assert "loop returned while the process was running" in [r.getMessage() for r in caplog.records]


async def test_a_step_past_its_timeout_is_cut_and_the_next_step_still_runs() -> None:
    """A stuck step does not hold the shutdown: the next one runs, and the exit status is 1."""
    steps: list[str] = []
    stopped = asyncio.Event()
    stopped.set()

    async def stuck() -> None:
        steps.append("stuck")
        await forever()

    async def last() -> None:
        steps.append("last")

    supervisor = Supervisor(
        [Duty("loop", forever, QUICK)],
        [
            Step("stuck", 0.05, then=stuck),
            Step("loop", 1, ends=("loop",), then=last),
        ],
    )
    assert await run_until(supervisor, stopped) == 1
    assert steps == ["stuck", "last"]


async def test_asked_duties_get_to_finish_before_they_are_cancelled() -> None:
    """A step with `ask` lets its duties return by themselves (uvicorn finishing requests)."""
    exit_requested = asyncio.Event()
    finished: list[str] = []

    async def server() -> None:
        await exit_requested.wait()
        await asyncio.sleep(0.02)  # requests in flight
        finished.append("server")

    supervisor = Supervisor(
        [Duty("server", server)],
        [Step("stop the server", 1, ends=("server",), ask=exit_requested.set)],
    )
    started = asyncio.Event()
    started.set()
    assert await run_until(supervisor, started) == 0
    assert finished == ["server"]


def test_steps_must_name_known_duties() -> None:
    """A typo in the shutdown order fails at construction, not at the shutdown."""
    with pytest.raises(ValueError, match="unknown duties"):
        Supervisor([Duty("loop", forever)], [Step("stop", 1, ends=("lop",))])


async def test_a_duty_cancelled_by_something_else_has_crashed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CancelledError the shutdown did not cause (a future cancelled under the duty) is not
    mistaken for the end of the process: it is logged and the duty restarted."""
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    first_run, second_run = asyncio.Event(), asyncio.Event()

    async def waits_on_a_future() -> None:
        (second_run if waits else first_run).set()
        waits.append(loop.create_future())
        await waits[-1]

    supervisor = Supervisor(
        [Duty("loop", waits_on_a_future, QUICK)], [Step("stop", 1, ends=("loop",))]
    )
    running = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(5):
        await first_run.wait()
        waits[0].cancel()
        await second_run.wait()
    supervisor.request_stop()
    assert await running == 0
    assert "loop was cancelled from within" in [r.getMessage() for r in caplog.records]

"""Watchers spread over child processes, for fan-outs larger than one client process should hold
(a process has at most RLIMIT_NOFILE sockets, and one event loop reads them one after another).

Each child runs `python -m tally.bench.watcher_pool HOST PORT PATH`: a `WatcherFleet` on uvloop
that obeys one JSON command per stdin line and answers each with one JSON line on stdout:

    {"cmd": "connect", "n": N}        -> {"connected": n, "failures": {...this call's}}
    {"cmd": "wait_total", "total": T, "timeout_s": S}   -> {"missing": m}
    {"cmd": "report"}   -> {"arrivals": [[[seq, total, read_at, received_at], ...], ...],
                            "ts_ms": {"<seq>": ms}, "lost": {...}, "cpu_s": s}
    {"cmd": "close"}                                    -> {"closed": true}, then it exits

On loopback each child connects from its own address (127.0.0.2, 127.0.0.3, ...), so each has
the whole range of ephemeral ports to itself.

Times are `time.perf_counter()` values, comparable across the children (watchers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop

from tally.bench.visibility import Arrival
from tally.bench.watchers import WatcherFleet, raise_open_files

# A child's sockets beyond its watchers: stdio, the event loop's own descriptors.
_CHILD_SPARE_FILES = 64
_REPLY_LIMIT = 1 << 30  # a report of 20k watchers x 25 snapshots is tens of MB


@dataclass
class PoolReport:
    """Everything the children saw, merged."""

    arrivals: list[list[Arrival]] = field(default_factory=list)
    ts_ms: dict[int, int] = field(default_factory=dict)
    lost: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0  # the children's CPU time (user + system), summed


class WatcherPool:
    """`processes` children, each holding an equal share of the watchers (`start` as a context
    manager; every child is told to close, and killed if it does not exit)."""

    def __init__(self, processes: Sequence[asyncio.subprocess.Process]) -> None:
        self._children = list(processes)
        self.failures: Counter[str] = Counter()

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, host: str, port: int, path: str, *, processes: int, cpus: set[int] | None = None
    ) -> AsyncIterator[WatcherPool]:
        """Start the children (on `cpus` if given, else where this process may run)."""
        children: list[asyncio.subprocess.Process] = []
        try:
            for i in range(processes):
                source = f"127.0.0.{2 + i % 250}" if host.startswith("127.") else ""
                child = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tally.bench.watcher_pool", host, str(port), path, source,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    limit=_REPLY_LIMIT,
                )  # fmt: skip
                if cpus is not None:
                    os.sched_setaffinity(child.pid, cpus)
                children.append(child)
            pool = cls(children)
            yield pool
            await pool._each({"cmd": "close"})
        finally:
            for child in children:
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                await child.wait()

    async def connect(self, n: int) -> int:
        """Open `n` watchers, split evenly over the children; returns how many upgraded."""
        k = len(self._children)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        replies = await asyncio.gather(
            *(
                _ask(c, {"cmd": "connect", "n": s})
                for c, s in zip(self._children, shares, strict=True)
            )
        )
        for reply in replies:
            self.failures.update(reply["failures"])
        return sum(int(r["connected"]) for r in replies)

    async def wait_total(self, total: int, timeout_s: float) -> int:
        """As `WatcherFleet.wait_total`, over every child; returns the watchers still behind."""
        replies = await self._each({"cmd": "wait_total", "total": total, "timeout_s": timeout_s})
        return sum(int(r["missing"]) for r in replies)

    async def report(self) -> PoolReport:
        merged = PoolReport()
        for reply in await self._each({"cmd": "report"}):
            merged.arrivals.extend([Arrival(*a) for a in w] for w in reply["arrivals"])
            merged.ts_ms.update({int(seq): ms for seq, ms in reply["ts_ms"].items()})
            merged.lost.update(reply["lost"])
            merged.cpu_s += reply["cpu_s"]
        return merged

    async def _each(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(_ask(c, command) for c in self._children)))


async def _ask(child: asyncio.subprocess.Process, command: dict[str, Any]) -> dict[str, Any]:
    assert child.stdin is not None  # both pipes were asked for in `start`
    assert child.stdout is not None
    child.stdin.write(orjson.dumps(command) + b"\n")
    await child.stdin.drain()
    line = await child.stdout.readline()
    if not line:
        raise RuntimeError(f"watcher process {child.pid} exited (code {child.returncode})")
    reply: dict[str, Any] = orjson.loads(line)
    return reply


async def _serve(host: str, port: int, path: str, source: str | None) -> None:
    """The child: run commands from stdin until `close` or the end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_REPLY_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = WatcherFleet(host, port, path, source=source)
    out = sys.stdout.buffer
    try:
        while line := await reader.readline():
            command = orjson.loads(line)
            reply = await _run(fleet, command)
            out.write(orjson.dumps(reply) + b"\n")
            out.flush()
            if command["cmd"] == "close":
                return
    finally:
        fleet.close()


async def _run(fleet: WatcherFleet, command: dict[str, Any]) -> dict[str, Any]:
    cmd = command["cmd"]
    if cmd == "connect":
        raise_open_files(len(fleet.watchers) + int(command["n"]) + _CHILD_SPARE_FILES)
        before = Counter(fleet.failures)
        connected = await fleet.connect(int(command["n"]))
        return {"connected": connected, "failures": dict(fleet.failures - before)}
    if cmd == "wait_total":
        return {"missing": await fleet.wait_total(command["total"], command["timeout_s"])}
    if cmd == "report":
        times = os.times()
        return {
            "arrivals": [[tuple(a) for a in w] for w in fleet.arrivals()],  # orjson: plain tuples
            "ts_ms": {str(seq): ms for seq, ms in fleet.ts_ms.items()},
            "lost": dict(fleet.lost_by),
            "cpu_s": times.user + times.system,
        }
    if cmd == "close":
        fleet.close()
        return {"closed": True}
    raise ValueError(f"unknown command {cmd!r}")


if __name__ == "__main__":
    _host, _port, _path, _source = sys.argv[1:5]
    uvloop.run(_serve(_host, int(_port), _path, _source or None))

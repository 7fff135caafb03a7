"""What the one-run A/B benches share (`--signing both`, `--sessions`, benchmarks/sessions_ab.py):
the bench poll, the hello-world baseline beside the servers, the order of the blocks, and one
timed block with the server CPU it took.

Rounds interleave the two sides, each in turn first, after the baseline, so load that comes and
goes on a shared machine weighs on both sides alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvloop

from tally.bench.defences_run import DEFENCES_OFF, server_cpu_s
from tally.bench.loadgen import LoadResult, run_requests
from tally.bench.processes import free_port, running
from tally.client import TallyClient

HOST = "127.0.0.1"


def open_bench_poll(admin: TallyClient, title: str, lanes: int) -> dict[str, Any]:
    """An open four-option poll with the defences off: every voter votes from this one address
    without a challenge, which the default defences refuse, so the vote path itself is measured
    (`tally bench --defences` prices the defences)."""
    body = {"title": title, "options": ["Red", "Green", "Blue", "Yellow"], "lanes": lanes}
    created = admin.post("/v1/polls", {**body, "defences": DEFENCES_OFF})
    opened: dict[str, Any] = admin.post(f"/v1/polls/{created['id']}/open")
    return opened


def open_poll(admin: TallyClient, title: str, lanes: int) -> tuple[str, list[str]]:
    """`open_bench_poll`'s id and option ids."""
    opened = open_bench_poll(admin, title, lanes)
    return str(opened["id"]), [str(o["id"]) for o in opened["options"]]


@contextmanager
def baseline() -> Iterator[tuple[int, int]]:
    """The Starlette hello-world (`tally.bench.baseline`) on a free port: (port, pid)."""
    port = free_port()
    argv = [sys.executable, "-m", "tally.bench.baseline", "--host", HOST, "--port", str(port)]
    with running(argv, host=HOST, port=port, timeout_s=30) as process:
        yield port, process.pid


@dataclass(frozen=True, slots=True)
class Block:
    side: str  # "baseline" or one of the two sides
    round: int
    load: LoadResult
    cpu_s: float


def timed(side: str, rnd: int, port: int, pid: int, requests: list[bytes], conc: int) -> Block:
    """One block of requests, with the CPU the server process `pid` spent on it."""
    before = server_cpu_s(pid)
    load = uvloop.run(run_requests(HOST, port, requests, concurrency=conc))
    return Block(side, rnd, load, server_cpu_s(pid) - before)


def order(rounds: int, sides: Sequence[str]) -> list[list[str]]:
    """The blocks of each round: the baseline first, then the two sides, in turn first."""
    return [["baseline", *(sides if r % 2 == 0 else sides[::-1])] for r in range(rounds)]


def block_doc(block: Block) -> dict[str, Any]:
    """A block as the JSON report shows it."""
    latency = block.load.latency_percentiles_ms(50, 99)
    done = len(block.load.completed())
    return {
        "round": block.round + 1,
        "side": block.side,
        "per_s": round(block.load.throughput(), 1),
        "cpu_us_per_request": round(1e6 * block.cpu_s / max(1, done), 1),
        "p50_ms": round(latency["p50"], 2),
        "p99_ms": round(latency["p99"], 2),
        "statuses": block.load.by_status(),
    }

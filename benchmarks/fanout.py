"""Fan-out to idle WebSocket watchers: gateway memory per connection, and time to reach them all.

Targets (issue 3): one gateway process holds 20k idle watchers at <= 16 KB per connection, and
reaches all 10k watchers of a snapshot within 200 ms p99.

For each N (default 1k, 5k, 10k, 20k) on a fresh `tally serve` (embedded Valkey, temporary data
dir, default settings apart from the connection limits, which must admit N watchers from
127.0.0.1):

1. open a poll and wait until it has a snapshot (one probe watcher);
2. read the gateway process's VmRSS, and the machine's kernel slab memory (where the sockets
   themselves live; RSS does not count them). Connect N watchers of the poll's `/live`
   WebSocket, spread over `--client-processes` child processes (`tally.bench.watcher_pool`:
   raw sockets that only read frames and answer pings). Wait until each has the snapshot sent
   on connect, let it settle `--settle-s`, and read both again. Bytes per connection = the
   difference / N. The slab figure covers both ends of each loopback connection, plus whatever
   else the machine did meanwhile;
3. cast one vote at a time, `--snapshots` times. Each vote makes the aggregator publish one
   snapshot at its next tick. Wait until every watcher has it, then pause for a random part of
   a tick, so that votes land at random points of the tick;
4. for each of those snapshots: time to reach all N = the last watcher's kernel receive time
   minus the first watcher's (SO_TIMESTAMPNS). The clients' own CPU does not enter it. Report
   p50/p99 over the snapshots, and the same spread by when the client processes read the
   frames. Also report the gateway's CPU time (user + kernel, /proc/<pid>/stat) over step 3,
   divided by the snapshots. That includes its idle work (aggregator ticks, keepalive) and the
   votes, so it is an upper bound on what one broadcast costs.

CPU separation (`--pin`, the default on a machine with 2+ CPUs): the gateway and its
valkey-server are confined to CPU 0, and this script and the watcher processes to the other
CPUs (sched_setaffinity, inherited by child processes). The clients then never take CPU from the
server they measure. Loopback TCP does the receiver's protocol work in the sender's softirq, so
that part of the receiving still counts on the server's CPU.

Limits: a process holds at most RLIMIT_NOFILE descriptors. This script raises the soft limit to
the hard one before it starts the server, and caps N at what the server can still open. The
report gives both the requested and the measured N.

Run:  .venv/bin/python benchmarks/fanout.py [--watchers 1000 5000 10000 20000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from tally.bench.live_run import wait_for_first_snapshot
from tally.bench.processes import free_port, rss_bytes, running
from tally.bench.visibility import broadcasts, summary_ms
from tally.bench.watcher_pool import WatcherPool
from tally.bench.watchers import raise_open_files
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer

HOST = "127.0.0.1"
TARGET_BYTES_PER_WATCHER = 16 * 1024
TARGET_REACH_ALL_P99_MS = 200.0
FIRST_SNAPSHOT_S = 10.0
SNAPSHOT_WAIT_S = 15.0
FD_MARGIN = 32  # descriptors the server may still open for itself (Valkey reconnects, logs)


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPUs the server and the clients may use (None: wherever the OS puts them)."""

    server: set[int] | None
    clients: set[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return cls(None, None)
        return cls({cpus[0]}, set(cpus[1:]))

    @staticmethod
    def pin(cpus: set[int] | None) -> None:
        """Confine this process (and the children it starts from now on) to `cpus`."""
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    def describe(self) -> str:
        if self.server is None or self.clients is None:
            return "not pinned"
        return f"server+valkey on CPU {sorted(self.server)}, clients on CPU {sorted(self.clients)}"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def slab_bytes() -> int:
    """The kernel's slab memory, machine-wide (`Slab:` in /proc/meminfo)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1]) * 1024
    raise ValueError("/proc/meminfo has no Slab line")


def open_files(pid: int) -> tuple[int, int]:
    """(descriptors open now, soft RLIMIT_NOFILE) of a process."""
    in_use = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return in_use, (sys.maxsize if soft == "unlimited" else int(soft))
    raise ValueError(f"/proc/{pid}/limits has no 'Max open files' line")


async def measure(n: int, args: argparse.Namespace, placement: Placement) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tally-fanout-") as data_dir:
        port = free_port()
        env = dict(os.environ, TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning")
        env.pop("TALLY_VALKEY_URL", None)
        env.update(TALLY_MAX_CONNECTIONS=str(n + 1000), TALLY_MAX_CONNECTIONS_PER_IP=str(n + 1000))
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        placement.pin(placement.server)  # the server, and the valkey-server it starts, inherit it
        try:
            with running(argv, host=HOST, port=port, env=env, timeout_s=60) as server:
                placement.pin(placement.clients)
                return await _measure_on(server.pid, port, Path(data_dir), n, args, placement)
        finally:
            placement.pin(placement.clients)


async def _measure_on(
    pid: int, port: int, data_dir: Path, n: int, args: argparse.Namespace, placement: Placement
) -> dict[str, Any]:
    issuer = DevIssuer.load_or_create(data_dir / "keys")
    base = f"http://{HOST}:{port}"
    admin = TallyClient(base, issuer.mint("fanout-admin", roles=["admin"]))
    poll = admin.post("/v1/polls", {"title": "fan-out", "options": ["Yes", "No"]})
    poll = admin.post(f"/v1/polls/{poll['id']}/open")
    option = poll["options"][0]["id"]
    path = f"/v1/polls/{poll['id']}/live"
    await wait_for_first_snapshot(HOST, port, path)

    in_use, limit = open_files(pid)
    measured = min(n, limit - in_use - FD_MARGIN)
    result: dict[str, Any] = {"requested": n, "watchers": measured}
    if measured < n:
        result["capped_by"] = f"the server's RLIMIT_NOFILE {limit} ({in_use} descriptors in use)"
    await asyncio.sleep(args.settle_s)
    before, slab_before = rss_bytes(pid), slab_bytes()
    async with WatcherPool.start(
        HOST, port, path, processes=args.client_processes, cpus=placement.clients
    ) as pool:
        started = time.perf_counter()
        connected = await pool.connect(measured)
        result["connect_s"] = round(time.perf_counter() - started, 2)
        result["watchers_connected"] = connected
        result["failures"] = dict(pool.failures)
        result["initial_missing"] = await pool.wait_total(0, FIRST_SNAPSHOT_S)
        await asyncio.sleep(args.settle_s)
        idle, slab_idle = rss_bytes(pid), slab_bytes()
        cpu_before = cpu_seconds(pid)
        missing = 0
        for i in range(1, args.snapshots + 1):
            voter = TallyClient(base, issuer.mint(f"fanout-voter-{i}"))
            await asyncio.to_thread(voter.post, f"/v1/polls/{poll['id']}/votes", {"option": option})
            missing += await pool.wait_total(i, SNAPSHOT_WAIT_S)
            await asyncio.sleep(0.05 + random.random() * args.tick_s)
        user, system = (b - a for a, b in zip(cpu_before, cpu_seconds(pid), strict=True))
        after = rss_bytes(pid)
        report = await pool.report()
    spread = [b for b in broadcasts(report.arrivals) if b.total >= 1]
    to_all = [b for b in spread if b.watchers == connected]
    wall_offset = time.time() - time.perf_counter()
    result.update(
        {
            "rss_before": before,
            "rss_idle": idle,
            "rss_after": after,
            "bytes_per_watcher": round((idle - before) / max(1, connected)),
            "kernel_slab_per_connection": round((slab_idle - slab_before) / max(1, connected)),
            "snapshots": len(spread),
            "snapshots_to_all": len(to_all),
            "snapshot_missing": missing,
            "lost": dict(report.lost),
            "reach_all_ms": summary_ms(b.spread_s for b in to_all),
            "read_all_ms": summary_ms(b.read_spread_s for b in to_all),
            "age_last_ms": summary_ms(
                b.last_received - (report.ts_ms[b.seq] / 1000 - wall_offset) for b in to_all
            ),
            "server_cpu_ms_per_snapshot": round(1000 * (user + system) / max(1, len(spread)), 1),
            "server_cpu_system_share": round(system / max(1e-9, user + system), 2),
            "client_cpu_s": round(report.cpu_s, 1),
        }
    )
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    placement = Placement.choose(args.pin)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_open_files(hard)  # the server inherits it
    rows = []
    for n in args.watchers:
        row = await measure(n, args, placement)
        rows.append(row)
        if not args.json:
            _print_row(row)
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "placement": placement.describe(),
        "client_processes": args.client_processes,
        "nofile_hard_limit": hard,
        "results": rows,
    }


def _print_row(r: dict[str, Any]) -> None:
    def ms(s: dict[str, Any]) -> str:
        return "  ".join(f"{k} {v}" for k, v in s.items())

    capped = f"  (capped: {r['capped_by']})" if "capped_by" in r else ""
    print(
        f"N={r['requested']:,}: {r['watchers_connected']:,} connected in {r['connect_s']} s{capped}"
    )
    print(f"  failures {r['failures'] or 'none'}  lost {r['lost'] or 'none'}")
    per_kb = r["bytes_per_watcher"] / 1024
    verdict = "meets" if r["bytes_per_watcher"] <= TARGET_BYTES_PER_WATCHER else "misses"
    print(f"  memory       {per_kb:.1f} KiB per watcher ({verdict} 16 KiB)")
    print(
        f"  reach all ms {ms(r['reach_all_ms'])}  ({r['snapshots_to_all']}/{r['snapshots']} to all)"
    )
    print(f"  read all ms  {ms(r['read_all_ms'])}")
    print(f"  age last ms  {ms(r['age_last_ms'])}")
    print(
        f"  server CPU   {r['server_cpu_ms_per_snapshot']} ms per snapshot "
        f"({100 * r['server_cpu_system_share']:.0f}% in the kernel)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--watchers", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--snapshots", type=int, default=20, help="snapshots to time per N")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--tick-s", type=float, default=0.25, help="the server's tick (pauses)")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not separate server and client CPUs"
    )
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    report = uvloop.run(run(args))
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['date']}  {report['placement']}  {report['client_processes']} client processes"
        )


if __name__ == "__main__":
    main()

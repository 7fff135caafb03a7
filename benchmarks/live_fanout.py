"""Live fan-out capacity of one gateway process: memory per idle WebSocket watcher and the time a
snapshot takes to reach all of them.

    .venv/bin/python benchmarks/live_fanout.py --watchers 1000 5000 10000 19800
    .venv/bin/python benchmarks/live_fanout.py --watchers 10000 --asgi   # the ASGI fallback route

Three roles, each its own process (so client memory and CPU never count as the gateway's):
- gateway: Tally's wiring (embedded valkey-server) + LiveGateway + uvicorn on uvloop, serving
  /v1/polls/{id}/live natively (or through the ASGI route with --asgi); one open poll;
- clients: raw asyncio WebSocket clients (a few thousand per process), answering pings, noting
  the CLOCK_MONOTONIC time each snapshot seq arrives;
- driver: warms up 100 watchers, reads the gateway's VmRSS (/proc/<pid>/status), connects N more,
  reads VmRSS again (per connection = delta / N), then publishes `--rounds` snapshots through
  FCALL tally_snapshot (as the aggregator does) and reports, per snapshot, the time from the
  publish call to the last watcher's arrival (p50/p99 over rounds) and p99 over every delivery.

The gateway's fd limit is its hard RLIMIT_NOFILE (20,000 in the reference container), which
caps N just under 20k. Everything runs on one machine: client processes compete with the
gateway for the CPU, so the times are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PER_CLIENT_PROCESS = 5000
WARM = 100
SEQ = re.compile(rb'"seq":(\d+)')


def raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- gateway role -------------------------------------------------------------------------------


async def gateway(port: int, data_dir: Path, native: bool) -> None:
    """The gateway role as the composition root builds it (tally.wiring.gateway), on an embedded
    valkey-server; served natively (or through the ASGI route with `native` False)."""
    from tally.config import Settings
    from tally.domain.polls import OptionSpec
    from tally.gateway.server import GatewayServer, server_config
    from tally.service import NewPoll
    from tally.store import acl
    from tally.wiring.gateway import build_gateway
    from tally.wiring.store import open_store

    settings = Settings(
        data_dir=data_dir,
        log_level="warning",
        max_connections=100_000,
        max_connections_per_ip=100_000,
    )
    store = await open_store(settings, "serve", may_embed=True)
    assert store.embedded is not None
    # The snapshots are published as the aggregator publishes them, as its own ACL user (the
    # default user is off: issue 11).
    endpoint = store.embedded.endpoint_for(acl.AGGREGATOR)
    # As `tally serve` does since issue 11: the gateway registers its own admission key.
    runtime = await build_gateway(settings, store, register_admission_key=True)
    live = runtime.live
    config = server_config(runtime.app, "127.0.0.1", port)
    if native:
        config.ws = live.websocket_protocol
    server = GatewayServer(config)
    poll = await runtime.service.create_poll(
        NewPoll("fan-out bench", [OptionSpec("Red"), OptionSpec("Green")], lanes=4)
    )
    await runtime.service.open_poll(poll.id)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    live.start()
    task = loop.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110  # uvicorn offers only a flag
        await asyncio.sleep(0.02)
    print(
        json.dumps(
            {
                "poll_id": poll.id,
                "host": endpoint.host,
                "port": endpoint.port,
                "username": endpoint.username,
                "password": endpoint.password,
            }
        ),
        flush=True,
    )
    await task
    await live.shutdown(5)
    await store.close(5)


# --- client role --------------------------------------------------------------------------------


class Watcher(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then unmasked server frames; answers pings."""

    def __init__(self, path: bytes, ready: asyncio.Future[None], arrivals: dict[int, list[float]]):
        self.path = path
        self.ready = ready
        self.arrivals = arrivals
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        transport.write(  # type: ignore[attr-defined]
            b"GET " + self.path + b" HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"upgrade refused: {self.buffer[:200]!r}")
            self.upgraded, self.buffer = True, self.buffer[end + 4 :]
        self.frames(now)

    def frames(self, now: float) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode, length, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, start = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + length:
                break
            payload, buf = buf[start : start + length], buf[start + length :]
            if opcode == 0x1:
                match = SEQ.search(payload)
                if match:
                    self.arrivals.setdefault(int(match.group(1)), []).append(now)
                    if not self.ready.done():
                        self.ready.set_result(None)
            elif opcode == 0x9 and self.transport is not None:  # ping: answer with a masked pong
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
        self.buffer = buf


async def clients(port: int, poll_id: str, n: int) -> None:
    import uvloop

    uvloop.install()
    loop = asyncio.get_running_loop()
    arrivals: dict[int, list[float]] = {}
    path = f"/v1/polls/{poll_id}/live".encode()
    limit = asyncio.Semaphore(100)
    transports = []

    async def one(i: int) -> None:
        async with limit:
            ready = loop.create_future()
            # Spread over source addresses: one address has only ~28k ephemeral ports.
            source = (f"127.0.0.{2 + i % 8}", 0)
            transport, _ = await loop.create_connection(
                lambda: Watcher(path, ready, arrivals), "127.0.0.1", port, local_addr=source
            )
            transports.append(transport)
            await asyncio.wait_for(ready, 30)

    await asyncio.gather(*(one(i) for i in range(n)))
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()
    print(json.dumps({str(k): v for k, v in arrivals.items()}), flush=True)
    await reader.readline()
    for transport in transports:
        transport.close()


# --- driver -------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def publish(info: dict[str, Any], seq: int) -> float:
    from tally.store import keys
    from tally.store.resp import Endpoint, Valkey

    client = Valkey(Endpoint(info["host"], info["port"], info["password"], info["username"]))
    poll_id = info["poll_id"]
    lease = keys.poll_lease(poll_id)
    doc = json.dumps(
        {
            "type": "snapshot",
            "poll_id": poll_id,
            "seq": seq,
            "state": "open",
            "counts": {"red": seq, "green": 2 * seq},
            "total": 3 * seq,
            "ts": "2025-01-01T00:00:00.000Z",
        },
        separators=(",", ":"),
    )
    try:
        await client.execute("FCALL", "tally_lease", 1, lease, "bench", 60_000)
        started = time.monotonic()
        await client.execute(
            "FCALL", "tally_snapshot", 2, keys.poll_snapshot(poll_id), lease, "bench", seq, doc,
            keys.live_channel(poll_id),
        )  # fmt: skip
        return started
    finally:
        await client.close()


def measure(watchers: int, rounds: int, native: bool, interval_s: float) -> dict[str, Any]:
    from tally.store.embedded import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        gw = spawn("gateway", str(port), data_dir, "native" if native else "asgi")
        procs: list[subprocess.Popen[str]] = []
        try:
            assert gw.stdout is not None
            info = json.loads(gw.stdout.readline())
            asyncio.run(publish(info, 1))
            warm = spawn("clients", str(port), info["poll_id"], str(WARM))
            procs.append(warm)
            assert warm.stdout is not None
            assert warm.stdout.readline().strip() == "ready"
            time.sleep(1)
            before = rss_kb(gw.pid)
            started = time.monotonic()
            batch = []
            for i in range(0, watchers, PER_CLIENT_PROCESS):
                count = min(PER_CLIENT_PROCESS, watchers - i)
                batch.append(spawn("clients", str(port), info["poll_id"], str(count)))
            procs += batch
            for proc in batch:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ready"
            connect_s = time.monotonic() - started
            time.sleep(2)
            after = rss_kb(gw.pid)
            published: dict[int, float] = {}
            for seq in range(2, rounds + 2):
                published[seq] = asyncio.run(publish(info, seq))
                time.sleep(interval_s)
            time.sleep(1)
            arrivals: dict[int, list[float]] = {seq: [] for seq in published}
            for proc in batch:
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write("report\n")
                proc.stdin.flush()
                for seq, times in json.loads(proc.stdout.readline()).items():
                    if int(seq) in arrivals:
                        arrivals[int(seq)] += times
            reach_all = []
            every = []
            for seq, times in arrivals.items():
                if len(times) != watchers:  # latest-only: a slower broadcast skips snapshots
                    raise RuntimeError(
                        f"seq {seq} reached {len(times)} of {watchers}: raise --interval"
                    )
                latencies = [t - published[seq] for t in times]
                reach_all.append(max(latencies))
                every += latencies
            return {
                "watchers": watchers,
                "route": "native" if native else "asgi",
                "rss_delta_mb": round((after - before) / 1024, 1),
                "kb_per_connection": round((after - before) / watchers, 2),
                "connect_s": round(connect_s, 1),
                "reach_all_ms_p50": round(1000 * statistics.median(reach_all), 1),
                "reach_all_ms_p99": round(1000 * percentile(reach_all, 0.99), 1),
                "delivery_ms_p99": round(1000 * percentile(every, 0.99), 1),
                "rounds": rounds,
            }
        finally:
            for proc in [*procs, gw]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in [*procs, gw]:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def main() -> None:
    raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "gateway":
        import uvloop

        uvloop.run(gateway(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "native"))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        asyncio.run(clients(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, nargs="+", default=[1000, 5000, 10000, 19800])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between snapshots")
    parser.add_argument("--asgi", action="store_true", help="measure the ASGI fallback route")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for n in args.watchers:
        result = measure(n, args.rounds, native=not args.asgi, interval_s=args.interval)
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()

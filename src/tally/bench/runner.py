"""`tally bench`: vote throughput and latency of one gateway process, as a ratio to a plain
Starlette hello-world served on the same stack, measured in the same run by the same client.

Sequence: start a fresh Tally (embedded Valkey, temporary data dir) as its own process; create and
open a poll; mint one token per voter; warm up on a second poll; send one vote per voter over
`concurrency` keep-alive connections; check that the poll's total equals the accepted votes; stop
Tally. The baseline app gets as many requests over as many connections, once before and once
after the votes; the ratio uses the mean of the two.

With `--defences`, the cost of the defences instead: votes/s with every defence on over votes/s
with them off (tally.bench.defences_run).

With `--signing both`, the cost of admission signing instead: the baseline, signed and unsigned
votes in interleaved rounds, each a ratio to the baseline (tally.bench.signing_run).

With `--watchers N`, N WebSocket watchers read the bench poll's snapshots during the votes
(`tally.bench.live_run`, whose docstring lists the fields they add to the report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from tally import config
from tally.bench.defences_run import run_defences_bench
from tally.bench.interleaved import open_bench_poll
from tally.bench.live_run import LiveRun, WatchedPoll, live_report, print_live
from tally.bench.loadgen import LoadResult, build_request, run_requests
from tally.bench.polls import final_total, vote_requests
from tally.bench.processes import free_port, running
from tally.bench.signing_run import run_signing_bench
from tally.bench.watchers import raise_open_files
from tally.client import TallyClient
from tally.progress import Progress
from tally.security.dev_issuer import DevIssuer

HOST = "127.0.0.1"
WARMUP_VOTES = 2000
# Sockets the bench process and the server need beyond one per watcher.
SPARE_FILES = 512


@dataclass(frozen=True, slots=True)
class VoteRun:
    load: LoadResult
    counted_total: int
    live: LiveRun | None = None

    def outcomes(self) -> Counter[str]:
        kinds: Counter[str] = Counter()
        for reply in self.load.replies:
            if reply is None:
                continue
            kinds["accepted" if reply.status == 201 else _problem_code(reply.body)] += 1
        for kind, n in self.load.transport_errors.items():
            kinds[f"transport:{kind}"] += n
        return kinds


def _problem_code(body: bytes) -> str:
    try:
        code = orjson.loads(body).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return "unparseable-reply"
    return str(code)


def measure_votes(
    voters: int,
    concurrency: int,
    alg: str,
    lanes: int,
    *,
    watchers: int = 0,
    rate_per_s: float | None = None,
) -> VoteRun:
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as data_dir:
        port = free_port()
        env = dict(os.environ, TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning")
        env.pop("TALLY_VALKEY_URL", None)
        env["TALLY_EDGE_RATE"] = "0"  # one address sends every vote (see _open_poll)
        if watchers:
            # Every watcher comes from 127.0.0.1, so the per-address limit must admit them all;
            # the server inherits the raised open-file limit.
            raise_open_files(watchers + concurrency + SPARE_FILES)
            limit = str(watchers + SPARE_FILES)
            env.update(
                TALLY_MAX_CONNECTIONS=limit,
                TALLY_MAX_CONNECTIONS_PER_IP=limit,
                TALLY_MAX_HTTP_CONNECTIONS_PER_IP=limit,
            )
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        with running(argv, host=HOST, port=port, env=env, timeout_s=60) as server:
            issuer = DevIssuer.load_or_create(Path(data_dir) / "keys")
            admin = TallyClient(
                f"http://{HOST}:{port}", issuer.mint("bench-admin", roles=["admin"])
            )
            warm = open_bench_poll(admin, "bench warm-up", lanes)
            poll = open_bench_poll(admin, "bench", lanes)
            options = [o["id"] for o in poll["options"]]
            warmup = vote_requests(
                issuer, warm["id"], options, min(WARMUP_VOTES, voters), alg, "warm-"
            )
            requests = vote_requests(issuer, poll["id"], options, voters, alg, "voter-")
            session = _Session(port, server.pid, concurrency, watchers, rate_per_s)
            load, live = uvloop.run(session.run(poll["id"], warmup, requests))
            counted = final_total(admin, poll["id"])
    return VoteRun(load, counted, live)


@dataclass(frozen=True, slots=True)
class _Session:
    """One event loop for the warm-up, the watchers and the votes, so the watchers read while
    the votes are cast, and all times share one clock."""

    port: int
    server_pid: int
    concurrency: int
    watchers: int
    rate_per_s: float | None

    async def run(
        self, poll_id: str, warmup: list[bytes], requests: list[bytes]
    ) -> tuple[LoadResult, LiveRun | None]:
        await run_requests(HOST, self.port, warmup, concurrency=self.concurrency)
        if not self.watchers:
            return await self._votes(requests), None
        watched = WatchedPoll(HOST, self.port, poll_id, self.server_pid)
        return await watched.during(self.watchers, lambda: self._votes(requests))

    async def _votes(self, requests: list[bytes]) -> LoadResult:
        return await run_requests(
            HOST, self.port, requests, concurrency=self.concurrency, rate_per_s=self.rate_per_s
        )


def measure_baseline(requests: int, concurrency: int) -> LoadResult:
    port = free_port()
    argv = [sys.executable, "-m", "tally.bench.baseline", "--host", HOST, "--port", str(port)]
    hello = build_request("GET", "/hello", host=HOST)
    with running(argv, host=HOST, port=port, timeout_s=30):
        uvloop.run(
            run_requests(HOST, port, [hello] * min(WARMUP_VOTES, requests), concurrency=concurrency)
        )
        return uvloop.run(run_requests(HOST, port, [hello] * requests, concurrency=concurrency))


def report(args: argparse.Namespace, votes: VoteRun, baselines: list[LoadResult]) -> dict[str, Any]:
    latency = votes.load.latency_percentiles_ms(50, 95, 99)
    outcomes = votes.outcomes()
    accepted = outcomes.pop("accepted", 0)
    result: dict[str, Any] = {
        "voters": args.voters,
        "concurrency": args.concurrency,
        "token_alg": args.alg,
        "lanes": args.lanes,
        "votes_per_s": round(votes.load.throughput(), 1),
        "p50_ms": round(latency["p50"], 2),
        "p95_ms": round(latency["p95"], 2),
        "p99_ms": round(latency["p99"], 2),
        "accepted": accepted,
        "errors": dict(outcomes),
        "counted_total": votes.counted_total,
        "count_matches": votes.counted_total == accepted,
    }
    if baselines:
        # Measured before and after the votes: on a shared machine, load that comes and goes
        # then weighs on both sides of the ratio alike.
        rates = [b.throughput() for b in baselines]
        mean_rate = sum(rates) / len(rates)
        result["baseline_req_per_s"] = round(mean_rate, 1)
        result["baseline_runs_req_per_s"] = [round(r, 1) for r in rates]
        result["baseline_p99_ms"] = round(
            max(b.latency_percentiles_ms(99)["p99"] for b in baselines), 2
        )
        result["ratio_to_baseline"] = round(votes.load.throughput() / mean_rate, 3)
    if votes.live is not None:
        result["vote_rate_target"] = args.rate
        result["tick_ms"] = config.load().tick_ms  # what the server read from the same environment
        result.update(live_report(votes.live, votes.load))
    return result


def run_bench(args: argparse.Namespace) -> int:
    if args.voters < 1 or args.concurrency < 1:
        print("tally bench: --voters and --concurrency must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "defences", False):
        if args.watchers or args.rate is not None:
            print("tally bench: --defences takes no --watchers or --rate", file=sys.stderr)
            return 2
        return run_defences_bench(args)
    if getattr(args, "signing", None):
        if args.watchers or args.rate is not None or args.no_baseline:
            print(
                "tally bench: --signing takes no --watchers, --rate or --no-baseline",
                file=sys.stderr,
            )
            return 2
        return run_signing_bench(args)
    if args.watchers < 0 or (args.rate is not None and args.rate <= 0):
        print("tally bench: --watchers must be >= 0 and --rate positive", file=sys.stderr)
        return 2
    started = time.perf_counter()
    baselines = []
    # Each measurement takes seconds to minutes: a terminal is told which one runs (not --json).
    phases = 1 if args.no_baseline else 3
    with Progress("tally bench", total=phases, unit="runs", quiet=args.json) as shown:
        baseline = f"hello-world baseline: {args.voters} requests"
        if not args.no_baseline:
            shown.stage(baseline)
            baselines.append(shown.step(measure_baseline(args.voters, args.concurrency)))
        shown.stage(f"{args.voters} votes over {args.concurrency} connections")
        votes = measure_votes(
            args.voters,
            args.concurrency,
            args.alg,
            args.lanes,
            watchers=args.watchers,
            rate_per_s=args.rate,
        )
        shown.advance()
        if not args.no_baseline:
            shown.stage(f"{baseline}, again")
            baselines.append(shown.step(measure_baseline(args.voters, args.concurrency)))
    result = report(args, votes, baselines)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return 0 if result["count_matches"] else 1


def _print_table(r: dict[str, Any]) -> None:
    print(
        f"voters {r['voters']}  concurrency {r['concurrency']}  tokens {r['token_alg']}  lanes {r['lanes']}"
    )
    print(f"votes/s      {r['votes_per_s']:>10,.0f}")
    print(f"latency ms   p50 {r['p50_ms']}  p95 {r['p95_ms']}  p99 {r['p99_ms']}")
    print(
        f"accepted     {r['accepted']:>10,}   counted {r['counted_total']:,}   {'OK' if r['count_matches'] else 'MISMATCH'}"
    )
    print(f"errors       {r['errors'] or 'none'}")
    if "baseline_req_per_s" in r:
        runs = ", ".join(f"{x:,.0f}" for x in r["baseline_runs_req_per_s"])
        print(
            f"baseline     {r['baseline_req_per_s']:>10,.0f} req/s (Starlette hello-world, same stack)"
        )
        print(f"             before / after the votes: {runs}")
        print(f"ratio        {r['ratio_to_baseline']:>10.3f}  (votes/s / baseline req/s)")
    if "watchers" in r:
        print_live(r)

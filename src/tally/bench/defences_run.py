"""`tally bench --defences`: what the defences cost the vote path, as the ratio of votes/s with
every defence on to votes/s with every defence off, measured in one run by the same client.

Three fresh servers in turn (each `tally serve`, embedded Valkey, temp data dir): defences off,
on, off again; the ratio divides "on" by the mean of the two "off" runs, so load that comes and
goes on a shared machine weighs on both sides (as the Starlette baseline of `tally bench` does).

- off: TALLY_DEFENCES with every rate limit off, proof-of-work difficulty 0 and no risk rules,
  and the edge's per-address token bucket off (TALLY_EDGE_RATE=off);
- on: the server's defaults (tally.domain.defences: address, subnet, voter and poll GCRA limits
  in Valkey, a proof-of-work challenge of the default difficulty on every vote, the default risk
  rules) and the edge's default token bucket.

Both servers trust 127.0.0.1 as a proxy (TALLY_TRUSTED_PROXIES), and every voter is presented
from its own address in X-Forwarded-For (4 voters to a /24, so the per-address and per-subnet
limits admit them all), with one of 64 user agents and a token issued 10 minutes earlier: the
load is many ordinary voters, so the risk rules score nothing and nothing is held ("no holds").
With defences on, each voter's challenge is FETCHED AND SOLVED BEFORE THE TIMED PHASE (GET
.../challenge, then this process's pool of solvers); the votes carry the answers, so the timed
phase measures verifying, spending (one SET NX) and limiting, not solving. The challenge
endpoint's own rate (GET .../challenge requests answered per second over the same connections)
is measured separately, during the fetch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from tally.bench.loadgen import LoadResult, build_request, run_requests
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer
from tally.security.pow import solve

HOST = "127.0.0.1"
WARMUP_VOTES = 2000
AGENTS = 64
TOKEN_AGE_S = 600
DEFENCES_OFF = {
    "limits": {"address": None, "subnet": None, "voter": None, "poll": None},
    "pow": {"difficulty": 0},
    "risk": {"rules": []},
}


@dataclass(frozen=True, slots=True)
class DefendedRun:
    defences: bool
    load: LoadResult
    accepted: int
    counted_total: int
    poll_defences: dict[str, Any]
    challenge_rate: float | None = None  # GET .../challenge answered per second
    solve_s: float | None = None


def voter_address(i: int, block: int) -> str:
    """Voter i's address: 4 to a /24, in 100.64.0.0/10 (block 0: bench votes, 1: warm-up)."""
    subnet = i // 4
    return f"100.{64 + block * 32 + subnet // 256}.{subnet % 256}.{i % 4 + 1}"


@dataclass(frozen=True, slots=True)
class _Voters:
    poll_id: str
    options: list[str]
    tokens: list[str]
    block: int

    def headers(self, i: int) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.tokens[i]}",
            "User-Agent": f"bench-browser/{i % AGENTS}",
            "X-Forwarded-For": voter_address(i, self.block),
        }

    def challenge_requests(self) -> list[bytes]:
        path = f"/v1/polls/{self.poll_id}/challenge"
        return [
            build_request("GET", path, host=HOST, headers=self.headers(i))
            for i in range(len(self.tokens))
        ]

    def vote_requests(self, proofs: list[str] | None) -> list[bytes]:
        path = f"/v1/polls/{self.poll_id}/votes"
        requests = []
        for i in range(len(self.tokens)):
            body: dict[str, str] = {"option": self.options[i % len(self.options)]}
            if proofs is not None:
                body["proof"] = proofs[i]
            headers = {**self.headers(i), "Content-Type": "application/json"}
            requests.append(
                build_request("POST", path, host=HOST, headers=headers, body=orjson.dumps(body))
            )
        return requests


def _solved(challenge: str) -> str:
    return f"{challenge}:{solve(challenge)}"


def measure(args: argparse.Namespace, defences: bool, pool: ProcessPoolExecutor) -> DefendedRun:
    with tempfile.TemporaryDirectory(prefix="tally-bench-defences-") as data_dir:
        port = free_port()
        env = dict(os.environ, TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning")
        env["TALLY_TRUSTED_PROXIES"] = "127.0.0.1/32"
        for name in ("TALLY_VALKEY_URL", "TALLY_DEFENCES", "TALLY_EDGE_RATE"):
            env.pop(name, None)
        if not defences:
            env.update(TALLY_DEFENCES=json.dumps(DEFENCES_OFF), TALLY_EDGE_RATE="off")
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        with running(argv, host=HOST, port=port, env=env, timeout_s=60):
            issuer = DevIssuer.load_or_create(Path(data_dir) / "keys")
            admin = TallyClient(
                f"http://{HOST}:{port}", issuer.mint("bench-admin", roles=["admin"])
            )
            issued = time.time() - TOKEN_AGE_S
            warm = _voters(admin, issuer, "warm", min(WARMUP_VOTES, args.voters), args, issued, 1)
            bench = _voters(admin, issuer, "voter", args.voters, args, issued, 0)
            warm_proofs = bench_proofs = None
            challenge_rate = solve_s = None
            if defences:
                warm_proofs, _ = _fetch(warm, port, args.concurrency)
                bench_proofs, load = _fetch(bench, port, args.concurrency)
                challenge_rate = load.throughput()
                started = time.perf_counter()
                bench_proofs = list(pool.map(_solved, bench_proofs, chunksize=256))
                warm_proofs = list(pool.map(_solved, warm_proofs, chunksize=256))
                solve_s = time.perf_counter() - started
            warm_requests = warm.vote_requests(warm_proofs)
            requests = bench.vote_requests(bench_proofs)
            uvloop.run(run_requests(HOST, port, warm_requests, concurrency=args.concurrency))
            load = uvloop.run(run_requests(HOST, port, requests, concurrency=args.concurrency))
            accepted = sum(1 for r in load.replies if r is not None and r.status == 201)
            poll = admin.get(f"/v1/polls/{bench.poll_id}")
            counted = _closed_total(admin, bench.poll_id)
    return DefendedRun(
        defences, load, accepted, counted, poll.get("defences", {}), challenge_rate, solve_s
    )


def _voters(
    admin: TallyClient,
    issuer: DevIssuer,
    prefix: str,
    count: int,
    args: argparse.Namespace,
    issued: float,
    block: int,
) -> _Voters:
    poll = admin.post(
        "/v1/polls",
        {
            "title": f"bench {prefix}",
            "options": ["Red", "Green", "Blue", "Yellow"],
            "lanes": args.lanes,
        },
    )
    poll = admin.post(f"/v1/polls/{poll['id']}/open")
    tokens = [issuer.mint(f"{prefix}-{i}", alg=args.alg, now=issued) for i in range(count)]
    return _Voters(str(poll["id"]), [str(o["id"]) for o in poll["options"]], tokens, block)


def _fetch(voters: _Voters, port: int, concurrency: int) -> tuple[list[str], LoadResult]:
    load = uvloop.run(
        run_requests(HOST, port, voters.challenge_requests(), concurrency=concurrency)
    )
    challenges = []
    for reply in load.replies:
        if reply is None or reply.status != 200:
            raise RuntimeError(f"GET .../challenge failed: {reply and reply.status}")
        challenges.append(str(orjson.loads(reply.body)["challenge"]))
    return challenges, load


def _closed_total(admin: TallyClient, poll_id: str, timeout_s: float = 10.0) -> int:
    admin.post(f"/v1/polls/{poll_id}/close")
    deadline = time.monotonic() + timeout_s
    while True:
        results = admin.get(f"/v1/polls/{poll_id}/results")
        if results["state"] == "closed" or time.monotonic() > deadline:
            return int(results["total"])
        time.sleep(0.05)


def _summary(run: DefendedRun) -> dict[str, Any]:
    latency = run.load.latency_percentiles_ms(50, 99)
    return {
        "votes_per_s": round(run.load.throughput(), 1),
        "p50_ms": round(latency["p50"], 2),
        "p99_ms": round(latency["p99"], 2),
        "accepted": run.accepted,
        "counted_total": run.counted_total,
        "statuses": run.load.by_status(),
    }


def run_defences_bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = [measure(args, on, pool) for on in (False, True, False)]
    off = [_summary(r) for r in runs if not r.defences]
    on_run = runs[1]
    on = _summary(on_run)
    mean_off = sum(o["votes_per_s"] for o in off) / len(off)
    limits = on_run.poll_defences.get("limits", {})
    result = {
        "voters": args.voters,
        "concurrency": args.concurrency,
        "off": off,
        "on": on,
        "ratio_on_to_off": round(on["votes_per_s"] / mean_off, 3),
        "challenge_endpoint_req_per_s": round(on_run.challenge_rate or 0.0, 1),
        "presolve_s": round(on_run.solve_s or 0.0, 1),
        "on_layers": {
            "limits": sorted(scope for scope, rate in limits.items() if rate is not None),
            "pow_difficulty": on_run.poll_defences.get("pow", {}).get("difficulty"),
            "risk_rules": len(on_run.poll_defences.get("risk", {}).get("rules", [])),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    ok = all(r.accepted == args.voters == r.counted_total for r in runs)
    result["all_accepted_and_counted"] = ok
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if ok else 1


def _print(r: dict[str, Any]) -> None:
    print(f"voters {r['voters']}  concurrency {r['concurrency']}  (defences off, on, off)")
    for name, s in [("off", r["off"][0]), ("on", r["on"]), ("off", r["off"][1])]:
        print(
            f"defences {name:<4} {s['votes_per_s']:>9,.0f} votes/s  p50 {s['p50_ms']} ms  "
            f"p99 {s['p99_ms']} ms  accepted {s['accepted']:,}  counted {s['counted_total']:,}"
        )
    print(f"ratio on/off {r['ratio_on_to_off']:>8.3f}  (target >= 0.85)")
    print(
        f"challenge endpoint {r['challenge_endpoint_req_per_s']:,.0f} req/s "
        f"(GET .../challenge; answers pre-solved in {r['presolve_s']} s, not timed)"
    )
    print(f"layers on: {r['on_layers']}, edge token bucket per address")
    if not r["all_accepted_and_counted"]:
        print("NOT every vote was accepted and counted: see statuses", r["on"]["statuses"])

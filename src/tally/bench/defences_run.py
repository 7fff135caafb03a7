"""`tally bench --defences`: what the defences cost the vote path, as the ratio of votes/s with
every defence on to votes/s with them off, measured in one run by the same client on one server.

One fresh `tally serve` (embedded Valkey, temp data dir, the built-in default defences) holds two
polls: "off" (its `defences` turn every rate limit off, proof-of-work difficulty 0, no risk
rules) and "on" (the defaults: address, subnet, voter and poll GCRA limits in Valkey, a
proof-of-work challenge of the default difficulty on every vote, the default risk rules). After a
warm-up on each, blocks of `voters / 2` votes alternate: off, on, off, on, off. The ratio is the
on blocks' mean votes/s over the off blocks': load that comes and goes on a shared machine weighs
on both sides, and both run in the same warm process. The edge's per-address token bucket is a
per-process setting, so it is on for both (a dict lookup per request).

The server trusts 127.0.0.1 as a proxy (TALLY_TRUSTED_PROXIES), and every voter is presented
from its own address in X-Forwarded-For (4 voters to a /24, so the per-address and per-subnet
limits admit them all), with one of 64 user agents and a token issued 10 minutes earlier: the
load is many ordinary voters, so the risk rules score nothing and nothing is held ("no holds").
For the on poll, each voter's challenge is FETCHED AND SOLVED BEFORE THE TIMED BLOCKS (GET
.../challenge, then this process's pool of solvers); its votes carry the answers, so the blocks
measure verifying, spending (one SET NX) and limiting, not solving. The challenge endpoint's own
rate (GET .../challenge answered per second over the same connections) is measured apart,
during the fetch. Beside votes/s, each block reports the server's CPU per vote (`tally serve` and
its valkey-server, from /proc): on a shared machine other load moves votes/s by tens of percent
from block to block, CPU per vote far less, so its ratio (off/on) is the steadier figure of what
the defences cost.
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
from tally.bench.polls import final_total
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer
from tally.security.pow import solve

HOST = "127.0.0.1"
WARMUP_VOTES = 2000
AGENTS = 64
TOKEN_AGE_S = 600
MAX_VOTERS = 65_536  # 4 to a /24 in 100.64.0.0/10
SEQUENCE = (False, True, False, True, False)  # defences off / on, block by block
DEFENCES_OFF = {
    "limits": {"address": None, "subnet": None, "voter": None, "poll": None},
    "pow": {"difficulty": 0},
    "risk": {"rules": []},
}


def voter_address(g: int) -> str:
    """Voter g's address (g counts every voter of the run): 4 to a /24, in 100.64.0.0/10."""
    subnet = g // 4
    return f"100.{64 + subnet // 256}.{subnet % 256}.{g % 4 + 1}"


@dataclass(frozen=True, slots=True)
class _Poll:
    id: str
    options: list[str]
    defences: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Block:
    """Voters `first` .. `first + len(tokens) - 1` of the run, voting in `poll`."""

    poll: _Poll
    tokens: list[str]
    first: int

    def _headers(self, i: int) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.tokens[i]}",
            "User-Agent": f"bench-browser/{i % AGENTS}",
            "X-Forwarded-For": voter_address(self.first + i),
        }

    def challenge_requests(self) -> list[bytes]:
        path = f"/v1/polls/{self.poll.id}/challenge"
        return [
            build_request("GET", path, host=HOST, headers=self._headers(i))
            for i in range(len(self.tokens))
        ]

    def vote_requests(self, proofs: list[str] | None) -> list[bytes]:
        path = f"/v1/polls/{self.poll.id}/votes"
        requests = []
        for i in range(len(self.tokens)):
            body: dict[str, str] = {"option": self.poll.options[i % len(self.poll.options)]}
            if proofs is not None:
                body["proof"] = proofs[i]
            headers = {**self._headers(i), "Content-Type": "application/json"}
            requests.append(
                build_request("POST", path, host=HOST, headers=headers, body=orjson.dumps(body))
            )
        return requests


def _solved(challenge: str) -> str:
    return f"{challenge}:{solve(challenge)}"


class _Run:
    def __init__(
        self,
        args: argparse.Namespace,
        port: int,
        admin: TallyClient,
        issuer: DevIssuer,
        server_pid: int,
    ) -> None:
        self.server_pid = server_pid
        self.args = args
        self.port = port
        self.admin = admin
        self.issuer = issuer
        self.next_voter = 0
        self.issued = time.time() - TOKEN_AGE_S

    def poll(self, title: str, defences: dict[str, Any] | None) -> _Poll:
        body: dict[str, Any] = {
            "title": title,
            "options": ["Red", "Green", "Blue", "Yellow"],
            "lanes": self.args.lanes,
        }
        if defences is not None:
            body["defences"] = defences
        created = self.admin.post("/v1/polls", body)
        opened = self.admin.post(f"/v1/polls/{created['id']}/open")
        options = [str(o["id"]) for o in opened["options"]]
        return _Poll(str(opened["id"]), options, dict(opened.get("defences", {})))

    def block(self, poll: _Poll, count: int) -> _Block:
        first = self.next_voter
        self.next_voter += count
        if self.next_voter > MAX_VOTERS:
            raise ValueError(f"at most {MAX_VOTERS} voters in one run")
        tokens = [
            self.issuer.mint(f"v{g}", alg=self.args.alg, now=self.issued)
            for g in range(first, first + count)
        ]
        return _Block(poll, tokens, first)

    def fetch(self, blocks: list[_Block]) -> tuple[list[list[str]], LoadResult]:
        """Every block's challenges, fetched in one go: (challenges per block, the load)."""
        requests = [r for b in blocks for r in b.challenge_requests()]
        load = uvloop.run(
            run_requests(HOST, self.port, requests, concurrency=self.args.concurrency)
        )
        challenges = []
        for reply in load.replies:
            if reply is None or reply.status != 200:
                raise RuntimeError(f"GET .../challenge failed: {reply and reply.status}")
            challenges.append(str(orjson.loads(reply.body)["challenge"]))
        per_block, start = [], 0
        for b in blocks:
            per_block.append(challenges[start : start + len(b.tokens)])
            start += len(b.tokens)
        return per_block, load

    def votes(self, requests: list[bytes]) -> LoadResult:
        return uvloop.run(
            run_requests(HOST, self.port, requests, concurrency=self.args.concurrency)
        )

    def measured_votes(self, requests: list[bytes]) -> tuple[LoadResult, float]:
        """The votes, and the CPU seconds the server (`tally serve` and its valkey-server) spent
        on them: unlike votes/s, barely moved by other load on a shared machine."""
        before = server_cpu_s(self.server_pid)
        load = self.votes(requests)
        return load, server_cpu_s(self.server_pid) - before


def server_cpu_s(pid: int) -> float:
    """utime + stime of `pid` and its direct children (the embedded valkey-server), in s."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    ticks = 0
    for process in [pid, *map(int, children)]:
        fields = Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, pool: ProcessPoolExecutor) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tally-bench-defences-") as data_dir:
        port = free_port()
        env = dict(os.environ, TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning")
        env["TALLY_TRUSTED_PROXIES"] = "127.0.0.1/32"
        # No archiver: its checkpoints trail the votes and would land in whichever block runs
        # then, blurring the CPU per vote of both sides; the votes do not need it.
        env["TALLY_ARCHIVER"] = "off"
        for name in ("TALLY_VALKEY_URL", "TALLY_DEFENCES", "TALLY_EDGE_RATE", "TALLY_EDGE_BURST"):
            env.pop(name, None)
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        with running(argv, host=HOST, port=port, env=env, timeout_s=60) as server:
            issuer = DevIssuer.load_or_create(Path(data_dir) / "keys")
            admin = TallyClient(
                f"http://{HOST}:{port}", issuer.mint("bench-admin", roles=["admin"])
            )
            run = _Run(args, port, admin, issuer, server.pid)
            off_poll, on_poll = run.poll("bench off", DEFENCES_OFF), run.poll("bench on", None)
            warm = min(WARMUP_VOTES, args.voters)
            size = max(1, args.voters // 2)
            warm_off, warm_on = run.block(off_poll, warm), run.block(on_poll, warm)
            blocks = [run.block(on_poll if on else off_poll, size) for on in SEQUENCE]
            on_blocks = [warm_on] + [b for b, on in zip(blocks, SEQUENCE, strict=True) if on]
            challenges, fetch_load = run.fetch(on_blocks)
            started = time.perf_counter()
            solved = [list(pool.map(_solved, c, chunksize=256)) for c in challenges]
            solve_s = time.perf_counter() - started
            proofs = dict(zip((id(b) for b in on_blocks), solved, strict=True))
            run.votes(warm_off.vote_requests(None))
            run.votes(warm_on.vote_requests(proofs[id(warm_on)]))
            measured = [run.measured_votes(b.vote_requests(proofs.get(id(b)))) for b in blocks]
            counted = {
                p.id: final_total(admin, p.id) for p in (off_poll, on_poll)
            }  # warm-ups included
    return {
        "loads": [load for load, _ in measured],
        "cpu_s": [cpu for _, cpu in measured],
        "counted": counted,
        "expected": {off_poll.id: warm + size * 3, on_poll.id: warm + size * 2},
        "on_defences": on_poll.defences,
        "challenge_rate": fetch_load.throughput(),
        "solve_s": solve_s,
    }


def _summary(on: bool, load: LoadResult, cpu_s: float) -> dict[str, Any]:
    latency = load.latency_percentiles_ms(50, 99)
    return {
        "defences": "on" if on else "off",
        "votes_per_s": round(load.throughput(), 1),
        "server_cpu_us_per_vote": round(1e6 * cpu_s / max(1, len(load.completed())), 1),
        "p50_ms": round(latency["p50"], 2),
        "p99_ms": round(latency["p99"], 2),
        "statuses": load.by_status(),
    }


def run_defences_bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        measured = measure(args, pool)
    blocks = [
        _summary(on, load, cpu)
        for on, load, cpu in zip(SEQUENCE, measured["loads"], measured["cpu_s"], strict=True)
    ]
    mean = {
        side: _mean([b["votes_per_s"] for b in blocks if b["defences"] == side])
        for side in ("off", "on")
    }
    cpu = {
        side: _mean([b["server_cpu_us_per_vote"] for b in blocks if b["defences"] == side])
        for side in ("off", "on")
    }
    on_defences = measured["on_defences"]
    limits = on_defences.get("limits", {})
    all_accepted = all(b["statuses"] == {201: max(1, args.voters // 2)} for b in blocks)
    counted_ok = measured["counted"] == measured["expected"]
    result = {
        "voters_per_block": max(1, args.voters // 2),
        "concurrency": args.concurrency,
        "blocks": blocks,
        "off_votes_per_s": round(mean["off"], 1),
        "on_votes_per_s": round(mean["on"], 1),
        "ratio_on_to_off": round(mean["on"] / mean["off"], 3),
        "off_server_cpu_us_per_vote": round(cpu["off"], 1),
        "on_server_cpu_us_per_vote": round(cpu["on"], 1),
        # Votes the same server CPU gives with the defences on, per vote it gives with them off.
        "cpu_ratio_on_to_off": round(cpu["off"] / cpu["on"], 3),
        "challenge_endpoint_req_per_s": round(measured["challenge_rate"], 1),
        "presolve_s": round(measured["solve_s"], 1),
        "on_layers": {
            "limits": sorted(scope for scope, r in limits.items() if r is not None),
            "pow_difficulty": on_defences.get("pow", {}).get("difficulty"),
            "risk_rules": len(on_defences.get("risk", {}).get("rules", [])),
        },
        "all_accepted": all_accepted,
        "counted_matches": counted_ok,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if all_accepted and counted_ok else 1


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _print(r: dict[str, Any]) -> None:
    print(f"{r['voters_per_block']:,} votes a block, concurrency {r['concurrency']}, one server")
    for b in r["blocks"]:
        print(
            f"defences {b['defences']:<4} {b['votes_per_s']:>9,.0f} votes/s  "
            f"server CPU {b['server_cpu_us_per_vote']} us/vote  "
            f"p50 {b['p50_ms']} ms  p99 {b['p99_ms']} ms  statuses {b['statuses']}"
        )
    print(f"mean off {r['off_votes_per_s']:,.0f}  on {r['on_votes_per_s']:,.0f} votes/s")
    print(f"ratio on/off {r['ratio_on_to_off']:>8.3f}  (votes/s; target >= 0.85)")
    print(
        f"server CPU per vote: off {r['off_server_cpu_us_per_vote']} us, on "
        f"{r['on_server_cpu_us_per_vote']} us: ratio off/on {r['cpu_ratio_on_to_off']:.3f}"
    )
    print(
        f"challenge endpoint {r['challenge_endpoint_req_per_s']:,.0f} req/s "
        f"(GET .../challenge; answers pre-solved in {r['presolve_s']} s, not timed)"
    )
    print(f"layers on: {r['on_layers']}; the edge's token bucket per address on in both")
    print(f"every vote accepted: {r['all_accepted']}; counts match: {r['counted_matches']}")

"""A bot farm against the defences (issue 10): what gets through, what is stopped, and by which
layer, with humans voting beside it. One run, one table.

Setup: one `tally serve` (embedded Valkey, temp data dir) with TALLY_TRUSTED_PROXIES=127.0.0.1/32,
so the load generator, on loopback, presents each voter's address in X-Forwarded-For, and the
server's own default defences (TALLY_DEFENCES unset: tally.domain.defences' defaults; the poll
only raises its challenges' ttl_s to 3600 s so that answers solved before the vote phase are still
valid at its end). Every voter holds a valid token from the dev issuer.

- bots (`--bots`): addresses in 3 /24s (198.51.100/24, 203.0.113/24, 192.0.2/24, 254 hosts
  each), one user agent (a scripting library's), tokens minted just before they vote (a farm logs
  its accounts in right before the vote), sent at full speed (`--bot-concurrency` connections,
  no pacing);
- humans (`--humans`): one address each (4 to a /24 in 100.64/10), 8 browser user agents, tokens
  issued 2 to 60 minutes before the vote, paced at `--human-rate` votes a second in all.

Both solve their challenges. Every voter first fetches a challenge (GET .../challenge) and solves
it before the vote phase: PRE-SOLVED, by this process's own process pool (`--solvers` workers,
security.pow.solve, the CLI's solver), not timed with the votes. A vote answered 428 (the scorer
asking for a harder challenge) is solved by the same pool and sent again (bots at once, humans
at their pace), up to `--rounds` attempts in all; a 429 is final (a farm that retries only
spends more of its budget).

Reported, per group: final outcomes (admitted 201, held 202, limited 429, refused otherwise,
challenged = still owing a challenge after the last round, or one the pool could not solve
within `--solve-budget-s`, as a farm with that many cores could not) and how many were
challenged harder than the poll's default at some point. For the bots, the subnet budget: what the per-subnet GCRA
limit lets through while the bots vote, 3 x (burst + rate x bot seconds), and how many admitted
bot votes exceed it. Targets (issue 10): at most 5 % of bot votes beyond the subnet budget
admitted, at most 1 % of humans refused.

Run:  .venv/bin/python benchmarks/bot_farm.py [--bots 20000] [--humans 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop

from tally.bench.loadgen import LoadResult, Reply, build_request, run_requests
from tally.bench.polls import final_total
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.domain.defences import DEFAULT_DEFENCES
from tally.security.dev_issuer import DevIssuer
from tally.security.pow import difficulty_of, solve

HOST = "127.0.0.1"
BOT_SUBNETS = ("198.51.100", "203.0.113", "192.0.2")
BOT_AGENT = "python-requests/2.32.3"
HUMAN_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 Version/18.1 Safari/605",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 SamsungBrowser/26.0 Chrome",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Version/18.1 Mobile",
)
OPTIONS = ("Red", "Green", "Blue", "Yellow")
TOKEN_TTL_S = 4 * 3600
CHALLENGE_TTL_S = 3600  # the most a poll allows (domain.defences.MAX_CHALLENGE_TTL_S)
DEFAULT_DIFFICULTY = DEFAULT_DEFENCES.pow.difficulty


@dataclass
class Voter:
    kind: str  # "bot" | "human"
    subject: str
    address: str
    agent: str
    token: str = ""
    proof: str | None = None
    outcome: str = "pending"  # admitted | held | limited | refused:<code> | challenged
    challenged_harder: bool = False
    attempts: int = 0
    replies: list[Reply] = field(default_factory=list)


def bot_address(i: int) -> str:
    return f"{BOT_SUBNETS[i % 3]}.{(i // 3) % 254 + 1}"


def human_address(i: int) -> str:
    subnet = i // 4  # 4 humans to a /24, in the carrier-grade NAT range 100.64.0.0/10
    return f"100.{64 + subnet // 256}.{subnet % 256}.{i % 4 + 1}"


def voters(bots: int, humans: int) -> list[Voter]:
    return [Voter("bot", f"bot-{i}", bot_address(i), BOT_AGENT) for i in range(bots)] + [
        Voter("human", f"human-{i}", human_address(i), HUMAN_AGENTS[i % len(HUMAN_AGENTS)])
        for i in range(humans)
    ]


def headers(voter: Voter) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {voter.token}",
        "User-Agent": voter.agent,
        "X-Forwarded-For": voter.address,
    }


def challenge_request(voter: Voter, poll_id: str) -> bytes:
    return build_request("GET", f"/v1/polls/{poll_id}/challenge", host=HOST, headers=headers(voter))


def vote_request(voter: Voter, poll_id: str, option: str) -> bytes:
    body: dict[str, str] = {"option": option}
    if voter.proof is not None:
        body["proof"] = voter.proof
    return build_request(
        "POST",
        f"/v1/polls/{poll_id}/votes",
        host=HOST,
        headers={**headers(voter), "Content-Type": "application/json"},
        body=orjson.dumps(body),
    )


def solved(challenge: str) -> str:
    return f"{challenge}:{solve(challenge)}"


def solve_all(pool: ProcessPoolExecutor, challenges: list[str]) -> list[str]:
    return list(pool.map(solved, challenges, chunksize=max(1, len(challenges) // 64)))


def solve_within(
    pool: ProcessPoolExecutor, challenges: list[str], budget_s: float
) -> list[str | None]:
    """Solve what the pool can within `budget_s`; None for the rest (left unsolved)."""
    futures = [pool.submit(solved, c) for c in challenges]
    wait(futures, timeout=budget_s)
    for future in futures:
        future.cancel()  # those not started; the few running finish and are dropped
    return [f.result() if f.done() and not f.cancelled() else None for f in futures]


def body_of(reply: Reply) -> dict[str, Any]:
    try:
        document = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


class Farm:
    def __init__(
        self, args: argparse.Namespace, port: int, issuer: DevIssuer, poll: dict[str, Any]
    ):
        self.args = args
        self.port = port
        self.issuer = issuer
        self.poll_id = str(poll["id"])
        self.options = [str(o["id"]) for o in poll["options"]]
        self.voters = voters(args.bots, args.humans)
        self.timings: dict[str, float] = {}

    def run(self, pool: ProcessPoolExecutor) -> None:
        self._presolve(pool)
        now = time.time()
        for v in self.voters:  # the farm logs in now; humans logged in a while ago
            if v.kind == "bot":
                v.token = self.issuer.mint(v.subject, now=now)
        for round_ in range(self.args.rounds):
            pending = [v for v in self.voters if v.outcome in ("pending", "challenged")]
            if not pending:
                break
            started = time.perf_counter()
            uvloop.run(self._votes(pending))
            self.timings[f"round {round_ + 1} s"] = time.perf_counter() - started
            again = [v for v in pending if v.outcome == "challenged"]
            if again and round_ + 1 < self.args.rounds:
                started = time.perf_counter()
                challenges = [body_of(v.replies[-1])["challenge"] for v in again]
                proofs = solve_within(pool, challenges, self.args.solve_budget_s)
                for v, proof in zip(again, proofs, strict=True):
                    v.proof = proof
                    if proof is None:
                        v.outcome = "unsolved"  # the farm's CPU ran out first: not sent again
                self.timings[f"solve {round_ + 1} s"] = time.perf_counter() - started

    def _presolve(self, pool: ProcessPoolExecutor) -> None:
        """Log every voter in, fetch a challenge for each, solve them all (not timed)."""
        rng = random.Random(10)
        now = time.time()
        for v in self.voters:
            issued = now if v.kind == "bot" else now - rng.uniform(120, 3600)
            # Valid for 4 h from issue: long past the run, however slowly it goes.
            v.token = self.issuer.mint(v.subject, now=issued, ttl_s=TOKEN_TTL_S)
        started = time.perf_counter()
        requests = [challenge_request(v, self.poll_id) for v in self.voters]
        load = uvloop.run(run_requests(HOST, self.port, requests, concurrency=32))
        challenges: list[tuple[Voter, str]] = []
        for v, reply in zip(self.voters, load.replies, strict=True):
            if reply is not None and reply.status == 200:
                challenges.append((v, body_of(reply)["challenge"]))
        self.timings["fetch challenges s"] = time.perf_counter() - started
        self.fetch_failures = len(self.voters) - len(challenges)
        started = time.perf_counter()
        proofs = solve_all(pool, [c for _, c in challenges])
        for (v, _), proof in zip(challenges, proofs, strict=True):
            v.proof = proof
        self.timings["pre-solve s"] = time.perf_counter() - started

    async def _votes(self, pending: list[Voter]) -> None:
        import asyncio

        bots = [v for v in pending if v.kind == "bot"]
        humans = [v for v in pending if v.kind == "human"]
        jobs = []
        if bots:
            jobs.append(self._send(bots, self.args.bot_concurrency, None))
        if humans:
            jobs.append(self._send(humans, self.args.human_concurrency, self.args.human_rate))
        await asyncio.gather(*jobs)

    async def _send(self, group: list[Voter], concurrency: int, rate: float | None) -> None:
        requests = [
            vote_request(v, self.poll_id, self.options[int(v.subject.split("-")[1]) % 4])
            for v in group
        ]
        load: LoadResult = await run_requests(
            HOST, self.port, requests, concurrency=concurrency, rate_per_s=rate
        )
        for v, reply in zip(group, load.replies, strict=True):
            v.attempts += 1
            if reply is None:
                v.outcome = "refused:transport"
                continue
            v.replies.append(reply)
            v.outcome = classify(v, reply)


def classify(voter: Voter, reply: Reply) -> str:
    if reply.status == 201:
        return "admitted"
    if reply.status == 202:
        return "held"
    if reply.status == 429:
        return "limited"
    body = body_of(reply)
    if reply.status == 428:
        if (difficulty_of(str(body.get("challenge", ""))) or 0) > DEFAULT_DIFFICULTY:
            voter.challenged_harder = True
        return "challenged"
    return f"refused:{body.get('code', reply.status)}"


def bot_window_s(farm: Farm) -> float:
    """From the first bot vote's write to the last bot reply: while the subnet budget accrues."""
    replies = [r for v in farm.voters if v.kind == "bot" for r in v.replies]
    if not replies:
        return 0.0
    return max(r.completed_at for r in replies) - min(r.completed_at - r.latency_s for r in replies)


def report(
    farm: Farm, counted_total: int, verdicts: dict[str, int], wall_s: float
) -> dict[str, Any]:
    args = farm.args
    result: dict[str, Any] = {"bots": args.bots, "humans": args.humans}
    for kind in ("bot", "human"):
        group = [v for v in farm.voters if v.kind == kind]
        outcomes = Counter(v.outcome.split(":")[0] for v in group)
        result[kind] = {
            "admitted": outcomes["admitted"],
            "held": outcomes["held"],
            "limited": outcomes["limited"],
            "challenged": outcomes["challenged"] + outcomes["unsolved"],
            "refused": outcomes["refused"],
            "refusals": dict(Counter(v.outcome for v in group if v.outcome.startswith("refused"))),
            "challenged_harder": sum(v.challenged_harder for v in group),
        }
    subnet = DEFAULT_DEFENCES.limits.subnet
    assert subnet is not None
    window_s = bot_window_s(farm)
    budget = int(len(BOT_SUBNETS) * (subnet.burst + subnet.per_s * window_s))
    bots = result["bot"]
    beyond = max(0, bots["admitted"] - budget)
    humans = result["human"]
    result.update(
        bot_seconds=round(window_s, 2),
        subnet_budget=budget,
        bots_beyond_budget_admitted=beyond,
        bots_beyond_budget_pct=round(100 * beyond / max(1, args.bots), 2),
        humans_refused_pct=round(
            100 * (humans["refused"] + humans["limited"]) / max(1, args.humans), 2
        ),
        counted_total=counted_total,
        count_matches=counted_total == bots["admitted"] + humans["admitted"],
        challenge_fetch_failures=farm.fetch_failures,
        risk_verdicts=verdicts,
        timings_s={k: round(t, 1) for k, t in farm.timings.items()},
        wall_s=round(wall_s, 1),
    )
    return result


def print_table(r: dict[str, Any]) -> None:
    print(f"bot farm: {r['bots']:,} bots from 3 /24s at full speed, {r['humans']:,} humans")
    print(f"{'':<10}{'admitted':>10}{'held':>8}{'limited':>9}{'challenged':>12}{'refused':>9}"
          f"{'harder 428':>12}")  # fmt: skip
    for kind in ("bot", "human"):
        g = r[kind]
        print(
            f"{kind + 's':<10}{g['admitted']:>10,}{g['held']:>8,}{g['limited']:>9,}"
            f"{g['challenged']:>12,}{g['refused']:>9,}{g['challenged_harder']:>12,}"
        )
    print(
        f"subnet budget over the bots' {r['bot_seconds']} s: {r['subnet_budget']:,} votes; "
        f"bot votes admitted beyond it: {r['bots_beyond_budget_admitted']:,} "
        f"({r['bots_beyond_budget_pct']} %, target <= 5 %)"
    )
    print(
        f"humans refused or limited: {r['humans_refused_pct']} % (target <= 1 %); "
        f"refusals: bots {r['bot']['refusals'] or 'none'}, humans {r['human']['refusals'] or 'none'}"
    )
    print(
        f"counted {r['counted_total']:,} = admitted: {'OK' if r['count_matches'] else 'MISMATCH'}"
    )
    print(f"risk verdicts: {r['risk_verdicts']}")
    print(f"times (s): {r['timings_s']}  wall {r['wall_s']}")


def risk_verdicts(port: int) -> dict[str, int]:
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    prefix = "tally_risk_verdicts_total{"
    return {
        line[len(prefix) :].split("}")[0]: int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bots", type=int, default=20_000)
    parser.add_argument("--humans", type=int, default=20_000)
    parser.add_argument("--human-rate", type=float, default=250.0, help="human votes/s in all")
    parser.add_argument("--bot-concurrency", type=int, default=64)
    parser.add_argument("--human-concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="attempts per voter")
    parser.add_argument("--solvers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--solve-budget-s",
        type=float,
        default=60.0,
        help="wall seconds the pool gets for the 428s' challenges between rounds",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tally-botfarm-") as data_dir:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "TALLY_DEFENCES"}
        env.update(
            TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning", TALLY_TRUSTED_PROXIES="127.0.0.1/32"
        )
        env.pop("TALLY_VALKEY_URL", None)
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        with running(argv, host=HOST, port=port, env=env, timeout_s=60):
            issuer = DevIssuer.load_or_create(Path(data_dir) / "keys")
            admin = TallyClient(f"http://{HOST}:{port}", issuer.mint("admin", roles=["admin"]))
            poll = admin.post(
                "/v1/polls",
                {
                    "title": "bot farm",
                    "options": list(OPTIONS),
                    "lanes": 16,
                    "defences": {"pow": {"ttl_s": CHALLENGE_TTL_S}},
                },
            )
            poll = admin.post(f"/v1/polls/{poll['id']}/open")
            farm = Farm(args, port, issuer, poll)
            with ProcessPoolExecutor(max_workers=args.solvers) as pool:
                farm.run(pool)
            verdicts = risk_verdicts(port)
            counted = final_total(admin, farm.poll_id)
    result = report(farm, counted, verdicts, time.perf_counter() - started)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

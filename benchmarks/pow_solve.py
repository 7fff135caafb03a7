"""Proof-of-work: what a challenge costs the voter, and what checking its answer costs the gateway.

1. Solve time in real Chromium (the same headless /usr/bin/chromium the page tests drive, with
   the same flags), per difficulty. The page's own files (`GET /` and /static/, served by the
   gateway's page routes under its Content-Security-Policy) are loaded and the page's `solve`
   (static/pow.js, which runs static/pow-worker.js: a Web Worker hashing with WebCrypto) solves
   fresh challenges; each answer is checked with `Challenges.verify`. Per difficulty: median and
   p90 of the solve time, and hashes/s (nonces tried / time). The same challenges are also solved
   by `tally.security.pow.solve` (what `tally vote` runs: hashlib, one core) for comparison.
   Solve times are geometric: at d bits a solve takes 2**d hashes on average, but any one can take
   much more or less, so the medians need several samples.

2. Verification cost per vote on the gateway, in µs of this process's CPU:
   stateless   `Challenges.verify` (parse, HMAC, bindings, expiry, one SHA-256)
   check       the whole `ChallengeCheck.check`: the voter's pseudonym (HMAC), verify, and the
               single-use claim `SET NX PX` on a real valkey-server (appendfsync always, as Tally
               runs it), `--concurrency` checks in flight as on a busy gateway (the claims leave
               in one write per event-loop tick). Also its wall time per vote and, for scale,
               issuing one challenge.

Run:  .venv/bin/python benchmarks/pow_solve.py [--difficulties 8 12 14 16 18 20] [--samples 10]
      [--verify-votes 20000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import sync_playwright
from starlette.applications import Starlette

from tally.bench.processes import free_port
from tally.domain.admission import Admit, Evidence, Refuse, Transport, Voter, VoteRequest
from tally.domain.defences import Defences, ProofOfWork
from tally.domain.polls import Option, Poll, PollState
from tally.domain.pseudonyms import pseudonym
from tally.gateway.pages import page_routes
from tally.security.pow import Challenges, Solved, solve
from tally.service.challenges import ChallengeCheck
from tally.store.challenges import ValkeySpentChallenges
from tally.store.embedded import EmbeddedValkey
from tally.store.resp import Valkey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from headless_chromium import CHROMIUM, LAUNCH_ARGS  # the page tests' browser

HOST = "127.0.0.1"
POLL_ID = "tv-final-2026-grand-final"  # a realistic length: the answer's length sets hash cost
SECRET = secrets.token_bytes(32)
VOTER = Voter("https://id.example", "viewer-0001")


HEADER = (
    "| bits | expected hashes | samples | median ms | p90 ms | hashes/s "
    "| expected ms (hashes / rate) | tally vote median ms |"
)
RULE = "|---:|---:|---:|---:|---:|---:|---:|---:|"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def page_server() -> Iterator[str]:
    """The gateway's page routes (the page, pow.js, pow-worker.js) on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=page_routes()), host=HOST, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


SOLVE_IN_PAGE = """async (doc) => {
  const { solve } = await import("/static/pow.js");
  let hashes = 0;
  const started = performance.now();
  const proof = await solve(doc, (n) => { hashes = n; });
  return { ms: performance.now() - started, proof, hashes };
}"""


def chromium_solves(difficulties: Sequence[int], samples: int) -> list[dict[str, Any]]:
    challenges = Challenges(SECRET)
    voter_pseudonym = pseudonym(SECRET, POLL_ID, VOTER.issuer, VOTER.subject)
    rows = []
    if not difficulties:
        return []
    with page_server() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        page = browser.new_page()
        page.goto(url + "/")  # the page's origin and CSP: the worker loads as it does for voters
        workers = min(4, int(page.evaluate("navigator.hardwareConcurrency")))
        print(f"Chromium {browser.version}, {workers} worker(s)", file=sys.stderr)
        page.evaluate(SOLVE_IN_PAGE, _doc(challenges.issue(POLL_ID, voter_pseudonym, 4, 0, 60)))
        for difficulty in difficulties:
            times, hashes, python_times = [], [], []
            for _ in range(samples):
                now_ms = time.time_ns() // 1_000_000
                challenge = challenges.issue(POLL_ID, voter_pseudonym, difficulty, now_ms, 600)
                result = page.evaluate(SOLVE_IN_PAGE, _doc(challenge))
                verified = challenges.verify(
                    result["proof"], POLL_ID, voter_pseudonym, difficulty, now_ms
                )
                assert isinstance(verified, Solved), (result, verified)
                times.append(result["ms"] / 1000)
                hashes.append(result["hashes"])
                started = time.perf_counter()
                solve(challenge)
                python_times.append(time.perf_counter() - started)
            rows.append(
                {
                    "difficulty": difficulty,
                    "expected_hashes": 2**difficulty,
                    "samples": samples,
                    "median_s": statistics.median(times),
                    "p90_s": percentile(times, 0.9),
                    "hashes_per_s": sum(hashes) / sum(times),
                    "expected_s": 2**difficulty / (sum(hashes) / sum(times)),
                    "python_median_s": statistics.median(python_times),
                    "workers": workers,
                }
            )
            print(_solve_line(rows[-1]), file=sys.stderr)
        browser.close()
    return rows


def _doc(challenge: str) -> dict[str, Any]:
    return {"challenge": challenge, "difficulty": int(challenge.split(".")[3])}


def _solve_line(row: dict[str, Any]) -> str:
    return (
        f"| {row['difficulty']} | {row['expected_hashes']:,} | {row['samples']} "
        f"| {row['median_s'] * 1000:,.0f} | {row['p90_s'] * 1000:,.0f} "
        f"| {row['hashes_per_s']:,.0f} | {row['expected_s'] * 1000:,.0f} "
        f"| {row['python_median_s'] * 1000:,.0f} |"
    )


POLL = Poll(
    id=POLL_ID,
    title="bench",
    options=(Option("red", "Red"),),
    state=PollState.OPEN,
    lanes=16,
    closes_at_ms=None,
    created_at_ms=0,
    bucket_bits=4,
    defences=Defences(pow=ProofOfWork(difficulty=0)),
)


async def verification(votes: int, concurrency: int) -> dict[str, Any]:
    challenges = Challenges(SECRET)
    voter_pseudonym = pseudonym(SECRET, POLL_ID, VOTER.issuer, VOTER.subject)
    now_ms = time.time_ns() // 1_000_000
    # Difficulty 0: any nonce solves it, and verifying still hashes the answer once.
    answers = [
        challenges.issue(POLL_ID, voter_pseudonym, 0, now_ms, 600) + ":0" for _ in range(votes)
    ]
    # This process's CPU time, best of 5: on a shared machine the rest is other processes.
    loops = 5_000
    issue_s = min(
        timeit.Timer(
            lambda: challenges.issue(POLL_ID, voter_pseudonym, 12, now_ms, 300),
            timer=time.process_time,
        ).repeat(number=loops, repeat=5)
    )
    one = answers[0]
    stateless_s = min(
        timeit.Timer(
            lambda: challenges.verify(one, POLL_ID, voter_pseudonym, 0, now_ms),
            timer=time.process_time,
        ).repeat(number=loops, repeat=5)
    )
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedValkey(Path(directory))
        await server.start()
        client = Valkey(server.endpoint)
        try:
            await client.connect()
            check = ChallengeCheck(challenges, ValkeySpentChallenges(client), SECRET)
            requests = [
                VoteRequest(POLL_ID, VOTER, "red", Evidence(Transport.HTTP, "127.0.0.1", "", a))
                for a in answers
            ]
            cpu, wall = time.process_time(), time.perf_counter()
            for start in range(0, votes, concurrency):
                batch = requests[start : start + concurrency]
                verdicts = await asyncio.gather(*(check.check(r, POLL, now_ms) for r in batch))
                assert all(isinstance(v, Admit) for v in verdicts), verdicts[:3]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            replay = await check.check(requests[0], POLL, now_ms)
            assert isinstance(replay, Refuse), replay
        finally:
            await client.close()
            await server.stop()
    return {
        "issue_us": issue_s / loops * 1e6,
        "stateless_us": stateless_s / loops * 1e6,
        "check_cpu_us": cpu / votes * 1e6,
        "check_wall_us": wall / votes * 1e6,
        "votes": votes,
        "concurrency": concurrency,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--difficulties", type=int, nargs="+", default=[8, 12, 14, 16, 18, 20])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--verify-votes", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-browser", action="store_true", help="only the gateway's verification cost"
    )
    args = parser.parse_args(argv)
    if args.no_browser:
        args.difficulties = []

    print(
        HEADER,
        file=sys.stderr,
    )
    print(RULE, file=sys.stderr)
    solves = chromium_solves(args.difficulties, args.samples)
    cost = asyncio.run(verification(args.verify_votes, args.concurrency))
    if args.json:
        print(json.dumps({"solve": solves, "verify": cost}, indent=2))
        return 0
    print()
    print(HEADER)
    print(RULE)
    for row in solves:
        print(_solve_line(row))
    print()
    print("| gateway, per vote | µs |")
    print("|---|---:|")
    print(f"| issue a challenge (HMAC) | {cost['issue_us']:.1f} |")
    print(
        f"| verify an answer, stateless (parse, HMAC, one SHA-256) | {cost['stateless_us']:.1f} |"
    )
    print(
        f"| ChallengeCheck with SET NX PX, CPU ({cost['concurrency']} in flight, "
        f"{cost['votes']:,} votes) | {cost['check_cpu_us']:.1f} |"
    )
    print(f"| ChallengeCheck with SET NX PX, wall | {cost['check_wall_us']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

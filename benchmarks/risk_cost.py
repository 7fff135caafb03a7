"""The fraud scorer's own cost per vote, in process: `RiskCheck.check` (signals, the default
rules, verdict) and `Traffic.answered` (the counters fed by each answer), for votes from distinct
addresses with 64 user agents and tokens 10 minutes old (nothing scores), with a clock that
moves 1 ms a vote.

Two passes over the same addresses: the first pays `security.addresses`' ipaddress parsing for
each new address; the second finds them in its caches, as the scorer does in a gateway, where
the rate limits looked the same address up first.

Run:  .venv/bin/python benchmarks/risk_cost.py [--votes 50000]   (at most 65,536: the caches' size)
"""

from __future__ import annotations

import argparse
import asyncio
import time

from tally.domain.admission import Evidence, Transport, Voter, VoteRequest
from tally.domain.defences import Defences
from tally.domain.polls import Option, Poll, PollState
from tally.security.pow import Challenges
from tally.service.risk import RiskCheck, Traffic

START_MS = 1_800_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--votes", type=int, default=50_000)
    votes: int = min(parser.parse_args().votes, 65_536)
    clock = [START_MS]
    traffic = Traffic(lambda: clock[0])
    check = RiskCheck(traffic, Challenges(b"s" * 32), b"s" * 32, lambda verdict, reason: None)
    poll = Poll("p", "t", (Option("red", "Red"),), PollState.OPEN, 16, None, 0, 8, Defences())
    requests = [
        VoteRequest(
            "p",
            Voter("iss", f"v{i}", START_MS // 1000 - 600),
            "red",
            Evidence(Transport.HTTP, f"100.{64 + i // 65536}.{i // 256 % 256}.{i % 256}", f"a/{i % 64}"),
        )
        for i in range(votes)
    ]  # fmt: skip

    async def one_pass() -> float:
        started = time.perf_counter()
        for request in requests:
            clock[0] += 1
            await check.check(request, poll, clock[0])
            traffic.answered(request.evidence, 201)
        return (time.perf_counter() - started) / votes * 1e6

    print(f"{votes:,} votes from distinct addresses, 64 user agents")
    print(f"new addresses:    {asyncio.run(one_pass()):.2f} us per vote")
    print(f"cached addresses: {asyncio.run(one_pass()):.2f} us per vote")


if __name__ == "__main__":
    main()

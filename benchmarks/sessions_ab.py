"""Before/after of the vote path in one run: `tally bench --sessions`'s session votes against two
source trees side by side, each as a ratio to the hello-world baseline of the same round.

On a shared machine the load comes and goes between runs, so two separate bench runs cannot tell
a 10 % change from noise. Here one `tally serve` per tree (each its own data dir, embedded
valkey-server, archiver and defences off, as in `tally bench --sessions`) and the baseline run at
once; each round times the baseline, then the two trees in turn first, `--voters` signed-in
voters each (a session credential the gateway has not seen: the burst when a poll opens).

    git worktree add /tmp/before <commit>      # or: cp -r src /tmp/before/src before a change
    .venv/bin/python benchmarks/sessions_ab.py --before /tmp/before/src [--voters 8000 --rounds 5]

Reports per round and as medians: votes/s / baseline req/s for each tree, after / before, and the
gateway process's own CPU per vote (utime + stime of `tally serve`, valkey-server excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import uvloop

from tally.bench.interleaved import HOST, baseline, open_poll
from tally.bench.loadgen import build_request, run_requests
from tally.bench.sessions_run import session_requests, tally_serve

CONCURRENCY = 64
LANES = 16


def _cpu_s(pid: int) -> float:
    """utime + stime of the gateway process alone (its valkey-server child is not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _block(port: int, pid: int, requests: list[bytes]) -> tuple[float, float]:
    """(requests/s, the process's CPU µs per request) of one block."""
    before = _cpu_s(pid)
    load = uvloop.run(run_requests(HOST, port, requests, concurrency=CONCURRENCY))
    if load.by_status() not in ({200: len(requests)}, {201: len(requests)}):
        raise SystemExit(f"unexpected answers: {load.by_status()}")
    return load.throughput(), 1e6 * (_cpu_s(pid) - before) / len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the src dir of the old tree")
    parser.add_argument("--after", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--voters", type=int, default=8000, help="requests per block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after}
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        base_port, base_pid = stack.enter_context(baseline())
        servers = {
            name: stack.enter_context(tally_serve(LANES, ("sessions",), src=src))
            for name, src in trees.items()
        }
        hello = build_request("GET", "/hello", host=HOST)
        _block(base_port, base_pid, [hello] * 2000)
        for server in servers.values():  # warm-up: 2,000 votes in a poll of their own
            warm = open_poll(server.admin, "warm-up", LANES)
            _block(server.port, server.pid, session_requests(server, warm, 2000, 10**9))
        pending = {
            name: [
                session_requests(server, server.polls["sessions"], args.voters, r * args.voters)
                for r in range(args.rounds)
            ]
            for name, server in servers.items()
        }
        for rnd in range(args.rounds):
            row: dict[str, Any] = {"round": rnd + 1}
            row["baseline"], _ = _block(base_port, base_pid, [hello] * args.voters)
            for name in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
                server = servers[name]
                per_s, cpu_us = _block(server.port, server.pid, pending[name][rnd])
                row[name] = per_s
                row[f"{name}_to_baseline"] = round(per_s / row["baseline"], 3)
                row[f"{name}_cpu_us"] = round(cpu_us, 1)
            row["after_to_before"] = round(row["after"] / row["before"], 3)
            rows.append(row)
            if not args.json:
                print(
                    f"round {rnd + 1}: baseline {row['baseline']:,.0f}/s  before "
                    f"{row['before']:,.0f}/s ({row['before_to_baseline']:.3f}x, "
                    f"{row['before_cpu_us']} us CPU)  after {row['after']:,.0f}/s "
                    f"({row['after_to_baseline']:.3f}x, {row['after_cpu_us']} us CPU)  "
                    f"after/before {row['after_to_before']:.3f}",
                    flush=True,
                )
    keys = [
        "before_to_baseline",
        "after_to_baseline",
        "after_to_before",
        "before_cpu_us",
        "after_cpu_us",
    ]
    median = {key: round(float(statistics.median(r[key] for r in rows)), 3) for key in keys}
    if args.json:
        print(json.dumps({"rounds": rows, "median": median, "voters": args.voters}))
    else:
        print("median", "  ".join(f"{key} {value}" for key, value in median.items()))


if __name__ == "__main__":
    main()

"""`tally bench --sessions`: vote throughput of one gateway process with Tally voting sessions
(security/sessions.py: one HMAC per credential check) against bearer JWTs (`--alg`, RS256 for the
issue's comparison), each a ratio to the hello-world baseline measured in the same run.

Both credentials are accepted by every gateway, so one `tally serve` (its own temporary data dir
and embedded valkey-server, the archiver off, the defences off as in plain `tally bench`) takes
both kinds of votes, each side in a poll of its own; the Starlette hello-world
(`tally.bench.baseline`) runs beside it. After a warm-up, rounds of three blocks of `--voters`
requests follow, the two vote blocks in turn first (bench/interleaved.py), so load that comes and
goes on a shared machine weighs on both sides:

    round 1: baseline, sessions, jwt
    round 2: baseline, jwt, sessions    ...

Every voter votes once with a credential the gateway has not seen, so neither verifier's cache
helps: this is the burst when a poll opens, each signed-in voter's first vote. The sessions are
minted before the timed blocks with the server's own session key (data/keys/session.key, read as
the gateway reads it), exactly what /auth/callback mints after a sign-in; the JWTs by the dev
issuer, as plain `tally bench` does. Each block reports votes/s, latency and the server's CPU per
request (`tally serve` and its valkey-server, from /proc); the summary is the median over rounds
of sessions / baseline, jwt / baseline and sessions / jwt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from tally.bench.interleaved import HOST, baseline, block_doc, open_poll, order, timed
from tally.bench.loadgen import build_request, run_requests
from tally.bench.polls import final_total, vote_requests
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer
from tally.security.sessions import SessionKeys, Sessions

__all__ = ["SIDES", "run_sessions_bench"]

WARMUP = 2000
SIDES = ("sessions", "jwt")
TARGET = 0.6  # sessions / baseline the issue asks for


@dataclass(frozen=True, slots=True)
class _Server:
    port: int
    pid: int
    admin: TallyClient
    issuer: DevIssuer
    sessions: Sessions
    polls: dict[str, tuple[str, list[str]]]  # side -> (poll id, option ids)


@contextmanager
def tally_serve(
    lanes: int, sides: Sequence[str] = SIDES, *, src: Path | None = None
) -> Iterator[_Server]:
    """`tally serve` in a temporary data dir, with an open bench poll per side. `src`: run the
    tally package of that source tree instead of this one (benchmarks/sessions_ab.py)."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-sessions-") as data_dir:
        port = free_port()
        env = dict(os.environ, TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning")
        for name in ("TALLY_VALKEY_URL", "TALLY_SESSION_KEYS", "TALLY_JWKS"):
            env.pop(name, None)
        env.update(TALLY_EDGE_RATE="0", TALLY_ARCHIVER="off")  # one address sends every vote
        if src is not None:
            env["PYTHONPATH"] = str(src.resolve())
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        with running(argv, host=HOST, port=port, env=env, timeout_s=60) as process:
            issuer = DevIssuer.load_or_create(Path(data_dir) / "keys")
            sessions = Sessions(SessionKeys.load_or_create(Path(data_dir)))
            admin = TallyClient(
                f"http://{HOST}:{port}", issuer.mint("bench-admin", roles=["admin"])
            )
            polls = {side: open_poll(admin, f"bench {side}", lanes) for side in sides}
            yield _Server(port, process.pid, admin, issuer, sessions, polls)


def session_requests(
    server: _Server, side_poll: tuple[str, list[str]], voters: int, first: int
) -> list[bytes]:
    """Vote requests of `voters` new signed-in voters, each with its own session credential."""
    poll_id, options = side_poll
    requests = []
    for i in range(first, first + voters):
        token, _ = server.sessions.mint(server.issuer.issuer, f"session-{i}", ())
        requests.append(
            build_request(
                "POST",
                f"/v1/polls/{poll_id}/votes",
                host=HOST,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                body=b'{"option":"%b"}' % options[i % len(options)].encode(),
            )
        )
    return requests


def _requests(server: _Server, side: str, voters: int, alg: str, first: int) -> list[bytes]:
    poll = server.polls[side]
    if side == "sessions":
        return session_requests(server, poll, voters, first)
    return vote_requests(server.issuer, poll[0], poll[1], voters, alg, "jwt-", first=first)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    voters, conc = args.voters, args.concurrency
    with ExitStack() as stack:
        base_port, base_pid = stack.enter_context(baseline())
        server = stack.enter_context(tally_serve(args.lanes))
        hello = build_request("GET", "/hello", host=HOST)
        warm = min(WARMUP, voters)
        uvloop.run(run_requests(HOST, base_port, [hello] * warm, concurrency=conc))
        warm_server = _Server(
            server.port,
            server.pid,
            server.admin,
            server.issuer,
            server.sessions,
            {side: open_poll(server.admin, f"warm-up {side}", args.lanes) for side in SIDES},
        )
        for side in SIDES:
            warm_up = _requests(warm_server, side, warm, args.alg, 10**9)
            uvloop.run(run_requests(HOST, server.port, warm_up, concurrency=conc))
        # Credentials are made before the timed blocks: minting is the bench's work.
        pending = {
            side: [
                _requests(server, side, voters, args.alg, r * voters) for r in range(args.rounds)
            ]
            for side in SIDES
        }
        blocks = []
        for rnd, sides in enumerate(order(args.rounds, SIDES)):
            for side in sides:
                if side == "baseline":
                    blocks.append(timed(side, rnd, base_port, base_pid, [hello] * voters, conc))
                else:
                    port, pid = server.port, server.pid
                    blocks.append(timed(side, rnd, port, pid, pending[side][rnd], conc))
        counted = {side: final_total(server.admin, server.polls[side][0]) for side in SIDES}
    return {"blocks": blocks, "counted": counted}


def summary(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    docs = [block_doc(b) for b in measured["blocks"]]

    def of(side: str, rnd: int) -> dict[str, Any]:
        return next(d for d in docs if d["side"] == side and d["round"] == rnd + 1)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    rounds = []
    for rnd in range(args.rounds):
        base, sessions, jwt = of("baseline", rnd), of("sessions", rnd), of("jwt", rnd)
        rounds.append(
            {
                "round": rnd + 1,
                "sessions_to_baseline": ratio(sessions["per_s"], base["per_s"]),
                "jwt_to_baseline": ratio(jwt["per_s"], base["per_s"]),
                "sessions_to_jwt": ratio(sessions["per_s"], jwt["per_s"]),
                # Server CPU a JWT vote takes, per unit a session vote takes.
                "cpu_jwt_to_sessions": ratio(
                    jwt["cpu_us_per_request"], sessions["cpu_us_per_request"]
                ),
            }
        )

    def median(key: str, rows: list[dict[str, Any]]) -> float:
        return round(float(statistics.median(row[key] for row in rows)), 3)

    def side_docs(side: str) -> list[dict[str, Any]]:
        return [d for d in docs if d["side"] == side]

    accepted = {side: sum(d["statuses"].get(201, 0) for d in side_docs(side)) for side in SIDES}
    result: dict[str, Any] = {
        "voters_per_block": args.voters,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "jwt_alg": args.alg,
        "lanes": args.lanes,
        "blocks": docs,
        "per_round": rounds,
        "median": {
            side: {
                "per_s": median("per_s", side_docs(side)),
                "cpu_us_per_request": median("cpu_us_per_request", side_docs(side)),
            }
            for side in ("baseline", *SIDES)
        },
        **{
            key: median(key, rounds)
            for key in (
                "sessions_to_baseline",
                "jwt_to_baseline",
                "sessions_to_jwt",
                "cpu_jwt_to_sessions",
            )
        },
        "target_sessions_to_baseline": TARGET,
        "all_accepted": all(
            d["statuses"] == {(201 if d["side"] in SIDES else 200): args.voters} for d in docs
        ),
        "counted_matches": {s: measured["counted"][s] == accepted[s] for s in SIDES},
        "warmup_per_side": min(WARMUP, args.voters),
    }
    result["meets_target"] = result["sessions_to_baseline"] >= TARGET
    return result


def run_sessions_bench(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        print("tally bench: --rounds must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = summary(args, measure(args))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if result["all_accepted"] and all(result["counted_matches"].values()) else 1


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['voters_per_block']:,} requests a block, {r['rounds']} rounds, concurrency "
        f"{r['concurrency']}, JWTs {r['jwt_alg']}, lanes {r['lanes']}"
    )
    for b in r["blocks"]:
        unit = "req/s  " if b["side"] == "baseline" else "votes/s"
        print(
            f"round {b['round']} {b['side']:<9} {b['per_s']:>9,.0f} {unit}  "
            f"server CPU {b['cpu_us_per_request']:>6} us/request  p50 {b['p50_ms']} ms  "
            f"p99 {b['p99_ms']} ms  statuses {b['statuses']}"
        )
    for row in r["per_round"]:
        print(
            f"round {row['round']}: sessions/baseline {row['sessions_to_baseline']:.3f}  "
            f"jwt/baseline {row['jwt_to_baseline']:.3f}  "
            f"sessions/jwt {row['sessions_to_jwt']:.3f}  "
            f"CPU per vote jwt/sessions {row['cpu_jwt_to_sessions']:.3f}"
        )
    m = r["median"]
    print(
        f"median       baseline {m['baseline']['per_s']:,.0f} req/s, sessions "
        f"{m['sessions']['per_s']:,.0f} votes/s ({m['sessions']['cpu_us_per_request']} us CPU), "
        f"jwt {m['jwt']['per_s']:,.0f} votes/s ({m['jwt']['cpu_us_per_request']} us CPU)"
    )
    print(
        f"ratio        sessions/baseline {r['sessions_to_baseline']:.3f}  "
        f"(target {r['target_sessions_to_baseline']}: "
        f"{'met' if r['meets_target'] else 'NOT met'})"
    )
    print(f"             jwt/baseline      {r['jwt_to_baseline']:.3f}")
    print(f"             sessions/jwt      {r['sessions_to_jwt']:.3f}  (votes/s)")
    print(f"             CPU per vote jwt/sessions {r['cpu_jwt_to_sessions']:.3f}")
    print(
        f"every request answered as expected: {r['all_accepted']}; counts match: "
        f"{r['counted_matches']}"
    )

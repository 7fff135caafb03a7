"""What the gateway's ACL user costs Valkey per vote: the same `FCALL tally_vote` stream sent as
the admin user (every command, key and channel) and as the gateway user (issue 11: its rules are
a root of keyless commands plus one selector per function and key family, store/acl.py), with
valkey-server's CPU per vote compared.

One embedded valkey-server (the bundled binary, started as `tally serve` starts it: every role's
ACL user, the default user off, AOF with `appendfsync always`) in a temp dir; one 16-lane poll
created and opened through the real store code. Two connections, one per user, each casting
through the real `ValkeyBallotBox` (so each vote is exactly the FCALL the gateway sends, signed
with a real admission key: 76 bytes of signature ride along), `--batch` votes in flight.

Blocks of `--votes` votes alternate admin, gateway, gateway, admin, ... (`--rounds` pairs), each
with new voters in the same poll, so the keyspace grows alike for both. Per block: votes/s and
valkey-server's CPU per vote from /proc/<pid>/stat (utime + stime; utime apart, since the kernel
part is mostly the AOF's fsyncs and moves with the disk, not with ACL checks). The ratio is
gateway / admin of the median CPU per vote: 1.00 means the ACL checks cost nothing measurable.

Before the blocks it checks that the two users really differ: the gateway user is refused a raw
FLUSHALL and an HSET outside its keys (NOPERM), the admin is not refused the same HSET.

With --callgrind, the figure that load does not move: valkey-server runs under callgrind, once
per user with --votes/4 votes and once with --votes/4 + --votes, and the difference of the
instruction totals over --votes is each user's instructions per vote (start-up cancels out).

Run:  .venv/bin/python benchmarks/acl_cost.py [--votes 20000] [--rounds 3] [--json]
      .venv/bin/python benchmarks/acl_cost.py --callgrind --votes 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import OptionSpec, Poll
from tally.domain.pseudonyms import pseudonym
from tally.domain.votes import AdmissionSignature
from tally.ledger.admission import AdmissionSigner
from tally.ledger.leaf import VoteStatus
from tally.ports import Recorded
from tally.service import NewPoll, VotingService
from tally.store import acl
from tally.store.embedded import EmbeddedValkey, find_valkey_server
from tally.store.polls import ValkeyPolls
from tally.store.resp import ReplyError, Valkey
from tally.store.votes import ValkeyBallotBox

SECRET = b"acl-cost-bench-secret"
LANES = 16
OPTIONS = ("red", "green", "blue")


def progress(message: str) -> None:
    print(f"[acl-cost] {message}", file=sys.stderr, flush=True)


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of process `pid`, in clock ticks (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


async def users_differ(admin: Valkey, gateway: Valkey) -> dict[str, Any]:
    """What each user is refused, tried for real; the selector count of the gateway user."""

    async def refused(client: Valkey, *command: str) -> bool:
        try:
            await client.execute(*command)
        except ReplyError as exc:
            return "NOPERM" in str(exc)
        return False

    rules = await admin.execute("ACL", "GETUSER", acl.username(acl.GATEWAY))
    doc = dict(zip(rules[::2], rules[1::2], strict=True))
    return {
        "gateway_selectors": len(doc.get(b"selectors", [])),
        "gateway_refused_flushall": await refused(gateway, "FLUSHALL"),
        "gateway_refused_foreign_hset": await refused(gateway, "HSET", "acl-cost:probe", "f", "1"),
        "admin_refused_foreign_hset": await refused(admin, "HSET", "acl-cost:probe", "f", "1"),
    }


async def open_poll(admin: Valkey) -> Poll:
    service = VotingService(ValkeyPolls(admin), ValkeyBallotBox(admin), pseudonym_secret=SECRET)
    spec = NewPoll("acl cost", [OptionSpec(o) for o in OPTIONS], lanes=LANES)
    poll = await service.create_poll(spec, actor="bench")
    return await service.open_poll(poll.id, actor="bench")


async def block(
    ballots: ValkeyBallotBox,
    poll: Poll,
    signer: AdmissionSigner,
    voters: range,
    batch: int,
    pid: int,
) -> dict[str, Any]:
    """Cast one vote per voter, `batch` in flight; valkey-server's CPU and the wall time."""
    options = [o.id for o in poll.options]
    now = time.time_ns() // 1_000_000
    votes = []
    for i in voters:  # signed before the clock starts: the gateway's work, not Valkey's
        p = pseudonym(SECRET, poll.id, "bench", f"v{i}")
        option = options[i % len(options)]
        a = signer.sign(poll.id, p, option, VoteStatus.ACCEPTED, now)
        votes.append((p, option, AdmissionSignature(a.admitted_ms, a.key_id, a.signature)))
    user0, sys0 = cpu_ticks(pid)
    started = time.perf_counter()
    for first in range(0, len(votes), batch):
        results = await asyncio.gather(
            *(
                ballots.cast(poll, p, option, admission=admission)
                for p, option, admission in votes[first : first + batch]
            )
        )
        if not all(isinstance(r, Recorded) for r in results):
            raise RuntimeError(f"a vote was not recorded: {results[:3]}")
    wall = time.perf_counter() - started
    user1, sys1 = cpu_ticks(pid)
    tick, n = os.sysconf("SC_CLK_TCK"), len(votes)
    return {
        "votes_per_s": round(n / wall),
        "cpu_us_per_vote": round(1e6 * (user1 - user0 + sys1 - sys0) / tick / n, 2),
        "user_us_per_vote": round(1e6 * (user1 - user0) / tick / n, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tally-acl-cost-") as tmp:
        server = EmbeddedValkey(Path(tmp))
        admin = Valkey(server.endpoint_for(acl.ADMIN))
        gateway = Valkey(server.endpoint_for(acl.GATEWAY))
        try:
            await server.start()
            await admin.connect()
            await gateway.connect()
            assert server.pid is not None
            differ = await users_differ(admin, gateway)
            poll = await open_poll(admin)
            signer = AdmissionSigner("tally.bench/admission/bench", Ed25519PrivateKey.generate())
            boxes = {"admin": ValkeyBallotBox(admin), "gateway": ValkeyBallotBox(gateway)}
            warm = range(10**9, 10**9 + min(args.votes, 5000))
            await block(boxes["admin"], poll, signer, warm, args.batch, server.pid)
            blocks: list[dict[str, Any]] = []
            order = [
                u
                for r in range(args.rounds)
                for u in (("admin", "gateway"), ("gateway", "admin"))[r % 2]
            ]
            for n, user in enumerate(order):
                voters = range(n * args.votes, (n + 1) * args.votes)
                row = await block(boxes[user], poll, signer, voters, args.batch, server.pid)
                blocks.append({"user": user, **row})
                progress(f"block {n + 1}/{len(order)} {user}: {row}")
            info: bytes = await admin.execute("INFO", "server")
        except StoreUnavailable as exc:
            raise SystemExit(f"acl-cost: {exc}") from None
        finally:
            await gateway.close()
            await admin.close()
            await server.stop()
    version = next(
        line.split(":", 1)[1]
        for line in info.decode().splitlines()
        if line.startswith("valkey_version:")
    )

    def median(user: str, field: str) -> float:
        return round(float(statistics.median(b[field] for b in blocks if b["user"] == user)), 2)

    medians = {
        user: {f: median(user, f) for f in ("votes_per_s", "cpu_us_per_vote", "user_us_per_vote")}
        for user in ("admin", "gateway")
    }
    return {
        "valkey_version": version,
        "votes_per_block": args.votes,
        "rounds": args.rounds,
        "batch": args.batch,
        "users_differ": differ,
        "blocks": blocks,
        "median": medians,
        "cpu_ratio_gateway_to_admin": round(
            medians["gateway"]["cpu_us_per_vote"] / medians["admin"]["cpu_us_per_vote"], 3
        ),
        "user_cpu_ratio_gateway_to_admin": round(
            medians["gateway"]["user_us_per_vote"] / medians["admin"]["user_us_per_vote"], 3
        ),
        "votes_per_s_ratio_gateway_to_admin": round(
            medians["gateway"]["votes_per_s"] / medians["admin"]["votes_per_s"], 3
        ),
    }


async def instructions(user: str, votes: int, root: Path, batch: int) -> int:
    """valkey-server's instruction total (callgrind) for a start, one poll and `votes` votes
    cast as `user`, and a stop."""
    out = root / f"callgrind-{user}-{votes}.out"
    wrapper = root / f"valkey-{user}-{votes}.sh"
    binary = find_valkey_server()
    wrapper.write_text(
        f'#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} {binary} "$@"\n'
    )
    wrapper.chmod(0o700)
    server = EmbeddedValkey(root / f"data-{user}-{votes}", binary=wrapper)
    admin = Valkey(server.endpoint_for(acl.ADMIN), command_timeout_s=60)
    client = Valkey(server.endpoint_for(user), command_timeout_s=60)
    try:
        await server.start(timeout_s=120)
        await admin.connect()
        await client.connect()
        assert server.pid is not None
        poll = await open_poll(admin)
        signer = AdmissionSigner("tally.bench/admission/bench", Ed25519PrivateKey.generate())
        await block(ValkeyBallotBox(client), poll, signer, range(votes), batch, server.pid)
    finally:
        await client.close()
        await admin.close()
        await server.stop(timeout_s=120)
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no instruction total in {out}")


async def run_instructions(args: argparse.Namespace) -> dict[str, Any]:
    """Instructions per vote for each user: the difference of a short and a long run, so the
    start, the functions' load, the poll and the stop cancel out."""
    small, large = args.votes // 4, args.votes // 4 + args.votes
    totals: dict[str, dict[int, int]] = {"admin": {}, "gateway": {}}
    with tempfile.TemporaryDirectory(prefix="tally-acl-cost-") as tmp:
        for user in ("admin", "gateway", "gateway", "admin"):  # each size once per user
            size = small if not totals[user] else large
            totals[user][size] = await instructions(user, size, Path(tmp), args.batch)
            progress(f"{user} {size} votes: {totals[user][size]:,} instructions")
    per_vote = {u: round((t[large] - t[small]) / args.votes) for u, t in totals.items()}
    return {
        "votes": args.votes,
        "instructions": {u: {str(k): v for k, v in t.items()} for u, t in totals.items()},
        "instructions_per_vote": per_vote,
        "ratio_gateway_to_admin": round(per_vote["gateway"] / per_vote["admin"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=20_000, help="votes per block")
    parser.add_argument("--rounds", type=int, default=3, help="admin/gateway pairs of blocks")
    parser.add_argument("--batch", type=int, default=256, help="votes in flight")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="valkey-server's instructions per vote under callgrind instead (needs valgrind; "
        "--votes is the difference of the two runs per user, e.g. 2000)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.callgrind:
        counted = uvloop.run(run_instructions(args))
        if args.json:
            print(json.dumps(counted))
            return
        for user, n in counted["instructions_per_vote"].items():
            print(f"{user:<8} {n:>10,} valkey-server instructions per vote")
        print(f"gateway / admin: {counted['ratio_gateway_to_admin']:.4f}")
        return
    r = uvloop.run(run(args))
    if args.json:
        print(json.dumps(r))
        return
    d = r["users_differ"]
    print(
        f"valkey {r['valkey_version']}: {r['votes_per_block']:,} votes a block, {r['rounds']} "
        f"rounds, {r['batch']} in flight; gateway user: {d['gateway_selectors']} selectors, "
        f"refused FLUSHALL {d['gateway_refused_flushall']}, a foreign HSET "
        f"{d['gateway_refused_foreign_hset']} (admin: {d['admin_refused_foreign_hset']})"
    )
    for b in r["blocks"]:
        print(
            f"{b['user']:<8} {b['votes_per_s']:>8,} votes/s  valkey CPU {b['cpu_us_per_vote']:>6} "
            f"us/vote (user {b['user_us_per_vote']})"
        )
    m = r["median"]
    for user in ("admin", "gateway"):
        print(
            f"median {user:<8} {m[user]['votes_per_s']:>8,.0f} votes/s  "
            f"{m[user]['cpu_us_per_vote']} us/vote (user {m[user]['user_us_per_vote']})"
        )
    print(
        f"gateway / admin: valkey CPU per vote {r['cpu_ratio_gateway_to_admin']:.3f} "
        f"(user {r['user_cpu_ratio_gateway_to_admin']:.3f}), votes/s "
        f"{r['votes_per_s_ratio_gateway_to_admin']:.3f}"
    )


if __name__ == "__main__":
    main()

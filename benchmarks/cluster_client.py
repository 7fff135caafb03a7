"""Choosing the cluster client (issue 9): the vote path through our `ValkeyCluster` against redis-py's
`redis.asyncio.cluster.RedisCluster` (and valkey-glide's `GlideClusterClient`, when installed),
on one real local Valkey Cluster.

Setup: `LocalCluster` (the bundled valkey-server, AOF `appendfsync always`, loopback) with 3
primaries x 1 replica, started in a temp dir by this script and stopped at the end. Its default
user is off (issue 11), so every client logs in as the admin's ACL user, `tally-admin`: redis-py
and glide learn the cluster's slots with `CLUSTER SLOTS`, which the gateway's user is not granted
(it has `CLUSTER SHARDS`, what ours asks), and one user for all three keeps ACL's own cost (none
for the admin: benchmarks/acl_cost.py measures the gateway's) out of the comparison. For every
run a fresh poll (16 lanes, 4 options, sized for the run's voters) is created and opened with the
real `ValkeyPolls` over our client, so the lanes' keys spread over the three primaries as Tally
places them. The votes are the real ones: one `FCALL tally_vote 4 <lane keys> <pseudonym> <index
field> <option>` per voter, built exactly as `ValkeyBallotBox.cast` builds it (the warm-up goes
through `ValkeyBallotBox.cast` itself), with distinct HMAC pseudonyms, so every vote is a new
accepted vote. `--concurrency` coroutines cast them as fast as the replies come back, all on one
uvloop event loop, as a gateway process does with that many requests in flight.

Durability, and what each client has to do for it:

- **ours, `WaitAof(1, 1000)`** (what a gateway on a cluster runs with: TALLY_WAITAOF_REPLICAS
  defaults to 1 on a cluster): every event-loop tick's write to a primary carries that tick's
  votes followed by `WAIT 1 500` + `WAITAOF 1 1 500`; no vote of the batch is answered until the
  WAITAOF says the primary's AOF and one replica's AOF hold it (`resp.WaitAof`).
- **redis-py**: what a redis-py user has to write to get the same guarantee per vote: a
  non-transactional cluster pipeline of `FCALL`, `WAIT 1 500`, `WAITAOF 1 1 500`, the two waits
  sent with `target_nodes=` the vote's primary, then the WAITAOF reply checked. It must be one
  pipeline: Valkey counts WAIT/WAITAOF against the offset of the *connection's* last write, and
  redis-py's pool may hand a separately awaited WAIT another connection, whose last write is not
  the vote, so it would confirm nothing. One vote, one confirmation: redis-py does not gather
  concurrent callers' commands into one write.
- **valkey-glide**: durability off only. The way to confirm a vote with glide is `fcall`, then
  `custom_command(WAIT ...)` and `custom_command(WAITAOF ...)` routed with
  `SlotKeyRoute(PRIMARY, <lane key>)`; but glide multiplexes every caller onto one connection per
  node and WAIT blocks the connection it arrives on, so each vote's WAIT stalls everyone else's
  commands (GLIDE_DURABLE says what a first try did).
- **off** (all clients): the reply alone; with `appendfsync always` it means the primary's AOF was
  fsynced, no replica is asked. This isolates what the client itself costs per command.

Figures per run: votes/s (wall), p50/p99 of one cast (issue to confirmed reply), the client
process's CPU (time.process_time: every thread, so glide's Rust core counts too) per 1000 votes,
and the Valkey nodes' CPU (utime+stime from /proc/<pid>/stat, all 6 nodes) per 1000 votes. Each
variant runs `--rounds` times, interleaved, and its figures pool the rounds. Ratios are to ours
with the same durability. The vote counts are checked against the poll's tallies.

The WAITAOF finding (`resp.WaitAof`'s docstring): on the quiet cluster after the runs, one
connection to one primary sends, alternately, `FCALL tally_vote` + a lone `WAITAOF 1 1 1000` and
`FCALL tally_vote` + `WAIT 1 500` + `WAITAOF 1 1 500`, each in one write, and times the reply.

Run:  .venv/bin/python benchmarks/cluster_client.py [--votes 20000] [--rounds 2] [--json]
      (--quick: a small smoke run; --no-glide to leave glide out; ~2 min)
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from tally.domain.polls import OptionSpec, Poll, PollState, new_poll
from tally.domain.pseudonyms import bucket_of, index_field, lane_of, pseudonym
from tally.store import keys
from tally.store.cluster import ClusterSeeds, ValkeyCluster
from tally.store.library import load_functions
from tally.store.local_cluster import LocalCluster
from tally.store.polls import ValkeyPolls
from tally.store.resp import Endpoint, Valkey, WaitAof
from tally.store.votes import ValkeyBallotBox

SECRET = bytes(range(32))
ISSUER = "bench"
LANES = 16
OPTIONS = ["Red", "Green", "Blue", "Yellow"]
WAIT_MS = 500  # WaitAof(1, 1000) splits its timeout: WAIT 1 500, then WAITAOF 1 1 500
Command = tuple[bytes, ...]
# A cast's outcome: ACCEPTED (and, with durability, confirmed), UNCONFIRMED (accepted, but the
# WAITAOF did not confirm it in time), or anything else (not accepted).
Cast = Callable[[Command], Awaitable[int]]
ACCEPTED, UNCONFIRMED, REFUSED = 1, 2, 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def nodes_cpu_s(pids: Sequence[int]) -> float:
    return sum(cpu_ticks(pid) for pid in pids) / os.sysconf("SC_CLK_TCK")


def vote_command(poll: Poll, voter: bytes, option: str) -> Command:
    """What `ValkeyBallotBox.cast` sends for this voter (store/votes.py)."""
    lane = lane_of(voter, poll.lanes)
    bucket = b"%b%x" % (
        keys.lane_voters(poll.id, lane, 0).encode()[:-1],
        bucket_of(voter, poll.bucket_bits),
    )
    return (
        b"FCALL", b"tally_vote", b"4",
        keys.lane_state(poll.id, lane).encode(), keys.lane_counts(poll.id, lane).encode(),
        keys.lane_ledger(poll.id, lane).encode(), bucket,
        voter, index_field(voter), option.encode(),
    )  # fmt: skip


def voters(poll: Poll, count: int, prefix: str) -> list[bytes]:
    return [pseudonym(SECRET, poll.id, ISSUER, f"{prefix}{i}") for i in range(count)]


async def open_poll(ours: ValkeyCluster, name: str, expected: int) -> Poll:
    poll = new_poll(
        poll_id=name,
        title=name,
        options=[OptionSpec(label) for label in OPTIONS],
        now_ms=int(time.time() * 1000),
        lanes=LANES,
        expected_voters=max(expected, 1),
    )
    polls = ValkeyPolls(ours)
    await polls.create(poll)
    await polls.move(poll, PollState.OPEN)
    return poll.moved_to(PollState.OPEN, int(time.time() * 1000))


@dataclass
class Outcome:
    client: str
    durability: str
    votes: int = 0
    accepted: int = 0
    unconfirmed: int = 0
    counted: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    valkey_cpu_s: float = 0.0
    latencies: list[float] | None = None

    def add(self, other: Outcome) -> None:
        self.votes += other.votes
        self.accepted += other.accepted
        self.unconfirmed += other.unconfirmed
        self.counted += other.counted
        self.wall_s += other.wall_s
        self.client_cpu_s += other.client_cpu_s
        self.valkey_cpu_s += other.valkey_cpu_s
        self.latencies = (self.latencies or []) + (other.latencies or [])

    def row(self) -> dict[str, Any]:
        ordered = sorted(self.latencies or [0.0])
        return {
            "client": self.client,
            "durability": self.durability,
            "votes": self.votes,
            "accepted": self.accepted,
            "unconfirmed": self.unconfirmed,
            "counted": self.counted,
            "votes_per_s": round(self.votes / self.wall_s, 1),
            "p50_ms": round(1000 * quantile(ordered, 50), 2),
            "p99_ms": round(1000 * quantile(ordered, 99), 2),
            "client_cpu_s_per_1000": round(1000 * self.client_cpu_s / self.votes, 4),
            "valkey_cpu_s_per_1000": round(1000 * self.valkey_cpu_s / self.votes, 4),
        }


def quantile(ordered: Sequence[float], q: float) -> float:
    position = q / 100.0 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


async def drive(commands: list[Command], cast: Cast, concurrency: int, pids: list[int]) -> Outcome:
    latencies = [0.0] * len(commands)
    outcomes = [0, 0, 0]
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(commands):
            i = next_index
            next_index += 1
            started = time.perf_counter()
            got = await cast(commands[i])
            latencies[i] = time.perf_counter() - started
            outcomes[got] += 1

    cpu, valkey_cpu, wall = time.process_time(), nodes_cpu_s(pids), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall
    accepted = outcomes[ACCEPTED] + outcomes[UNCONFIRMED]
    outcome = Outcome("", "", len(commands), accepted, outcomes[UNCONFIRMED], 0, wall)
    outcome.client_cpu_s = time.process_time() - cpu
    outcome.valkey_cpu_s = nodes_cpu_s(pids) - valkey_cpu
    outcome.latencies = latencies
    return outcome


# --- the clients ----------------------------------------------------------------------------------


def verdict(reply: Any, confirmed: Any) -> int:
    if reply[0] != b"accepted":
        return REFUSED
    return ACCEPTED if confirmed[0] >= 1 and confirmed[1] >= 1 else UNCONFIRMED


class Ours:
    name = "ours (ValkeyCluster)"
    durable_ok = True

    def __init__(self, url: str) -> None:
        self.client = ValkeyCluster(ClusterSeeds.from_url(url), on_connect=load_functions)

    async def start(self) -> None:
        await self.client.connect()

    def cast(self, durable: bool) -> Cast:
        self.client.durability = WaitAof(1, 2 * WAIT_MS) if durable else None
        client = self.client

        async def cast(command: Command) -> int:
            reply = await client.durable(command)  # StoreUnavailable if not confirmed
            return ACCEPTED if reply[0] == b"accepted" else REFUSED

        return cast

    async def close(self) -> None:
        await self.client.close()


class RedisPy:
    name = "redis-py RedisCluster"
    durable_ok = True

    def __init__(self, endpoint: Endpoint) -> None:
        from redis.asyncio.cluster import RedisCluster

        self.client = RedisCluster(
            host=endpoint.host,
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
        )

    async def start(self) -> None:
        await self.client.initialize()

    def cast(self, durable: bool) -> Cast:
        client = self.client
        if not durable:

            async def cast(command: Command) -> int:
                reply = await client.fcall("tally_vote", 4, *command[3:])
                return ACCEPTED if reply[0] == b"accepted" else REFUSED

            return cast

        async def cast_durable(command: Command) -> int:
            node = client.get_node_from_key(command[3].decode())
            pipe = client.pipeline(transaction=False)
            pipe.fcall("tally_vote", 4, *command[3:])
            pipe.execute_command("WAIT", 1, WAIT_MS, target_nodes=node)
            pipe.execute_command("WAITAOF", 1, 1, WAIT_MS, target_nodes=node)
            reply, _, confirmed = await pipe.execute()
            return verdict(reply, confirmed)

        return cast_durable

    async def close(self) -> None:
        await self.client.aclose()


GLIDE_DURABLE = (
    "not measured: WAIT blocks the connection it arrives on, and glide multiplexes every caller "
    "onto one connection per node, so each vote's WAIT stalls all the others (in a first try, "
    "107 commands queued behind the waits and WAITAOF timed out after 1 s)"
)


class Glide:
    name = "valkey-glide"
    durable_ok = False

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client: Any = None

    async def start(self) -> None:
        from glide import (
            GlideClusterClient,
            GlideClusterClientConfiguration,
            NodeAddress,
            ServerCredentials,
        )

        endpoint = self.endpoint
        self.client = await GlideClusterClient.create(
            GlideClusterClientConfiguration(
                [NodeAddress(endpoint.host, endpoint.port)],
                credentials=ServerCredentials(
                    password=endpoint.password, username=endpoint.username
                ),
                request_timeout=5000,
            )
        )

    def cast(self, durable: bool) -> Cast:
        assert not durable, "see GLIDE_DURABLE"
        client = self.client

        async def cast(command: Command) -> int:
            reply = await client.fcall(
                "tally_vote", keys=list(command[3:7]), arguments=list(command[7:])
            )
            return ACCEPTED if reply[0] == b"accepted" else REFUSED

        return cast

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def glide_available() -> str | None:
    """None when glide imports, else why not."""
    try:
        import glide  # noqa: F401
    except ImportError as exc:
        return f"valkey-glide not installed ({exc})"
    return None


# --- the runs -------------------------------------------------------------------------------------


async def compare(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    pids = [node.pid for node in cluster.nodes]
    seed = next(node for node in cluster.nodes if node.role == "primary")
    ours = Ours(cluster.url)  # the admin's user, as are the others (see the docstring)
    admin = cluster.endpoint(seed.port)
    clients: list[Any] = [ours, RedisPy(admin)]
    glide_skipped = "left out (--no-glide)" if args.no_glide else glide_available()
    if glide_skipped is None:
        clients.append(Glide(admin))
    for client in clients:
        await client.start()
    try:
        warm = await open_poll(ours.client, "bench-warm", args.votes)
        box = ValkeyBallotBox(ours.client)
        ours.client.durability = WaitAof(1, 2 * WAIT_MS)
        for voter in voters(warm, 200, "box-"):  # the real ballot box, end to end
            await box.cast(warm, voter, warm.options[0].id)
        runs = 0
        for client in clients:  # warm every client's connections and caches
            for durable in (True, False)[not client.durable_ok :]:
                batch = [
                    vote_command(warm, v, warm.options[0].id)
                    for v in voters(warm, 500, f"warm-{runs}-")
                ]
                await drive(batch, client.cast(durable), args.concurrency, pids)
                runs += 1
        pooled: dict[tuple[str, str], Outcome] = {}
        for round_ in range(args.rounds):
            for durable in (True, False):
                for client in [c for c in clients if c.durable_ok or not durable]:
                    label = "WAIT+WAITAOF" if durable else "off"
                    poll = await open_poll(ours.client, f"bench-{runs}", args.votes)
                    runs += 1
                    commands = [
                        vote_command(poll, v, poll.options[i % len(OPTIONS)].id)
                        for i, v in enumerate(voters(poll, args.votes, f"r{round_}-"))
                    ]
                    outcome = await drive(commands, client.cast(durable), args.concurrency, pids)
                    outcome.counted = await counted(ours.client, poll)
                    pooled.setdefault(
                        (client.name, label), Outcome(client.name, label, latencies=[])
                    ).add(outcome)
        waitaof = await waitaof_latency(cluster, ours.client, args.waitaof_samples)
    finally:
        for client in clients:
            await client.close()
    rows = [outcome.row() for outcome in pooled.values()]
    for row in rows:
        base = pooled[(Ours.name, row["durability"])].row()
        row["votes_per_s_vs_ours"] = round(row["votes_per_s"] / base["votes_per_s"], 3)
        row["client_cpu_vs_ours"] = round(
            row["client_cpu_s_per_1000"] / base["client_cpu_s_per_1000"], 3
        )
    return {
        "votes_per_run": args.votes,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "glide": glide_skipped or "measured with durability off; WAIT+WAITAOF " + GLIDE_DURABLE,
        "rows": rows,
        "waitaof": waitaof,
    }


async def counted(client: ValkeyCluster, poll: Poll) -> int:
    lanes, _ = await ValkeyPolls(client).tallies(poll)
    return sum(sum(lane.counts.values()) for lane in lanes)


async def waitaof_latency(
    cluster: LocalCluster, ours: ValkeyCluster, samples: int
) -> dict[str, Any]:
    """One write of FCALL + lone WAITAOF vs FCALL + WAIT + WAITAOF, alternately, on one quiet
    connection to the primary of the poll's lane 0."""
    poll = await open_poll(ours, "bench-waitaof", 2 * samples)
    # Voters of lane 0 only, so every write goes to the same primary.
    lane0 = [v for v in voters(poll, 64 * samples, "w-") if lane_of(v, poll.lanes) == 0]
    primary = ours.primary_of(keys.lane_state(poll.id, 0))
    assert primary is not None
    conn = Valkey(cluster.endpoint(primary[1]))
    await conn.connect()
    timeout = b"%d" % (2 * WAIT_MS)
    lone: list[float] = []
    pair: list[float] = []
    replies: dict[str, list[Any]] = {"lone": [], "pair": []}
    try:
        for i, voter in enumerate(lane0[: 2 * samples]):
            command = vote_command(poll, voter, poll.options[0].id)
            waits: list[Command] = (
                [(b"WAITAOF", b"1", b"1", timeout)]
                if i % 2 == 0
                else [(b"WAIT", b"1", b"%d" % WAIT_MS), (b"WAITAOF", b"1", b"1", b"%d" % WAIT_MS)]
            )
            started = time.perf_counter()
            got = await conn.pipeline([command, *waits])
            elapsed = time.perf_counter() - started
            (lone if i % 2 == 0 else pair).append(elapsed)
            replies["lone" if i % 2 == 0 else "pair"].append(list(got[-1]))
            await asyncio.sleep(0.05)
    finally:
        await conn.close()

    def summary(times: list[float], answers: list[Any]) -> dict[str, Any]:
        return {
            "samples": len(times),
            "median_ms": round(1000 * statistics.median(times), 3),
            "min_ms": round(1000 * min(times), 3),
            "max_ms": round(1000 * max(times), 3),
            "all_confirmed": all(a[0] >= 1 and a[1] >= 1 for a in answers),
        }

    return {"lone": summary(lone, replies["lone"]), "pair": summary(pair, replies["pair"])}


def print_report(r: dict[str, Any]) -> None:
    print(
        f"cluster 3 primaries x 1 replica; {r['votes_per_run']} votes per run x {r['rounds']} "
        f"rounds; concurrency {r['concurrency']}; valkey-glide: {r['glide']}"
    )
    head = (
        f"{'client':<24}{'durability':<14}{'votes/s':>9}{'x ours':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cli CPU s/1k':>14}{'x ours':>8}{'vk CPU s/1k':>13}  accepted/counted (unconfirmed)"
    )
    print(head)
    for row in r["rows"]:
        print(
            f"{row['client']:<24}{row['durability']:<14}{row['votes_per_s']:>9,.0f}"
            f"{row['votes_per_s_vs_ours']:>8.2f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['client_cpu_s_per_1000']:>14.3f}{row['client_cpu_vs_ours']:>8.2f}"
            f"{row['valkey_cpu_s_per_1000']:>13.3f}  {row['accepted']}/{row['counted']} ({row['unconfirmed']})"
        )
    w = r["waitaof"]
    for name, what in (
        ("lone", "FCALL + WAITAOF 1 1 1000"),
        ("pair", "FCALL + WAIT 1 500 + WAITAOF 1 1 500"),
    ):
        s = w[name]
        print(
            f"{what:<40} median {s['median_ms']:>9.3f} ms  (min {s['min_ms']:.3f}, max "
            f"{s['max_ms']:.3f}, n={s['samples']}, all confirmed: {s['all_confirmed']})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=20_000, help="votes per run (default 20000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="casts in flight (default 64)")
    parser.add_argument(
        "--waitaof-samples", type=int, default=10, help="writes of each WAITAOF form (default 10)"
    )
    parser.add_argument("--no-glide", action="store_true", help="leave valkey-glide out")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.votes, args.rounds, args.waitaof_samples = 1000, 1, 2
    with tempfile.TemporaryDirectory(prefix="tally-cluster-client-") as directory:
        cluster = LocalCluster(Path(directory), primaries=3, replicas=1)
        try:
            cluster.up()
            result = uvloop.run(compare(cluster, args))
        finally:
            cluster.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    ok = all(row["accepted"] == row["votes"] == row["counted"] for row in result["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

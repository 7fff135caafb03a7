"""Scale-out on Valkey Cluster (issue 9): votes/s, latency and where the CPU goes, from one Valkey
node with one gateway process to a cluster with several gateway workers, in one run.

Setups (each in a fresh temp dir, everything stopped before the next):

  1 node      one valkey-server (the bundled binary as `EmbeddedValkey` runs it: AOF,
              `appendfsync always`, so a reply implies the fsync and the gateway confirms nothing
              more), `tally gateway --workers 1`, `tally aggregator`;
  3p+3r       `LocalCluster` 3 primaries x 1 replica, `tally gateway --workers 2`, `tally
              aggregator`; on a cluster a vote is confirmed by WAIT 1 + WAITAOF 1 1 per batch
              (TALLY_WAITAOF_REPLICAS defaults to 1 there): it is on one replica's AOF as well;
  6p+6r       `LocalCluster` 6 primaries x 1 replica, `tally gateway --workers 4`, `tally
              aggregator`: the largest this 2-core machine is given here (see below).

The roles share a TALLY_PSEUDONYM_SECRET and TALLY_DATA_DIR (the dev issuer's keys, so every
gateway worker accepts the tokens); each connects as its own ACL user (issue 11: the default user
is off), TALLY_VALKEY_URL its role's URL (`url_for(role)`), as a deployment runs them. Before the
gateway starts, its admission key is registered as the admin (`tally admission-key register`
with the admin's URL), as an operator does: a gateway refuses to sign with an unregistered key. No archiver runs: the lane streams just grow.
A warm-up poll takes `--warmup` votes first; then a 16-lane, 4-option poll takes one vote per
voter (EdDSA tokens minted beforehand by the dev issuer, pre-built requests) from the project's
load generator (`tally.bench.loadgen`, one process, `--concurrency` keep-alive connections that
the kernel spreads over the workers' SO_REUSEPORT sockets). The poll is then closed and its
count must equal the 201s.

CPU: utime+stime from /proc/<pid>/stat before and after the measured votes, for every
valkey-server, every gateway worker, the aggregator, and this process (the load generator).
"cores" = CPU seconds / wall seconds. votes/s per Valkey core = votes / all nodes' CPU seconds
(replicas included); per gateway core = votes / all workers' CPU seconds.

Lane placement: for the bench poll, which primary serves each lane's slot (`key_slot` of
`tally:{<poll>.<lane>}`, owner from the live cluster): how evenly lanes land on primaries; and the
same over 2,000 random poll ids (`new_poll_id`) on the cluster's slot map.

What limits it here: everything (load generator, gateway workers, aggregator, every valkey-server)
shares the same 2 cores, so each setup shows where the CPU goes, not what more machines would
give; the table's "busy" column is the sum of all the processes' cores.

Run:  .venv/bin/python benchmarks/cluster_scale.py [--voters 30000] [--json]
      (--quick: a small smoke run, ~1 min; --help)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from tally import config
from tally.bench.defences_run import DEFENCES_OFF
from tally.bench.loadgen import run_requests
from tally.bench.polls import final_total, vote_requests
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.security.admission_keys import admission_signer
from tally.security.dev_issuer import DevIssuer
from tally.security.keys import keys_dir
from tally.service import new_poll_id
from tally.store import acl, keys
from tally.store.cluster import key_slot
from tally.store.embedded import EmbeddedValkey
from tally.store.local_cluster import LocalCluster

HOST = "127.0.0.1"
LANES = 16


@dataclass(frozen=True)
class Setup:
    name: str
    primaries: int  # 0: one plain valkey-server, not a cluster
    replicas: int
    workers: int


SETUPS = [Setup("1 node", 0, 0, 1), Setup("3p+3r", 3, 1, 2), Setup("6p+6r", 6, 1, 4)]


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


@contextlib.contextmanager
def valkey(setup: Setup, directory: Path) -> Iterator[tuple[dict[str, str], dict[str, int], Any]]:
    """The store: ({role: its TALLY_VALKEY_URL, as its own ACL user}, {node label: pid},
    LocalCluster or None)."""
    if not setup.primaries:
        server = EmbeddedValkey(directory)
        asyncio.run(server.start())
        try:
            assert server.pid is not None
            urls = {role: server.url_for(role) for role in acl.ROLES}
            yield urls, {"node": server.pid}, None
        finally:
            asyncio.run(server.stop())
        return
    cluster = LocalCluster(
        directory / "cluster", primaries=setup.primaries, replicas=setup.replicas
    )
    try:
        cluster.up()
        pids = {}
        for node in cluster.nodes:
            kind = "P" if node.role == "primary" else "R"
            pids[f"{kind}{node.port}"] = node.pid
        yield {role: cluster.url_for(role) for role in acl.ROLES}, pids, cluster
    finally:
        cluster.stop()


def register_admission_key(env: dict[str, str]) -> None:
    """What an operator does before starting a gateway: its admission key (made in the data dir
    now, as the gateway would) registered with `tally admission-key register`, as the admin
    (`env`'s TALLY_VALKEY_URL)."""
    settings = config.load(env)
    if not settings.admission_signing:
        return
    verifier = str(admission_signer(settings).key.verifier)
    subprocess.run(
        [sys.executable, "-m", "tally", "admission-key", "register", verifier],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def role_env(url: str, data_dir: Path, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(
        TALLY_VALKEY_URL=url,
        TALLY_PSEUDONYM_SECRET=secret,
        TALLY_DATA_DIR=str(data_dir),
        TALLY_LOG_LEVEL="warning",
        TALLY_EDGE_RATE="0",  # one address sends every vote (see open_poll)
    )
    return env


def wait_ready(base: str, timeout_s: float = 60.0) -> None:
    """/readyz answers 200 several times in a row (each may land on another worker)."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while streak < 8:
        try:
            TallyClient(base, timeout_s=2.0).get("/readyz")
            streak += 1
        except Exception:
            streak = 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base} not ready within {timeout_s} s") from None
            time.sleep(0.1)


def open_poll(admin: TallyClient, title: str) -> dict[str, Any]:
    # The vote path itself, as `tally bench` measures it: every voter votes from this one address
    # without a challenge, which the default defences (issue 10) refuse with 429s.
    body = {"title": title, "options": ["Red", "Green", "Blue", "Yellow"], "lanes": LANES}
    poll = admin.post("/v1/polls", {**body, "defences": DEFENCES_OFF})
    return admin.post(f"/v1/polls/{poll['id']}/open")


def option_ids(poll: dict[str, Any]) -> list[str]:
    return [o["id"] for o in poll["options"]]


def lane_placement(cluster: LocalCluster | None, poll_id: str) -> dict[str, Any]:
    if cluster is None:
        return {}
    lanes = {}
    for lane in range(LANES):
        key = keys.lane_state(poll_id, lane)
        lanes[lane] = {"slot": key_slot(key.encode()), "primary": cluster.primary_of_key(key)}
    per_primary = Counter(lane["primary"] for lane in lanes.values())
    primaries = [n.port for n in cluster.nodes if n.role == "primary"]
    return {
        "lanes_per_primary": {str(p): per_primary.get(p, 0) for p in primaries},
        "lanes": lanes,
        "random_polls": placement_over_polls(cluster, PLACEMENT_POLLS),
    }


PLACEMENT_POLLS = 2000


def placement_over_polls(cluster: LocalCluster, polls: int) -> dict[str, Any]:
    """The same for `polls` random poll ids (as new_poll_id makes them) on this cluster's slot
    map: how many of the 16 lanes the busiest primary gets, and how often a primary gets none."""
    primary = next(n.port for n in cluster.nodes if n.role == "primary")
    owner = [0] * 16384
    for entry in cluster.call(primary, "CLUSTER", "SLOTS"):
        owner[int(entry[0]) : int(entry[1]) + 1] = [int(entry[2][1])] * (
            int(entry[1]) - int(entry[0]) + 1
        )
    count = len(set(owner))
    busiest: Counter[int] = Counter()
    idle = 0
    for _ in range(polls):
        poll_id = new_poll_id()
        per = Counter(
            owner[key_slot(keys.lane_state(poll_id, lane).encode())] for lane in range(LANES)
        )
        busiest[max(per.values())] += 1
        idle += len(per) < count
    return {
        "polls": polls,
        "busiest_primary_lanes": {str(k): v for k, v in sorted(busiest.items())},
        "polls_with_an_idle_primary": idle,
    }


def measure(setup: Setup, voters: int, warmup: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tally-cluster-scale-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir()
        issuer = DevIssuer.load_or_create(keys_dir(data_dir))  # before any role: shared keys
        with valkey(setup, root) as (urls, valkey_pids, cluster):
            secret = secrets.token_hex(32)
            env = {role: role_env(urls[role], data_dir, secret) for role in acl.ROLES}
            register_admission_key(env[acl.ADMIN])
            port, ops = free_port(), free_port()
            aggregator = [sys.executable, "-m", "tally", "aggregator", "--host", HOST]
            gateway = [sys.executable, "-m", "tally", "gateway", "--host", HOST]
            with (
                running(
                    [*aggregator, "--port", str(ops)], host=HOST, port=ops, env=env[acl.AGGREGATOR]
                ) as aggregator_process,
                running(
                    [*gateway, "--port", str(port), "--workers", str(setup.workers)],
                    host=HOST,
                    port=port,
                    env=env[acl.GATEWAY],
                    timeout_s=60,
                ) as gateway_process,
            ):
                base = f"http://{HOST}:{port}"
                wait_ready(base)
                worker_pids = (
                    [gateway_process.pid] if setup.workers == 1 else children(gateway_process.pid)
                )
                admin = TallyClient(base, issuer.mint("bench-admin", roles=["admin"]))
                warm = open_poll(admin, "scale warm-up")
                poll = open_poll(admin, "scale")
                warm_requests = vote_requests(
                    issuer, warm["id"], option_ids(warm), warmup, "EdDSA", "warm-"
                )
                requests = vote_requests(
                    issuer, poll["id"], option_ids(poll), voters, "EdDSA", "voter-"
                )
                uvloop.run(run_requests(HOST, port, warm_requests, concurrency=concurrency))
                pids = {
                    **{f"valkey {k}": v for k, v in valkey_pids.items()},
                    **{f"worker {i}": pid for i, pid in enumerate(worker_pids)},
                    "aggregator": aggregator_process.pid,
                }
                before = {name: cpu_s(pid) for name, pid in pids.items()}
                own = time.process_time()
                load = uvloop.run(run_requests(HOST, port, requests, concurrency=concurrency))
                own = time.process_time() - own
                after = {name: cpu_s(pid) for name, pid in pids.items()}
                counted = final_total(admin, poll["id"])
                placement = lane_placement(cluster, poll["id"])
    wall = load.elapsed_s
    cores = {name: (after[name] - before[name]) / wall for name in pids}
    valkey_cores = {
        k.removeprefix("valkey "): v for k, v in cores.items() if k.startswith("valkey")
    }
    worker_cores = [v for k, v in cores.items() if k.startswith("worker")]
    statuses = load.by_status()
    accepted = statuses.get(201, 0)
    latency = load.latency_percentiles_ms(50, 99)
    votes_per_s = load.throughput()
    valkey_total = sum(valkey_cores.values())
    gateway_total = sum(worker_cores)
    loadgen = own / wall
    return {
        "setup": setup.name,
        "primaries": setup.primaries or 1,
        "replicas_per_primary": setup.replicas,
        "workers": setup.workers,
        "votes": len(requests),
        "votes_per_s": round(votes_per_s, 1),
        "p50_ms": round(latency["p50"], 2),
        "p99_ms": round(latency["p99"], 2),
        "valkey_cores": round(valkey_total, 3),
        "valkey_cores_per_node": {k: round(v, 3) for k, v in valkey_cores.items()},
        "gateway_cores": round(gateway_total, 3),
        "gateway_cores_per_worker": [round(v, 3) for v in worker_cores],
        "aggregator_cores": round(cores["aggregator"], 3),
        "loadgen_cores": round(loadgen, 3),
        "busy_cores": round(valkey_total + gateway_total + cores["aggregator"] + loadgen, 3),
        "votes_per_s_per_valkey_core": round(votes_per_s / valkey_total, 1),
        "votes_per_s_per_gateway_core": round(votes_per_s / gateway_total, 1),
        "accepted": accepted,
        "statuses": {str(k): v for k, v in statuses.items()},
        "transport_errors": load.transport_errors,
        "counted": counted,
        "count_matches": counted == accepted == len(requests),
        **placement,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'setup':<8}{'workers':>8}{'votes/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'valkey':>8}"
        f"{'gateway':>8}{'aggr':>6}{'loadgen':>8}{'busy':>6}{'v/s/vk core':>12}{'v/s/gw core':>12}"
        "  accepted/counted"
    )
    for r in rows:
        print(
            f"{r['setup']:<8}{r['workers']:>8}{r['votes_per_s']:>9,.0f}{r['p50_ms']:>8.2f}"
            f"{r['p99_ms']:>8.2f}{r['valkey_cores']:>8.2f}{r['gateway_cores']:>8.2f}"
            f"{r['aggregator_cores']:>6.2f}{r['loadgen_cores']:>8.2f}{r['busy_cores']:>6.2f}"
            f"{r['votes_per_s_per_valkey_core']:>12,.0f}{r['votes_per_s_per_gateway_core']:>12,.0f}"
            f"  {r['accepted']}/{r['counted']} {'OK' if r['count_matches'] else 'MISMATCH'}"
        )
    print("cores = CPU s / wall s of the measured votes")
    for r in rows:
        nodes = "  ".join(f"{k} {v:.2f}" for k, v in r["valkey_cores_per_node"].items())
        workers = "  ".join(f"{v:.2f}" for v in r["gateway_cores_per_worker"])
        print(f"{r['setup']:<8} valkey per node: {nodes}")
        print(f"{'':<8} gateway per worker: {workers}")
        if "lanes_per_primary" in r:
            spread = "  ".join(f"{p}: {n}" for p, n in r["lanes_per_primary"].items())
            print(f"{'':<8} lanes per primary ({LANES} lanes): {spread}")
            rp = r["random_polls"]
            hist = ", ".join(f"{k}: {v}" for k, v in rp["busiest_primary_lanes"].items())
            print(
                f"{'':<8} {rp['polls']} random poll ids: lanes on the busiest primary {{{hist}}}; "
                f"polls leaving a primary without lanes: {rp['polls_with_an_idle_primary']}"
            )
        if r["transport_errors"] or set(r["statuses"]) != {"201"}:
            print(f"{'':<8} statuses {r['statuses']}, transport errors {r['transport_errors']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voters", type=int, default=30_000, help="votes per setup")
    parser.add_argument("--warmup", type=int, default=3_000, help="warm-up votes per setup")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--setups",
        nargs="+",
        choices=[s.name.replace(" ", "") for s in SETUPS],
        help="only these setups (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.voters, args.warmup = 2_000, 300
    chosen = [s for s in SETUPS if not args.setups or s.name.replace(" ", "") in args.setups]
    rows = []
    for setup in chosen:
        rows.append(measure(setup, args.voters, args.warmup, args.concurrency))
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows)
    return 0 if all(r["count_matches"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Failover acceptance drills on a real 3x1 Valkey Cluster with `tally gateway --workers 2`,
`tally aggregator` and `tally archiver` as processes (tests/cluster/failover_harness.py):

- a primary SIGKILLed under a steady vote load, three times in a row, is replaced by its replica
  and the gateways follow; the votes caught in the switch get 503, none 500 or a hang; every
  acknowledged vote keeps its receipt, the results count each recorded voter once, and the closed
  poll's ledger passes `tally audit verify`;
- a primary cut off from its replica (SIGSTOP) refuses the votes on its lanes with 503 within
  the WAITAOF bound, while the other primaries keep accepting; once the replica is back the
  refused voters' retries are recorded and the counts match.

Why a vote waits at most twice TALLY_WAITAOF_TIMEOUT_MS: a gateway worker confirms each primary's
batch of votes with `WAIT 1` + `WAITAOF 1 1` on its one connection to that primary, which split
the timeout between them and block that connection until they answer; one confirmation is in
flight per connection, so a vote waits for the one under way and then for its own. The command
timeout (the watchdog that drops a connection with no reply for 5 s) is not in play here: a
SIGKILLed node's connections are reset at once, and the stopped replica is never talked to."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover_harness import (
    OPTIONS,
    WAITAOF_TIMEOUT_MS,
    Attempt,
    Deployment,
    Poll,
    SteadyLoad,
    Voters,
    close_and_certify,
    deployment,
    lane_of_voter,
    lanes_by_primary,
    open_poll,
    settled_results,
)

RATE_PER_S = 200.0  # distinct voters a second, all through the one port of the two workers
# Twice the WAITAOF timeout (module docstring), plus 1.5 s: Valkey times blocked clients out on
# its 100 ms timer (hz 10), so WAIT and WAITAOF may each overrun their share by 0.1 s (0.4 s for
# two confirmations), and the rest covers the HTTP round trip and ~12 processes on two cores.
LATENCY_BOUND_S = 2 * WAITAOF_TIMEOUT_MS / 1000 + 1.5
FOLLOW_S = 20.0  # from the replica back in sync to a chunk of votes all accepted
PARTITION_VOTERS = 300
PARTITION_RATE_PER_S = 100.0
ACCEPTED_WITHIN_S = 1.0  # a vote on a primary whose replica answers


@dataclass
class Kill:
    """One SIGKILL of a primary and when (perf_counter) each step of the switch was over."""

    victim: int
    heir: int
    lanes: set[int]
    killed_at: float
    promoted_at: float = 0.0
    synced_at: float = 0.0
    followed_at: float = 0.0

    def summary(self, attempts: Sequence[Attempt], until: float) -> str:
        window = [a for a in attempts if self.killed_at <= a.sent_at < until]
        refused = sum(a.status == 503 for a in window)
        return (
            f"kill of {self.victim} (lanes {sorted(self.lanes)}, heir {self.heir}): promoted "
            f"after {self.promoted_at - self.killed_at:.2f} s, replica in sync after "
            f"{self.synced_at - self.killed_at:.2f} s, all lanes accepting after "
            f"{self.followed_at - self.killed_at:.2f} s; {refused} of {len(window)} votes 503, "
            f"slowest {max(a.latency_s for a in window):.2f} s"
        )


def describe(attempts: Sequence[Attempt]) -> str:
    return str(Counter((a.status, a.code) for a in attempts))


async def test_three_primaries_killed_in_turn_lose_no_acknowledged_vote(tmp_path: Path) -> None:
    """kill -9 a primary under load, wait for its replica's promotion, restart it (it rejoins
    as the heir's replica) and wait until the gateways accept on every lane again; three times:
    the primary of the poll's own keys, another original primary, then the first heir (so the
    3rd switch fails back onto the node killed first)."""
    with deployment(tmp_path) as d:
        poll = open_poll(d)
        voters = Voters(d, poll)
        load = SteadyLoad(voters, RATE_PER_S)
        stop = asyncio.Event()
        producing = asyncio.create_task(load.run(stop))
        kills: list[Kill] = []
        try:
            await asyncio.sleep(1.0)
            owners = await asyncio.to_thread(lanes_by_primary, d.cluster, poll)
            second = next(port for port in sorted(owners) if port != poll.meta_primary)
            for victim in (poll.meta_primary, second, None):
                kills.append(await fail_over(d, poll, load, victim or kills[0].heir))
            await asyncio.sleep(1.0)  # votes after the last switch, too
        finally:
            stop.set()
            await producing

        first = load.attempts
        report = [f"{len(first)} votes: {describe(first)}"]
        for n, kill in enumerate(kills):
            until = kills[n + 1].killed_at if n + 1 < len(kills) else float("inf")
            report.append(kill.summary(first, until))
        print("\n".join(report))
        assert [a.voter for a in first] == list(range(len(voters.tokens)))
        assert {(a.status, a.code) for a in first} <= {(201, None), (503, "store-unavailable")}, (
            report
        )
        for kill in kills:
            assert any(a.status == 503 and a.sent_at >= kill.killed_at for a in first), report
        slowest = max(first, key=lambda a: a.latency_s)
        assert slowest.latency_s < LATENCY_BOUND_S, (slowest, report)

        recorded = await retried_and_recorded(voters, first)
        assert len(recorded) == len(first)  # a 503's retry got 201 or 409: recorded either way
        await counted(d, poll, recorded)
        await asyncio.to_thread(close_and_certify, d, poll, len(recorded))
        for role in d.roles:
            assert "Traceback" not in role.log(), role.log()
            assert role.terminate() == 0, role.log()


async def fail_over(d: Deployment, poll: Poll, load: SteadyLoad, victim: int) -> Kill:
    """One switch; every blocking call off the event loop, so the load keeps its pace."""
    cluster = d.cluster
    owners = await asyncio.to_thread(lanes_by_primary, cluster, poll)
    assert owners.get(victim), f"the victim {victim} serves none of the poll's lanes: {owners}"
    (heir,) = await asyncio.to_thread(cluster.replicas_of, victim)
    kill = Kill(victim, heir, owners[victim], time.perf_counter())
    cluster.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(cluster.wait_healthy, 30)
    kill.promoted_at = time.perf_counter()
    after = await asyncio.to_thread(lanes_by_primary, cluster, poll)
    assert after.get(heir) == kill.lanes, after
    await asyncio.to_thread(cluster.restart, victim)
    await asyncio.to_thread(cluster.wait_healthy, 30, replicas_in_sync=True)
    kill.synced_at = time.perf_counter()
    assert await asyncio.to_thread(cluster.replicas_of, heir) == [victim]
    kill.followed_at = await load.clean_chunk_after(kill.synced_at, kill.lanes, FOLLOW_S)
    return kill


async def retried_and_recorded(
    voters: Voters, first: Sequence[Attempt]
) -> dict[int, dict[str, Any]]:
    """Every voter votes again (another option): one whose vote got 201 must get 409 with that
    very receipt; one whose vote got 503 (outcome unknown) gets 201 or 409. The receipt each
    voter is recorded with, by voter."""
    again = await voters.send([a.voter for a in first], 1, concurrency=50, rate_per_s=None)
    assert {a.status for a in again} <= {201, 409}, describe(again)
    recorded = {}
    for before, after in zip(first, again, strict=True):
        if before.status == 201:
            assert (after.status, after.code) == (409, "already-voted"), (before, after)
            assert after.receipt == before.receipt, (before, after)
        recorded[before.voter] = after.receipt
    return recorded


async def counted(d: Deployment, poll: Poll, recorded: dict[int, dict[str, Any]]) -> None:
    """The published results count each recorded voter once, for the option of their receipt."""
    results = await asyncio.to_thread(settled_results, d, poll, len(recorded))
    options = Counter(str(receipt["option"]) for receipt in recorded.values())
    assert results["counts"] == {option: options[option] for option in OPTIONS}


async def test_a_primary_cut_off_from_its_replica_fails_closed(tmp_path: Path) -> None:
    """SIGSTOP one primary's replica: the votes on that primary's lanes get 503 within the
    WAITAOF bound, the others 201; after SIGCONT every voter's retry is recorded."""
    with deployment(tmp_path) as d:
        poll = open_poll(d)
        owners = lanes_by_primary(d.cluster, poll)
        cut = next(port for port in sorted(owners) if port != poll.meta_primary)
        (replica,) = d.cluster.replicas_of(cut)
        voters = Voters(d, poll)
        everyone = voters.new(PARTITION_VOTERS)
        on_cut = {v for v in everyone if lane_of_voter(d, poll, voters.subjects[v]) in owners[cut]}
        d.cluster.kill(replica, signal.SIGSTOP)
        try:
            first = await voters.send(
                everyone, 0, concurrency=len(everyone), rate_per_s=PARTITION_RATE_PER_S
            )
        finally:
            d.cluster.kill(replica, signal.SIGCONT)
        await asyncio.to_thread(d.cluster.wait_healthy, 30, replicas_in_sync=True)

        cut_off = [a for a in first if a.voter in on_cut]
        others = [a for a in first if a.voter not in on_cut]
        report = (
            f"replica {replica} of {cut} (lanes {sorted(owners[cut])}) stopped: "
            f"{len(cut_off)} votes on its lanes: {describe(cut_off)}, slowest "
            f"{max(a.latency_s for a in cut_off):.2f} s; {len(others)} others: "
            f"{describe(others)}, slowest {max(a.latency_s for a in others):.2f} s"
        )
        print(report)
        assert cut_off, report
        assert others, report
        assert {(a.status, a.code) for a in cut_off} == {(503, "store-unavailable")}, report
        assert max(a.latency_s for a in cut_off) < LATENCY_BOUND_S, report
        assert {a.status for a in others} == {201}, report
        assert {a.receipt["lane"] for a in others}.isdisjoint(owners[cut])
        assert max(a.latency_s for a in others) < ACCEPTED_WITHIN_S, report

        recorded = await retried_and_recorded(voters, first)
        assert {r["lane"] for v, r in recorded.items() if v in on_cut} <= owners[cut]
        await counted(d, poll, recorded)
        for role in d.roles:
            assert "Traceback" not in role.log(), role.log()

"""`tally bench --watchers N`: WebSocket watchers of the bench poll while the votes are cast.

The N watchers (`tally.bench.watchers`) run in the bench process, on the same event loop and clock
as the load generator. They connect before the votes and read every snapshot while the votes are
cast (paced by `--rate` if given). The report then gets the fields below. Times are in ms as
`{n, p50, p90?, p99, max}`, memory in bytes.

- `vote_to_visible_ms`: from a vote's 201 to the first snapshot a watcher read after it whose
  total is at least the vote's rank among the 201s (`visibility`: the estimate). It covers
  `votes_sampled` votes on every watcher. `vote_to_visible_bound_ms` is the same under the
  certain rule, an upper bound. `unseen`: (vote, watcher) pairs that never got a snapshot
  including the vote.
- `snapshots_per_watcher`: `{min, mean, max}` of the snapshot frames each watcher got,
  counting the one sent on connect. `snapshots_published`: distinct seqs seen during the
  votes, without the one sent on connect. `snapshots_to_all_watchers`: how many of those every
  watcher got (the others were conflated away for some).
- `gateway_rss`: the `tally serve` process's VmRSS at three points: `before` the watchers;
  `idle`, once all are connected, each has its first snapshot, and 1 s has passed; and
  `after_votes`. `gateway_bytes_per_watcher` = (idle - before) / watchers connected.
- `broadcast_spread_ms`: for each seq published during the votes that every watcher received,
  the last watcher's kernel receive time minus the first's. `broadcast_read_spread_ms` is the
  same, by when the bench process read the frames.
- `snapshot_age_first_ms` / `snapshot_age_last_ms`: the first and the last watcher's receive
  time minus the snapshot's `ts` (when its newest vote was counted).
- `watcher_failures` (never upgraded), `watchers_lost` (ended early, by close code or error),
  `final_missing` (open watchers without the final total 5 s after the last 201).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tally.bench.loadgen import LoadResult
from tally.bench.processes import rss_bytes
from tally.bench.visibility import Arrival, Vote, broadcasts, sample_ranks, summary_ms
from tally.bench.visibility import vote_to_visible as match_votes
from tally.bench.watchers import WatcherFleet

FIRST_SNAPSHOT_S = 10.0  # the aggregator sees a newly opened poll within about 1 s
IDLE_SETTLE_S = 1.0
FINAL_WAIT_S = 5.0
MATCH_BUDGET = 2_000_000  # (vote, watcher) pairs matched; votes are sampled evenly beyond it


@dataclass(frozen=True, slots=True)
class LiveRun:
    """What the watchers of one `--watchers` run saw."""

    requested: int
    connected: int
    failures: dict[str, int]
    lost: dict[str, int]
    final_missing: int
    rss_before: int
    rss_idle: int
    rss_after_votes: int
    initial_seq: int  # the newest seq any watcher got on connect: later ones were broadcasts
    arrivals: list[list[Arrival]]
    ts_ms: dict[int, int]
    wall_offset: float


async def wait_for_first_snapshot(host: str, port: int, path: str) -> None:
    """Return once one probe watcher of `path` got a snapshot (so there is one to send on
    connect); RuntimeError if the WebSocket is refused or no snapshot comes in time."""
    probe = WatcherFleet(host, port, path)
    try:
        if await probe.connect(1) != 1:
            raise RuntimeError(f"no WebSocket on {path}: {dict(probe.failures)}")
        if await probe.wait_total(0, FIRST_SNAPSHOT_S):
            raise RuntimeError(f"no snapshot on {path} within {FIRST_SNAPSHOT_S} s")
    finally:
        probe.close()


@dataclass(frozen=True, slots=True)
class WatchedPoll:
    """The bench poll on a running `tally serve` (`server_pid`), watched over its `/live`."""

    host: str
    port: int
    poll_id: str
    server_pid: int

    async def during(
        self, watchers: int, cast_votes: Callable[[], Awaitable[LoadResult]]
    ) -> tuple[LoadResult, LiveRun]:
        """Connect `watchers`, let them idle, then cast the votes while they read."""
        path = f"/v1/polls/{self.poll_id}/live"
        await wait_for_first_snapshot(self.host, self.port, path)
        before = rss_bytes(self.server_pid)
        fleet = WatcherFleet(self.host, self.port, path)
        try:
            connected = await fleet.connect(watchers)
            await fleet.wait_total(0, FIRST_SNAPSHOT_S)
            await asyncio.sleep(IDLE_SETTLE_S)
            idle = rss_bytes(self.server_pid)
            initial_seq = max((a[0].seq for a in fleet.arrivals() if a), default=0)
            load = await cast_votes()
            accepted = sum(1 for r in load.completed() if r.status == 201)
            missing = await fleet.wait_total(accepted, FINAL_WAIT_S)
            after = rss_bytes(self.server_pid)
        finally:
            fleet.close()
        live = LiveRun(
            watchers, connected, dict(fleet.failures), dict(fleet.lost_by), missing,
            before, idle, after, initial_seq, fleet.arrivals(), fleet.ts_ms, fleet.wall_offset,
        )  # fmt: skip
        return load, live


def live_report(live: LiveRun, load: LoadResult) -> dict[str, Any]:
    """The `--watchers` fields of the report (module docstring)."""
    votes = [
        Vote(r.completed_at - r.latency_s, r.completed_at)
        for r in load.completed()
        if r.status == 201
    ]
    ranks = sample_ranks(len(votes), max(100, MATCH_BUDGET // max(1, live.connected)))
    estimate = match_votes(votes, live.arrivals, rule="rank", ranks=ranks)
    bound = match_votes(votes, live.arrivals, rule="bound", ranks=ranks)
    counts = [len(a) for a in live.arrivals]
    published = [b for b in broadcasts(live.arrivals) if b.seq > live.initial_seq]
    to_all = [b for b in published if b.watchers == live.connected]

    def ts(seq: int) -> float:  # the snapshot's ts on the perf_counter clock
        return live.ts_ms[seq] / 1000.0 - live.wall_offset

    return {
        "watchers": live.requested,
        "watchers_connected": live.connected,
        "watcher_failures": live.failures,
        "watchers_lost": live.lost,
        "final_missing": live.final_missing,
        "vote_load_s": round(load.elapsed_s, 2),
        "votes_sampled": len(ranks),
        "vote_to_visible_ms": summary_ms(estimate.latencies_s, 50, 90, 99),
        "vote_to_visible_bound_ms": summary_ms(bound.latencies_s, 50, 90, 99),
        "unseen": estimate.unseen,
        "snapshots_per_watcher": {
            "min": min(counts, default=0),
            "mean": round(sum(counts) / max(1, len(counts)), 1),
            "max": max(counts, default=0),
        },
        "snapshots_published": len(published),
        "snapshots_to_all_watchers": len(to_all),
        "gateway_rss": {
            "before": live.rss_before,
            "idle": live.rss_idle,
            "after_votes": live.rss_after_votes,
        },
        "gateway_bytes_per_watcher": round(
            (live.rss_idle - live.rss_before) / max(1, live.connected)
        ),
        "broadcast_spread_ms": summary_ms(b.spread_s for b in to_all),
        "broadcast_read_spread_ms": summary_ms(b.read_spread_s for b in to_all),
        "snapshot_age_first_ms": summary_ms(b.first_received - ts(b.seq) for b in to_all),
        "snapshot_age_last_ms": summary_ms(b.last_received - ts(b.seq) for b in to_all),
    }


def print_live(r: dict[str, Any]) -> None:
    """The `--watchers` fields as text, after the rest of the table."""

    def ms(key: str) -> str:
        s = r[key]
        if not s["n"]:
            return "none measured"
        qs = "  ".join(f"{k} {v}" for k, v in s.items() if k != "n")
        return f"{qs}  (n={s['n']})"

    per = r["snapshots_per_watcher"]
    print(
        f"watchers     {r['watchers_connected']:,} of {r['watchers']:,} connected   "
        f"failures {r['watcher_failures'] or 'none'}   lost {r['watchers_lost'] or 'none'}"
    )
    print(
        f"vote load    {r['vote_load_s']} s at tick {r['tick_ms']} ms  "
        f"({r['votes_sampled']:,} votes sampled)"
    )
    print(f"visible ms   {ms('vote_to_visible_ms')}")
    print(f"  bound ms   {ms('vote_to_visible_bound_ms')}   unseen {r['unseen']}")
    print(
        f"snapshots    {r['snapshots_published']} published, "
        f"{r['snapshots_to_all_watchers']} to all; "
        f"per watcher min {per['min']} mean {per['mean']} max {per['max']}"
    )
    print(
        f"memory       {r['gateway_bytes_per_watcher']:,} B per watcher "
        f"(gateway RSS {r['gateway_rss']['before']:,} -> {r['gateway_rss']['idle']:,})"
    )
    print(f"to all ms    {ms('broadcast_spread_ms')}")
    print(f"  read ms    {ms('broadcast_read_spread_ms')}")
    print(f"age last ms  {ms('snapshot_age_last_ms')}")

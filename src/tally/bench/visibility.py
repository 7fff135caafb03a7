"""The arithmetic of the fan-out benchmarks: what watchers saw, turned into figures. No I/O.

Every time is in seconds on one clock, `time.perf_counter()`. On Linux that is CLOCK_MONOTONIC,
which every process of a machine shares, so watchers in several processes can be compared.

**Vote-to-visible.** Snapshots carry totals, not vote ids, so which snapshot first shows a given
vote has to be inferred. The accepted votes are ranked by when their 201 arrived: rank k is the
k-th 201. Two rules follow.

- **Estimate** (`rule="rank"`). Vote k is visible at the first snapshot a watcher reads after
  that 201 whose total is at least k. It is exact unless a snapshot was taken while votes were
  still in flight, in which case it can be off by one snapshot either way.
- **Bound** (`rule="bound"`). Vote k is visible at the first snapshot whose total exceeds the
  number of accepted votes *written* before its 201 arrived (capped at the final total). Such a
  snapshot counted more votes than could have been counted when the 201 arrived, so it was taken
  afterwards and certainly includes vote k. This may report a snapshot later than the true one,
  never an earlier one: it is an upper bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from tally.bench.loadgen import quantile

Rule = Literal["rank", "bound"]


class Arrival(NamedTuple):
    """One snapshot frame as one watcher got it. A tuple, because a run holds hundreds of
    thousands of them and ships them between processes."""

    seq: int
    total: int
    # When the watcher's process read the frame: what the watcher's code could act on.
    read_at: float
    # When the kernel queued the bytes on the watcher's socket (SO_TIMESTAMPNS): the frame has
    # reached the watcher, however busy the watcher's process is.
    received_at: float


@dataclass(frozen=True, slots=True)
class Vote:
    """One accepted vote as the load generator saw it."""

    written_at: float
    completed_at: float  # when its 201 was read


@dataclass(frozen=True, slots=True)
class Visibility:
    """Vote-to-visible latencies of the sampled votes on one or more watchers."""

    latencies_s: list[float]
    # (vote, watcher) pairs where no snapshot that includes the vote reached the watcher.
    unseen: int


def sample_ranks(votes: int, limit: int) -> list[int]:
    """Up to `limit` ranks out of 1..votes, evenly spaced, always including the first and last."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if votes <= limit:
        return list(range(1, votes + 1))
    if limit == 1:
        return [votes]
    return [1 + i * (votes - 1) // (limit - 1) for i in range(limit)]


def thresholds(votes: Sequence[Vote], rule: Rule) -> list[int]:
    """For each vote in 201 order, the total a snapshot needs to count as including it."""
    completed = sorted(votes, key=lambda v: v.completed_at)
    if rule == "rank":
        return list(range(1, len(completed) + 1))
    written = sorted(v.written_at for v in votes)
    final = len(votes)
    return [min(bisect.bisect_left(written, v.completed_at) + 1, final) for v in completed]


def vote_to_visible(
    votes: Sequence[Vote],
    arrivals_per_watcher: Iterable[Sequence[Arrival]],
    *,
    rule: Rule,
    ranks: Sequence[int] | None = None,
) -> Visibility:
    """Latency from each vote's 201 to the first snapshot after it that includes it (by `rule`),
    on every watcher. `ranks` (1-based, ascending) samples the votes; None measures all of them.

    Each watcher's arrivals must be in the order it read them. O(votes + arrivals) per watcher.
    """
    completions = sorted(v.completed_at for v in votes)
    needed = thresholds(votes, rule)
    chosen = range(1, len(votes) + 1) if ranks is None else ranks
    latencies: list[float] = []
    unseen = 0
    for arrivals in arrivals_per_watcher:
        j = 0
        for k in chosen:
            done_at, need = completions[k - 1], needed[k - 1]
            # Both conditions only tighten as k grows (201 times and thresholds ascend), so the
            # first arrival meeting them never moves backwards.
            while j < len(arrivals) and (arrivals[j].total < need or arrivals[j].read_at < done_at):
                j += 1
            if j == len(arrivals):
                unseen += 1
            else:
                latencies.append(arrivals[j].read_at - done_at)
    return Visibility(latencies, unseen)


@dataclass(frozen=True, slots=True)
class Broadcast:
    """How one snapshot (one seq) spread over the watchers that received it."""

    seq: int
    total: int
    watchers: int
    first_received: float
    last_received: float
    first_read: float
    last_read: float

    @property
    def spread_s(self) -> float:
        """From the first watcher's socket to the last one's: the time to reach them all."""
        return self.last_received - self.first_received

    @property
    def read_spread_s(self) -> float:
        """The same, by when the watchers' processes read it (includes the clients' own CPU)."""
        return self.last_read - self.first_read


def broadcasts(arrivals_per_watcher: Iterable[Sequence[Arrival]]) -> list[Broadcast]:
    """One Broadcast per seq any watcher received, in seq order."""
    acc: dict[int, list[float]] = {}
    totals: dict[int, int] = {}
    for arrivals in arrivals_per_watcher:
        for a in arrivals:
            s = acc.get(a.seq)
            if s is None:
                acc[a.seq] = [1, a.received_at, a.received_at, a.read_at, a.read_at]
                totals[a.seq] = a.total
                continue
            s[0] += 1
            s[1] = min(s[1], a.received_at)
            s[2] = max(s[2], a.received_at)
            s[3] = min(s[3], a.read_at)
            s[4] = max(s[4], a.read_at)
    return [
        Broadcast(seq, totals[seq], int(s[0]), s[1], s[2], s[3], s[4])
        for seq, s in sorted(acc.items())
    ]


def summary_ms(values_s: Iterable[float], *qs: float) -> dict[str, float | int]:
    """`n`, the percentiles (default p50 and p99) and `max` of durations, in milliseconds.

    Empty input gives only `{"n": 0}`: a figure of nothing would be made up.
    """
    ordered = sorted(values_s)
    if not ordered:
        return {"n": 0}
    result: dict[str, float | int] = {"n": len(ordered)}
    for q in qs or (50.0, 99.0):
        result[f"p{q:g}"] = round(1000.0 * quantile(ordered, q), 2)
    result["max"] = round(1000.0 * ordered[-1], 2)
    return result

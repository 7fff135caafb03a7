"""Turnout per minute: how many ballots a poll's ledger records in each minute (UTC), and the
running total. Pure: no clock, no I/O; times are integer milliseconds since the Unix epoch.

What is counted: every vote record of the ledger that passes its admission check, accepted or
held for review (a ballot cast, whatever a reviewer decides later), in the minute of its
accepted time, the time the store gave it (the same `t` the receipt and the ledger carry). A
vote whose admission check fails (not admitted by any gateway) is no ballot and is not counted.
So the running total at the close is the number of voters who took part; the result's total is
that less held votes not released.

The archiver buckets each record as it appends it to the ledger (archive.poll_logs.PollReview)
and, on a takeover, again from the published leaves: the buckets are exact, not sampled, and
cost nothing on the vote path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MINUTE_MS = 60_000
# Past this many minutes between the first and the last vote (~69 days), empty minutes are left
# out instead of listed as 0, so a long-running poll's export stays small.
MAX_FILLED_MINUTES = 100_000


def minute_of(at_ms: int) -> int:
    """The start of the UTC minute holding `at_ms` (epoch ms; leap seconds do not exist here)."""
    return at_ms - at_ms % MINUTE_MS


@dataclass(frozen=True, slots=True)
class TurnoutRow:
    minute_ms: int  # the minute's start
    votes: int  # ballots recorded in that minute
    cumulative: int  # ballots recorded up to the end of that minute


def turnout_rows(buckets: Mapping[int, int]) -> list[TurnoutRow]:
    """The minutes in order, from the first with a ballot to the last, each minute between them
    listed (0 ballots) unless they span more than MAX_FILLED_MINUTES. `buckets`: minute start ->
    ballots; a key that is not a minute start is a bug in the caller (ValueError)."""
    if any(minute % MINUTE_MS for minute in buckets):
        raise ValueError("turnout buckets must be keyed by minute starts")
    minutes = sorted(m for m, n in buckets.items() if n)
    if not minutes:
        return []
    first, last = minutes[0], minutes[-1]
    if (last - first) // MINUTE_MS < MAX_FILLED_MINUTES:
        minutes = list(range(first, last + MINUTE_MS, MINUTE_MS))
    rows = []
    cumulative = 0
    for minute in minutes:
        votes = buckets.get(minute, 0)
        cumulative += votes
        rows.append(TurnoutRow(minute, votes, cumulative))
    return rows

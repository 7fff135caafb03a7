"""Token buckets per key (a client address), in one process's memory: the edge's first, cheapest
rate limit, taken before a request's body or credentials are looked at.

Each bucket holds `burst` tokens and refills `rate` per second; a request takes one. It is kept as
GCRA does, as one float per key: the "theoretical arrival time" (TAT) at which the bucket would be
full again. A request at `now` fits if TAT - now leaves room for one more token; it then moves TAT
on by 1/rate. A key whose TAT has passed holds a full bucket, exactly like a key never seen, so
it can be forgotten at any time: that is what keeps memory bounded (`max_keys`), by dropping full
buckets first and, only when more than half the table is still busy, the oldest keys too (which
lets those addresses start again with a full bucket: leniency under a very wide flood, never a
false refusal). Dropping is done in batches, so each request costs O(1) amortised.

Pure: time comes in as an argument (seconds, monotonic); no I/O, no locks (one event loop).
"""

from __future__ import annotations

import itertools


class TokenBuckets:
    __slots__ = ("_interval", "_max_keys", "_tat", "_tolerance")

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if not rate > 0 or burst < 1 or max_keys < 2:
            raise ValueError("token buckets need rate > 0, burst >= 1 and max_keys >= 2")
        self._interval = 1.0 / rate
        # How far TAT may run ahead of now and still take a token: burst - 1 refill intervals.
        self._tolerance = (burst - 1) * self._interval
        self._max_keys = max_keys
        self._tat: dict[str, float] = {}

    def take(self, key: str, now: float) -> float:
        """Take a token from `key`'s bucket at `now`: 0.0 if there was one, otherwise the seconds
        until there will be (and nothing is taken)."""
        tat = self._tat.get(key)
        if tat is None:
            if len(self._tat) >= self._max_keys:
                self._forget(now)
            tat = now
        elif tat < now:
            tat = now
        wait = tat - now - self._tolerance
        if wait > 0:
            return wait
        self._tat[key] = tat + self._interval
        return 0.0

    def __len__(self) -> int:
        return len(self._tat)

    def _forget(self, now: float) -> None:
        full = [key for key, tat in self._tat.items() if tat <= now]
        for key in full:
            del self._tat[key]
        excess = len(self._tat) - self._max_keys // 2
        if excess > 0:  # a flood from many addresses: the oldest keys start afresh
            for key in list(itertools.islice(self._tat, excess)):
                del self._tat[key]

"""Fraud scoring: what a vote request's signals add up to under a poll's risk rules, and the
windowed counters the gateway measures the velocity signals with.

Pure: no clock, no I/O. The caller measures the signals (tally.service.risk) and passes the time
in. The rules and thresholds are data, one `Risk` per poll (tally.domain.defences):

    score   = sum of the scores of the rules whose signal was measured and matches
    verdict = HOLD if score >= hold_at, else CHALLENGE if score >= challenge_at, else ADMIT

A signal that was not measured (no address, no token time, no challenge answer) matches no rule:
a rule can only count against what the request really showed.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

from tally.domain.defences import Risk, Signal

NO_REASON = "none"  # the reason of a verdict no rule contributed to (a metrics label)


class RiskVerdict(StrEnum):
    ADMIT = "admit"
    CHALLENGE = "challenge"  # admit only with an answer `harder_by` bits above the poll's
    HOLD = "hold"  # record, but hold for a reviewer


@dataclass(frozen=True, slots=True)
class Assessment:
    """A request's score, the reasons of the rules that made it (in rule order), and the verdict.
    `reason` is the one that weighed most (the first of the heaviest): the label of the verdict
    in metrics, and the reason a held vote is filed under for reviewers."""

    score: int
    reasons: tuple[str, ...]
    verdict: RiskVerdict
    reason: str


def assess(risk: Risk, signals: dict[Signal, float]) -> Assessment:
    """Score `signals` (the measured ones only) against `risk`'s rules."""
    score = 0
    reasons: list[str] = []
    heaviest, reason = 0, NO_REASON
    for rule in risk.rules:
        measured = signals.get(rule.signal)
        if measured is None or not rule.matches(measured):
            continue
        score += rule.score
        reasons.append(rule.reason)
        if rule.score > heaviest:
            heaviest, reason = rule.score, rule.reason
    if score >= risk.hold_at:
        verdict = RiskVerdict.HOLD
    elif score >= risk.challenge_at:
        verdict = RiskVerdict.CHALLENGE
    else:
        verdict = RiskVerdict.ADMIT
    return Assessment(score, tuple(reasons), verdict, reason)


class WindowCounter:
    """Events per key over the last `window_ms`, in bounded memory.

    The approximate sliding window of two fixed windows (as Cloudflare's and nginx's rate
    counters): count = previous window's count x the share of it still inside the sliding window
    + the current window's count. All keys share aligned windows, so a new window simply swaps
    two dicts: nothing is swept per key, and memory is at most 2 x `max_keys` entries. A key
    first seen while the current window already holds `max_keys` keys is not recorded (it reads
    as unseen); the window's end forgets everything older, so the bound never blinds the counter
    for longer than one window.

    Not thread-safe: one per event loop (one gateway process)."""

    def __init__(self, window_ms: int = 60_000, max_keys: int = 100_000) -> None:
        if window_ms <= 0 or max_keys <= 0:
            raise ValueError("window_ms and max_keys must be positive")
        self._window_ms = window_ms
        self._max_keys = max_keys
        self._index = 0  # which fixed window `_current` counts
        self._current: dict[Hashable, int] = {}
        self._previous: dict[Hashable, int] = {}

    def add(self, key: Hashable, now_ms: int) -> None:
        """Count one event for `key` at `now_ms`."""
        self._roll(now_ms)
        current = self._current
        n = current.get(key)
        if n is not None:
            current[key] = n + 1
        elif len(current) < self._max_keys:
            current[key] = 1

    def count(self, key: Hashable, now_ms: int) -> float:
        """Events for `key` in the sliding window that ends at `now_ms` (an estimate: exact for
        events spread evenly over the previous window)."""
        self._roll(now_ms)
        previous = self._previous.get(key, 0)
        current = self._current.get(key, 0)
        if not previous:
            return float(current)
        elapsed = (now_ms % self._window_ms) / self._window_ms
        return previous * (1.0 - elapsed) + current

    def __len__(self) -> int:
        """Keys held (both windows), for the memory bound."""
        return len(self._current) + len(self._previous)

    def _roll(self, now_ms: int) -> None:
        index = now_ms // self._window_ms
        if index == self._index:
            return
        if index < self._index:  # a clock step back: keep counting in the window we are in
            return
        self._previous = self._current if index == self._index + 1 else {}
        self._current = {}
        self._index = index

"""Prometheus metrics, kept deliberately tiny: an observation is a dict lookup and an add
(no locks: one event loop per process), so counting every vote costs next to nothing."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from tally.domain.defences import LimitScope


class Counter:
    def __init__(self, name: str, help_text: str, label: str) -> None:
        self.name = name
        self.help = help_text
        self.label = label
        self.values: defaultdict[str, int] = defaultdict(int)

    def inc(self, label_value: str, amount: int = 1) -> None:
        self.values[label_value] += amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f'{self.name}{{{self.label}="{v}"}} {n}' for v, n in sorted(self.values.items())]
        return lines


class LabelledCounter:
    """A counter family with several labels: `inc(*values)` in the order of `labels`. At most
    `max_series` label sets: beyond, a new set's last label reads "other" (label values that
    come from data, such as a poll's rule names, must not grow a scrape without bound)."""

    def __init__(
        self, name: str, help_text: str, labels: tuple[str, ...], max_series: int = 256
    ) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.max_series = max_series
        self.values: defaultdict[tuple[str, ...], int] = defaultdict(int)

    def inc(self, *label_values: str) -> None:
        if label_values not in self.values and len(self.values) >= self.max_series:
            label_values = (*label_values[:-1], "other")
        self.values[label_values] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for values, n in sorted(self.values.items()):
            labels = ",".join(f'{k}="{v}"' for k, v in zip(self.labels, values, strict=True))
            lines.append(f"{self.name}{{{labels}}} {n}")
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        running += self.counts[-1]
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        lines.append(f"{self.name}_sum {self.sum:.6f}")
        lines.append(f"{self.name}_count {running}")
        return lines


class Sampled:
    """A value read when /metrics is scraped (a gauge, or a counter kept elsewhere)."""

    def __init__(self, name: str, help_text: str, kind: str, read: Callable[[], float]) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.read = read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} {self.kind}",
            f"{self.name} {self.read():g}",
        ]


class Metrics:
    def __init__(self, *, vote_path: bool = True) -> None:
        """`vote_path`: render the vote families (votes and their durations); off for the roles
        that take no votes (the aggregator, the archiver)."""
        self._vote_path = vote_path
        self.votes = Counter("tally_votes_total", "Votes by outcome.", "outcome")
        self.vote_seconds = Histogram(
            "tally_vote_duration_seconds",
            "Time from a vote request's arrival to its answer.",
            [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        )
        # Reasons are rule names (a-z, 0-9 and '-' by domain.defences): nothing to escape.
        self.risk_verdicts = LabelledCounter(
            "tally_risk_verdicts_total",
            "Fraud-scoring verdicts (admit, challenge, hold) by the reason that weighed most.",
            ("verdict", "reason"),
        )
        self.rate_limited = Counter(
            "tally_rate_limited_total",
            "Vote requests refused by a rate limit (429 rate-limited), by the limit's scope.",
            "scope",
        )
        for scope in LimitScope:  # every scope from the first scrape on, at 0
            self.rate_limited.values[scope.value] = 0
        self.challenges_issued = Counter(
            "tally_challenges_issued_total",
            "Proof-of-work challenges handed out, by how: with a 428 (vote), GET .../challenge "
            "(endpoint), or a harder one the risk scorer asked for (risk).",
            "via",
        )
        self.challenge_answers = Counter(
            "tally_challenge_answers_total",
            "Proof-of-work answers checked, by result: solved, or why they were refused.",
            "result",
        )
        self.edge_refusals = Counter(
            "tally_edge_refusals_total",
            "Requests and connections the HTTP edge refused or closed, by reason "
            "(head-too-large, head-timeout, body-timeout, too-many-connections, rate-limited, "
            "malformed).",
            "reason",
        )
        self.review_decisions = Counter(
            "tally_review_decisions_total",
            "Held votes reviewers decided on, by outcome (released, voided, already-decided, "
            "conflict, not-held).",
            "outcome",
        )
        # Raised by the archiver (tally.archiver): one series per kind and poll with an alarm
        # (alarms are rare; past 100 polls the poll label reads "other").
        self.integrity_alarms = LabelledCounter(
            "tally_integrity_alarms_total",
            "Integrity alarms this archiver raised (counter-mismatch, ledger-gap, unsigned-vote), "
            "by kind and poll: live counters and ledger disagree, or the ledger queue lost entries.",
            ("kind", "poll"),
            max_series=100,
        )
        self.batch_size = Histogram(
            "tally_valkey_batch_commands",
            "Commands sent to Valkey in one write (per event-loop tick).",
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
        )

        self.sampled: list[Sampled] = []
        # What a scrape of /metrics answers, given this process's text: that text, or for a
        # worker of `tally gateway --workers N` the sum over every worker's (wiring.workers).
        self.combine: Callable[[str], Awaitable[str]] | None = None

    def sample(self, name: str, help_text: str, kind: str, read: Callable[[], float]) -> None:
        """Report `read()` under `name` at every scrape (kind: gauge or counter)."""
        self.sampled.append(Sampled(name, help_text, kind, read))

    async def scrape(self) -> str:
        """The answer to GET /metrics."""
        text = self.render()
        return text if self.combine is None else await self.combine(text)

    def render(self) -> str:
        lines: list[str] = []
        if self._vote_path:
            lines += self.votes.render() + self.vote_seconds.render()
            lines += self.rate_limited.render()
            lines += self.challenges_issued.render() + self.challenge_answers.render()
            lines += self.risk_verdicts.render()
            lines += self.review_decisions.render()
        if self._vote_path:
            lines += self.edge_refusals.render()
        lines += self.integrity_alarms.render()
        lines += self.batch_size.render()
        for sampled in self.sampled:
            lines += sampled.render()
        return "\n".join(lines) + "\n"

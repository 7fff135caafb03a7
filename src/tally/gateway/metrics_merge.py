"""Sum Prometheus texts: what `/metrics` answers for `tally gateway --workers N`, where each
worker keeps its own counters and a scrape lands on any one of them (wiring.workers).

Pure functions on the text format Metrics renders (`# HELP`, `# TYPE`, then `name{labels} value`
lines, no timestamps): each sample, identified by its name and labels, is summed over the texts
that have it. Counters, histogram buckets, `_sum` and `_count`, and gauges all add up across
processes (a gateway's gauges count what the process holds: live connections, say).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class Family:
    """One metric family of a text: its comment lines and its samples, in order."""

    comments: list[str] = field(default_factory=list)
    samples: dict[str, float] = field(default_factory=dict)  # `name{labels}` -> value


# A parsed text: its families by name, in the order they appear.
Exposition = dict[str, Family]


def parse(text: str) -> Exposition:
    """The families of one text; raises ValueError on a line that is no comment or sample."""
    families: Exposition = {}
    current: Family | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                current = families.setdefault(parts[2], Family())
            elif current is None:
                continue  # a free comment before any family: nothing to attach it to
            current.comments.append(line)
            continue
        key, space, raw = line.rpartition(" ")
        if not space or not key:
            raise ValueError(f"not a sample line: {line!r}")
        if current is None:  # a sample without comments: a family of its own
            current = families.setdefault(key.partition("{")[0], Family())
        current.samples[key] = current.samples.get(key, 0.0) + float(raw)
    return families


def summed(expositions: Iterable[Exposition]) -> Exposition:
    """Every sample summed over the expositions that have it. Families and samples keep the
    order of their first appearance; a family's comments come from the first that has it."""
    total: Exposition = {}
    for exposition in expositions:
        for name, family in exposition.items():
            into = total.get(name)
            if into is None:
                total[name] = into = Family(list(family.comments))
            for key, value in family.samples.items():
                into.samples[key] = into.samples.get(key, 0.0) + value
    return total


def gauge(name: str, help_text: str, value: float) -> Exposition:
    """A one-sample gauge family, to add to an exposition."""
    return {name: Family([f"# HELP {name} {help_text}", f"# TYPE {name} gauge"], {name: value})}


def render(exposition: Exposition) -> str:
    """The Prometheus text of an exposition (integers without a decimal point)."""
    lines: list[str] = []
    for family in exposition.values():
        lines += family.comments
        lines += [f"{key} {_number(value)}" for key, value in family.samples.items()]
    return "\n".join(lines) + "\n"


def sum_texts(texts: Sequence[str]) -> str:
    """`texts` as one text, each sample summed (raises ValueError on a malformed text)."""
    return render(summed(parse(text) for text in texts))


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)  # the shortest text that reads back as the same float

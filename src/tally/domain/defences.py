"""A poll's defence settings: its rate limits, its proof-of-work difficulty and its risk rules.

Pure values: no clock, no I/O. Each poll carries one `Defences` (set when it is created, shown by
`tally poll show`, immutable afterwards like the rest of its definition). The admission chain
(tally.service.admission) reads it; the checks that enforce each part live in tally.security.

The wire shape (`to_document` / `from_document`) is the one JSON object used everywhere: the
`defences` field of `POST /v1/polls`, of a poll's representation, of the stored definition, and
the operator's TALLY_DEFENCES (the defaults for new polls). A document may leave fields out: they
keep the base's value. `null` for a rate limit turns that limit off.

Defaults are sized for a TV final (ARCHITECTURE.md section 6): a household or a carrier's NAT
address votes a few times a minute at most, a /24 a few hundred, one voter retries a handful of
times; the poll-wide limit only guards the store against a flood beyond the planned peak.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from tally.domain.errors import InvalidInput

MAX_DIFFICULTY = 32  # leading zero bits: 2**32 hashes is hours in a browser
MAX_CHALLENGE_TTL_S = 3600
MAX_RATE_PER_S = 10_000_000.0
MAX_BURST = 100_000_000
MAX_RULES = 32
MAX_REASON = 64


@dataclass(frozen=True, slots=True)
class Rate:
    """A GCRA limit: `per_s` requests a second sustained, up to `burst` at once."""

    per_s: float
    burst: int

    def check(self, field: str) -> None:
        if not (0 < self.per_s <= MAX_RATE_PER_S) or not math.isfinite(self.per_s):
            raise InvalidInput(f"{field}.per_s", f"must be above 0 and at most {MAX_RATE_PER_S:g}")
        if not 1 <= self.burst <= MAX_BURST:
            raise InvalidInput(f"{field}.burst", f"must be 1 to {MAX_BURST}")


class LimitScope(StrEnum):
    """What a rate limit counts per: the keys of `RateLimits`, and the `scope` of a 429."""

    ADDRESS = "address"  # one IPv4 address, or one IPv6 /64
    SUBNET = "subnet"  # one IPv4 /24, or one IPv6 /48
    VOTER = "voter"  # one identity (issuer and subject), across polls
    POLL = "poll"  # the whole poll, spread over its lanes


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The distributed (Valkey) GCRA limits on vote requests; None turns one off. Requests without
    a network address (in-process callers) skip the address and subnet limits."""

    address: Rate | None = Rate(per_s=1.0, burst=20)
    subnet: Rate | None = Rate(per_s=20.0, burst=400)
    voter: Rate | None = Rate(per_s=0.2, burst=20)
    poll: Rate | None = Rate(per_s=300_000.0, burst=600_000)

    def of(self, scope: LimitScope) -> Rate | None:
        rate: Rate | None = getattr(self, scope.value)
        return rate


@dataclass(frozen=True, slots=True)
class ProofOfWork:
    """The proof-of-work challenge: `difficulty` leading zero bits of SHA-256 for a vote of normal
    risk (0: none unless the risk rules ask for one), raised with risk up to `max_difficulty`; a
    challenge expires `ttl_s` after it is issued."""

    difficulty: int = 12
    max_difficulty: int = 22
    ttl_s: int = 300


class Signal(StrEnum):
    """What the risk scorer measures about a vote request (tally.security.risk)."""

    SUBNET_VELOCITY = "subnet_velocity"  # vote requests a minute from the request's subnet
    AGENT_VELOCITY = "agent_velocity"  # vote requests a minute with the request's user agent
    TOKEN_AGE_S = "token_age_s"  # noqa: S105  # a signal name, not a secret: seconds since the token was issued
    SOLVE_MS = "solve_ms"  # how long the challenge took to solve, from issue to the vote
    FAILURES = "failures"  # refused attempts from the address in the last minute


class Comparison(StrEnum):
    ABOVE = "above"
    BELOW = "below"


@dataclass(frozen=True, slots=True)
class RiskRule:
    """Adds `score` when `signal` is above (or below) `value`; `reason` names it in metrics, in
    held votes and to reviewers."""

    signal: Signal
    comparison: Comparison
    value: float
    score: int
    reason: str

    def matches(self, measured: float) -> bool:
        if self.comparison is Comparison.ABOVE:
            return measured > self.value
        return measured < self.value


DEFAULT_RULES = (
    RiskRule(Signal.SUBNET_VELOCITY, Comparison.ABOVE, 600.0, 40, "subnet-velocity"),
    RiskRule(Signal.AGENT_VELOCITY, Comparison.ABOVE, 6000.0, 20, "agent-velocity"),
    RiskRule(Signal.TOKEN_AGE_S, Comparison.BELOW, 10.0, 20, "fresh-token"),
    RiskRule(Signal.SOLVE_MS, Comparison.BELOW, 2.0, 40, "instant-solve"),
    RiskRule(Signal.FAILURES, Comparison.ABOVE, 10.0, 30, "repeated-failures"),
)


@dataclass(frozen=True, slots=True)
class Risk:
    """The scorer's rules and thresholds: a vote scoring `challenge_at` or more must solve a
    challenge `harder_by` bits harder than the poll's difficulty; one scoring `hold_at` or more is
    recorded but held for review."""

    rules: tuple[RiskRule, ...] = DEFAULT_RULES
    challenge_at: int = 40
    hold_at: int = 80
    harder_by: int = 6


@dataclass(frozen=True, slots=True)
class Defences:
    limits: RateLimits = RateLimits()
    pow: ProofOfWork = ProofOfWork()
    risk: Risk = Risk()

    def check(self) -> Defences:
        """Raise InvalidInput naming the first field out of range; return self."""
        for scope in LimitScope:
            rate = self.limits.of(scope)
            if rate is not None:
                rate.check(f"defences.limits.{scope.value}")
        pow_ = self.pow
        if not 0 <= pow_.difficulty <= MAX_DIFFICULTY:
            raise InvalidInput("defences.pow.difficulty", f"must be 0 to {MAX_DIFFICULTY}")
        if not pow_.difficulty <= pow_.max_difficulty <= MAX_DIFFICULTY:
            raise InvalidInput(
                "defences.pow.max_difficulty", f"must be difficulty to {MAX_DIFFICULTY}"
            )
        if not 1 <= pow_.ttl_s <= MAX_CHALLENGE_TTL_S:
            raise InvalidInput("defences.pow.ttl_s", f"must be 1 to {MAX_CHALLENGE_TTL_S}")
        risk = self.risk
        if len(risk.rules) > MAX_RULES:
            raise InvalidInput("defences.risk.rules", f"at most {MAX_RULES} rules")
        for i, rule in enumerate(risk.rules):
            if not math.isfinite(rule.value) or rule.value < 0:
                raise InvalidInput(f"defences.risk.rules[{i}].value", "must be 0 or more")
            if not -1000 <= rule.score <= 1000:
                raise InvalidInput(f"defences.risk.rules[{i}].score", "must be -1000 to 1000")
            if not rule.reason or len(rule.reason) > MAX_REASON or not _is_code(rule.reason):
                raise InvalidInput(
                    f"defences.risk.rules[{i}].reason",
                    f"must be 1 to {MAX_REASON} of a-z, 0-9 and '-'",
                )
        if not 1 <= risk.challenge_at <= risk.hold_at:
            raise InvalidInput("defences.risk.challenge_at", "must be 1 to hold_at")
        if not 0 <= risk.harder_by <= MAX_DIFFICULTY:
            raise InvalidInput("defences.risk.harder_by", f"must be 0 to {MAX_DIFFICULTY}")
        return self


DEFAULT_DEFENCES = Defences()


def _is_code(text: str) -> bool:
    return all(c.isascii() and (c.isdigit() or c.islower() or c == "-") for c in text)


def to_document(defences: Defences) -> dict[str, Any]:
    """The JSON object for a poll's defences (every field present)."""
    limits = defences.limits
    return {
        "limits": {
            scope.value: None
            if (rate := limits.of(scope)) is None
            else {"per_s": rate.per_s, "burst": rate.burst}
            for scope in LimitScope
        },
        "pow": {
            "difficulty": defences.pow.difficulty,
            "max_difficulty": defences.pow.max_difficulty,
            "ttl_s": defences.pow.ttl_s,
        },
        "risk": {
            "rules": [
                {
                    "signal": r.signal.value,
                    "comparison": r.comparison.value,
                    "value": r.value,
                    "score": r.score,
                    "reason": r.reason,
                }
                for r in defences.risk.rules
            ],
            "challenge_at": defences.risk.challenge_at,
            "hold_at": defences.risk.hold_at,
            "harder_by": defences.risk.harder_by,
        },
    }


def from_document(document: object, base: Defences = DEFAULT_DEFENCES) -> Defences:
    """`base` with the fields `document` gives; InvalidInput naming the first bad field. Unknown
    fields are refused, so a typo never silently leaves a defence at its default."""
    doc = _object(document, "defences")
    _only(doc, "defences", {"limits", "pow", "risk"})
    limits = base.limits
    if "limits" in doc:
        given = _object(doc["limits"], "defences.limits")
        _only(given, "defences.limits", {s.value for s in LimitScope})
        limits = replace(
            limits,
            **{
                name: _rate(value, f"defences.limits.{name}", limits.of(LimitScope(name)))
                for name, value in given.items()
            },
        )
    pow_ = base.pow
    if "pow" in doc:
        given = _object(doc["pow"], "defences.pow")
        _only(given, "defences.pow", {f.name for f in fields(ProofOfWork)})
        pow_ = replace(pow_, **{k: _int(v, f"defences.pow.{k}") for k, v in given.items()})
    risk = base.risk
    if "risk" in doc:
        given = _object(doc["risk"], "defences.risk")
        _only(given, "defences.risk", {f.name for f in fields(Risk)})
        changes: dict[str, Any] = {
            k: _int(v, f"defences.risk.{k}") for k, v in given.items() if k != "rules"
        }
        if "rules" in given:
            changes["rules"] = _rules(given["rules"])
        risk = replace(risk, **changes)
    return Defences(limits, pow_, risk).check()


def _rate(value: object, field: str, base: Rate | None) -> Rate | None:
    if value is None:
        return None
    given = _object(value, field)
    _only(given, field, {"per_s", "burst"})
    per_s = given.get("per_s", None if base is None else base.per_s)
    burst = given.get("burst", None if base is None else base.burst)
    if per_s is None or burst is None:
        raise InvalidInput(field, "needs per_s and burst")
    rate = Rate(_number(per_s, f"{field}.per_s"), _int(burst, f"{field}.burst"))
    rate.check(field)
    return rate


def _rules(value: object) -> tuple[RiskRule, ...]:
    if not isinstance(value, list):
        raise InvalidInput("defences.risk.rules", "must be a list")
    rules = []
    for i, item in enumerate(value):
        field = f"defences.risk.rules[{i}]"
        given = _object(item, field)
        _only(given, field, {f.name for f in fields(RiskRule)})
        missing = {f.name for f in fields(RiskRule)} - given.keys()
        if missing:
            raise InvalidInput(field, f"needs {', '.join(sorted(missing))}")
        try:
            signal = Signal(str(given["signal"]))
        except ValueError:
            raise InvalidInput(
                f"{field}.signal", f"must be one of {', '.join(s.value for s in Signal)}"
            ) from None
        try:
            comparison = Comparison(str(given["comparison"]))
        except ValueError:
            raise InvalidInput(f"{field}.comparison", "must be above or below") from None
        reason = given["reason"]
        if not isinstance(reason, str):
            raise InvalidInput(f"{field}.reason", "must be a string")
        rules.append(
            RiskRule(
                signal,
                comparison,
                _number(given["value"], f"{field}.value"),
                _int(given["score"], f"{field}.score"),
                reason,
            )
        )
    return tuple(rules)


def _object(value: object, field: str) -> Mapping[str, object]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(field, "must be an object")
    return value


def _only(given: Mapping[str, object], field: str, allowed: set[str]) -> None:
    unknown = sorted(given.keys() - allowed)
    if unknown:
        raise InvalidInput(f"{field}.{unknown[0]}", "is not a known field")


def _int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, "must be an integer")
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, "must be a number")
    return float(value)

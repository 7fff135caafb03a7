"""Polls: the definition a voter votes on, and its lifecycle as a transition table.

Pure: no clock, no I/O. Times are integer milliseconds since the Unix epoch, passed in.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from enum import StrEnum

from tally.domain.defences import DEFAULT_DEFENCES, Defences
from tally.domain.errors import IllegalTransition, InvalidInput

MIN_OPTIONS = 2
MAX_OPTIONS = 64
MAX_TITLE = 200
MAX_LABEL = 100
MAX_LANES = 1024
DEFAULT_LANES = 16
# Voter-index buckets per lane: sized so a bucket holds ~64 voters at the expected electorate,
# which keeps every bucket a compact listpack (see store/keys.py and BENCHMARKS.md).
VOTERS_PER_BUCKET = 64
# Poisson headroom below the listpack limit of 512 (Valkey 9 default; the embedded server pins it).
MAX_VOTERS_PER_BUCKET = 384
MAX_BUCKET_BITS = 16
DEFAULT_EXPECTED_VOTERS = 1_000_000
MAX_EXPECTED_VOTERS = 10_000_000_000

POLL_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""What can name a poll: 1 to 64 of a-z, 0-9, '_' and '-', the first a letter or digit."""
POLL_ID_RE = re.compile(POLL_ID_PATTERN)
MAX_OPTION_ID = 32
"""Characters in an option id: up to 128 UTF-8 bytes, well inside the ledger's 255 (a u8 length)."""


def is_option_id(text: str) -> bool:
    """Whether `text` can name an option: 1 to MAX_OPTION_ID lower-case letters, digits (any
    script), combining marks and '-', in NFC, the first a letter or digit. Every id of the
    ASCII rule before issue 12 ([a-z0-9][a-z0-9-]{0,31}) is one, so old polls stay valid; none
    holds '|', white space or a control, which the store's held fields and the ledger's result
    lines use as separators."""
    return (
        0 < len(text) <= MAX_OPTION_ID
        and _category(text[0]) in "LN"
        and all(ch == "-" or _category(ch) in "LNM" for ch in text)
        and text == text.lower()
        and unicodedata.is_normalized("NFC", text)
    )


def _category(ch: str) -> str:
    """The Unicode major class: L letter, N number, M mark, P punctuation, ..."""
    return unicodedata.category(ch)[0]


def is_poll_id(text: str) -> bool:
    """Whether `text` can name a poll (POLL_ID_PATTERN): checked before any lookup."""
    return POLL_ID_RE.fullmatch(text) is not None


class PollState(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"


# Every legal move. A draft may be cancelled (closed) without ever opening.
TRANSITIONS: dict[PollState, frozenset[PollState]] = {
    PollState.DRAFT: frozenset({PollState.OPEN, PollState.CLOSED}),
    PollState.OPEN: frozenset({PollState.CLOSED}),
    PollState.CLOSED: frozenset(),
}


class Visibility(StrEnum):
    """Who sees a poll's counts before it closes (domain.visibility holds the rule)."""

    LIVE = "live"  # everyone, all the time (the default, and every poll made before issue 12)
    AFTER_VOTE = "after-vote"  # a voter once they have voted; everyone once the poll closes
    AFTER_CLOSE = "after-close"  # everyone once the poll closes


# States only ever move forward; the rank lets recovery finish a half-applied transition.
STATE_RANK: dict[PollState, int] = {PollState.DRAFT: 0, PollState.OPEN: 1, PollState.CLOSED: 2}


@dataclass(frozen=True, slots=True)
class Option:
    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Poll:
    id: str
    title: str
    options: tuple[Option, ...]
    state: PollState
    lanes: int
    closes_at_ms: int | None
    created_at_ms: int
    bucket_bits: int
    defences: Defences = DEFAULT_DEFENCES  # its rate limits, challenge and risk rules
    visibility: Visibility = Visibility.LIVE  # who sees its counts before it closes

    @property
    def option_ids(self) -> frozenset[str]:
        return frozenset(o.id for o in self.options)

    def effective_state(self, now_ms: int) -> PollState:
        """An open poll past its deadline is closed, whether or not anyone has closed it yet."""
        deadline = self.closes_at_ms
        if self.state is PollState.OPEN and deadline is not None and now_ms >= deadline:
            return PollState.CLOSED
        return self.state

    def moved_to(self, target: PollState, now_ms: int) -> Poll:
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransition(self.id, self.state.value, target.value)
        if (
            target is PollState.OPEN
            and self.closes_at_ms is not None
            and now_ms >= self.closes_at_ms
        ):
            raise IllegalTransition(
                self.id, self.state.value, target.value, "its deadline has passed"
            )
        return replace(self, state=target)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    label: str
    id: str | None = None


def new_poll(
    *,
    poll_id: str,
    title: str,
    options: list[OptionSpec],
    now_ms: int,
    lanes: int = DEFAULT_LANES,
    closes_at_ms: int | None = None,
    expected_voters: int = DEFAULT_EXPECTED_VOTERS,
    defences: Defences = DEFAULT_DEFENCES,
    visibility: Visibility = Visibility.LIVE,
) -> Poll:
    """Validate a poll definition and return it as a draft. Raises InvalidInput naming the field."""
    if not is_poll_id(poll_id):
        raise InvalidInput("id", f"must match {POLL_ID_PATTERN}")
    clean_title = title.strip()
    if not clean_title or len(clean_title) > MAX_TITLE:
        raise InvalidInput("title", f"must be 1 to {MAX_TITLE} characters")
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        raise InvalidInput("options", f"must have {MIN_OPTIONS} to {MAX_OPTIONS} options")
    if lanes < 1 or lanes > MAX_LANES or lanes & (lanes - 1):
        raise InvalidInput("lanes", f"must be a power of two from 1 to {MAX_LANES}")
    if closes_at_ms is not None and closes_at_ms <= now_ms:
        raise InvalidInput("closes_at", "must be in the future")
    if not 1 <= expected_voters <= MAX_EXPECTED_VOTERS:
        raise InvalidInput("expected_voters", f"must be 1 to {MAX_EXPECTED_VOTERS}")
    if expected_voters > lanes * (1 << MAX_BUCKET_BITS) * MAX_VOTERS_PER_BUCKET:
        # Past this, voter-index buckets outgrow compact listpacks and cost ~2.4x the memory.
        needed = _next_power_of_two(
            -(-expected_voters // ((1 << MAX_BUCKET_BITS) * MAX_VOTERS_PER_BUCKET))
        )
        raise InvalidInput(
            "lanes", f"{expected_voters} expected voters need at least {needed} lanes"
        )
    return Poll(
        id=poll_id,
        title=clean_title,
        options=_options(options),
        state=PollState.DRAFT,
        lanes=lanes,
        closes_at_ms=closes_at_ms,
        created_at_ms=now_ms,
        bucket_bits=bucket_bits_for(expected_voters, lanes),
        defences=defences.check(),
        visibility=visibility,
    )


LANES_PER_PRIMARY = 4


def lanes_for(primaries: int) -> int:
    """The default lane count for a store with `primaries` primaries: at least LANES_PER_PRIMARY
    lanes on each (a power of two, never under DEFAULT_LANES), so that a hot poll's votes spread
    over every primary however the lanes' hash slots happen to fall."""
    return min(MAX_LANES, max(DEFAULT_LANES, _next_power_of_two(LANES_PER_PRIMARY * primaries)))


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def bucket_bits_for(expected_voters: int, lanes: int) -> int:
    """Smallest bucket count (as bits) that keeps ~VOTERS_PER_BUCKET voters in each bucket."""
    per_lane = -(-expected_voters // lanes)
    bits = 0
    while (per_lane >> bits) > VOTERS_PER_BUCKET and bits < MAX_BUCKET_BITS:
        bits += 1
    return bits


def _options(specs: list[OptionSpec]) -> tuple[Option, ...]:
    labels: set[str] = set()
    ids: set[str] = set()
    # Ids given explicitly win over generated ones, wherever they stand in the list.
    explicit = {s.id for s in specs if s.id is not None}
    result: list[Option] = []
    for i, spec in enumerate(specs):
        label = spec.label.strip()
        if not label or len(label) > MAX_LABEL:
            raise InvalidInput(f"options[{i}].label", f"must be 1 to {MAX_LABEL} characters")
        if label.casefold() in labels:
            raise InvalidInput(f"options[{i}].label", "duplicate label")
        labels.add(label.casefold())
        if spec.id is None:
            option_id = _unique(_slug(label) or f"option-{i + 1}", ids | explicit)
        else:
            option_id = spec.id
            if not is_option_id(option_id):
                raise InvalidInput(
                    f"options[{i}].id",
                    f"must be 1 to {MAX_OPTION_ID} lower-case letters, digits and '-', "
                    "starting with a letter or digit",
                )
            if option_id in ids:
                raise InvalidInput(f"options[{i}].id", "duplicate id")
        ids.add(option_id)
        result.append(Option(id=option_id, label=label))
    return tuple(result)


def _slug(label: str) -> str:
    """The label in lower case (NFC), each run of other characters one '-': letters stay as
    they are written in any script ('Groß' is 'groß', '東京' is '東京'), since folding to ASCII
    dropped them ('gro') or left nothing. lower(), not casefold(): casefold makes 'ß' 'ss'."""
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", label).lower())
    kept = "".join(ch if _category(ch) in "LNM" else "-" for ch in text)
    slug = re.sub(r"-{2,}", "-", kept).lstrip("-")
    while slug and _category(slug[0]) == "M":  # a mark cannot start an id
        slug = slug[1:].lstrip("-")
    slug = slug[:MAX_OPTION_ID].rstrip("-")
    return slug if is_option_id(slug) else ""


def _unique(candidate: str, taken: set[str]) -> str:
    if candidate not in taken:
        return candidate
    n = 2
    while True:
        suffix = f"-{n}"
        name = candidate[: MAX_OPTION_ID - len(suffix)].rstrip("-") + suffix
        if name not in taken:
            return name
        n += 1

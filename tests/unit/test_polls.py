"""Polls: the lifecycle table, deadlines, definition rules, option ids and voter-index sizing."""

from __future__ import annotations

from dataclasses import replace
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.domain.errors import IllegalTransition, InvalidInput
from tally.domain.polls import (
    MAX_BUCKET_BITS,
    MAX_EXPECTED_VOTERS,
    MAX_LABEL,
    MAX_LANES,
    MAX_OPTIONS,
    MAX_TITLE,
    STATE_RANK,
    TRANSITIONS,
    VOTERS_PER_BUCKET,
    OptionSpec,
    Poll,
    PollState,
    bucket_bits_for,
    is_option_id,
    new_poll,
)

NOW = 1_900_000_000_000
DRAFT, OPEN, CLOSED = PollState.DRAFT, PollState.OPEN, PollState.CLOSED
LEGAL = {(DRAFT, OPEN), (DRAFT, CLOSED), (OPEN, CLOSED)}
ALL_PAIRS = list(product(PollState, PollState))


def specs(*labels: str) -> list[OptionSpec]:
    return [OptionSpec(label) for label in labels]


def make_poll(**changes: object) -> Poll:
    """A valid definition ("final", options Red and Blue) with the given arguments changed."""
    arguments: dict[str, object] = {
        "poll_id": "final",
        "title": "Who wins?",
        "options": specs("Red", "Blue"),
        "now_ms": NOW,
    }
    arguments.update(changes)
    return new_poll(**arguments)  # type: ignore[arg-type]  # keys are new_poll's parameters


def option_ids(*labels: str | OptionSpec) -> list[str]:
    options = [x if isinstance(x, OptionSpec) else OptionSpec(x) for x in labels]
    return [o.id for o in make_poll(options=options).options]


# --- lifecycle ---------------------------------------------------------------------------------


def test_transition_table_is_exactly_the_legal_moves() -> None:
    """A draft may open or be cancelled, an open poll may close, a closed poll never moves."""
    table = {(current, target) for current, targets in TRANSITIONS.items() for target in targets}
    assert table == LEGAL
    assert set(TRANSITIONS) == set(PollState)


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_move_changes_only_the_state(current: PollState, target: PollState) -> None:
    """A legal move returns the same poll in the target state."""
    poll = replace(make_poll(), state=current)
    moved = poll.moved_to(target, NOW)
    assert moved.state is target
    assert replace(moved, state=current) == poll


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_move_raises_naming_both_states(current: PollState, target: PollState) -> None:
    """An illegal move (staying put included) raises IllegalTransition naming poll and states."""
    poll = replace(make_poll(), state=current)
    with pytest.raises(IllegalTransition) as caught:
        poll.moved_to(target, NOW)
    error = caught.value
    assert (error.poll_id, error.current, error.target) == ("final", current.value, target.value)
    assert f"from {current.value} to {target.value}" in str(error)


def test_states_only_move_forward() -> None:
    """Every legal move raises the state's rank, which is what lets recovery finish a move."""
    assert all(STATE_RANK[target] > STATE_RANK[current] for current, target in LEGAL)


def test_moving_never_mutates_the_original() -> None:
    """Polls are values: moved_to returns a new poll and leaves the old one as it was."""
    poll = make_poll()
    poll.moved_to(OPEN, NOW)
    assert poll.state is DRAFT


# --- deadlines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [(NOW + 999, OPEN), (NOW + 1000, CLOSED), (NOW + 1001, CLOSED)],
    ids=["before", "at", "after"],
)
def test_open_poll_is_closed_from_its_deadline_on(now: int, expected: PollState) -> None:
    """The deadline instant itself already counts as closed (the vote function agrees)."""
    poll = make_poll(closes_at_ms=NOW + 1000).moved_to(OPEN, NOW)
    assert poll.effective_state(now) is expected


def test_open_poll_without_deadline_stays_open() -> None:
    """With no deadline only an explicit close ends a poll."""
    assert make_poll().moved_to(OPEN, NOW).effective_state(2**62) is OPEN


@pytest.mark.parametrize("state", [DRAFT, CLOSED])
def test_deadline_changes_only_open_polls(state: PollState) -> None:
    """A draft past its deadline is still a draft; a closed poll stays closed."""
    poll = replace(make_poll(closes_at_ms=NOW + 1), state=state)
    assert poll.effective_state(NOW + 10**9) is state


@given(
    state=st.sampled_from(PollState),
    deadline=st.none() | st.integers(NOW + 1, NOW + 10**6),
    now=st.integers(0, NOW + 2 * 10**6),
)
def test_effective_state_is_closed_exactly_when_expected(
    state: PollState, deadline: int | None, now: int
) -> None:
    """Closed iff closed already, or open with a deadline that has come."""
    poll = replace(make_poll(closes_at_ms=deadline), state=state)
    due = state is OPEN and deadline is not None and now >= deadline
    assert (poll.effective_state(now) is CLOSED) == (state is CLOSED or due)
    assert poll.effective_state(now) in (state, CLOSED)


# --- definition rules --------------------------------------------------------------------------


def test_valid_definition_becomes_a_draft() -> None:
    """A valid definition comes back as a draft with a stripped title and the given settings."""
    poll = make_poll(title="  Who wins?  ", lanes=4, closes_at_ms=NOW + 1, expected_voters=1000)
    assert (poll.id, poll.title, poll.state, poll.lanes) == ("final", "Who wins?", DRAFT, 4)
    assert (poll.closes_at_ms, poll.created_at_ms) == (NOW + 1, NOW)
    assert poll.bucket_bits == bucket_bits_for(1000, 4)
    assert poll.option_ids == {"red", "blue"}


@pytest.mark.parametrize("poll_id", ["a", "0", "final-2024_b", "x" * 64])
def test_poll_id_accepted(poll_id: str) -> None:
    """Ids are lower-case letters, digits, '-' and '_', starting with a letter or digit."""
    assert make_poll(poll_id=poll_id).id == poll_id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"poll_id": ""}, "id"),
        ({"poll_id": "Final"}, "id"),
        ({"poll_id": "-final"}, "id"),
        ({"poll_id": "_final"}, "id"),
        ({"poll_id": "fi nal"}, "id"),
        ({"poll_id": "finál"}, "id"),
        ({"poll_id": "x" * 65}, "id"),
        ({"poll_id": "final\n"}, "id"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * (MAX_TITLE + 1)}, "title"),
        ({"options": specs("Only")}, "options"),
        ({"options": []}, "options"),
        ({"options": specs(*(f"o{i}" for i in range(MAX_OPTIONS + 1)))}, "options"),
        ({"lanes": 0}, "lanes"),
        ({"lanes": -2}, "lanes"),
        ({"lanes": 3}, "lanes"),
        ({"lanes": 12}, "lanes"),
        ({"lanes": MAX_LANES * 2}, "lanes"),
        ({"closes_at_ms": NOW}, "closes_at"),
        ({"closes_at_ms": NOW - 1}, "closes_at"),
        ({"expected_voters": 0}, "expected_voters"),
        ({"expected_voters": MAX_EXPECTED_VOTERS + 1}, "expected_voters"),
        ({"options": specs("Red", " ")}, "options[1].label"),
        ({"options": specs("Red", "x" * (MAX_LABEL + 1))}, "options[1].label"),
        ({"options": specs("Red", "Blue", " RED ")}, "options[2].label"),
        ({"options": [OptionSpec("Red"), OptionSpec("Blue", id="Blue")]}, "options[1].id"),
        ({"options": [OptionSpec("Red"), OptionSpec("Blue", id="-blue")]}, "options[1].id"),
        ({"options": [OptionSpec("Red"), OptionSpec("Blue", id="b" * 33)]}, "options[1].id"),
        ({"options": [OptionSpec("Red"), OptionSpec("Blue", id="b_1")]}, "options[1].id"),
        ({"options": [OptionSpec("Red", id="x"), OptionSpec("Blue", id="x")]}, "options[1].id"),
    ],
)
def test_invalid_definition_names_the_field(changes: dict[str, object], field: str) -> None:
    """Each broken rule raises InvalidInput naming the field as the client sent it."""
    with pytest.raises(InvalidInput) as caught:
        make_poll(**changes)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "x" * MAX_TITLE},
        {"options": specs("Yes", "No")},
        {"options": specs(*(f"o{i}" for i in range(MAX_OPTIONS)))},
        {"lanes": 1},
        {"lanes": MAX_LANES},
        {"closes_at_ms": NOW + 1},
        {"expected_voters": 1},
        {"expected_voters": MAX_EXPECTED_VOTERS, "lanes": MAX_LANES},
        {"options": specs("Red", "x" * MAX_LABEL)},
    ],
)
def test_limits_are_inclusive(changes: dict[str, object]) -> None:
    """Every bound is itself allowed."""
    make_poll(**changes)


# --- option ids --------------------------------------------------------------------------------


def test_option_ids_are_slugs_of_their_labels() -> None:
    """Labels become lower-case slugs that keep their letters (accents too), runs of symbols one
    hyphen."""
    assert option_ids("Café Crème", "Ñandú", "  Rock & Roll!  ", "Zoë's 2nd", "Groß") == [
        "café-crème",
        "ñandú",
        "rock-roll",
        "zoë-s-2nd",
        "groß",
    ]


def test_letters_of_every_script_stay_in_the_id() -> None:
    """Non-Latin letters and digits are kept in NFC (a decomposed é is the composed one)."""
    assert option_ids("東京", "Москва", "Cafe\u0301", "٣ نجوم") == [
        "東京",
        "москва",
        "café",
        "٣-نجوم",
    ]


def test_label_without_letters_or_digits_gets_positional_id() -> None:
    """A label with nothing to slug (symbols, emoji) becomes option-<position>."""
    assert option_ids("Red", "!!!", "🎉") == ["red", "option-2", "option-3"]


@pytest.mark.parametrize("option_id", ["red", "option-2", "a" * 32, "groß", "東京", "zoë-s-2nd"])
def test_explicit_ids_of_letters_digits_and_hyphens_are_accepted(option_id: str) -> None:
    """Old ASCII ids and ids in any script alike."""
    assert option_ids(OptionSpec("First", id=option_id), "Second")[0] == option_id


@pytest.mark.parametrize(
    "option_id",
    ["", "-red", "Red", "GROSS", "a" * 33, "a|b", "a b", "a_b", "Cafe\u0301".lower(), "\u0301a"],
)
def test_explicit_ids_outside_the_rule_are_refused(option_id: str) -> None:
    """Upper case, separators, a leading hyphen or mark, non-NFC text, over 32 characters."""
    with pytest.raises(InvalidInput, match=r"options\[0\]\.id"):
        option_ids(OptionSpec("First", id=option_id), "Second")


def test_colliding_slugs_get_numbered_suffixes() -> None:
    """Different labels with one slug get -2, -3, ... in order."""
    assert option_ids("Red!", "Red?", "red.", "RED-") == ["red", "red-2", "red-3", "red-4"]


def test_positional_id_never_collides_with_a_slug() -> None:
    """A label that slugs to option-N does not clash with a positional id."""
    assert option_ids("Option 2", "???") == ["option-2", "option-2-2"]


def test_slug_is_cut_to_32_characters_and_stays_unique() -> None:
    """Long labels are cut to 32 characters (no trailing hyphen); suffixes fit within 32."""
    first, second, third = option_ids("a" * 40 + "x", "a" * 40 + "y", "b" * 31 + " c")
    assert first == "a" * 32
    assert second == "a" * 30 + "-2"
    assert third == "b" * 31


def test_explicit_ids_are_kept_and_slugs_avoid_them() -> None:
    """An explicit id is used as given; a later label's slug steps around it."""
    assert option_ids(OptionSpec("Crimson", id="red"), "Red") == ["red", "red-2"]


def test_labels_are_stripped() -> None:
    """Option labels are stored without surrounding whitespace."""
    assert [o.label for o in make_poll(options=specs("  Red ", "\tBlue\n")).options] == [
        "Red",
        "Blue",
    ]


labels = st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.strip()) <= MAX_LABEL)


@given(st.lists(labels, min_size=2, max_size=MAX_OPTIONS, unique_by=lambda s: s.strip().casefold()))
def test_generated_option_ids_are_valid_and_unique(label_list: list[str]) -> None:
    """For any distinct labels, every generated id is a valid option id and no two are equal."""
    ids = option_ids(*label_list)
    assert all(is_option_id(i) for i in ids)
    assert len(set(ids)) == len(ids)


# --- voter-index sizing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voters", "lanes", "bits"),
    [
        (1, 1, 0),
        (64, 1, 0),
        (65, 1, 1),
        (128, 1, 1),
        (129, 1, 1),
        (130, 1, 2),
        (1_000_000, 16, 10),
        (5_000_000, 16, 13),
        (300_000_000, 1024, 13),
        (MAX_EXPECTED_VOTERS, 1, MAX_BUCKET_BITS),
    ],
)
def test_bucket_bits_examples(voters: int, lanes: int, bits: int) -> None:
    """Known sizes: 5M voters on 16 lanes need 2^13 buckets per lane (~38 voters each)."""
    assert bucket_bits_for(voters, lanes) == bits


voters = st.integers(1, MAX_EXPECTED_VOTERS)
lane_counts = st.sampled_from([2**k for k in range(11)])


@given(voters, lane_counts)
def test_bucket_bits_keep_about_64_voters_per_bucket(voters: int, lanes: int) -> None:
    """Bits are the fewest that bring a bucket to <= ~64 voters, capped at MAX_BUCKET_BITS."""
    bits = bucket_bits_for(voters, lanes)
    per_lane = -(-voters // lanes)
    assert 0 <= bits <= MAX_BUCKET_BITS
    if bits < MAX_BUCKET_BITS:
        assert per_lane / 2**bits < VOTERS_PER_BUCKET + 1
    if bits > 0:
        assert per_lane / 2 ** (bits - 1) > VOTERS_PER_BUCKET


@given(voters, voters, lane_counts, lane_counts)
def test_bucket_bits_are_monotonic(v1: int, v2: int, l1: int, l2: int) -> None:
    """More voters never mean fewer buckets; more lanes never mean more buckets per lane."""
    low, high = sorted((v1, v2))
    few, many = sorted((l1, l2))
    assert bucket_bits_for(low, few) <= bucket_bits_for(high, few)
    assert bucket_bits_for(low, many) <= bucket_bits_for(low, few)


def test_a_poll_cannot_open_once_its_deadline_has_passed() -> None:
    """Opening a draft whose closes_at is behind us is refused, naming the deadline."""
    draft = make_poll(closes_at_ms=NOW + 1000)
    with pytest.raises(IllegalTransition, match="deadline"):
        draft.moved_to(OPEN, NOW + 1000)
    assert draft.moved_to(OPEN, NOW + 999).state is OPEN


def test_too_few_lanes_for_the_electorate_is_refused() -> None:
    """A poll whose voter-index buckets would outgrow listpacks asks for more lanes."""
    with pytest.raises(InvalidInput) as refused:
        make_poll(expected_voters=500_000_000, lanes=16)
    assert refused.value.field == "lanes"
    assert "32 lanes" in refused.value.reason
    make_poll(expected_voters=500_000_000, lanes=32)


def test_explicit_option_ids_win_over_generated_ones_in_any_order() -> None:
    """An explicit id is kept even when an earlier label would have slugged to it."""
    poll = make_poll(options=[OptionSpec("Red"), OptionSpec("Crimson", id="red")])
    assert [o.id for o in poll.options] == ["red-2", "red"]

"""Join codes (domain.join_codes): short, unambiguous, forgiving on input."""

from __future__ import annotations

import pytest

from tally.domain.join_codes import ALPHABET, CODE_SPACE, LENGTH, code_of, normalise


def test_the_alphabet_has_no_look_alikes() -> None:
    """0/O and 1/I/L are what people misread on a screen; none of them is a symbol."""
    assert not set("0O1IL") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET) == 31
    assert CODE_SPACE == 31**6


@pytest.mark.parametrize("number", [0, 1, 30, 31, 12345678, CODE_SPACE - 1])
def test_codes_are_six_symbols_and_distinct_numbers_give_distinct_codes(number: int) -> None:
    code = code_of(number)
    assert len(code) == LENGTH
    assert set(code) <= set(ALPHABET)
    assert code != code_of((number + 1) % CODE_SPACE)


def test_the_first_and_last_codes() -> None:
    assert code_of(0) == "222222"
    assert code_of(1) == "222223"
    assert code_of(CODE_SPACE - 1) == "ZZZZZZ"


@pytest.mark.parametrize("number", [-1, CODE_SPACE])
def test_a_number_outside_the_code_space_is_refused(number: int) -> None:
    with pytest.raises(ValueError, match="join code number"):
        code_of(number)


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("AB23CD", "AB23CD"),
        ("ab23cd", "AB23CD"),
        ("aB-23c d", "AB23CD"),
        (" ab2 3cd ", "AB23CD"),
        ("ab_23.cd", "AB23CD"),
    ],
)
def test_input_is_case_insensitive_and_separators_are_ignored(typed: str, code: str) -> None:
    assert normalise(typed) == code


@pytest.mark.parametrize(
    "typed",
    ["", "AB23C", "AB23CDE", "AB0CDE", "ABOCDE", "AB1CDE", "ABICDE", "ABLCDE", "AB23C\u00df",
     "x" * 100, "AB23C/", "ab23cd\x00"],
)  # fmt: skip
def test_what_cannot_be_a_code_is_none(typed: str) -> None:
    assert normalise(typed) is None

"""Join codes: the short code an audience types (or scans) to reach a poll, `/j/<code>`.

Six characters of an alphabet without the look-alikes 0/O, 1/I/L (read off a screen at the back
of a hall, typed on a phone): 31 symbols, so 31**6 ≈ 8.9e8 codes, and a random one collides with
an existing code rarely enough that a few tries always find a free one. Input is forgiving:
case-insensitive, and spaces or dashes (someone typing `abc-def`) are ignored.

Pure: the caller supplies the randomness (a number below CODE_SPACE) and the store.
"""

from __future__ import annotations

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 6
CODE_SPACE = len(ALPHABET) ** LENGTH
_SEPARATORS = str.maketrans("", "", " -_.")


def code_of(number: int) -> str:
    """The code numbered `number` (0 <= number < CODE_SPACE), in base 31 over ALPHABET."""
    if not 0 <= number < CODE_SPACE:
        raise ValueError(f"a join code number is 0..{CODE_SPACE - 1}, not {number}")
    symbols = []
    for _ in range(LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        symbols.append(ALPHABET[digit])
    return "".join(reversed(symbols))


def normalise(text: str) -> str | None:
    """The code `text` spells (upper case, separators dropped), or None if it cannot be one."""
    if len(text) > 4 * LENGTH:  # no need to look at a long string character by character
        return None
    code = text.translate(_SEPARATORS).upper()
    if len(code) != LENGTH or any(symbol not in ALPHABET for symbol in code):
        return None
    return code

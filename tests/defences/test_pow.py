"""The proof-of-work challenge itself (tally.security.pow): issued, solved, verified, refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.security.pow import (
    Challenges,
    Invalid,
    Solved,
    difficulty_of,
    expires_at_ms,
    issued_at_ms,
    meets,
    solve,
)

SECRET = b"s" * 32
POLL = "final-2026"
VOTER = bytes(range(16))
OTHER_VOTER = bytes(range(1, 17))
NOW = 1_800_000_000_000


def answer_for(challenges: Challenges, difficulty: int = 8, *, poll: str = POLL) -> str:
    challenge = challenges.issue(poll, VOTER, difficulty, NOW, ttl_s=60)
    return f"{challenge}:{solve(challenge)}"


def test_a_solved_answer_verifies_and_names_its_challenge() -> None:
    """An answer to an issued challenge verifies, with the challenge's difficulty and times."""
    challenges = Challenges(SECRET)
    answer = answer_for(challenges, 10)
    verified = challenges.verify(answer, POLL, VOTER, required=10, now_ms=NOW + 1)
    assert isinstance(verified, Solved)
    assert (verified.difficulty, verified.issued_ms, verified.expires_ms) == (10, NOW, NOW + 60_000)
    assert hashlib.sha256(answer.encode()).digest()[:1] == b"\0"  # 10 bits: a whole zero byte


def test_the_answer_is_the_hashed_text() -> None:
    """The documented encoding: SHA-256 over challenge ':' nonce has the leading zero bits."""
    challenges = Challenges(SECRET)
    challenge = challenges.issue(POLL, VOTER, 12, NOW, ttl_s=60)
    nonce = solve(challenge)
    assert nonce.isdigit()
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    assert int.from_bytes(digest, "big") >> (256 - 12) == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda a: a.replace(f".{POLL}.", ".other-poll."), Invalid.FORGED),
        (lambda a: a.replace(".8.", ".2.", 1), Invalid.FORGED),
        (lambda a: a.replace(":", ".x:"), Invalid.MALFORMED),
        (lambda a: a.split(":")[0], Invalid.MALFORMED),
        (lambda a: a + "a", Invalid.MALFORMED),
        (lambda a: a.split(":")[0] + ":1_0", Invalid.MALFORMED),
        (lambda a: a.split(":")[0] + ":" + "9" * 21, Invalid.MALFORMED),
        (lambda a: "x" * 500, Invalid.MALFORMED),
        (lambda a: "", Invalid.MALFORMED),
        (lambda a: a.replace("1.", "2.", 1), Invalid.MALFORMED),
    ],
)
def test_tampered_answers_are_refused(change: object, reason: Invalid) -> None:
    """Changing any signed field breaks the MAC; text that is not an answer is malformed."""
    challenges = Challenges(SECRET)
    answer = answer_for(challenges)
    assert callable(change)
    assert challenges.verify(change(answer), POLL, VOTER, 0, NOW) is reason


def test_a_challenge_from_another_key_is_forged() -> None:
    """A challenge signed with another secret (another deployment, an attacker) is refused."""
    answer = answer_for(Challenges(b"t" * 32))
    assert Challenges(SECRET).verify(answer, POLL, VOTER, 0, NOW) is Invalid.FORGED


def test_wrong_poll_wrong_voter_expired_too_easy_unsolved() -> None:
    """Each binding is checked, with its own reason."""
    challenges = Challenges(SECRET)
    answer = answer_for(challenges, 8)
    assert challenges.verify(answer, "another", VOTER, 0, NOW) is Invalid.WRONG_POLL
    assert challenges.verify(answer, POLL, OTHER_VOTER, 0, NOW) is Invalid.WRONG_VOTER
    assert challenges.verify(answer, POLL, VOTER, 0, NOW + 60_000) is Invalid.EXPIRED
    assert isinstance(challenges.verify(answer, POLL, VOTER, 0, NOW + 59_999), Solved)
    assert challenges.verify(answer, POLL, VOTER, 9, NOW) is Invalid.TOO_EASY
    challenge = answer.split(":")[0]
    unsolved = next(
        f"{challenge}:{n}"
        for n in range(1000)
        if not meets(hashlib.sha256(f"{challenge}:{n}".encode()).digest(), 8)
    )
    assert challenges.verify(unsolved, POLL, VOTER, 0, NOW) is Invalid.UNSOLVED


def test_difficulty_zero_takes_any_nonce() -> None:
    challenges = Challenges(SECRET)
    challenge = challenges.issue(POLL, VOTER, 0, NOW, ttl_s=5)
    assert isinstance(challenges.verify(challenge + ":0", POLL, VOTER, 0, NOW), Solved)


def test_every_challenge_is_new() -> None:
    """Random salts: two challenges for the same voter and moment differ, and spend apart."""
    challenges = Challenges(SECRET)
    one, two = (challenges.issue(POLL, VOTER, 0, NOW, ttl_s=5) for _ in range(2))
    assert one != two
    first = challenges.verify(one + ":0", POLL, VOTER, 0, NOW)
    second = challenges.verify(two + ":0", POLL, VOTER, 0, NOW)
    assert isinstance(first, Solved)
    assert isinstance(second, Solved)
    assert first.spend_id != second.spend_id


def test_unverified_reads_for_the_risk_scorer() -> None:
    """difficulty_of / issued_at_ms / expires_at_ms read answers and bare challenges; None when
    malformed."""
    challenges = Challenges(SECRET)
    challenge = challenges.issue(POLL, VOTER, 14, NOW, ttl_s=30)
    for text in (challenge, challenge + ":123"):
        assert difficulty_of(text) == 14
        assert issued_at_ms(text) == NOW
        assert expires_at_ms(text) == NOW + 30_000
    for junk in ("", "1.a.b", challenge + ":x", "nonsense:1"):
        assert difficulty_of(junk) is None
        assert issued_at_ms(junk) is None


def test_issue_refuses_an_impossible_difficulty() -> None:
    with pytest.raises(ValueError, match="difficulty"):
        Challenges(SECRET).issue(POLL, VOTER, 33, NOW, ttl_s=5)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_verifies(text: str) -> None:
    """No text the service did not sign verifies, and none makes verify raise."""
    verified = Challenges(SECRET).verify(text, POLL, VOTER, 0, NOW)
    assert isinstance(verified, Invalid)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_of_an_answer_is_refused(index: int, bit: int) -> None:
    """Tampering is caught: flipping any bit of a valid answer never leaves it valid."""
    challenges = Challenges(SECRET)
    answer = answer_for(challenges, 4).encode()
    position = index % len(answer)
    flipped = bytearray(answer)
    flipped[position] ^= 1 << bit
    try:
        text = flipped.decode("ascii")
    except UnicodeDecodeError:
        return  # not ASCII: no transport can deliver it as an answer
    verified = challenges.verify(text, POLL, VOTER, 0, NOW)
    # Only a nonce digit that flips to another digit can still solve a 4-bit challenge; it is
    # then a different, equally valid answer to the same challenge (spent once by the store).
    if isinstance(verified, Solved):
        assert text.split(":")[0] == answer.decode().split(":")[0]
        assert text != answer.decode()

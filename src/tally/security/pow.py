"""The stateless proof-of-work challenge (ARCHITECTURE.md section 6; after ALTCHA and mCaptcha).

The gateway hands a voter a challenge, the voter's client spends CPU finding a nonce for it, and
the answer travels with the vote. Issuing and verifying cost the gateway one HMAC and one SHA-256:
nothing is stored until an answer is spent (tally.store.challenges claims it once).

Wire format (ASCII; `.` and `:` never occur inside a field):

    challenge = "1" "." poll "." pseudonym "." difficulty "." issued_ms "." expires_ms "." salt "." mac
    answer    = challenge ":" nonce

- `pseudonym` is the voter's per-poll pseudonym (tally.domain.pseudonyms) in lowercase hex: the
  voter's own, never their user id. `difficulty` counts leading zero bits. Times are ms since the
  Unix epoch. `salt` is 12 random bytes and `mac` the HMAC-SHA256 of everything before its `.`,
  both base64url without padding. The HMAC key is derived from the pseudonym secret with a fixed
  label, so no new secret needs distributing.
- `nonce` is 1 to 20 ASCII decimal digits, found by the client.
- Solved: SHA-256 of the answer's bytes (the challenge, ":", the nonce) starts with at least
  `difficulty` zero bits. Difficulty 0 accepts any nonce.

Pure functions and stdlib only: time comes in as `now_ms`, randomness from `secrets`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from enum import StrEnum
from typing import NamedTuple

VERSION = "1"
ALGORITHM = "SHA-256"
KEY_LABEL = b"tally proof-of-work challenge v1"
SALT_BYTES = 12
MAX_DIFFICULTY = 32  # domain.defences.MAX_DIFFICULTY: beyond it no browser finishes
MAX_NONCE_DIGITS = 20
MAX_ANSWER_CHARS = 400  # a poll id is at most 64 chars: a real answer is under 220
_FIELDS = 8


class Invalid(StrEnum):
    """Why an answer is refused: the stable `reason` of a `challenge-invalid` problem."""

    MALFORMED = "malformed"  # not an answer at all
    FORGED = "forged"  # the MAC does not match: not a challenge this service issued
    WRONG_POLL = "wrong-poll"  # issued for another poll
    WRONG_VOTER = "wrong-voter"  # issued to another voter
    EXPIRED = "expired"
    TOO_EASY = "too-easy"  # easier than this vote requires now
    UNSOLVED = "unsolved"  # the nonce does not give the leading zero bits
    REPLAYED = "replayed"  # already spent on a vote (decided by the store, not here)


class Solved(NamedTuple):
    """A verified answer: `spend_id` names its challenge for the single-use claim (the salt,
    random and covered by the MAC); the claim must outlive `expires_ms`."""

    spend_id: str
    difficulty: int
    issued_ms: int
    expires_ms: int


class _Parsed(NamedTuple):  # a NamedTuple: a third of a frozen dataclass's cost to build
    signed: str  # everything the MAC covers
    mac: str
    poll_id: str
    pseudonym_hex: str
    difficulty: int
    issued_ms: int
    expires_ms: int
    salt: str
    nonce: str


class Challenges:
    """Issues and verifies challenges with a key derived from the pseudonym secret."""

    def __init__(self, pseudonym_secret: bytes) -> None:
        self._key = hmac.digest(pseudonym_secret, KEY_LABEL, hashlib.sha256)

    def issue(
        self,
        poll_id: str,
        voter_pseudonym: bytes,
        difficulty: int,
        now_ms: int,
        ttl_s: int,
        salt: bytes | None = None,
    ) -> str:
        """A challenge for this voter in this poll, `difficulty` bits, valid `ttl_s` from now.
        `salt` is for tests that need a fixed text; leave it out otherwise."""
        if not 0 <= difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty must be 0 to {MAX_DIFFICULTY}")
        salt_text = _b64(secrets.token_bytes(SALT_BYTES) if salt is None else salt)
        signed = ".".join(
            (
                VERSION,
                poll_id,
                voter_pseudonym.hex(),
                str(difficulty),
                str(now_ms),
                str(now_ms + ttl_s * 1000),
                salt_text,
            )
        )
        return f"{signed}.{self._mac(signed)}"

    def verify(
        self, answer: str, poll_id: str, voter_pseudonym: bytes, required: int, now_ms: int
    ) -> Solved | Invalid:
        """Whether `answer` solves a challenge this service issued for this poll and voter, at
        least `required` bits, unexpired at `now_ms`. O(1): one HMAC and one SHA-256. It does not
        know whether the answer was spent before: that is the store's claim."""
        parsed = _parse(answer)
        if parsed is None:
            return Invalid.MALFORMED
        if not hmac.compare_digest(self._mac(parsed.signed), parsed.mac):
            return Invalid.FORGED
        if parsed.poll_id != poll_id:
            return Invalid.WRONG_POLL
        if parsed.pseudonym_hex != voter_pseudonym.hex():
            return Invalid.WRONG_VOTER
        if now_ms >= parsed.expires_ms:
            return Invalid.EXPIRED
        if parsed.difficulty < required:
            return Invalid.TOO_EASY
        if not meets(hashlib.sha256(answer.encode("ascii")).digest(), parsed.difficulty):
            return Invalid.UNSOLVED
        return Solved(parsed.salt, parsed.difficulty, parsed.issued_ms, parsed.expires_ms)

    def _mac(self, signed: str) -> str:
        return _b64(hmac.digest(self._key, signed.encode("ascii"), hashlib.sha256))


def meets(digest: bytes, difficulty: int) -> bool:
    """Whether `digest` starts with at least `difficulty` zero bits."""
    return int.from_bytes(digest, "big") >> (len(digest) * 8 - difficulty) == 0


def difficulty_of(answer: str) -> int | None:
    """The difficulty an answer (or a bare challenge) claims, unverified; None if malformed."""
    parsed = _parse(answer if ":" in answer else answer + ":0")
    return None if parsed is None else parsed.difficulty


def issued_at_ms(answer: str) -> int | None:
    """When an answer's (or a bare challenge's) challenge claims it was issued, unverified;
    None if malformed. The risk scorer's solve time is the vote's time minus this."""
    parsed = _parse(answer if ":" in answer else answer + ":0")
    return None if parsed is None else parsed.issued_ms


def expires_at_ms(challenge: str) -> int | None:
    """When a challenge (or an answer's) expires, unverified; None if malformed."""
    parsed = _parse(challenge if ":" in challenge else challenge + ":0")
    return None if parsed is None else parsed.expires_ms


def solve(challenge: str, start: int = 0) -> str:
    """The first nonce from `start` that solves `challenge` (for the CLI and benchmarks; about
    2**difficulty hashes). ValueError if `challenge` is malformed."""
    difficulty = difficulty_of(challenge)
    if difficulty is None or ":" in challenge:
        raise ValueError("not a challenge")
    prefix = hashlib.sha256(challenge.encode("ascii") + b":")
    nonce = start
    while True:
        candidate = prefix.copy()
        text = str(nonce).encode("ascii")
        candidate.update(text)
        if meets(candidate.digest(), difficulty):
            return text.decode("ascii")
        nonce += 1


def _parse(answer: str) -> _Parsed | None:
    if len(answer) > MAX_ANSWER_CHARS or not answer.isascii():
        return None
    challenge, colon, nonce = answer.partition(":")
    if not colon or not _is_decimal(nonce, MAX_NONCE_DIGITS):
        return None
    parts = challenge.split(".")
    if len(parts) != _FIELDS or parts[0] != VERSION:
        return None
    _, poll_id, pseudonym_hex, difficulty, issued, expires, salt, mac = parts
    if not (
        poll_id
        and pseudonym_hex
        and salt
        and mac
        and _is_decimal(difficulty, 2)
        and _is_decimal(issued, 15)
        and _is_decimal(expires, 15)
    ):
        return None
    return _Parsed(
        signed=challenge[: -len(mac) - 1],
        mac=mac,
        poll_id=poll_id,
        pseudonym_hex=pseudonym_hex,
        difficulty=min(int(difficulty), MAX_DIFFICULTY),
        issued_ms=int(issued),
        expires_ms=int(expires),
        salt=salt,
        nonce=nonce,
    )


def _is_decimal(text: str, max_digits: int) -> bool:
    # str.isdigit alone takes other scripts' digits, and int() takes "1_0" and spaces.
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

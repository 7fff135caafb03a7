"""The ledger's queues in Valkey (implements ports.LedgerQueue): each lane's ledger stream and the
poll's admin stream, read in seq order by the archiver and trimmed once archived.

The stream format stays here: entry ids are `<seq>-0`. In a lane's stream, a vote entry has
exactly the fields p (pseudonym), o (option id), t (accepted ms), plus s = held for a vote held
for review, plus g (the gateway's 76-byte admission signature) for a signed vote; a review
decision has exactly r (the held vote's seq), d (released | voided) and t (ms). In the admin
stream, an entry has a (created | open | closed), t (ms), u (actor); a reviewer's decision
a = reviewed, t, u, l (lane), r (held seq), d (released | voided); an admission key
a = admission-key, t, u, n (key name), k (32-byte Ed25519 public key), b (not before ms),
e (not after ms, 0 for no end). Decoding is strict: anything else raises MalformedEntry, so
nothing half-read reaches the ledger.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tally.domain.polls import PollState
from tally.domain.pseudonyms import PSEUDONYM_BYTES
from tally.domain.votes import AdmissionSignature
from tally.ports import (
    MalformedEntry,
    QueuedAdminAction,
    QueuedAdmissionKey,
    QueuedDecision,
    QueuedEntry,
    QueuedReview,
    QueuedVote,
    StoreClient,
)
from tally.store import keys, leases
from tally.store.resp import raise_first_error

_ENTRY_ID_RE = re.compile(rb"([1-9][0-9]{0,19})-0")
_DECIMAL_RE = re.compile(rb"0|[1-9][0-9]{0,19}")
_VOTE_FIELDS = frozenset({b"p", b"o", b"t"})
_HELD_FIELDS = frozenset({b"p", b"o", b"t", b"s"})
_DECISION_FIELDS = frozenset({b"r", b"d", b"t"})
_ADMIN_FIELDS = frozenset({b"a", b"t", b"u"})
_REVIEWED_FIELDS = frozenset({b"a", b"t", b"u", b"l", b"r", b"d"})
_SIGNED_VOTE_FIELDS = _VOTE_FIELDS | {b"g"}
_SIGNED_HELD_FIELDS = _HELD_FIELDS | {b"g"}
_ADMISSION_KEY_FIELDS = frozenset({b"a", b"t", b"u", b"n", b"k", b"b", b"e"})
_KEY_NAME_RE = re.compile(r"[^\s+]{1,255}")
_DECISIONS = {b"released": True, b"voided": False}
_MAX_LANE = 0xFFFF
_ADMIN_ACTIONS = {b"created": PollState.DRAFT, b"open": PollState.OPEN, b"closed": PollState.CLOSED}


def _stream(poll_id: str, log: int | None) -> str:
    return keys.poll_admin(poll_id) if log is None else keys.lane_ledger(poll_id, log)


class ValkeyLedgerQueue:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def read(
        self, poll_id: str, logs: list[int | None], first_seqs: list[int], count: int
    ) -> list[list[QueuedEntry]]:
        replies = await self._client.pipeline(
            [
                ("XRANGE", _stream(poll_id, log), f"{seq}-0", "+", "COUNT", count)
                for log, seq in zip(logs, first_seqs, strict=True)
            ]
        )
        raise_first_error(replies)
        # A full read is up to `count` entries per log: decoded in a worker thread, so that the
        # event loop (shared with the gateway in `tally serve`) keeps answering votes meanwhile.
        return await asyncio.to_thread(_decode_logs, logs, replies)

    async def trim(self, poll_id: str, logs: list[int | None], below_seqs: list[int]) -> None:
        replies = await self._client.pipeline(
            [
                ("XTRIM", _stream(poll_id, log), "MINID", f"{seq}-0")
                for log, seq in zip(logs, below_seqs, strict=True)
            ]
        )
        raise_first_error(replies)

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        return await leases.take(self._client, keys.poll_archiver_lease(poll_id), owner, ttl_ms)

    async def release(self, poll_id: str, owner: str) -> None:
        await leases.release(self._client, keys.poll_archiver_lease(poll_id), owner)


def _decode_logs(logs: list[int | None], replies: list[Any]) -> list[list[QueuedEntry]]:
    return [
        [decode_admin_entry(i, f) if log is None else decode_lane_entry(i, f) for i, f in reply]
        for log, reply in zip(logs, replies, strict=True)
    ]


def decode_lane_entry(entry_id: bytes, flat: list[bytes]) -> QueuedVote | QueuedDecision:
    """A lane stream entry as the vote or the review decision it records; MalformedEntry if it
    is not exactly one of them."""
    if b"r" in flat[::2]:
        seq, fields = _entry(entry_id, flat, _DECISION_FIELDS)
        held_seq = _decimal(entry_id, fields[b"r"], "held seq")
        if not 1 <= held_seq < seq:
            raise MalformedEntry(f"stream entry {entry_id!r} decides entry {held_seq}, not earlier")
        return QueuedDecision(
            seq, held_seq, _decision(entry_id, fields[b"d"]), _decimal(entry_id, fields[b"t"])
        )
    return decode_vote_entry(entry_id, flat)


def decode_vote_entry(entry_id: bytes, flat: list[bytes]) -> QueuedVote:
    """A lane stream entry as the vote it records; MalformedEntry if it is not exactly one."""
    names = flat[::2]
    held = b"s" in names
    if b"g" in names:
        seq, fields = _entry(entry_id, flat, _SIGNED_HELD_FIELDS if held else _SIGNED_VOTE_FIELDS)
        try:
            admission = AdmissionSignature.from_bytes(fields[b"g"])
        except ValueError as exc:
            raise MalformedEntry(f"stream entry {entry_id!r}: {exc}") from None
    else:
        seq, fields = _entry(entry_id, flat, _HELD_FIELDS if held else _VOTE_FIELDS)
        admission = None
    if held and fields[b"s"] != b"held":
        raise MalformedEntry(f"stream entry {entry_id!r} has status {fields[b's']!r}, not held")
    pseudonym = fields[b"p"]
    if len(pseudonym) != PSEUDONYM_BYTES:
        raise MalformedEntry(f"stream entry {entry_id!r} has a {len(pseudonym)}-byte pseudonym")
    try:
        option = fields[b"o"].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEntry(f"stream entry {entry_id!r} has a non-UTF-8 option id") from None
    if not option:
        raise MalformedEntry(f"stream entry {entry_id!r} has an empty option id")
    return QueuedVote(seq, pseudonym, option, _decimal(entry_id, fields[b"t"]), held, admission)


def decode_admin_entry(
    entry_id: bytes, flat: list[bytes]
) -> QueuedAdminAction | QueuedReview | QueuedAdmissionKey:
    """An admin stream entry as the poll move, the review decision or the admission key it
    records; MalformedEntry otherwise."""
    if b"k" in flat[::2]:
        return _admission_key_entry(entry_id, flat)
    if b"l" in flat[::2]:
        seq, fields = _entry(entry_id, flat, _REVIEWED_FIELDS)
        if fields[b"a"] != b"reviewed":
            raise MalformedEntry(f"admin entry {entry_id!r} names a lane but is {fields[b'a']!r}")
        lane = _decimal(entry_id, fields[b"l"], "lane")
        held_seq = _decimal(entry_id, fields[b"r"], "held seq")
        if lane > _MAX_LANE or not held_seq:
            raise MalformedEntry(f"admin entry {entry_id!r} names lane {lane} entry {held_seq}")
        return QueuedReview(
            seq,
            _decimal(entry_id, fields[b"t"]),
            fields[b"u"],
            lane,
            held_seq,
            _decision(entry_id, fields[b"d"]),
        )
    seq, fields = _entry(entry_id, flat, _ADMIN_FIELDS)
    state = _ADMIN_ACTIONS.get(fields[b"a"])
    if state is None:
        raise MalformedEntry(f"admin entry {entry_id!r} has an unknown action {fields[b'a']!r}")
    return QueuedAdminAction(seq, state, _decimal(entry_id, fields[b"t"]), fields[b"u"])


def _admission_key_entry(entry_id: bytes, flat: list[bytes]) -> QueuedAdmissionKey:
    seq, fields = _entry(entry_id, flat, _ADMISSION_KEY_FIELDS)
    if fields[b"a"] != b"admission-key":
        raise MalformedEntry(f"admin entry {entry_id!r} names a key but is {fields[b'a']!r}")
    try:
        name = fields[b"n"].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEntry(f"admin entry {entry_id!r} has a non-UTF-8 key name") from None
    if not _KEY_NAME_RE.fullmatch(name) or len(fields[b"n"]) > 255 or not name.isprintable():
        raise MalformedEntry(f"admin entry {entry_id!r} has an invalid key name {name!r}")
    public_key = fields[b"k"]
    if len(public_key) != 32:
        raise MalformedEntry(f"admin entry {entry_id!r} has a {len(public_key)}-byte public key")
    not_before = _decimal(entry_id, fields[b"b"], "not before")
    not_after = _decimal(entry_id, fields[b"e"], "not after")
    if max(not_before, not_after) >= 2**64 or (not_after and not_after < not_before):
        raise MalformedEntry(f"admin entry {entry_id!r} has validity {not_before}..{not_after}")
    return QueuedAdmissionKey(
        seq,
        _decimal(entry_id, fields[b"t"]),
        fields[b"u"],
        name,
        public_key,
        not_before,
        not_after,
    )


def _entry(entry_id: bytes, flat: list[bytes], expected: frozenset[bytes]) -> tuple[int, Any]:
    match = _ENTRY_ID_RE.fullmatch(entry_id)
    if match is None:
        raise MalformedEntry(f"stream entry id must be <seq>-0, got {entry_id!r}")
    if len(flat) % 2:
        raise MalformedEntry(f"stream entry {entry_id!r} has an odd number of field items")
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    if len(fields) * 2 != len(flat) or fields.keys() != expected:
        names = b", ".join(sorted(expected)).decode()
        raise MalformedEntry(f"stream entry {entry_id!r} has fields {sorted(fields)}, not {names}")
    return int(match[1]), fields


def _decimal(entry_id: bytes, text: bytes, name: str = "time") -> int:
    if not _DECIMAL_RE.fullmatch(text):
        raise MalformedEntry(f"stream entry {entry_id!r} has a malformed {name} {text!r}")
    return int(text)


def _decision(entry_id: bytes, text: bytes) -> bool:
    """True for released, False for voided."""
    released = _DECISIONS.get(text)
    if released is None:
        raise MalformedEntry(f"stream entry {entry_id!r} has an unknown decision {text!r}")
    return released

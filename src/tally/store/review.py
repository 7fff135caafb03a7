"""Held votes and reviewers' decisions in Valkey (implements ports.ReviewStore).

Per lane, `tally:{<poll>.<lane>}:held` holds each vote still held (seq -> option|reason|evidence|ms,
written by tally_vote's held mode; the evidence field sealed, tally.store.evidence) and `...:decided` each decision applied (seq -> released or
voided); the poll's `tally:poll:{<poll>}:reviewed` holds each decision in the admin log
(`<lane>:<seq>` -> decision). `tally_poll_review` writes the admin log on the poll's slot and
`tally_review` the lane on its own (tally.lua): one slot per call, so both work on a cluster.
Large decisions go in chunks of CHUNK votes per call, so no call holds Valkey up for long.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from tally.domain.errors import PollNotFound, StoreUnavailable
from tally.domain.polls import Poll
from tally.domain.review import Decision, EntryRef, HeldVote
from tally.ports import StoreClient
from tally.store import keys
from tally.store.resp import raise_first_error

CHUNK = 500


class ValkeyReviews:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def held(self, poll: Poll) -> list[HeldVote]:
        replies = await self._client.pipeline(
            [("HGETALL", keys.lane_held(poll.id, lane)) for lane in range(poll.lanes)]
        )
        raise_first_error(replies)
        votes = [
            _held_vote(lane, reply[i], reply[i + 1])
            for lane, reply in enumerate(replies)
            for i in range(0, len(reply), 2)
        ]
        votes.sort(key=lambda v: (v.lane, v.entry_id))
        return votes

    async def still_held(self, poll: Poll, refs: Sequence[EntryRef]) -> list[bool]:
        found = await self._fields(refs, lambda lane: keys.lane_held(poll.id, lane))
        return [found[ref] is not None for ref in refs]

    async def decided(self, poll: Poll, refs: Sequence[EntryRef]) -> list[Decision | None]:
        found = await self._fields(refs, lambda lane: keys.lane_decided(poll.id, lane))
        return [None if found[ref] is None else _decision(found[ref]) for ref in refs]

    async def _fields(
        self, refs: Sequence[EntryRef], key_of: Callable[[int], str]
    ) -> dict[EntryRef, Any]:
        """Each entry's field (its seq) of its lane's hash `key_of(lane)`: one HMGET per lane,
        pipelined."""
        by_lane = _by_lane(refs)
        lanes = list(by_lane)
        replies = await self._client.pipeline(
            [("HMGET", key_of(lane), *(str(r.entry_id) for r in by_lane[lane])) for lane in lanes]
        )
        raise_first_error(replies)
        found: dict[EntryRef, Any] = {}
        for lane, reply in zip(lanes, replies, strict=True):
            found.update(zip(by_lane[lane], reply, strict=True))
        return found

    async def record(
        self, poll: Poll, actor: str, decision: Decision, refs: Sequence[EntryRef]
    ) -> list[Decision | None]:
        out: list[Decision | None] = []
        meta, admin, reviewed = (
            keys.poll_meta(poll.id), keys.poll_admin(poll.id), keys.poll_reviewed(poll.id)
        )  # fmt: skip
        for start in range(0, len(refs), CHUNK):
            pairs = [str(n) for r in refs[start : start + CHUNK] for n in (r.lane, r.entry_id)]
            reply = await self._client.call(
                "FCALL", "tally_poll_review", 3, meta, admin, reviewed, actor, decision.value,
                *pairs,
            )  # fmt: skip
            if reply and reply[0] == b"missing":
                raise PollNotFound(poll.id)
            out += [None if word == b"recorded" else _decision(word) for word in reply]
        return out

    async def apply(
        self, poll: Poll, decision: Decision, refs: Sequence[EntryRef]
    ) -> list[tuple[bool, Decision | None]]:
        by_lane = _by_lane(refs)
        commands: list[tuple[Any, ...]] = []
        chunks: list[list[EntryRef]] = []
        for lane, lane_refs in by_lane.items():
            lane_keys = (
                keys.lane_state(poll.id, lane), keys.lane_counts(poll.id, lane),
                keys.lane_ledger(poll.id, lane), keys.lane_held(poll.id, lane),
                keys.lane_decided(poll.id, lane),
            )  # fmt: skip
            for start in range(0, len(lane_refs), CHUNK):
                chunk = lane_refs[start : start + CHUNK]
                seqs = [str(r.entry_id) for r in chunk]
                commands.append(("FCALL", "tally_review", 5, *lane_keys, decision.value, *seqs))
                chunks.append(chunk)
        # Durable before the answer, like a vote: a decision the reviewer was told about must
        # survive a crash (the admin entry alone would be finished by recovery, but the count
        # change it promises should not wait for one).
        replies = list(await asyncio.gather(*(self._client.durable(c) for c in commands)))
        raise_first_error(replies)
        found: dict[EntryRef, tuple[bool, Decision | None]] = {}
        for chunk, reply in zip(chunks, replies, strict=True):
            for ref, word in zip(chunk, reply, strict=True):
                found[ref] = (True, None) if word == b"applied" else _lane_word(word)
        return [found[ref] for ref in refs]

    async def recorded(self, poll: Poll) -> dict[EntryRef, Decision]:
        reply = await self._client.call("HGETALL", keys.poll_reviewed(poll.id))
        out: dict[EntryRef, Decision] = {}
        for i in range(0, len(reply), 2):
            lane, _, seq = reply[i].partition(b":")
            out[EntryRef(int(lane), int(seq))] = _decision(reply[i + 1])
        return out


def _by_lane(refs: Sequence[EntryRef]) -> dict[int, list[EntryRef]]:
    by_lane: dict[int, list[EntryRef]] = defaultdict(list)
    for ref in refs:
        by_lane[ref.lane].append(ref)
    return by_lane


def _held_vote(lane: int, seq: bytes, value: bytes) -> HeldVote:
    """A held index entry as stored: its evidence field still sealed (ReviewService opens it)."""
    try:
        option, reason, evidence, at = value.decode().split("|")
        return HeldVote(lane, int(seq), option, reason, "", int(at), sealed=evidence)
    except ValueError:
        raise StoreUnavailable(f"held vote {seq!r} of lane {lane} is unreadable") from None


def _decision(word: bytes) -> Decision:
    try:
        return Decision(word.decode())
    except ValueError:
        raise StoreUnavailable(f"unexpected review decision {word!r}") from None


def _lane_word(word: bytes) -> tuple[bool, Decision | None]:
    return (False, None) if word == b"not-held" else (False, _decision(word))

"""Casting votes on Valkey (implements ports.BallotBox): one FCALL tally_vote per vote.

Durability: when the server is known to fsync before it replies (`appendfsync always`, no
replicas required) the FCALL reply is the proof. Otherwise every tick's batch of votes is followed
by one `WAITAOF 1 <replicas> <timeout>` on the same connection, and no vote of the batch is
acknowledged unless it confirms.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from tally.domain.errors import PollNotFound, StoreUnavailable
from tally.domain.polls import Poll, PollState
from tally.domain.pseudonyms import bucket_of, index_field, lane_of
from tally.domain.votes import Accepted, AlreadyVoted, NotOpen, Receipt, UnknownOption, VoteOutcome
from tally.ledger import merkle
from tally.ledger.leaf import LeafError, VoteRecord, decode_leaf, encode_leaf
from tally.store import keys
from tally.store.resp import ReplyError, Valkey


@dataclass(frozen=True, slots=True)
class WaitAof:
    replicas: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class _LaneKeys:
    lane: bytes
    counts: bytes
    ledger: bytes
    voters_prefix: bytes


class ArchivedEntries(Protocol):
    """The published ledger, where a vote's record is once its lane stream was trimmed."""

    def read_entry(self, poll_id: str, log: str, index: int) -> bytes | None: ...


class ValkeyBallotBox:
    def __init__(
        self, client: Valkey, *, waitaof: WaitAof | None, archive: ArchivedEntries | None = None
    ) -> None:
        self._client = client
        self._waitaof = waitaof
        self._archive = archive
        self._lane_keys: dict[str, tuple[_LaneKeys, ...]] = {}
        self._batch: list[tuple[tuple[bytes, ...], asyncio.Future[Any]]] = []
        self._batch_scheduled = False
        self._completions: set[asyncio.Task[None]] = set()

    async def cast(self, poll: Poll, pseudonym: bytes, option: str) -> VoteOutcome:
        lane = lane_of(pseudonym, poll.lanes)
        k = self._keys(poll)[lane]
        command = (
            b"FCALL", b"tally_vote", b"4",
            k.lane, k.counts, k.ledger, b"%b%x" % (k.voters_prefix, bucket_of(pseudonym, poll.bucket_bits)),
            pseudonym, index_field(pseudonym), option.encode(),
        )  # fmt: skip
        if not self._client.connected:
            await self._client.connect()
        if self._waitaof is None:
            reply = await self._client.submit(command)
        else:
            reply = await self._enqueue(command)
        return self._outcome(poll, lane, pseudonym, option, reply)

    def _keys(self, poll: Poll) -> tuple[_LaneKeys, ...]:
        cached = self._lane_keys.get(poll.id)
        if cached is None:
            cached = tuple(
                _LaneKeys(
                    keys.lane_state(poll.id, lane).encode(),
                    keys.lane_counts(poll.id, lane).encode(),
                    keys.lane_ledger(poll.id, lane).encode(),
                    keys.lane_voters(poll.id, lane, 0).encode()[:-1],
                )
                for lane in range(poll.lanes)
            )
            if len(self._lane_keys) > 10_000:  # bounded: definitions are tiny, polls are few
                self._lane_keys.clear()
            self._lane_keys[poll.id] = cached
        return cached

    def _enqueue(self, command: tuple[bytes, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._batch.append((command, future))
        if not self._batch_scheduled:
            self._batch_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        assert self._waitaof is not None
        self._batch_scheduled = False
        batch, self._batch = self._batch, []
        try:
            replies = [self._client.submit(command) for command, _ in batch]
            ack = self._client.submit(
                (b"WAITAOF", b"1", b"%d" % self._waitaof.replicas, b"%d" % self._waitaof.timeout_ms)
            )
        except StoreUnavailable as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        task = asyncio.get_running_loop().create_task(self._complete(batch, replies, ack))
        self._completions.add(task)
        task.add_done_callback(self._completions.discard)

    async def _complete(
        self,
        batch: list[tuple[tuple[bytes, ...], asyncio.Future[Any]]],
        replies: list[asyncio.Future[Any]],
        ack: asyncio.Future[Any],
    ) -> None:
        assert self._waitaof is not None
        error: Exception | None = None
        try:
            confirmed = await ack
            if isinstance(confirmed, ReplyError):
                error = StoreUnavailable(f"durability not confirmed: {confirmed}")
            elif confirmed[0] < 1 or confirmed[1] < self._waitaof.replicas:
                error = StoreUnavailable(f"durability not confirmed: WAITAOF answered {confirmed}")
        except StoreUnavailable as exc:
            error = exc
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif reply.exception() is not None:
                future.set_exception(reply.exception())  # type: ignore[arg-type]  # checked not None
            else:
                future.set_result(reply.result())

    def _outcome(
        self, poll: Poll, lane: int, pseudonym: bytes, option: str, reply: Any
    ) -> VoteOutcome:
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"vote function failed: {reply}")
        status = reply[0]
        if status == b"accepted":
            return Accepted(_receipt(poll.id, lane, reply[1], pseudonym, option, reply[3]))
        if status == b"already":
            if reply[2] is None:  # archived, and trimmed from the lane stream
                return AlreadyVoted(self._archived_receipt(poll.id, lane, reply[1]))
            receipt = _receipt(poll.id, lane, reply[1], pseudonym, reply[2].decode(), reply[3])
            return AlreadyVoted(receipt)
        if status == b"not-open":
            return NotOpen(PollState(reply[1].decode()))
        if status == b"unknown-option":
            return UnknownOption(option)
        if status == b"no-lane":
            raise PollNotFound(poll.id)
        raise StoreUnavailable(f"unexpected vote reply {reply!r}")

    def _archived_receipt(self, poll_id: str, lane: int, seq: int) -> Receipt:
        entry = None
        if self._archive is not None:
            entry = self._archive.read_entry(poll_id, str(lane), seq - 1)
        if entry is None:
            raise StoreUnavailable(
                f"vote {seq} of poll {poll_id} lane {lane} is neither in its stream nor archived"
            )
        try:
            record = decode_leaf(entry)
        except LeafError as exc:
            raise StoreUnavailable(
                f"archived vote {seq} of lane {lane} is unreadable: {exc}"
            ) from None
        return Receipt(
            poll_id, lane, seq, record.option_id, record.accepted_ms, merkle.leaf_hash(entry)
        )


def _receipt(
    poll_id: str, lane: int, seq: int, pseudonym: bytes, option: str, accepted_ms: int
) -> Receipt:
    """The receipt, with the leaf hash the archiver will compute for the same vote."""
    record = VoteRecord(poll_id, lane, seq, pseudonym, option, accepted_ms)
    return Receipt(poll_id, lane, seq, option, accepted_ms, merkle.leaf_hash(encode_leaf(record)))

"""Casting votes on Valkey (implements ports.BallotBox): one FCALL tally_vote per vote, sent with
the client's `durable()`, so the reply is handed back only once the vote is durable (the
connection's policy: an fsync before the reply, or a WAITAOF confirming the tick's batch).

Returns what the store recorded (lane, seq, accepted time); the service builds the receipt. A
vote cast held names two more keys and arguments (tally_vote's held mode). The gateway's
admission signature goes last, as 76 opaque bytes the ledger entry keeps (field `g`); a repeat
gets it back with its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally.domain.errors import PollNotFound, StoreUnavailable
from tally.domain.polls import Poll, PollState
from tally.domain.pseudonyms import bucket_of, index_field, lane_of
from tally.domain.votes import AdmissionSignature, NotOpen, UnknownOption
from tally.ports import (
    AlreadyRecorded,
    CastResult,
    EvidenceKeeper,
    HoldAs,
    Recorded,
    RecordedHeld,
    ReplyError,
    StoreClient,
)
from tally.store import keys

MAX_CACHED_POLLS = 10_000


@dataclass(frozen=True, slots=True)
class _LaneKeys:
    lane: bytes
    counts: bytes
    ledger: bytes
    voters_prefix: bytes


class ValkeyBallotBox:
    def __init__(self, client: StoreClient, evidence: EvidenceKeeper | None = None) -> None:
        """`evidence` keeps a held vote's network evidence, sealed, once its place is known;
        without one none is kept."""
        self._client = client
        self._evidence = evidence
        self._lane_keys: dict[str, tuple[_LaneKeys, ...]] = {}

    async def cast(
        self,
        poll: Poll,
        pseudonym: bytes,
        option: str,
        hold: HoldAs | None = None,
        admission: AdmissionSignature | None = None,
    ) -> CastResult:
        lane = lane_of(pseudonym, poll.lanes)
        k = self._keys(poll)[lane]
        signed = b"" if admission is None else admission.to_bytes()
        if hold is not None:
            return await self._cast_held(poll, lane, k, pseudonym, option, hold, signed)
        command = (
            b"FCALL", b"tally_vote", b"4",
            k.lane, k.counts, k.ledger, b"%b%x" % (k.voters_prefix, bucket_of(pseudonym, poll.bucket_bits)),
            pseudonym, index_field(pseudonym), option.encode(), signed,
        )  # fmt: skip
        return _result(poll, lane, option, await self._client.durable(command))

    async def _cast_held(
        self,
        poll: Poll,
        lane: int,
        k: _LaneKeys,
        pseudonym: bytes,
        option: str,
        hold: HoldAs,
        signed: bytes,
    ) -> CastResult:
        # The held index joins its fields with '|', which neither option ids nor reason codes
        # contain; a stray one is dropped rather than shifting the fields. The evidence field
        # starts empty: its seal binds the seq this call picks (self._evidence fills it).
        reason, subnet = hold.reason.replace("|", ""), b""
        command = (
            b"FCALL", b"tally_vote", b"6",
            k.lane, k.counts, k.ledger, b"%b%x" % (k.voters_prefix, bucket_of(pseudonym, poll.bucket_bits)),
            keys.lane_held(poll.id, lane), keys.lane_decided(poll.id, lane),
            pseudonym, index_field(pseudonym), option.encode(), reason, subnet, signed,
        )  # fmt: skip
        result = _result(poll, lane, option, await self._client.durable(command))
        if isinstance(result, RecordedHeld) and self._evidence is not None:
            await self._evidence.keep(poll, lane, result.seq, hold)
        return result

    async def has_voted(self, poll: Poll, pseudonym: bytes) -> bool:
        """One HEXISTS on the voter's index bucket, the same field tally_vote checks (the index
        keeps every vote, accepted or held, after its ledger entry is archived and trimmed)."""
        k = self._keys(poll)[lane_of(pseudonym, poll.lanes)]
        bucket = b"%b%x" % (k.voters_prefix, bucket_of(pseudonym, poll.bucket_bits))
        return bool(await self._client.call("HEXISTS", bucket, index_field(pseudonym)))

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
            if len(self._lane_keys) >= MAX_CACHED_POLLS:  # bounded: definitions are tiny
                self._lane_keys.clear()
            self._lane_keys[poll.id] = cached
        return cached


def _result(poll: Poll, lane: int, option: str, reply: Any) -> CastResult:
    """tally_vote's reply (tally.lua) as a value."""
    if isinstance(reply, ReplyError):
        raise StoreUnavailable(f"vote function failed: {reply}")
    status = reply[0]
    if status == b"accepted":
        return Recorded(lane, reply[1], reply[3])
    if status == b"held":
        return RecordedHeld(lane, reply[1], reply[3])
    if status == b"already":
        vote_status = reply[4].decode()
        if reply[2] is None:  # archived, and trimmed from the lane stream
            return AlreadyRecorded(lane, reply[1], None, None, vote_status)
        signed = reply[5] if len(reply) > 5 else None
        try:
            admission = None if signed is None else AdmissionSignature.from_bytes(signed)
        except ValueError as exc:  # tally_vote stores only 76 bytes: a store out of contract
            raise StoreUnavailable(f"vote {reply[1]} of lane {lane}: {exc}") from None
        return AlreadyRecorded(lane, reply[1], reply[2].decode(), reply[3], vote_status, admission)
    if status == b"not-open":
        return NotOpen(PollState(reply[1].decode()))
    if status == b"unknown-option":
        return UnknownOption(option)
    if status == b"no-lane":
        raise PollNotFound(poll.id)
    raise StoreUnavailable(f"unexpected vote reply {reply!r}")

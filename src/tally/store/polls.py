"""Poll definitions and lifecycle in Valkey (implements ports.PollStore)."""

from __future__ import annotations

import orjson

from tally.domain import defences
from tally.domain.errors import InvalidInput, StoreUnavailable
from tally.domain.polls import STATE_RANK, Option, Poll, PollState, Visibility
from tally.domain.results import LaneTally
from tally.ports import StoreClient
from tally.store import keys
from tally.store.admission_keys import ValkeyAdmissionKeys, creation_args
from tally.store.resp import raise_first_error

FORMAT_VERSION = 3
# Version 1 definitions (before per-poll defences) read with the default defences; versions 1
# and 2 (before result visibility) as `live`, which is what they were. Version 3 because a Tally
# that ignored `visibility` would show hidden counts: it refuses the poll instead.
READABLE_VERSIONS = frozenset({1, 2, FORMAT_VERSION})


def encode_definition(poll: Poll) -> bytes:
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "id": poll.id,
            "title": poll.title,
            "options": [{"id": o.id, "label": o.label} for o in poll.options],
            "lanes": poll.lanes,
            "closes_at_ms": poll.closes_at_ms,
            "created_at_ms": poll.created_at_ms,
            "bucket_bits": poll.bucket_bits,
            "defences": defences.to_document(poll.defences),
            "visibility": poll.visibility.value,
        }
    )


def decode_poll(definition: bytes, state: bytes) -> Poll:
    d = orjson.loads(definition)
    if d.get("v") not in READABLE_VERSIONS:
        # A newer Tally wrote this poll; reading it with older rules could misjudge votes.
        raise StoreUnavailable(
            f"poll {d.get('id')!r} has definition format {d.get('v')!r}; this Tally reads {FORMAT_VERSION}"
        )
    return Poll(
        id=d["id"],
        title=d["title"],
        options=tuple(Option(id=o["id"], label=o["label"]) for o in d["options"]),
        state=PollState(state.decode()),
        lanes=d["lanes"],
        closes_at_ms=d["closes_at_ms"],
        created_at_ms=d["created_at_ms"],
        bucket_bits=d["bucket_bits"],
        defences=defences.from_document(d["defences"])
        if "defences" in d
        else defences.DEFAULT_DEFENCES,
        visibility=Visibility(d.get("visibility", Visibility.LIVE)),
    )


def _earlier_states(target: PollState) -> list[str]:
    return [s.value for s, rank in STATE_RANK.items() if rank < STATE_RANK[target]]


class ValkeyPolls:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def create(self, poll: Poll, actor: str = "") -> None:
        closes_at = "" if poll.closes_at_ms is None else str(poll.closes_at_ms)
        option_ids = [o.id for o in poll.options]
        # Claim the id first, so two racing creates of one id cannot both write lanes.
        claimed = await self._client.call(
            "ZADD", keys.POLL_INDEX, "NX", poll.created_at_ms, poll.id
        )
        if not claimed:
            raise InvalidInput("id", f"a poll {poll.id!r} already exists")
        replies = await self._client.pipeline(
            [
                (
                    "FCALL",
                    "tally_lane_create",
                    2,
                    keys.lane_state(poll.id, lane),
                    keys.lane_counts(poll.id, lane),
                    closes_at,
                    *option_ids,
                )
                for lane in range(poll.lanes)
            ]
        )
        raise_first_error(replies)
        # The admission keys valid for its votes follow 'created' in the poll's admin log.
        admission = await creation_args(self._client, poll.created_at_ms)
        await self._client.call(
            "FCALL", "tally_poll_create", 3, keys.poll_meta(poll.id), keys.poll_admin(poll.id),
            keys.poll_admission(poll.id),
            encode_definition(poll), poll.state.value, poll.created_at_ms, actor, *admission,
        )  # fmt: skip
        await ValkeyAdmissionKeys(self._client).sync_poll(poll.id, poll.created_at_ms, actor)

    async def get(self, poll_id: str) -> Poll | None:
        definition, state = await self._client.call(
            "HMGET", keys.poll_meta(poll_id), "def", "state"
        )
        if definition is None or state is None:
            return None
        return decode_poll(definition, state)

    async def recent(self, limit: int, offset: int = 0) -> list[Poll]:
        last = offset + limit - 1
        ids = await self._client.call("ZRANGE", keys.POLL_INDEX, offset, last, "REV")
        replies = await self._client.pipeline(
            [("HMGET", keys.poll_meta(i.decode()), "def", "state") for i in ids]
        )
        raise_first_error(replies)
        return [decode_poll(d, s) for d, s in replies if d is not None and s is not None]

    async def move(self, poll: Poll, target: PollState, actor: str = "") -> PollState:
        earlier = _earlier_states(target)
        lane_replies = await self._client.pipeline(
            [
                ("FCALL", "tally_move", 1, keys.lane_state(poll.id, lane), target.value, *earlier)
                for lane in range(poll.lanes)
            ]
        )
        raise_first_error(lane_replies)
        for lane, reply in enumerate(lane_replies):
            if reply[0] == b"refused" or reply[0] == b"missing":
                raise StoreUnavailable(f"lane {lane} of poll {poll.id} is inconsistent: {reply!r}")
        status, previous = await self._client.call(
            "FCALL", "tally_poll_move", 2, keys.poll_meta(poll.id), keys.poll_admin(poll.id),
            target.value, actor, *earlier,
        )  # fmt: skip
        if status in (b"refused", b"missing"):
            raise StoreUnavailable(f"poll {poll.id} record is inconsistent: {status!r}")
        return PollState(previous.decode())

    async def lane_states(self, poll: Poll) -> list[PollState | None]:
        replies = await self._client.pipeline(
            [("HGET", keys.lane_state(poll.id, lane), "state") for lane in range(poll.lanes)]
        )
        raise_first_error(replies)
        return [None if r is None else PollState(r.decode()) for r in replies]

    async def tallies(self, poll: Poll) -> tuple[list[LaneTally], int]:
        commands: list[tuple[str, ...]] = []
        for lane in range(poll.lanes):
            commands.append(("HGETALL", keys.lane_counts(poll.id, lane)))
            commands.append(("HMGET", keys.lane_state(poll.id, lane), "at", "held"))
        commands.append(("HGET", keys.poll_meta(poll.id), "updated_at"))
        replies = await self._client.pipeline(commands)
        raise_first_error(replies)
        lanes = [_lane_tally(replies[i], replies[i + 1]) for i in range(0, 2 * poll.lanes, 2)]
        return lanes, int(replies[-1] or 0)


def _lane_tally(counts: list[bytes], lane: list[bytes | None]) -> LaneTally:
    pairs = {counts[i].decode(): int(counts[i + 1]) for i in range(0, len(counts), 2)}
    at, held = lane
    return LaneTally(counts=pairs, last_vote_at_ms=int(at or 0), held=int(held or 0))

"""The integrity check's side of the store (implements ports.IntegrityStore): each lane's live
counters read atomically with their seq, and the poll's integrity alarms."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from tally.domain.integrity import (
    IntegrityAlarm,
    LaneCounters,
    alarm_from_document,
    alarm_to_document,
)
from tally.domain.polls import Poll
from tally.ports import StoreClient
from tally.store import keys
from tally.store.resp import raise_first_error

log = logging.getLogger("tally.store.integrity")


class ValkeyIntegrity:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def lane_counters(self, poll: Poll) -> list[LaneCounters]:
        replies = await self._client.pipeline(
            [
                ("FCALL", "tally_lane_counters", 2, keys.lane_state(poll.id, lane),
                 keys.lane_counts(poll.id, lane))
                for lane in range(poll.lanes)
            ]
        )  # fmt: skip
        raise_first_error(replies)
        return [_counters(reply) for reply in replies]

    async def raise_alarm(self, poll_id: str, alarm: IntegrityAlarm) -> bool:
        """Store the alarm unless one of its kind and log is stored already (the first seen is
        kept); True if it is new."""
        added = await self._client.call(
            "HSETNX",
            keys.poll_integrity(poll_id),
            alarm.slot,
            orjson.dumps(alarm_to_document(alarm)),
        )
        return bool(added)

    async def alarms(self, poll_id: str) -> list[IntegrityAlarm]:
        """The poll's alarms, by kind and log; an unreadable entry is logged and left out."""
        flat = await self._client.call("HGETALL", keys.poll_integrity(poll_id))
        alarms = []
        for slot, value in sorted(zip(flat[::2], flat[1::2], strict=True)):
            try:
                alarms.append(alarm_from_document(orjson.loads(value)))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("poll %s: integrity alarm %r is unreadable: %s", poll_id, slot, exc)
        return alarms


def _counters(reply: list[Any]) -> LaneCounters:
    seq, held, flat = reply
    counts = {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return LaneCounters(seq, held, counts)

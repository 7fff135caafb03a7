"""Held votes' network evidence in Valkey (implements ports.HeldEvidenceStore).

The evidence is the third field of a lane's held index entry (`tally:{<poll>.<lane>}:held`,
seq -> option|reason|evidence|ms): "" until the gateway keeps the sealed blob there, "-" once the
retention sweep deleted it (tally.security.evidence). Every change goes through
`tally_held_evidence` (tally.lua), a compare-and-set per vote on the lane's slot, in chunks so no
call holds Valkey up for long.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import Poll, PollState
from tally.domain.review import EntryRef
from tally.ports import StoreClient
from tally.store import keys
from tally.store.resp import raise_first_error

CHUNK = 500


class ValkeyHeldEvidence:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def rewrite(self, poll: Poll, changes: Sequence[tuple[EntryRef, str, str]]) -> int:
        by_lane: dict[int, list[tuple[EntryRef, str, str]]] = defaultdict(list)
        for change in changes:
            by_lane[change[0].lane].append(change)
        commands: list[tuple[Any, ...]] = []
        for lane, lane_changes in by_lane.items():
            held = keys.lane_held(poll.id, lane)
            for start in range(0, len(lane_changes), CHUNK):
                args = [
                    part
                    for ref, expected, new in lane_changes[start : start + CHUNK]
                    for part in (str(ref.entry_id), expected, new)
                ]
                commands.append(("FCALL", "tally_held_evidence", 1, held, *args))
        if not commands:
            return 0
        replies = await self._client.pipeline(commands)
        raise_first_error(replies)
        return sum(int(n) for n in replies)

    async def closed_at_ms(self, poll: Poll) -> int | None:
        """The deadline if it is the earlier, else the time the record moved to closed (its
        `updated_at`: a closed poll's record never moves again)."""
        reply = await self._client.call("HMGET", keys.poll_meta(poll.id), "state", "updated_at")
        state, updated_at = reply
        if state is None:
            raise StoreUnavailable(f"poll {poll.id} has no record")
        moments = []
        if state.decode() == PollState.CLOSED.value and updated_at is not None:
            moments.append(int(updated_at))
        if poll.closes_at_ms is not None and state.decode() != PollState.DRAFT.value:
            # Past the deadline the lanes refuse votes, whether or not the record says closed.
            moments.append(poll.closes_at_ms)
        return min(moments, default=None)

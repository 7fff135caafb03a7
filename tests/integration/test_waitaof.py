"""Votes confirmed with WAITAOF per batch (the mode for external servers and replicas): the
client's durability policy, applied to the ballot box's durable writes."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import OptionSpec, Poll, PollState, new_poll
from tally.ports import AlreadyRecorded, Recorded
from tally.service import system_clock_ms
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey, WaitAof
from tally.store.votes import ValkeyBallotBox


async def _open_poll(valkey: Valkey, lanes: int = 4) -> Poll:
    poll = new_poll(
        poll_id=f"w{secrets.token_hex(6)}",
        title="waitaof",
        options=[OptionSpec("Red"), OptionSpec("Green")],
        now_ms=system_clock_ms(),
        lanes=lanes,
    )
    polls = ValkeyPolls(valkey)
    await polls.create(poll)
    await polls.move(poll, PollState.OPEN)
    return poll


async def test_a_batch_confirmed_by_waitaof_is_acknowledged(valkey: Valkey) -> None:
    """With WAITAOF 1 0 every vote of a concurrent batch gets its own outcome once fsynced."""
    poll = await _open_poll(valkey)
    valkey.durability = WaitAof(replicas=0, timeout_ms=1000)
    box = ValkeyBallotBox(valkey)
    voters = [secrets.token_bytes(16) for _ in range(200)]
    outcomes = await asyncio.gather(*(box.cast(poll, v, "red") for v in voters + voters[:10]))
    accepted = [o for o in outcomes if isinstance(o, Recorded)]
    repeats = [o for o in outcomes if isinstance(o, AlreadyRecorded)]
    assert len(accepted) == 200
    assert len(repeats) == 10
    first_entries = [(o.lane, o.seq, "red", o.accepted_ms) for o in accepted[:10]]
    assert [(r.lane, r.seq, r.option, r.accepted_ms) for r in repeats] == first_entries


async def test_an_unconfirmed_batch_fails_closed_and_a_retry_returns_the_receipt(
    valkey: Valkey,
) -> None:
    """If the replicas cannot confirm, no vote is acknowledged; the retry finds it recorded."""
    poll = await _open_poll(valkey)
    box = ValkeyBallotBox(valkey)
    voter = secrets.token_bytes(16)
    valkey.durability = WaitAof(replicas=1, timeout_ms=50)  # no replica will ever confirm
    with pytest.raises(StoreUnavailable, match="durability not confirmed"):
        await box.cast(poll, voter, "green")
    valkey.durability = None
    retry = await box.cast(poll, voter, "green")
    assert isinstance(retry, AlreadyRecorded)
    assert retry.option == "green"


async def test_unconfirmed_batches_do_not_queue_up_behind_each_other(valkey: Valkey) -> None:
    """While no replica confirms, votes in many ticks each fail within twice the timeout: one
    WAIT/WAITAOF in flight per connection, the votes meanwhile confirmed by the next one, not
    a blocking WAIT per tick, each answered a timeout after the one before."""
    poll = await _open_poll(valkey)
    box = ValkeyBallotBox(valkey)
    valkey.durability = WaitAof(replicas=1, timeout_ms=200)  # no replica will ever confirm
    loop = asyncio.get_running_loop()

    async def timed_cast(delay_s: float) -> float:
        await asyncio.sleep(delay_s)
        started = loop.time()
        with pytest.raises(StoreUnavailable, match="durability not confirmed"):
            await box.cast(poll, secrets.token_bytes(16), "red")
        return loop.time() - started

    try:
        waits = await asyncio.gather(*(timed_cast(0.02 * n) for n in range(15)))
    finally:
        valkey.durability = None
    # Valkey times out blocked clients on its 100 ms timer (hz 10): WAIT and WAITAOF may each
    # overrun their 100 ms by up to that much. One after the other, 15 would take 3 s at least.
    assert max(waits) < 2 * (0.2 + 0.2) + 0.2, waits

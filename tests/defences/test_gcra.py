"""The GCRA rate limits in the store: the `tally_gcra` function (tally.lua) and its adapter
(tally.store.ratelimits), against the real valkey-server (or the local cluster, with
TALLY_TEST_STORE=cluster)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import StoreConnection, StoreUnderTest, own_store
from tally.domain.defences import Defences, LimitScope, Rate, RateLimits
from tally.domain.errors import StoreUnavailable
from tally.domain.polls import OptionSpec, Poll, new_poll
from tally.ports import Limited
from tally.store import keys
from tally.store.cluster import key_slot
from tally.store.ratelimits import ValkeyRateLimits, gcra_spec

OFF = RateLimits(address=None, subnet=None, voter=None, poll=None)
# How the adapter sends a request's groups: one call (one node only: the keys span slots), or one
# call per group in a pipeline (any store).
CALLS = [
    pytest.param(True, id="one-call", marks=pytest.mark.single_node("one call spans hash slots")),
    pytest.param(False, id="pipelined"),
]


def unique(prefix: str) -> str:
    """A bucket name of this test's own (the one-node store is shared by the whole session)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def gcra(
    client: StoreConnection, *buckets: tuple[str, Rate], groups: Sequence[int] = ()
) -> list[int]:
    """FCALL tally_gcra over `buckets` (one hash slot), in one group unless `groups` numbers
    each bucket's: [0, 0] or [retry_after_ms, which]."""
    numbers = groups or [1] * len(buckets)
    spec = b" ".join(
        b"%b %d" % (gcra_spec(rate), n) for (_, rate), n in zip(buckets, numbers, strict=True)
    )
    reply = await client.execute(
        "FCALL", "tally_gcra", len(buckets), *(key for key, _ in buckets), spec
    )
    return [int(reply[0]), int(reply[1])]


def poll_with(limits: RateLimits, lanes: int = 1) -> Poll:
    return new_poll(
        poll_id=unique("rl-"),
        title="rate limits",
        options=[OptionSpec("Red"), OptionSpec("Blue")],
        now_ms=0,
        lanes=lanes,
        defences=Defences(limits=limits),
    )


async def test_a_full_bucket_admits_its_burst_at_once_then_asks_for_one_interval(
    valkey: StoreConnection,
) -> None:
    """A fresh bucket of burst 5 admits 5 requests at once; the 6th waits one emission interval
    (200 ms at 5 a second), less the time already gone."""
    key = keys.rate_voter(unique("v"))
    rate = Rate(per_s=5.0, burst=5)
    answers = [await gcra(valkey, (key, rate)) for _ in range(6)]
    assert answers[:5] == [[0, 0]] * 5
    wait_ms, which = answers[5]
    assert which == 1
    assert 100 < wait_ms <= 200


async def test_after_waiting_the_retry_after_the_bucket_admits_again(
    valkey: StoreConnection,
) -> None:
    """The wait the store answers is enough: a retry after it is admitted, and one after half
    of it is refused again."""
    key = keys.rate_voter(unique("v"))
    rate = Rate(per_s=2.0, burst=1)
    assert await gcra(valkey, (key, rate)) == [0, 0]
    wait_ms, _ = await gcra(valkey, (key, rate))
    assert 400 < wait_ms <= 500
    await asyncio.sleep(wait_ms / 2000)
    assert (await gcra(valkey, (key, rate)))[1] == 1
    await asyncio.sleep(wait_ms / 2000 + 0.01)
    assert await gcra(valkey, (key, rate)) == [0, 0]


async def test_one_call_is_all_or_nothing(valkey: StoreConnection) -> None:
    """When one bucket of a call refuses, the others are not charged: the fresh subnet bucket
    stays untouched while its full address bucket refuses."""
    subnet = unique("s")
    address_key = keys.rate_address(subnet, "a1")
    subnet_key = keys.rate_subnet(subnet)
    slow = Rate(per_s=0.01, burst=1)
    assert await gcra(valkey, (address_key, slow)) == [0, 0]
    tat = await valkey.execute("GET", address_key)
    wait_ms, which = await gcra(valkey, (subnet_key, Rate(1.0, 10)), (address_key, slow))
    assert which == 2  # the address bucket refused
    assert 99_000 < wait_ms <= 100_000
    assert await valkey.execute("EXISTS", subnet_key) == 0
    assert await valkey.execute("GET", address_key) == tat  # refusals cost nothing either


async def test_groups_in_one_call_are_independent(valkey: StoreConnection) -> None:
    """Groups in one call act as separate calls would: the group whose bucket refuses changes
    nothing, the other group is charged (keys share a hash tag, so a cluster takes it too)."""
    tag = unique("t")
    full, fresh, also_fresh = (f"tally:rl:{{{tag}}}:{name}" for name in ("x", "y", "z"))
    slow = Rate(per_s=0.01, burst=1)
    assert await gcra(valkey, (full, slow)) == [0, 0]
    tat = await valkey.execute("GET", full)
    buckets = ((fresh, Rate(1.0, 5)), (full, slow), (also_fresh, Rate(1.0, 5)))
    wait_ms, which = await gcra(valkey, *buckets, groups=(1, 2, 2))
    assert which == 2
    assert 99_000 < wait_ms <= 100_000
    assert await valkey.execute("EXISTS", fresh) == 1  # group 1 admitted: charged
    assert await valkey.execute("EXISTS", also_fresh) == 0  # group 2 refused: untouched
    assert await valkey.execute("GET", full) == tat


async def test_the_longest_wait_names_the_bucket(valkey: StoreConnection) -> None:
    """Of several refusing buckets the call answers the longest wait and which bucket asks it."""
    subnet = unique("s")
    buckets = (
        (keys.rate_subnet(subnet), Rate(per_s=1.0, burst=1)),
        (keys.rate_address(subnet, "a"), Rate(per_s=0.1, burst=1)),
    )
    assert await gcra(valkey, *buckets) == [0, 0]
    wait_ms, which = await gcra(valkey, *buckets)
    assert (which, 9_000 < wait_ms <= 10_000) == (2, True)


async def test_a_bucket_expires_once_it_is_full_again(valkey: StoreConnection) -> None:
    """Idle buckets cost no memory: the key lives (PX) until its bucket would be full again,
    one interval per request taken."""
    key = keys.rate_voter(unique("v"))
    rate = Rate(per_s=10.0, burst=50)
    assert await gcra(valkey, (key, rate)) == [0, 0]
    assert 0 < await valkey.execute("PTTL", key) <= 100
    for _ in range(9):
        await gcra(valkey, (key, rate))
    assert 900 < await valkey.execute("PTTL", key) <= 1000
    await asyncio.sleep(1.05)
    assert await valkey.execute("EXISTS", key) == 0


@settings(max_examples=20, deadline=None)
@given(
    burst=st.integers(min_value=1, max_value=40),
    extra=st.integers(min_value=0, max_value=20),
    per_s=st.floats(min_value=0.001, max_value=1.0),
)
def test_requests_at_once_are_admitted_up_to_the_burst_exactly(
    store_server: StoreUnderTest, burst: int, extra: int, per_s: float
) -> None:
    """Whatever the rate and burst, requests arriving together are admitted exactly `burst`
    times: the rest are refused and change nothing."""

    async def run() -> list[list[int]]:
        client = store_server.client()
        try:
            await client.connect()
            key = keys.rate_voter(unique("v")).encode()
            spec = gcra_spec(Rate(per_s, burst)) + b" 1"
            command = (b"FCALL", b"tally_gcra", b"1", key, spec)
            replies = await client.pipeline([command] * (burst + extra))
            return [[int(r[0]), int(r[1])] for r in replies]
        finally:
            await client.close()

    answers = asyncio.run(run())
    assert answers[:burst] == [[0, 0]] * burst
    assert all(which == 1 and wait > 0 for wait, which in answers[burst:])


def test_each_limit_group_lives_in_one_slot_of_its_own() -> None:
    """Address and subnet share the subnet's slot (one atomic call); subnets and voters spread
    over slots; a poll's share on a lane lives in that lane's slot."""
    assert key_slot(keys.rate_address("s1", "a1").encode()) == key_slot(
        keys.rate_subnet("s1").encode()
    )
    subnet_slots = {key_slot(keys.rate_subnet(f"s{i}").encode()) for i in range(100)}
    voter_slots = {key_slot(keys.rate_voter(f"v{i}").encode()) for i in range(100)}
    assert len(subnet_slots) > 90
    assert len(voter_slots) > 90
    assert key_slot(keys.lane_rate("p", 3).encode()) == key_slot(keys.lane_state("p", 3).encode())


@pytest.mark.parametrize("one_call", CALLS)
async def test_the_adapter_reports_the_scope_that_refused(
    valkey: StoreConnection, one_call: bool
) -> None:
    """Each limit refuses in its own scope; with several refusing, the longest wait is told. The
    steps are independent: a request the address step refuses still counts for the voter."""
    limiter = ValkeyRateLimits(valkey, one_call=one_call)
    poll = poll_with(RateLimits(address=Rate(1.0, 2), subnet=None, voter=Rate(0.1, 4), poll=None))
    voter, address, subnet = unique("v"), unique("a"), unique("s")
    assert await limiter.take(poll, voter, address, subnet) is None
    assert await limiter.take(poll, voter, address, subnet) is None
    limited = await limiter.take(poll, voter, address, subnet)  # the voter's 3rd request
    assert scope_of(limited) is LimitScope.ADDRESS
    assert limited is not None
    assert 500 < limited.retry_after_ms <= 1000
    other_address = unique("a")
    assert await limiter.take(poll, voter, other_address, subnet) is None  # the voter's 4th
    limited = await limiter.take(poll, voter, other_address, subnet)
    assert scope_of(limited) is LimitScope.VOTER
    assert limited is not None
    assert 5_000 < limited.retry_after_ms <= 10_000
    limited = await limiter.take(poll, voter, address, subnet)  # both refuse: voter waits longer
    assert scope_of(limited) is LimitScope.VOTER


def scope_of(limited: Limited | None) -> LimitScope | None:
    return None if limited is None else limited.scope


@pytest.mark.parametrize("one_call", CALLS)
async def test_the_subnet_limit_counts_every_address_in_it(
    valkey: StoreConnection, one_call: bool
) -> None:
    limiter = ValkeyRateLimits(valkey, one_call=one_call)
    poll = poll_with(RateLimits(address=Rate(1.0, 5), subnet=Rate(1.0, 3), voter=None, poll=None))
    subnet = unique("s")
    answers = [await limiter.take(poll, "", unique("a"), subnet) for _ in range(4)]
    assert answers[:3] == [None] * 3
    assert scope_of(answers[3]) is LimitScope.SUBNET
    assert await limiter.take(poll, "", unique("a"), unique("s")) is None  # another subnet


@pytest.mark.parametrize("one_call", CALLS)
async def test_the_poll_limit_is_shared_out_over_its_lanes(
    valkey: StoreConnection, one_call: bool
) -> None:
    """A poll limit of burst 8 on 4 lanes is 4 buckets of burst 2, one per lane's slot, taken
    in turn: 8 requests at once are admitted, the 9th refused in the poll's scope."""
    limiter = ValkeyRateLimits(valkey, one_call=one_call)
    poll = poll_with(RateLimits(None, None, None, Rate(per_s=0.4, burst=8)), lanes=4)
    answers = [await limiter.take(poll, "", "", "") for _ in range(9)]
    assert answers[:8] == [None] * 8
    assert scope_of(answers[8]) is LimitScope.POLL
    assert answers[8] is not None
    assert 9_000 < answers[8].retry_after_ms <= 10_000  # one interval of a lane: 4 / 0.4 s
    for lane in range(4):
        assert await valkey.execute("EXISTS", keys.lane_rate(poll.id, lane)) == 1


@pytest.mark.parametrize("one_call", CALLS)
async def test_limits_that_are_off_write_nothing(valkey: StoreConnection, one_call: bool) -> None:
    """A limit set to None takes no bucket, and with every limit off no call leaves at all."""
    limiter = ValkeyRateLimits(valkey, one_call=one_call)
    poll = poll_with(RateLimits(address=None, subnet=Rate(0.01, 1), voter=None, poll=None))
    voter, address, subnet = unique("v"), unique("a"), unique("s")
    for _ in range(3):
        assert await limiter.take(poll_with(OFF), voter, address, subnet) is None
    assert await limiter.take(poll, voter, address, subnet) is None
    assert await valkey.execute("EXISTS", keys.rate_voter(voter)) == 0
    assert await valkey.execute("EXISTS", keys.rate_address(subnet, address)) == 0
    assert await valkey.execute("EXISTS", keys.rate_subnet(subnet)) == 1
    limited = await limiter.take(poll, voter, address, subnet)
    assert scope_of(limited) is LimitScope.SUBNET
    assert limited is not None
    assert 99_000 < limited.retry_after_ms <= 100_000


@pytest.mark.single_node("flushes the functions of a valkey-server of its own")
@pytest.mark.parametrize("one_call", CALLS)
async def test_a_store_that_cannot_answer_fails_the_check_closed(
    tmp_path: Path, one_call: bool
) -> None:
    """An error reply (here: no tally_gcra loaded) is StoreUnavailable, never an admission: the
    vote path answers 503 and the client retries."""
    async with own_store(tmp_path) as store:
        client = store.client(functions=False)
        await client.connect()
        try:
            # The embedded server's admin loads the functions at every start: take them away.
            assert await client.execute("FUNCTION", "FLUSH") == b"OK"
            limiter = ValkeyRateLimits(client, one_call=one_call)
            poll = poll_with(RateLimits(None, None, Rate(1.0, 5), Rate(1.0, 5)))
            with pytest.raises(StoreUnavailable):
                await limiter.take(poll, unique("v"), "", "")
        finally:
            await client.close()

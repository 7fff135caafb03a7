"""Join codes in a real Valkey (store.join_codes behind service.join_codes): one code per poll,
each code leading to one poll, for ever; polls made before join codes existed get theirs when
first asked. Runs on one valkey-server and (TALLY_TEST_STORE=cluster) on a Valkey Cluster, where
a code's key and its poll's key live in different slots."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from conftest import StoreUnderTest
from tally.domain.errors import StoreUnavailable
from tally.domain.join_codes import code_of
from tally.domain.polls import OptionSpec
from tally.service import NewPoll, VotingService
from tally.service.join_codes import MAX_TRIES, JoinCodes
from tally.store import acl
from tally.store.join_codes import ValkeyJoinCodes
from tally.store.library import ensure_functions
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox
from tally.wiring.store import StoreConnection

SECRET = b"join-codes-pseudonym-secret-32by"


def scripted(numbers: list[int]) -> Callable[[int], int]:
    """A `random_below` that answers `numbers` in turn (then keeps answering the last one)."""
    answers: Iterator[int] = itertools.chain(numbers, itertools.repeat(numbers[-1]))
    return lambda _bound: next(answers)


async def make_poll(valkey: StoreConnection, title: str = "join") -> str:
    """A poll made the way every poll before join codes was: the service alone, no code."""
    service = VotingService(ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=SECRET)
    options = [OptionSpec("Yes", "yes"), OptionSpec("No", "no")]
    return (await service.create_poll(NewPoll(title, options, lanes=1))).id


async def test_a_poll_made_before_join_codes_gets_one_when_first_asked_and_keeps_it(
    valkey: StoreConnection,
) -> None:
    store = ValkeyJoinCodes(valkey)
    poll_id = await make_poll(valkey)
    assert await store.code_of([poll_id]) == [None]  # an old poll: no code yet

    codes = JoinCodes(store)
    code = await codes.code_for(poll_id)
    assert await codes.code_for(poll_id) == code  # asked again: the same code
    assert await store.code_of([poll_id]) == [code]
    assert await codes.poll_for(code) == poll_id
    assert await codes.poll_for(code.lower()) == poll_id  # any case
    assert await codes.poll_for(f"{code[:3]}-{code[3:]}") == poll_id  # as people type it


async def test_codes_are_unique_a_taken_code_is_skipped(valkey: StoreConnection) -> None:
    """Two polls whose first random code is the same: the second one draws again."""
    first_poll, second_poll = await make_poll(valkey, "first"), await make_poll(valkey, "second")
    taken, free = 4242, 4243
    first = await JoinCodes(ValkeyJoinCodes(valkey), scripted([taken])).code_for(first_poll)
    second = await JoinCodes(ValkeyJoinCodes(valkey), scripted([taken, free])).code_for(second_poll)
    assert (first, second) == (code_of(taken), code_of(free))
    codes = JoinCodes(ValkeyJoinCodes(valkey))
    assert await codes.poll_for(first) == first_poll
    assert await codes.poll_for(second) == second_poll


async def test_concurrent_first_asks_agree_on_one_code(valkey: StoreConnection) -> None:
    """Gateways racing to give one old poll its code: every answer is the same code, and every
    code any of them claimed on the way still leads to that poll."""
    poll_id = await make_poll(valkey)
    numbers = [1000 + i for i in range(8)]
    racers = [JoinCodes(ValkeyJoinCodes(valkey), scripted([n])) for n in numbers]
    answers = await asyncio.gather(*(r.code_for(poll_id) for r in racers))
    assert len(set(answers)) == 1
    assert answers[0] in {code_of(n) for n in numbers}
    codes = JoinCodes(ValkeyJoinCodes(valkey))
    for number in numbers:
        assert await codes.poll_for(code_of(number)) == poll_id


async def test_many_polls_in_one_read_each_with_its_own_code(valkey: StoreConnection) -> None:
    polls = [await make_poll(valkey, f"p{i}") for i in range(6)]
    codes = JoinCodes(ValkeyJoinCodes(valkey))
    given = await codes.codes_for(polls[:3])  # three get codes first
    listed = await codes.codes_for(polls)  # the list: three known, three new
    assert listed[:3] == given
    assert len(set(listed)) == len(polls)
    for poll_id, code in zip(polls, listed, strict=True):
        assert await codes.poll_for(code) == poll_id
    assert await codes.codes_for([]) == []


@pytest.mark.parametrize("typed", ["ZZZZZZ", "nope", "", "AB0CDE", "../../x"])
async def test_an_unknown_or_impossible_code_leads_nowhere(
    valkey: StoreConnection, typed: str
) -> None:
    assert await JoinCodes(ValkeyJoinCodes(valkey)).poll_for(typed) is None


async def test_a_full_code_space_is_an_error_not_a_loop(valkey: StoreConnection) -> None:
    """If every draw is taken (randomness broken, or a full space), giving a code fails after
    MAX_TRIES draws, and the poll is left without one."""
    taken_by = await make_poll(valkey, "holder")
    stuck = await make_poll(valkey, "stuck")
    await JoinCodes(ValkeyJoinCodes(valkey), scripted([7])).code_for(taken_by)
    draws: list[int] = []

    def always_seven(bound: int) -> int:
        draws.append(bound)
        return 7

    with pytest.raises(StoreUnavailable, match="no free join code"):
        await JoinCodes(ValkeyJoinCodes(valkey), always_seven).code_for(stuck)
    assert len(draws) == MAX_TRIES
    assert await ValkeyJoinCodes(valkey).code_of([stuck]) == [None]


@pytest.fixture
async def as_gateway(store_server: StoreUnderTest) -> AsyncIterator[Valkey]:
    """A client logged in as the gateway's own Valkey user (one node: the cluster's users are
    the same table, proven by the API tests through `tally serve`)."""
    if store_server.server is None:
        pytest.skip("the role users are checked on the one embedded valkey-server")
    client = Valkey(store_server.server.endpoint_for(acl.GATEWAY), on_connect=ensure_functions)
    await client.connect()
    yield client
    await client.close()


async def test_the_gateway_user_may_give_and_follow_join_codes(as_gateway: Valkey) -> None:
    """Everything join codes send is in the gateway's ACL rules (store/acl.py)."""
    poll_id = await make_poll(as_gateway)
    codes = JoinCodes(ValkeyJoinCodes(as_gateway))
    code = await codes.code_for(poll_id)
    assert await codes.codes_for([poll_id]) == [code]
    assert await codes.poll_for(code) == poll_id

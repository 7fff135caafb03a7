"""A close racing a stream of votes: each vote is counted or refused, never half-applied."""

from __future__ import annotations

import asyncio

import pytest

from conftest import StoreConnection, StoreUnderTest
from tally.domain.polls import OptionSpec, PollState
from tally.domain.votes import Accepted, AlreadyVoted, NotOpen, VoteOutcome
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox

ISSUER = "https://idp.race.test"
SECRET = b"race-pseudonym-secret-32-bytes!!"
OPTIONS = ("red", "green", "blue")
VOTERS = 2000
IN_FLIGHT = 40
CLOSE_AFTER = VOTERS // 4


def service_on(client: StoreConnection) -> VotingService:
    return VotingService(ValkeyPolls(client), ValkeyBallotBox(client), pseudonym_secret=SECRET)


def option_of(voter: int) -> str:
    return OPTIONS[voter % len(OPTIONS)]


async def stream_votes_and_close(
    voting: VotingService, closing: VotingService, poll_id: str
) -> list[VoteOutcome]:
    """VOTERS distinct voters, IN_FLIGHT at a time; another connection closes the poll once
    CLOSE_AFTER of them have an answer. Returns each voter's outcome, in voter order."""
    outcomes: list[VoteOutcome | None] = [None] * VOTERS
    answered = 0
    next_voter = iter(range(VOTERS))
    enough_answers = asyncio.Event()

    async def voter_slot() -> None:
        nonlocal answered
        for voter in next_voter:
            outcomes[voter] = await voting.vote(
                poll_id, Voter(ISSUER, f"v{voter}"), option_of(voter)
            )
            answered += 1
            if answered >= CLOSE_AFTER:
                enough_answers.set()

    async def closer() -> None:
        await enough_answers.wait()
        await closing.close_poll(poll_id)

    async with asyncio.TaskGroup() as group:
        for _ in range(IN_FLIGHT):
            group.create_task(voter_slot())
        group.create_task(closer())
    assert None not in outcomes
    return [o for o in outcomes if o is not None]


async def race_a_close(
    voting: VotingService, store_server: StoreUnderTest, lanes: int
) -> tuple[str, list[VoteOutcome]]:
    """Open a poll, stream votes at it and close it mid-stream from a second connection."""
    poll = await voting.create_poll(
        NewPoll("race", [OptionSpec(label=o, id=o) for o in OPTIONS], lanes=lanes)
    )
    await voting.open_poll(poll.id)
    closing_client = store_server.client()
    try:
        return poll.id, await stream_votes_and_close(voting, service_on(closing_client), poll.id)
    finally:
        await closing_client.close()


@pytest.mark.parametrize("lanes", [1, 16])
async def test_every_vote_racing_a_close_is_counted_or_refused(
    valkey: Valkey, store_server: StoreUnderTest, lanes: int
) -> None:
    """Votes racing a close are Accepted or NotOpen, and the counts equal the Accepted ones."""
    voting = service_on(valkey)
    poll_id, outcomes = await race_a_close(voting, store_server, lanes)

    accepted = {v: o.receipt for v, o in enumerate(outcomes) if isinstance(o, Accepted)}
    refused = [v for v, o in enumerate(outcomes) if o == NotOpen(PollState.CLOSED)]
    assert [
        o for o in outcomes if o != NotOpen(PollState.CLOSED) and not isinstance(o, Accepted)
    ] == []
    assert len(accepted) + len(refused) == VOTERS
    assert CLOSE_AFTER <= len(accepted) < VOTERS  # the close landed mid-stream

    counted = dict.fromkeys(OPTIONS, 0)
    for receipt in accepted.values():
        counted[receipt.option] += 1
    results = await voting.results(poll_id)
    assert results.state is PollState.CLOSED
    assert results.counts == counted
    assert results.total == len(accepted)

    for lane in range(lanes):
        entries = sorted(r.entry_id for r in accepted.values() if r.lane == lane)
        assert entries == list(range(1, len(entries) + 1))
        assert await valkey.execute("XLEN", keys.lane_ledger(poll_id, lane)) == len(entries)


@pytest.mark.parametrize("lanes", [1, 16])
async def test_after_a_raced_close_retries_find_exactly_the_accepted_votes(
    valkey: Valkey, store_server: StoreUnderTest, lanes: int
) -> None:
    """A retry gets the original receipt if the vote was accepted, NotOpen if it was refused."""
    voting = service_on(valkey)
    poll_id, outcomes = await race_a_close(voting, store_server, lanes)

    retries = await asyncio.gather(
        *(voting.vote(poll_id, Voter(ISSUER, f"v{v}"), OPTIONS[0]) for v in range(VOTERS))
    )
    for first, retry in zip(outcomes, retries, strict=True):
        if isinstance(first, Accepted):
            assert retry == AlreadyVoted(first.receipt)
        else:
            assert retry == NotOpen(PollState.CLOSED)

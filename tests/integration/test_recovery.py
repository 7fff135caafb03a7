"""Recovery: a lifecycle move a crash interrupted (some lanes moved, the rest and the poll record
not) is finished by `VotingService.recover()`, which `tally serve` runs at every start."""

from __future__ import annotations

import itertools

import pytest

from tally.domain.polls import OptionSpec, Poll, PollState
from tally.domain.pseudonyms import lane_of, pseudonym
from tally.domain.votes import Accepted, AlreadyVoted, NotOpen, Receipt
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox

ISSUER = "https://idp.recovery.test"
SECRET = b"recovery-pseudonym-secret-32byte"
LANES = 4


@pytest.fixture
def voting(valkey: Valkey) -> VotingService:
    return VotingService(ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=SECRET)


async def new_poll(voting: VotingService, *, open_it: bool) -> Poll:
    poll = await voting.create_poll(
        NewPoll("recovery", [OptionSpec("Yes", "yes"), OptionSpec("No", "no")], lanes=LANES)
    )
    return await voting.open_poll(poll.id) if open_it else poll


def voter_in_lane(poll: Poll, lane: int, tag: str) -> Voter:
    """A voter whose pseudonym puts them in `lane` (the first of a deterministic series)."""
    for n in itertools.count():
        subject = f"{tag}-{lane}-{n}"
        if lane_of(pseudonym(SECRET, poll.id, ISSUER, subject), poll.lanes) == lane:
            return Voter(ISSUER, subject)
    raise AssertionError("unreachable")


async def move_lanes_only(valkey: Valkey, poll: Poll, lanes: set[int], to: PollState) -> None:
    """What a crash mid-move leaves behind: these lanes moved, the others and the record not."""
    for lane in lanes:
        reply = await valkey.execute(
            "FCALL", "tally_move", 1, keys.lane_state(poll.id, lane), to.value, "draft", "open"
        )
        assert reply[0] == b"moved"


async def vote_once_per_lane(voting: VotingService, poll: Poll, tag: str) -> list[Receipt]:
    receipts = []
    for lane in range(LANES):
        outcome = await voting.vote(poll.id, voter_in_lane(poll, lane, tag), "yes")
        assert isinstance(outcome, Accepted)
        receipts.append(outcome.receipt)
    return receipts


@pytest.mark.parametrize("closed_lanes", [{0}, {0, 2}, {1, 2, 3}])
async def test_recover_finishes_a_half_done_close(
    voting: VotingService, valkey: Valkey, closed_lanes: set[int]
) -> None:
    """Lanes left open by an interrupted close are closed, and the poll record with them."""
    poll = await new_poll(voting, open_it=True)
    receipts = await vote_once_per_lane(voting, poll, "early")
    await move_lanes_only(valkey, poll, closed_lanes, PollState.CLOSED)
    polls = ValkeyPolls(valkey)
    assert await polls.lane_states(poll) == [
        PollState.CLOSED if lane in closed_lanes else PollState.OPEN for lane in range(LANES)
    ]
    assert (await voting.get_poll(poll.id)).state is PollState.OPEN

    assert poll.id in await voting.recover()

    assert await polls.lane_states(poll) == [PollState.CLOSED] * LANES
    assert (await voting.get_poll(poll.id)).state is PollState.CLOSED
    for lane in range(LANES):
        late = await voting.vote(poll.id, voter_in_lane(poll, lane, "late"), "no")
        assert late == NotOpen(PollState.CLOSED)
        retry = await voting.vote(poll.id, voter_in_lane(poll, lane, "early"), "no")
        assert retry == AlreadyVoted(receipts[lane])
    results = await voting.results(poll.id)
    assert (results.counts, results.total) == ({"yes": LANES, "no": 0}, LANES)


async def test_recover_finishes_a_half_done_open(voting: VotingService, valkey: Valkey) -> None:
    """A draft whose open reached only some lanes ends open on every lane; votes count on all."""
    poll = await new_poll(voting, open_it=False)
    await move_lanes_only(valkey, poll, {1}, PollState.OPEN)

    assert poll.id in await voting.recover()

    assert await ValkeyPolls(valkey).lane_states(poll) == [PollState.OPEN] * LANES
    assert (await voting.get_poll(poll.id)).state is PollState.OPEN
    await vote_once_per_lane(voting, poll, "after")
    assert (await voting.results(poll.id)).total == LANES


async def test_recover_leaves_consistent_polls_alone(voting: VotingService) -> None:
    """Draft, open and closed polls whose lanes and record agree are neither moved nor reported."""
    draft = await new_poll(voting, open_it=False)
    opened = await new_poll(voting, open_it=True)
    closed = await voting.close_poll((await new_poll(voting, open_it=True)).id)

    repaired = await voting.recover()

    assert {draft.id, opened.id, closed.id}.isdisjoint(repaired)
    assert (await voting.get_poll(draft.id)).state is PollState.DRAFT
    assert (await voting.get_poll(opened.id)).state is PollState.OPEN
    assert (await voting.get_poll(closed.id)).state is PollState.CLOSED


async def test_a_second_recover_finds_nothing_left_to_repair(
    voting: VotingService, valkey: Valkey
) -> None:
    """Once recover() has finished an interrupted close, running it again repairs nothing."""
    poll = await new_poll(voting, open_it=True)
    await move_lanes_only(valkey, poll, {3}, PollState.CLOSED)
    assert poll.id in await voting.recover()
    assert poll.id not in await voting.recover()

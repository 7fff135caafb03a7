"""The one rule for who may learn that a poll exists (domain.visibility.poll_shown) and its one
check (VotingService.ensure_shown), on a real Valkey: a draft is an unknown poll to all but an
admin, and a gateway whose cache still holds the poll as a draft sees it open once it has
opened elsewhere (its cached definition is read again, then kept in the later state)."""

from __future__ import annotations

import pytest

from tally.domain.errors import PollNotFound
from tally.domain.polls import OptionSpec, PollState
from tally.domain.visibility import poll_shown
from tally.service import NewPoll, VotingService
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox

SECRET = b"s" * 32


def gateway(valkey: Valkey) -> VotingService:
    return VotingService(ValkeyPolls(valkey), ValkeyBallotBox(valkey), pseudonym_secret=SECRET)


@pytest.mark.parametrize("state", list(PollState))
def test_only_a_draft_is_hidden_and_never_from_an_admin(state: PollState) -> None:
    assert poll_shown(state, viewer_is_admin=True)
    assert poll_shown(state, viewer_is_admin=False) is (state is not PollState.DRAFT)


async def test_a_draft_is_an_unknown_poll_until_it_opens_even_through_a_stale_cache(
    valkey: Valkey,
) -> None:
    here, elsewhere = gateway(valkey), gateway(valkey)
    spec = NewPoll("shown", [OptionSpec("Yes"), OptionSpec("No")], lanes=1)
    poll = await here.create_poll(spec)
    await here.definition(poll.id)  # cached while a draft, as the console's first read does
    await here.ensure_shown(poll.id, is_admin=True)
    with pytest.raises(PollNotFound) as refused:
        await here.ensure_shown(poll.id, is_admin=False)
    with pytest.raises(PollNotFound) as unknown:
        await here.ensure_shown("nosuchpoll12", is_admin=False)
    assert type(refused.value) is type(unknown.value)
    with pytest.raises(PollNotFound):  # the state the caller read decides without a lookup
        await here.ensure_shown(poll.id, is_admin=False, state=PollState.DRAFT)

    await elsewhere.open_poll(poll.id)  # another gateway process opens it
    await here.ensure_shown(poll.id, is_admin=False)
    assert (await here.definition(poll.id)).state is PollState.OPEN  # kept: no read next time
    await elsewhere.close_poll(poll.id)
    await here.ensure_shown(poll.id, is_admin=False)

"""The vote path end to end through a real server: the shortest story a user tells."""

from __future__ import annotations

import pytest

from conftest import RunningTally
from tally.client import ApiError


def test_a_vote_is_counted_once_and_a_repeat_gets_the_same_receipt(tally: RunningTally) -> None:
    """One voter's second vote is refused with 409 and carries the first vote's receipt."""
    poll = tally.open_poll()
    voter = tally.client(tally.voter_token("smoke-voter"))
    first = voter.post(f"/v1/polls/{poll['id']}/votes", {"option": "red"})["receipt"]
    with pytest.raises(ApiError) as refused:
        voter.post(f"/v1/polls/{poll['id']}/votes", {"option": "green"})
    assert refused.value.status == 409
    assert refused.value.code == "already-voted"
    assert refused.value.document["receipt"] == first
    results = tally.results(str(poll["id"]), total=1)
    assert results["counts"] == {"red": 1, "green": 0, "blue": 0}
    assert results["total"] == 1

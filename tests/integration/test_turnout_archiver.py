"""Turnout per minute as the archiver keeps it (issue 12): counted from the ledger as votes are
archived, saved to the store, and saved whole again by an archiver that takes the poll over and
rebuilds its recount from the published leaves."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archive_rig import archiver_of, cast, make_signer, service_of
from conftest import StoreConnection, own_client
from tally.archive.logs import LedgerFiles
from tally.domain.polls import OptionSpec, Poll
from tally.domain.turnout import minute_of
from tally.service import NewPoll, VotingService
from tally.store import keys
from tally.store.resp import Valkey
from tally.store.turnout import ValkeyTurnout


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    async with own_client(tmp_path / "valkey") as valkey:
        yield valkey


async def cast_minutes(service: VotingService, poll: Poll, voters: range) -> Counter[int]:
    """Vote; the minutes of the votes' accepted times, as their receipts say."""
    return Counter(minute_of(r.accepted_at_ms) for r in await cast(service, poll, voters))


async def test_turnout_is_saved_from_the_ledger_and_again_after_a_takeover(
    client: Valkey, tmp_path: Path
) -> None:
    files, signer = LedgerFiles(tmp_path / "ledger"), make_signer()
    service = service_of(client, files)
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("Turnout", options, lanes=4))
    poll = await service.open_poll(poll.id)
    turnout = ValkeyTurnout(client)
    expected = await cast_minutes(service, poll, range(120))

    first = archiver_of(client, files, signer, "first", turnout=turnout)
    await first.cycle()
    assert await turnout.minutes(poll.id) == dict(expected)
    await first.stop()

    # The store loses the hash (say, restored from an older backup): a takeover rebuilds the
    # recount from the published leaves and saves every minute again, with the new votes.
    await client.execute("DEL", keys.poll_turnout(poll.id))
    expected += await cast_minutes(service, poll, range(120, 150))
    second = archiver_of(client, files, signer, "second", turnout=turnout)
    await second.cycle()
    assert await turnout.minutes(poll.id) == dict(expected)
    assert sum((await turnout.minutes(poll.id)).values()) == 150
    await second.stop()

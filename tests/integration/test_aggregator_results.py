"""GET .../results serves the stored snapshot while an aggregator maintains it (or once it is
final), and sums the lanes otherwise; its ETag follows the snapshot's seq."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from conftest import StoreConnection, own_store
from tally.aggregator import Aggregator
from tally.domain.polls import OptionSpec, Poll, PollState
from tally.domain.results import Results
from tally.domain.votes import Accepted
from tally.gateway.auth import Authenticator
from tally.gateway.routes import Handlers
from tally.security.dev_issuer import DevIssuer
from tally.security.tokens import TokenVerifier
from tally.service import NewPoll, Voter, VotingService
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.snapshots import ValkeySnapshots
from tally.store.votes import ValkeyBallotBox

ISSUER = "https://idp.results.test"
SECRET = b"results-pseudonym-secret-32bytes"
RESULT_FIELDS = {"poll_id", "state", "counts", "total", "under_review", "updated_at"}


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[StoreConnection]:
    """A store of the test's own: the aggregator watches every poll there is."""
    async with own_store(tmp_path / "valkey") as store:
        client = store.client()
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
def voting(valkey: Valkey) -> VotingService:
    return VotingService(
        ValkeyPolls(valkey),
        ValkeyBallotBox(valkey),
        pseudonym_secret=SECRET,
        snapshots=ValkeySnapshots(valkey),
    )


@pytest.fixture
def aggregator(valkey: Valkey) -> Aggregator:
    """Driven tick by tick by the tests (never `run()`), so what it published is known."""
    return Aggregator(
        ValkeyPolls(valkey), ValkeySnapshots(valkey), owner="agg-r", tick_ms=50, lease_ttl_ms=5000
    )


@pytest.fixture
async def http(voting: VotingService, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The real results handler in a minimal app, over ASGI."""
    keys = DevIssuer.load_or_create(tmp_path / "keys").key_set()
    handlers = Handlers(
        voting,
        Authenticator(TokenVerifier(keys, issuer="tally-dev", audience="tally")),
        max_body_bytes=1024,
    )
    app = Starlette(routes=[Route("/v1/polls/{poll_id}/results", handlers.results)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as client:
        yield client


async def new_poll(voting: VotingService, *, open_it: bool = True) -> Poll:
    options = [OptionSpec("Red", "red"), OptionSpec("Green", "green")]
    poll = await voting.create_poll(NewPoll("results", options, lanes=4))
    return await voting.open_poll(poll.id) if open_it else poll


async def vote(voting: VotingService, poll: Poll, voter: str, option: str = "red") -> None:
    assert isinstance(await voting.vote(poll.id, Voter(ISSUER, voter), option), Accepted)


async def test_a_draft_is_summed_from_its_lanes(voting: VotingService) -> None:
    """No snapshot exists for a draft: the results are the lanes summed now, without a seq."""
    poll = await new_poll(voting, open_it=False)
    results = await voting.results(poll.id)
    assert (results.state, results.total, results.seq) == (PollState.DRAFT, 0, None)


async def test_a_maintained_snapshot_is_served_as_it_was_published(
    voting: VotingService, aggregator: Aggregator
) -> None:
    """While an aggregator holds the lease, results are the stored snapshot, even if a vote has
    landed since (it shows at the next tick), and carry the snapshot's seq."""
    poll = await new_poll(voting)
    await vote(voting, poll, "v1")
    await aggregator.tick()
    await vote(voting, poll, "v2", "green")
    served = await voting.results(poll.id)
    assert (served.counts, served.total, served.seq) == ({"red": 1, "green": 0}, 1, 1)
    await aggregator.tick()
    assert (await voting.results(poll.id)).counts == {"red": 1, "green": 1}


async def test_without_a_live_aggregator_an_open_poll_is_summed_from_its_lanes(
    voting: VotingService, aggregator: Aggregator
) -> None:
    """Once the aggregator stops (its lease released), an open poll's results are summed again,
    so they never freeze at the last snapshot."""
    poll = await new_poll(voting)
    await aggregator.tick()
    await aggregator.stop()
    await vote(voting, poll, "v1")
    results = await voting.results(poll.id)
    assert (results.total, results.seq) == (1, None)


async def test_a_final_snapshot_is_served_with_no_aggregator_running(
    voting: VotingService, aggregator: Aggregator
) -> None:
    """A closed poll's final snapshot never changes, so it is served without any lease."""
    poll = await new_poll(voting)
    await vote(voting, poll, "v1")
    await aggregator.tick()
    await asyncio.sleep(0.002)  # the close is noticed by the record's updated_at (ms) moving
    await voting.close_poll(poll.id)
    await aggregator.tick()
    await aggregator.stop()
    results = await voting.results(poll.id)
    assert (results.state, results.total, results.seq) == (PollState.CLOSED, 1, 2)


async def test_a_snapshot_and_the_lanes_give_the_same_document(
    voting: VotingService, aggregator: Aggregator
) -> None:
    """Served from a snapshot or summed, the results agree, `updated_at` (the last vote) included."""
    poll = await new_poll(voting)
    await vote(voting, poll, "v1", "green")
    summed = await voting.results(poll.id)
    await aggregator.tick()
    served = await voting.results(poll.id)
    assert served == Results(
        summed.poll_id, summed.state, summed.counts, summed.total, summed.updated_at_ms, seq=1
    )


async def test_the_results_etag_is_the_snapshot_seq_and_answers_304(
    voting: VotingService, aggregator: Aggregator, http: httpx.AsyncClient
) -> None:
    """From a snapshot the ETag names poll and seq; If-None-Match with it gets 304; the next
    snapshot changes it. Cache-Control lets a CDN keep it 1 s; the document keeps its shape."""
    poll = await new_poll(voting)
    path = f"/v1/polls/{poll.id}/results"
    summed = await http.get(path)
    assert re.fullmatch(r'"[0-9a-f]{24}"', summed.headers["etag"])
    await aggregator.tick()
    first = await http.get(path)
    assert (first.status_code, first.headers["etag"]) == (200, f'"{poll.id}.1"')
    assert first.headers["cache-control"] == "public, max-age=1"
    assert set(first.json()) == RESULT_FIELDS
    again = await http.get(path, headers={"If-None-Match": f'W/"{poll.id}.1"'})
    assert (again.status_code, again.content) == (304, b"")
    await vote(voting, poll, "v1")
    await aggregator.tick()
    changed = await http.get(path, headers={"If-None-Match": f'"{poll.id}.1"'})
    assert (changed.status_code, changed.headers["etag"]) == (200, f'"{poll.id}.2"')
    assert changed.json()["total"] == 1

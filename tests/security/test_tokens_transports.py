"""Token hygiene on every transport of a real `tally serve`: a request with two Authorization
headers is refused (`400 duplicate-authorization`) before anything reads either, on the REST
routes, the hot vote path, the WebSocket upgrade and SSE; and a vote whose outcome the store
could not confirm is answered `503` saying so, over HTTP and the WebSocket alike, while the retry
finds the one vote that was recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conftest import RunningTally, serving

DUPLICATE = "duplicate-authorization"
OUTCOME_UNKNOWN = (
    "the vote store did not confirm this request, so its outcome is unknown: "
    "retry to learn the outcome; a retry never counts twice"
)
NO_POW = {"TALLY_DEFENCES": '{"pow": {"difficulty": 0}}'}  # votes without a challenge
TIMEOUT_S = 5.0


def twice(first: str, second: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]


def refused_as_duplicate(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    document = answer.json()
    assert document["code"] == DUPLICATE
    assert document["type"] == f"urn:tally:problem:{DUPLICATE}"


def edge_refusals(tally: RunningTally) -> float:
    text = httpx.get(f"{tally.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(f'tally_edge_refusals_total{{reason="{DUPLICATE}"}}'):
            return float(line.split()[-1])
    raise AssertionError("no duplicate-authorization refusal sample")


def test_a_vote_with_two_authorization_headers_is_refused_and_not_cast(
    tally: RunningTally,
) -> None:
    """Whichever header a reader would pick, neither is used: the vote is not cast, and the
    same voter's vote with one header then counts."""
    poll_id = str(tally.open_poll("red", "green", defences={"pow": {"difficulty": 0}})["id"])
    mine, other = tally.voter_token("dup-voter"), tally.voter_token("dup-other")
    before = edge_refusals(tally)
    with httpx.Client(base_url=tally.url) as http:
        for pair in (twice(mine, other), twice(mine, mine), twice(mine, "junk")):
            answer = http.post(
                f"/v1/polls/{poll_id}/votes",
                headers=httpx.Headers(pair),
                json={"option": "red"},
            )
            refused_as_duplicate(answer)
        # The connection stays usable, and nothing was cast for either voter.
        first = http.post(
            f"/v1/polls/{poll_id}/votes",
            headers={"Authorization": f"Bearer {mine}"},
            json={"option": "green"},
        )
    assert first.status_code == 201, first.text
    assert first.json()["receipt"]["option"] == "green"
    assert tally.results(poll_id, total=1)["counts"] == {"red": 0, "green": 1}
    assert edge_refusals(tally) == before + 3


def test_an_admin_request_with_two_authorization_headers_changes_nothing(
    tally: RunningTally,
) -> None:
    admin = tally.admin_token()
    polls_before = tally.admin().get("/v1/polls")["polls"]
    answer = httpx.post(
        f"{tally.url}/v1/polls",
        headers=httpx.Headers(twice(admin, admin)),
        json={"title": "never made", "options": ["a", "b"]},
    )
    refused_as_duplicate(answer)
    assert tally.admin().get("/v1/polls")["polls"] == polls_before


def test_server_sent_events_with_two_authorization_headers_are_refused(
    tally: RunningTally,
) -> None:
    poll_id = str(tally.open_poll()["id"])
    token = tally.voter_token("sse-dup")
    answer = httpx.get(
        f"{tally.url}/v1/polls/{poll_id}/events",
        headers=httpx.Headers(twice(token, token)),
        timeout=TIMEOUT_S,
    )
    refused_as_duplicate(answer)


async def test_a_websocket_upgrade_with_two_authorization_headers_is_refused(
    tally: RunningTally,
) -> None:
    poll_id = str(tally.open_poll()["id"])
    token = tally.voter_token("ws-dup")
    url = f"ws://{tally.host}:{tally.port}/v1/polls/{poll_id}/live"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            url, additional_headers=twice(token, token), open_timeout=TIMEOUT_S, proxy=None
        ):
            pass
    response = refused.value.response
    assert response.status_code == 400
    assert orjson.loads(response.body)["code"] == DUPLICATE
    # One header (or none: the live socket authenticates in band) still upgrades.
    async with connect(url, open_timeout=TIMEOUT_S, proxy=None) as ws:
        async with asyncio.timeout(TIMEOUT_S):
            assert orjson.loads(await ws.recv())["type"] == "snapshot"


# --- a 503 whose outcome is unknown -----------------------------------------------------------


async def ws_vote(tally: RunningTally, poll_id: str, token: str) -> dict[str, Any]:
    url = f"ws://{tally.host}:{tally.port}/v1/polls/{poll_id}/live"
    async with connect(url, open_timeout=TIMEOUT_S, proxy=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await ws.send(orjson.dumps({"type": "vote", "request_id": "r", "option": "red"}).decode())
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                message: dict[str, Any] = orjson.loads(await ws.recv())
                if message["type"] == "vote_result":
                    return message


def http_vote(tally: RunningTally, poll_id: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{tally.url}/v1/polls/{poll_id}/votes",
        headers={"Authorization": f"Bearer {token}"},
        json={"option": "red"},
        timeout=TIMEOUT_S,
    )


@pytest.mark.single_node("a lone node cannot meet WAITAOF 1: the vote is written, not confirmed")
async def test_an_unconfirmed_vote_says_its_outcome_is_unknown_and_the_retry_finds_it(
    tmp_path: Path,
) -> None:
    """TALLY_WAITAOF_REPLICAS=1 on one node with no replica: each vote is written but never
    confirmed, so the store cannot tell the gateway the outcome. HTTP and the WebSocket answer
    503 with the same words; once the store confirms again (restarted without the replica
    requirement), each retry finds its vote, recorded once."""
    data = tmp_path / "data"
    with serving(data, NO_POW) as tally:
        poll_id = str(tally.open_poll("red", "green")["id"])
        tokens = [tally.voter_token("unsure-http"), tally.voter_token("unsure-ws")]
    unconfirmed = {**NO_POW, "TALLY_WAITAOF_REPLICAS": "1", "TALLY_WAITAOF_TIMEOUT_MS": "50"}
    with serving(data, unconfirmed) as tally:
        over_http = http_vote(tally, poll_id, tokens[0])
        over_ws = await ws_vote(tally, poll_id, tokens[1])
    assert over_http.status_code == 503
    assert over_http.headers["retry-after"] == "1"
    document = over_http.json()
    assert (document["code"], document["detail"]) == ("store-unavailable", OUTCOME_UNKNOWN)
    assert document["outcome"] == "unknown"
    assert (over_ws["status"], over_ws["retry_after"]) == (503, 1)
    assert over_ws["error"] == {**document, "instance": f"/v1/polls/{poll_id}/votes"}
    with serving(data, NO_POW) as tally:
        retries = [http_vote(tally, poll_id, token) for token in tokens]
        results = tally.results(poll_id, total=2)
    # The write happened: the retry learns it (409 with the receipt), and nothing counts twice.
    assert [r.status_code for r in retries] == [409, 409]
    assert [r.json()["receipt"]["option"] for r in retries] == ["red", "red"]
    assert results["counts"] == {"red": 2, "green": 0}

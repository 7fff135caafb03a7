"""One vote intake for every transport: the same scenarios cast over HTTP and over the live
WebSocket get identical outcomes (status, problem document, receipt) and are counted under the
same outcome labels, because both go through gateway.voting.Voting and VotingService.submit."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from live_clients import receive, ws_connect
from live_server import LiveServer, live_server

ROUTES = [pytest.param(True, id="native"), pytest.param(False, id="asgi")]
# (status, the body's fields): HTTP's body, or the vote_result frame's receipt/error.
Answer = tuple[int, dict[str, Any]]
Cast = Callable[[str, str, str | None], Awaitable[Answer]]


def http_caster(server: LiveServer) -> Cast:
    async def cast(poll_id: str, option: str, token: str | None) -> Answer:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url) as http:
            reply = await http.post(
                f"/v1/polls/{poll_id}/votes", json={"option": option}, headers=headers
            )
        return reply.status_code, reply.json()

    return cast


def ws_caster(server: LiveServer) -> Cast:
    async def cast(poll_id: str, option: str, token: str | None) -> Answer:
        async with ws_connect(server.ws_url(poll_id)) as ws:
            if token is not None:
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            vote = {"type": "vote", "request_id": "r", "option": option}
            await ws.send(orjson.dumps(vote).decode())
            while (frame := await receive(ws))["type"] != "vote_result":
                pass
        status = frame.pop("status")
        assert (frame.pop("type"), frame.pop("request_id")) == ("vote_result", "r")
        return status, frame.get("error", frame)  # a refusal's problem, or {"receipt": ...}

    return cast


async def vote_counters(server: LiveServer) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    return {
        m[1]: int(m[2]) for m in re.finditer(r'tally_votes_total\{outcome="([^"]+)"\} (\d+)', text)
    }


async def scenarios(server: LiveServer, cast: Cast, tag: str) -> dict[str, Answer]:
    """accept, repeat (with the original receipt), unknown option, bad token, closed poll."""
    poll_id = await server.open_poll()
    voter = server.token(f"{tag}-voter")
    answers = {"accept": await cast(poll_id, "red", voter)}
    answers["repeat"] = await cast(poll_id, "green", voter)
    answers["unknown option"] = await cast(poll_id, "purple", server.token(f"{tag}-picky"))
    answers["bad token"] = await cast(poll_id, "red", "not.a.token")
    answers["no token"] = await cast(poll_id, "red", None)
    await server.runtime.service.close_poll(poll_id)
    answers["closed poll"] = await cast(poll_id, "red", server.token(f"{tag}-late"))
    results = await server.runtime.service.results(poll_id)
    assert results.counts == {"red": 1, "green": 0, "blue": 0}  # only the accepted vote
    return answers


def comparable(answer: Answer) -> Answer:
    """What must be equal across transports: everything but the poll-specific receipt values."""
    status, body = answer
    body = dict(body)
    receipt = body.pop("receipt", None)
    if receipt is not None:
        body["receipt"] = {"fields": sorted(receipt), "option": receipt["option"]}
    if "instance" in body:
        body["instance"] = re.sub(r"/v1/polls/[^/]+/", "/v1/polls/P/", body["instance"])
    return status, body


@pytest.mark.parametrize("native", ROUTES)
async def test_http_and_websocket_votes_get_identical_outcomes(
    tmp_path: Path, native: bool
) -> None:
    """Each scenario answers the same status and problem document over both transports; a repeat
    returns the original receipt; both count the same outcome labels in /metrics."""
    async with live_server(tmp_path, native=native) as server:
        before = await vote_counters(server)
        over_http = await scenarios(server, http_caster(server), "http")
        after_http = await vote_counters(server)
        over_ws = await scenarios(server, ws_caster(server), "ws")
        after_ws = await vote_counters(server)

    assert {k: comparable(v) for k, v in over_http.items()} == {
        k: comparable(v) for k, v in over_ws.items()
    }
    statuses = {k: v[0] for k, v in over_http.items()}
    assert statuses == {
        "accept": 201,
        "repeat": 409,
        "unknown option": 422,
        "bad token": 401,
        "no token": 401,
        "closed poll": 409,
    }
    for answers in (over_http, over_ws):
        assert answers["repeat"][1]["code"] == "already-voted"
        assert answers["repeat"][1]["receipt"] == answers["accept"][1]["receipt"]
    http_counted = {k: n - before.get(k, 0) for k, n in after_http.items()}
    ws_counted = {k: n - after_http.get(k, 0) for k, n in after_ws.items()}
    assert {k: n for k, n in http_counted.items() if n} == {
        k: n for k, n in ws_counted.items() if n
    }
    assert http_counted["accepted"] == 1
    assert http_counted["unauthorized"] == 2


@pytest.mark.parametrize("native", ROUTES)
async def test_a_vote_cast_over_http_is_repeated_over_the_websocket_with_its_receipt(
    tmp_path: Path, native: bool
) -> None:
    """One intake, one voter index: the transport does not matter for one vote per voter."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        token = server.token("both-ways")
        first = await http_caster(server)(poll_id, "blue", token)
        again = await ws_caster(server)(poll_id, "red", token)
    assert first[0] == 201
    assert (again[0], again[1]["code"]) == (409, "already-voted")
    assert again[1]["receipt"] == first[1]["receipt"]

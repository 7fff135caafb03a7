"""Votes over the live WebSocket answer exactly as POST /v1/polls/{id}/votes does: the same
statuses, problem documents and receipts, on the native route and the ASGI route alike."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from live_clients import receive, ws_connect
from live_server import LiveServer, live_server
from websockets.asyncio.client import ClientConnection

ROUTES = [pytest.param(True, id="native"), pytest.param(False, id="asgi")]


async def http_vote(server: LiveServer, poll_id: str, option: str, token: str | None) -> Any:
    """The HTTP vote: (status, parsed body)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post(
            f"/v1/polls/{poll_id}/votes", json={"option": option}, headers=headers
        )
    return answer.status_code, answer.json()


async def ws_vote(ws: ClientConnection, request_id: str, option: str) -> dict[str, Any]:
    await ws.send(
        orjson.dumps({"type": "vote", "request_id": request_id, "option": option}).decode()
    )
    while True:
        message = await receive(ws)
        if message["type"] == "vote_result":
            assert message["request_id"] == request_id
            return message


async def ws_auth(ws: ClientConnection, token: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    while True:
        message = await receive(ws)
        if message["type"] == "auth_result":
            return message


@pytest.mark.parametrize("native", ROUTES)
async def test_vote_outcomes_match_the_http_vote(tmp_path: Path, native: bool) -> None:
    """201 with a receipt; 409 already-voted with the same receipt; 422 unknown-option; 401
    without or with a bad token; 409 poll-not-open: statuses and problem documents equal HTTP's."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        async with ws_connect(server.ws_url(poll_id)) as ws:
            unauthenticated = await ws_vote(ws, "r0", "red")
            status, body = await http_vote(server, poll_id, "red", None)
            assert (unauthenticated["status"], unauthenticated["error"]) == (status, body)
            assert body["reason"] == "token-missing"

            bad = "not.a.token"
            refused = await ws_auth(ws, bad)
            assert refused["status"] == 401
            status, body = await http_vote(server, poll_id, "red", bad)
            assert (refused["error"]["code"], refused["error"]["reason"]) == (
                body["code"], body["reason"],
            )  # fmt: skip
            bad_vote = await ws_vote(ws, "r1", "red")
            assert (bad_vote["status"], bad_vote["error"]) == (status, body)

            assert (await ws_auth(ws, server.token("ws-voter")))["status"] == 200
            accepted = await ws_vote(ws, "r2", "red")
            assert accepted["status"] == 201
            assert set(accepted["receipt"]) == {
                "poll_id", "lane", "entry_id", "option", "accepted_at", "leaf_hash",
                "pseudonym", "admission",
            }  # fmt: skip
            again = await ws_vote(ws, "r3", "green")
            status, body = await http_vote(server, poll_id, "green", server.token("ws-voter"))
            assert (again["status"], again["error"]) == (status, body) == (409, again["error"])
            assert again["error"]["code"] == "already-voted"
            assert again["error"]["receipt"] == accepted["receipt"]

            await ws_auth(ws, server.token("picky-voter"))
            unknown = await ws_vote(ws, "r4", "purple")
            status, body = await http_vote(server, poll_id, "purple", server.token("other"))
            assert (unknown["status"], unknown["error"]) == (status, body)
            assert body["code"] == "unknown-option"

            await server.runtime.service.close_poll(poll_id)
            late = await ws_vote(ws, "r5", "red")
            status, body = await http_vote(server, poll_id, "red", server.token("late-http"))
            assert (late["status"], late["error"]) == (status, body)
            assert body["code"] == "poll-not-open"
        results = await server.runtime.service.results(poll_id)
        assert results.counts == {"red": 1, "green": 0, "blue": 0}


@pytest.mark.parametrize("native", ROUTES)
async def test_malformed_frames_get_an_error_frame_and_change_nothing(
    tmp_path: Path, native: bool
) -> None:
    """Not JSON -> 400; a wrong shape -> 422 (echoing a request_id it can read); binary -> 415;
    the socket stays open and a proper vote afterwards counts once."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        async with ws_connect(server.ws_url(poll_id)) as ws:
            await ws.send("{not json")
            frame = await receive(ws)
            assert (frame["type"], frame["status"]) == ("error", 400)
            assert frame["error"]["code"] == "malformed-json"
            for shape in (
                {"type": "vote"},
                {"type": "nope"},
                {"type": "auth", "token": "t", "extra": 1},
                [1, 2],
            ):
                await ws.send(orjson.dumps(shape).decode())
                frame = await receive(ws)
                assert (frame["type"], frame["status"]) == ("error", 422)
                assert frame["error"]["code"] == "validation-failed"
            await ws.send(orjson.dumps({"type": "vote", "request_id": "q1", "option": 7}).decode())
            frame = await receive(ws)
            assert (frame["status"], frame["request_id"]) == (422, "q1")
            await ws.send(b"\x00\x01")
            frame = await receive(ws)
            assert (frame["status"], frame["error"]["code"]) == (415, "unsupported-media-type")
            await ws_auth(ws, server.token("careful-voter"))
            assert (await ws_vote(ws, "ok", "blue"))["status"] == 201
        results = await server.runtime.service.results(poll_id)
        assert results.counts == {"red": 0, "green": 0, "blue": 1}


@pytest.mark.parametrize("native", ROUTES)
async def test_500_concurrent_votes_by_distinct_voters_and_their_repeats_count_once_each(
    tmp_path: Path, native: bool
) -> None:
    """50 sockets each cast 10 voters' votes at once (auth, vote, auth, vote, ...), then repeat
    them all: 500 x 201, 500 x 409 with the original receipts, counts equal to the 201s."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        rng = random.Random(7)
        voters = [(f"voter-{i}", rng.choice(["red", "green", "blue"])) for i in range(500)]
        tokens = {subject: server.token(subject) for subject, _ in voters}

        async def run(ws: ClientConnection, batch: list[tuple[str, str]], tag: str) -> list[Any]:
            frames = []
            for subject, option in batch:
                frames.append(orjson.dumps({"type": "auth", "token": tokens[subject]}).decode())
                request = {"type": "vote", "request_id": f"{subject}/{tag}", "option": option}
                frames.append(orjson.dumps(request).decode())
            for frame in frames:  # all sent before any answer is read: up to 20 votes in flight
                await ws.send(frame)
            results: list[dict[str, Any]] = []
            while len(results) < len(batch):
                message = await receive(ws, timeout_s=30)
                if message["type"] == "vote_result":
                    results.append(message)
            return results

        batches = [voters[i : i + 10] for i in range(0, 500, 10)]
        sockets = [ws_connect(server.ws_url(poll_id)) for _ in batches]
        connections = [await s.__aenter__() for s in sockets]
        try:
            first = await asyncio.gather(
                *(run(ws, b, "first") for ws, b in zip(connections, batches, strict=True))
            )
            repeat = await asyncio.gather(
                *(run(ws, b, "again") for ws, b in zip(connections, batches, strict=True))
            )
        finally:
            for s in sockets:
                await s.__aexit__(None, None, None)
        first_results = list(itertools.chain.from_iterable(first))
        repeat_results = list(itertools.chain.from_iterable(repeat))
        assert Counter(r["status"] for r in first_results) == {201: 500}
        assert Counter(r["status"] for r in repeat_results) == {409: 500}
        receipts = {r["request_id"].split("/")[0]: r["receipt"] for r in first_results}
        for r in repeat_results:
            assert r["error"]["receipt"] == receipts[r["request_id"].split("/")[0]]
        results = await server.runtime.service.results(poll_id)
        assert results.counts == dict(Counter(option for _, option in voters))
        assert results.total == 500

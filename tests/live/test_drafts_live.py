"""A draft on the live transports (issue 12): to anyone but an admin, the WebSocket (native and
ASGI routes) and SSE of a draft answer exactly as for an unknown poll (the poll-not-found error
frame and 4404 close; a 404 problem); an admin follows the draft as before, and gets the
snapshots once the poll opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from live_clients import EventStream, receive, ws_connect
from live_server import LiveServer, live_server
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tally.domain.polls import OptionSpec
from tally.service import NewPoll

ROUTES = [pytest.param(True, id="native"), pytest.param(False, id="asgi")]
UNKNOWN = "nosuchpoll12"


async def create_draft(server: LiveServer) -> str:
    spec = NewPoll("secret draft", [OptionSpec("Red"), OptionSpec("Green")], lanes=1)
    return (await server.runtime.service.create_poll(spec)).id


async def refusal(ws: ClientConnection) -> tuple[Any, ...]:
    """The error frame and close of a refused socket, with the poll id taken out of the text,
    so a draft's refusal compares equal to an unknown poll's. A message sent at once may be
    answered first (the native socket reads while it joins the channel, for a draft as for an
    unknown poll): such an answer is skipped, and must not tell the draft apart either."""
    frame = await receive(ws)
    while frame["type"] != "error" or frame["status"] == 422:
        assert frame.get("status") in (200, 401, 404, 422), frame  # auth, vote, parse answers
        if frame["type"] == "vote_result" and frame["status"] == 404:
            assert frame["error"]["code"] == "poll-not-found"
        frame = await receive(ws)
    with pytest.raises(ConnectionClosed):
        await receive(ws)
    assert ws.close_code is not None
    error = frame["error"]
    return (
        frame["type"],
        error["status"],
        error["code"],
        error["title"],
        error["detail"].replace(UNKNOWN, "ID"),
        ws.close_code,
        ws.close_reason,
    )


def unknown_for(draft_id: str, answer: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.replace(draft_id, "ID") if isinstance(a, str) else a for a in answer)


async def send(ws: ClientConnection, document: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(document).decode())


@pytest.mark.parametrize("native", ROUTES)
async def test_a_drafts_socket_is_an_unknown_polls_to_all_but_an_admin(
    tmp_path: Path, native: bool
) -> None:
    """Silent, a voter's auth frame, a vote, a malformed message: each gets the unknown poll's
    error frame and 4404 close; an admin's auth frame keeps the socket, which gets the first
    snapshot once the poll opens."""
    async with live_server(tmp_path, native=native) as server:
        draft = await create_draft(server)
        async with ws_connect(server.ws_url(UNKNOWN)) as ws:
            unknown = await refusal(ws)
        assert unknown[1:3] == (404, "poll-not-found")
        assert unknown[5] == 4404
        voter = server.token("draft-peeker")
        messages: list[dict[str, Any] | None] = [
            None,  # silence: answered after the wait for an auth frame
            {"type": "auth", "token": voter},
            {"type": "vote", "request_id": "r1", "option": "red"},
            {"type": "nonsense"},
        ]
        for message in messages:
            async with ws_connect(server.ws_url(draft)) as ws:
                if message is not None:
                    await send(ws, message)
                answer = await refusal(ws)
            assert unknown_for(draft, answer) == unknown, message

        admin = server.issuer.mint("draft-admin", roles=["admin"])
        async with ws_connect(server.ws_url(draft)) as ws:
            await send(ws, {"type": "auth", "token": admin})
            assert await receive(ws) == {"type": "auth_result", "status": 200}
            await server.runtime.service.open_poll(draft)
            await server.publish(draft, 1, {"red": 1, "green": 0})
            snapshot = await receive(ws, timeout_s=5)  # past the wait a non-admin gets
            assert (snapshot["type"], snapshot["seq"], snapshot["counts"]) == (
                "snapshot", 1, {"red": 1, "green": 0},
            )  # fmt: skip


@pytest.mark.parametrize("native", ROUTES)
async def test_a_socket_waiting_on_a_draft_that_opens_meanwhile_stays(
    tmp_path: Path, native: bool
) -> None:
    """The wait for an admin's auth frame ends with the poll open: the socket is anyone's."""
    async with live_server(tmp_path, native=native) as server:
        draft = await create_draft(server)
        async with ws_connect(server.ws_url(draft)) as ws:
            await server.runtime.service.open_poll(draft)
            await server.publish(draft, 1, {"red": 0, "green": 2})
            snapshot = await receive(ws, timeout_s=5)
            assert (snapshot["type"], snapshot["counts"]) == ("snapshot", {"red": 0, "green": 2})


async def test_a_drafts_event_stream_is_an_unknown_polls_404_but_for_an_admin(
    tmp_path: Path,
) -> None:
    async with live_server(tmp_path) as server, httpx.AsyncClient() as http:
        draft = await create_draft(server)
        unknown = await http.get(server.events_url(UNKNOWN))
        assert unknown.status_code == 404
        for token in (None, server.token("sse-peeker"), "not.a.jwt"):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            answer = await http.get(server.events_url(draft), headers=headers)
            if token == "not.a.jwt":  # as on an unknown poll: a bad credential is a 401 first
                assert answer.status_code == 401
                assert (
                    await http.get(server.events_url(UNKNOWN), headers=headers)
                ).status_code == 401
                continue
            assert answer.status_code == 404
            assert answer.headers["content-type"] == unknown.headers["content-type"]
            assert answer.text.replace(draft, "ID") == unknown.text.replace(UNKNOWN, "ID")
        admin = server.issuer.mint("sse-admin", roles=["admin"])
        async with (
            http.stream(
                "GET", server.events_url(draft), headers={"Authorization": f"Bearer {admin}"}
            ) as response,
            EventStream(response) as events,
        ):
            assert response.status_code == 200
            await server.runtime.service.open_poll(draft)
            await server.publish(draft, 1, {"red": 3, "green": 0})
            snapshot = orjson.loads((await events.next_event()).data)
            assert (snapshot["seq"], snapshot["counts"]) == (1, {"red": 3, "green": 0})

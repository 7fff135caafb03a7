"""Result visibility on the live transports (issue 12): the WebSocket (native and ASGI routes) and
SSE each hide the counts where the poll says so, show them to an admin and to a voter once they
have voted (an auth frame of one who already voted, or a vote on the socket), and to everyone at
the close; a live poll's frames stay the stored document byte for byte."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from live_clients import EventStream, receive, ws_connect
from live_server import LiveServer, live_server
from websockets.asyncio.client import ClientConnection

from tally.domain.integrity import AlarmKind, IntegrityAlarm
from tally.domain.polls import OptionSpec, Visibility
from tally.domain.visibility import HIDDEN_DETAILS
from tally.service import NewPoll
from tally.store import keys
from tally.store.integrity import ValkeyIntegrity

ROUTES = [pytest.param(True, id="native"), pytest.param(False, id="asgi")]


async def open_poll(server: LiveServer, visibility: Visibility) -> str:
    spec = NewPoll(
        "visibility", [OptionSpec(label) for label in ("Red", "Green")], lanes=2,
        visibility=visibility,
    )  # fmt: skip
    poll = await server.runtime.service.create_poll(spec)
    await server.runtime.service.open_poll(poll.id)
    return poll.id


async def next_snapshot(ws: ClientConnection) -> dict[str, Any]:
    """The next snapshot frame, skipping answers (auth_result, vote_result)."""
    while True:
        message = await receive(ws)
        if message["type"] == "snapshot":
            return message


async def authenticate(ws: ClientConnection, token: str) -> None:
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    answer = await receive(ws)
    assert answer == {"type": "auth_result", "status": 200}


async def vote(ws: ClientConnection, option: str) -> None:
    await ws.send(orjson.dumps({"type": "vote", "request_id": "v1", "option": option}).decode())
    answer = await receive(ws)
    assert (answer["type"], answer["status"]) == ("vote_result", 201), answer


def redacted(snapshot: dict[str, Any], reason: str, seq: int, total: int) -> None:
    assert snapshot["seq"] == seq
    assert snapshot["counts"] is None
    assert snapshot["hidden"] == reason
    assert snapshot["total"] == total


def full(snapshot: dict[str, Any], seq: int, counts: dict[str, int]) -> None:
    assert snapshot["seq"] == seq
    assert "hidden" not in snapshot
    assert snapshot["counts"] == counts


@pytest.mark.parametrize("native", ROUTES)
async def test_after_vote_shows_a_socket_the_counts_once_it_voted(
    tmp_path: Path, native: bool
) -> None:
    async with live_server(tmp_path, native=native) as server:
        poll_id = await open_poll(server, Visibility.AFTER_VOTE)
        await server.publish(poll_id, 1, {"red": 3, "green": 1})
        async with (
            ws_connect(server.ws_url(poll_id)) as anonymous,
            ws_connect(server.ws_url(poll_id)) as voter,
        ):
            redacted(await next_snapshot(anonymous), "until-vote", 1, 4)
            redacted(await next_snapshot(voter), "until-vote", 1, 4)
            await authenticate(voter, server.token("ws-voter"))  # has not voted: still hidden
            await server.publish(poll_id, 2, {"red": 3, "green": 2})
            redacted(await next_snapshot(voter), "until-vote", 2, 5)
            redacted(await next_snapshot(anonymous), "until-vote", 2, 5)
            await vote(voter, "green")
            full(await next_snapshot(voter), 2, {"red": 3, "green": 2})  # the latest, again
            await server.publish(poll_id, 3, {"red": 3, "green": 3})
            full(await next_snapshot(voter), 3, {"red": 3, "green": 3})
            redacted(await next_snapshot(anonymous), "until-vote", 3, 6)
            await server.publish(poll_id, 4, {"red": 3, "green": 3}, state="closed")
            full(await next_snapshot(anonymous), 4, {"red": 3, "green": 3})
            full(await next_snapshot(voter), 4, {"red": 3, "green": 3})


@pytest.mark.parametrize("native", ROUTES)
async def test_an_auth_frame_of_an_admin_or_of_a_voter_who_voted_shows_the_counts(
    tmp_path: Path, native: bool
) -> None:
    async with live_server(tmp_path, native=native) as server, httpx.AsyncClient() as http:
        poll_id = await open_poll(server, Visibility.AFTER_VOTE)
        earlier = server.token("voted-over-http")
        answer = await http.post(
            f"{server.url}/v1/polls/{poll_id}/votes",
            json={"option": "red"},
            headers={"Authorization": f"Bearer {earlier}"},
        )
        assert answer.status_code == 201
        await server.publish(poll_id, 1, {"red": 1, "green": 0})
        admin = server.issuer.mint("ws-admin", roles=["admin"])
        for token in (earlier, admin):
            async with ws_connect(server.ws_url(poll_id)) as ws:
                redacted(await next_snapshot(ws), "until-vote", 1, 1)
                await authenticate(ws, token)
                full(await next_snapshot(ws), 1, {"red": 1, "green": 0})


@pytest.mark.parametrize("native", ROUTES)
async def test_after_close_hides_the_counts_from_voters_until_the_close(
    tmp_path: Path, native: bool
) -> None:
    async with live_server(tmp_path, native=native) as server:
        poll_id = await open_poll(server, Visibility.AFTER_CLOSE)
        await server.publish(poll_id, 1, {"red": 0, "green": 0})
        async with (
            ws_connect(server.ws_url(poll_id)) as voter,
            ws_connect(server.ws_url(poll_id)) as admin,
        ):
            redacted(await next_snapshot(voter), "until-close", 1, 0)
            redacted(await next_snapshot(admin), "until-close", 1, 0)
            await authenticate(admin, server.issuer.mint("ac-admin", roles=["admin"]))
            full(await next_snapshot(admin), 1, {"red": 0, "green": 0})
            await authenticate(voter, server.token("ac-voter"))
            await vote(voter, "red")
            await server.publish(poll_id, 2, {"red": 1, "green": 0})
            redacted(await next_snapshot(voter), "until-close", 2, 1)  # voting changes nothing
            full(await next_snapshot(admin), 2, {"red": 1, "green": 0})
            await server.publish(poll_id, 3, {"red": 1, "green": 0}, state="closed")
            full(await next_snapshot(voter), 3, {"red": 1, "green": 0})


async def test_a_live_polls_frames_are_the_stored_document(tmp_path: Path) -> None:
    async with live_server(tmp_path) as server:
        poll_id = await open_poll(server, Visibility.LIVE)
        await server.publish(poll_id, 1, {"red": 2, "green": 0})
        async with ws_connect(server.ws_url(poll_id)) as ws, asyncio.timeout(5):
            data = await ws.recv()
            latest = server.live.hub.latest(poll_id)  # while the channel is open
        stored = await server.runtime.client.execute("HGET", keys.poll_snapshot(poll_id), "doc")
        assert (data.encode() if isinstance(data, str) else data) == stored
        assert latest is not None
        assert latest.hidden_ws_frame is None  # nothing extra encoded for a live poll
        assert latest.hidden_sse_event is None


async def test_sse_is_redacted_unless_the_request_authorizes_a_viewer_who_may_see(
    tmp_path: Path,
) -> None:
    async with live_server(tmp_path) as server, httpx.AsyncClient() as http:
        poll_id = await open_poll(server, Visibility.AFTER_VOTE)
        voted = server.token("sse-voted")
        answer = await http.post(
            f"{server.url}/v1/polls/{poll_id}/votes",
            json={"option": "green"},
            headers={"Authorization": f"Bearer {voted}"},
        )
        assert answer.status_code == 201
        await server.publish(poll_id, 1, {"red": 0, "green": 1})
        viewers = {
            "anonymous": (None, False),
            "not voted": (server.token("sse-not-voted"), False),
            "voted": (voted, True),
            "admin": (server.issuer.mint("sse-admin", roles=["admin"]), True),
        }
        for name, (token, sees) in viewers.items():
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            async with (
                http.stream("GET", server.events_url(poll_id), headers=headers) as response,
                EventStream(response) as events,
            ):
                assert response.status_code == 200, name
                snapshot = orjson.loads((await events.next_event()).data)
                if sees:
                    full(snapshot, 1, {"red": 0, "green": 1})
                else:
                    redacted(snapshot, "until-vote", 1, 1)
        bad = await http.get(server.events_url(poll_id), headers={"Authorization": "Bearer x"})
        assert bad.status_code == 401
        async with (
            http.stream("GET", server.events_url(poll_id)) as response,
            EventStream(response) as events,
        ):
            redacted(orjson.loads((await events.next_event()).data), "until-vote", 1, 1)
            await server.publish(poll_id, 2, {"red": 0, "green": 1}, state="closed")
            full(orjson.loads((await events.next_event()).data), 2, {"red": 0, "green": 1})


async def test_an_integrity_alarm_shows_its_details_only_to_who_sees_the_counts(
    tmp_path: Path,
) -> None:
    """A counter-mismatch alarm quotes counts: where they are hidden, the alarm is shown (kind
    and lane) without its details, on the poll and on its results; an admin gets them whole."""
    async with live_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as http:
        poll_id = await open_poll(server, Visibility.AFTER_CLOSE)
        details = "lane 1 at entry 4: counters red=3 green=1 held 0; the ledger counts red=2"
        alarm = IntegrityAlarm(AlarmKind.COUNTER_MISMATCH, 1, details, 1_767_225_000_000)
        assert await ValkeyIntegrity(server.admin).raise_alarm(poll_id, alarm)
        admin = {"Authorization": f"Bearer {server.issuer.mint('alarm-admin', roles=['admin'])}"}
        for path in (f"/v1/polls/{poll_id}", f"/v1/polls/{poll_id}/results"):
            public = (await http.get(path)).json()["integrity"]
            assert [(a["kind"], a["lane"]) for a in public] == [("counter-mismatch", 1)]
            assert public[0]["details"] == HIDDEN_DETAILS
            assert (await http.get(path, headers=admin)).json()["integrity"][0][
                "details"
            ] == details
        await server.runtime.service.close_poll(poll_id)
        closed = (await http.get(f"/v1/polls/{poll_id}")).json()["integrity"]
        assert closed[0]["details"] == details

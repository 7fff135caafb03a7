"""/v1/polls/{poll_id}/live as a plain ASGI WebSocket, for servers run without
`LiveGateway.websocket_protocol` (another ASGI server, or uvicorn's default `ws=`).

Compatibility only: the same messages, answers, close codes and refusals as websocket.py, but two
tasks per connection (the ASGI call reading messages, one sending snapshots) and ~4x the memory.
Keepalive pings are the server's (uvicorn's ws_ping_interval). Refusals before the upgrade are
HTTP denial responses where the server supports the `websocket.http.response` extension, else a
close with 1013 (try again later) or 1008 (a token in the URL).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Scope, Send

from tally.domain.admission import Evidence, Transport
from tally.domain.errors import PollNotFound, StoreUnavailable, TallyError
from tally.domain.polls import is_poll_id
from tally.gateway.live.host import LiveHost
from tally.gateway.live.limits import (
    carries_token,
    shutting_down,
    token_in_url,
    too_many_connections,
)
from tally.gateway.live.snapshot import LiveSnapshot
from tally.gateway.live.state import WatcherState, moved
from tally.gateway.live.votes import (
    AuthMessage,
    VoteMessage,
    error_frame,
    parse_message,
    request_id_of,
)
from tally.gateway.live.websocket import DRAFT_AUTH_WAIT_S, MAX_VOTES_IN_FLIGHT, CloseCode
from tally.gateway.problems import MEDIA_TYPE, Problem, from_error, invalid_poll_id, problem_body


class AsgiLiveSocket:
    """The ASGI endpoint (a Starlette WebSocketRoute with `poll_id` in its path)."""

    def __init__(self, gateway: LiveHost) -> None:
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self._gateway
        await receive()  # websocket.connect
        ip = gateway.addresses.of_scope(scope)
        problem: Problem | None = None
        if carries_token(scope.get("query_string", b"").decode("latin-1")):
            problem = token_in_url()
        elif gateway.closing:
            problem = shutting_down()
        elif not gateway.limits.admit(ip):
            problem = too_many_connections()
        if problem is not None:
            await _deny(scope, send, problem)
            return
        await send({"type": "websocket.accept"})
        user_agent = next((v for k, v in scope["headers"] if k == b"user-agent"), b"")
        evidence = Evidence(Transport.WEBSOCKET, ip, user_agent.decode("latin-1"))
        connection = _AsgiConnection(gateway, send, scope["path_params"]["poll_id"], evidence)
        gateway.opened(connection)
        try:
            await connection.run(receive)
        finally:
            connection.finish()
            gateway.forget(connection, ip, admitted=True)


async def _deny(scope: Scope, send: Send, problem: Problem) -> None:
    if "websocket.http.response" not in scope.get("extensions", {}):
        code = 1008 if problem.status == 400 else 1013
        await send({"type": "websocket.close", "code": code, "reason": problem.code})
        return
    body = problem_body(problem, scope["path"])
    headers = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    start = {"type": "websocket.http.response.start", "status": problem.status, "headers": headers}
    await send(start)
    await send({"type": "websocket.http.response.body", "body": body})


class _AsgiConnection:
    """One connection's state: the slot, the lifecycle, the token, the votes in flight."""

    def __init__(self, gateway: LiveHost, send: Send, poll_id: str, evidence: Evidence) -> None:
        self._gateway = gateway
        self._send = send
        self._poll_id = poll_id
        self._evidence = evidence
        self._instance = f"/v1/polls/{poll_id}/live"
        self._state = WatcherState.JOINING
        self._pending: LiveSnapshot | None = None
        self._sent_seq = 0
        self._wake = asyncio.Event()
        self._token: str | None = None
        self._sees = False  # counts even where the poll hides them (websocket.py's _sees)
        self._room = asyncio.Semaphore(MAX_VOTES_IN_FLIGHT)
        self._sender: asyncio.Task[None] | None = None
        self._draft = False  # on a draft, until an admin's auth frame (websocket.py's docstring)

    def deliver(self, snapshot: LiveSnapshot) -> None:
        if snapshot.seq > self._sent_seq and (
            self._pending is None or snapshot.seq > self._pending.seq
        ):
            self._pending = snapshot
            self._wake.set()

    def keepalive(self) -> None:
        """uvicorn pings ASGI WebSockets itself."""

    def stop_reading(self) -> None:
        """The reader stops at its next message once the gateway is closing."""

    def close(self, code: int, reason: str = "") -> None:
        if self._state is WatcherState.JOINING or self._state is WatcherState.OPEN:
            self._state = moved(self._state, WatcherState.CLOSING)
            self._gateway.hub.leave(self._poll_id, self)
            self._gateway.track(self._close(code, reason))

    def abort(self) -> None:
        """Nothing to cut through ASGI: uvicorn closes its WebSockets with 1012 on shutdown."""

    def finish(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        self._state = WatcherState.CLOSED
        self._gateway.hub.leave(self._poll_id, self)

    async def run(self, receive: Receive) -> None:
        if not await self._join():
            await self._receive_until_closed(receive, messages=False)
            return
        self._sender = asyncio.get_running_loop().create_task(self._send_snapshots())
        await self._receive_until_closed(receive, messages=True)

    async def _join(self) -> bool:
        if not is_poll_id(self._poll_id):
            problem = invalid_poll_id()
            return await self._refuse(problem, CloseCode.INVALID_POLL_ID)
        try:
            await self._gateway.hub.join(self._poll_id, self)
        except PollNotFound as exc:
            return await self._refuse(from_error(exc), CloseCode.POLL_NOT_FOUND)
        except StoreUnavailable as exc:
            return await self._refuse(from_error(exc), CloseCode.TRY_AGAIN_LATER)
        try:
            self._draft = await self._gateway.voting.hidden_draft(self._poll_id)
        except StoreUnavailable as exc:
            return await self._refuse(from_error(exc), CloseCode.TRY_AGAIN_LATER)
        if self._state is not WatcherState.JOINING:
            return False
        self._state = moved(self._state, WatcherState.OPEN)
        if self._draft:
            self._gateway.track(self._draft_deadline())
        return True

    async def _draft_deadline(self) -> None:
        """As websocket.py's: no admin's auth frame in time is an unknown poll's answer, unless
        the poll opened meanwhile."""
        await asyncio.sleep(DRAFT_AUTH_WAIT_S)
        if not self._draft:
            return
        with contextlib.suppress(TallyError):
            if not await self._gateway.voting.hidden_draft(self._poll_id):
                self._draft = False
                return
        if self._draft:
            await self._hide_draft()

    async def _hide_draft(self) -> None:
        self._draft = False
        await self._refuse(from_error(PollNotFound(self._poll_id)), CloseCode.POLL_NOT_FOUND)

    async def _refuse(self, problem: Problem, code: CloseCode) -> bool:
        await self._text(error_frame(problem, self._instance))
        self.close(code, problem.code)
        return False

    async def _receive_until_closed(self, receive: Receive, *, messages: bool) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if not messages or self._gateway.closing or self._state is not WatcherState.OPEN:
                continue
            text = message.get("text")
            if text is None:
                detail = "messages are JSON in text frames"
                problem = Problem(415, "unsupported-media-type", detail)
                await self._text(error_frame(problem, self._instance))
                continue
            await self._on_message(text.encode())

    async def _on_message(self, data: bytes) -> None:
        try:
            message = parse_message(data)
        except Problem as problem:
            if self._draft:
                await self._hide_draft()
                return
            await self._text(error_frame(problem, self._instance, request_id_of(data)))
            return
        if self._draft:  # on a draft: only an admin may go on
            if not isinstance(message, AuthMessage) or not self._gateway.voting.is_admin(
                message.token
            ):
                await self._hide_draft()
                return
            self._draft = False
        if isinstance(message, AuthMessage):
            self._token = message.token  # kept even when invalid, as in websocket.py
            valid, frame = self._gateway.voting.authenticate(message.token, self._instance)
            await self._text(frame)
            if valid and not self._sees:
                await self._entitle(message.token, voted=False)
            return
        await self._room.acquire()  # at most MAX_VOTES_IN_FLIGHT; no queue beyond
        self._gateway.track(self._vote(message, self._token))

    async def _vote(self, message: VoteMessage, token: str | None) -> None:
        try:
            answer = await self._gateway.voting.vote_answer(
                self._poll_id, token, message, self._evidence
            )
            await self._text(answer.frame)
        finally:
            self._room.release()
        if answer.voted and not self._sees and token is not None:
            await self._entitle(token, voted=True)

    async def _entitle(self, token: str, *, voted: bool) -> None:
        """As websocket.py's: send the counts from now on if the viewer may see them."""
        viewers = self._gateway.voting.viewers
        if viewers is None:
            return
        if await viewers.token_sees_counts(self._poll_id, token, voted=voted) and not self._sees:
            self._sees = True
            latest = self._gateway.hub.latest(self._poll_id)
            if latest is not None and latest.hidden_doc is not None:
                self._sent_seq = min(self._sent_seq, latest.seq - 1)
                self.deliver(latest)

    async def _send_snapshots(self) -> None:
        while self._state is WatcherState.OPEN:
            await self._wake.wait()
            self._wake.clear()
            snapshot, self._pending = self._pending, None
            if snapshot is None or self._state is not WatcherState.OPEN:
                continue
            self._sent_seq = snapshot.seq
            try:
                async with asyncio.timeout(self._gateway.slow_client_s):
                    text = snapshot.doc_for(self._sees).decode()
                    await self._send({"type": "websocket.send", "text": text})
            except TimeoutError:
                seconds = self._gateway.slow_client_s
                self.close(CloseCode.SLOW_CLIENT, f"could not keep up for {seconds:g} s")

    async def _text(self, payload: bytes) -> None:
        if self._state is WatcherState.JOINING or self._state is WatcherState.OPEN:
            with contextlib.suppress(OSError, RuntimeError):  # the client may have gone
                await self._send({"type": "websocket.send", "text": payload.decode()})

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

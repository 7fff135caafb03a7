"""`GET /v1/polls/{poll_id}/live`: the live WebSocket, one asyncio.Protocol per connection on the
`websockets` sans-I/O core, with no task, queue or timer per idle connection.

Why not an ASGI handler: an idle ASGI WebSocket costs ~24 KB on uvicorn (the handler's task and
frames, uvicorn's queue and scope) and each send is an await per client; this costs ~6 KB and a
snapshot reaches 10k sockets as 10k synchronous `transport.write`s of one pre-encoded frame
(BENCHMARKS.md). It is served on the main port through uvicorn's `ws=` protocol hook (uvicorn_ws.py); other
WebSocket paths still go to the ASGI app.

Flow control is the backlog policy: each socket's write buffer high-water mark is 0 and its kernel
send buffer small, so a client that is not reading is paused at once; while paused it keeps only
the newest snapshot (LATEST_ONLY), and if it stays paused for `slow_client_s` it is closed with
4408. Keepalive pings come from one sweep over all sockets (LiveGateway), not a timer each.

Result visibility (domain.visibility): on a poll that hides its counts, a socket is sent each
snapshot's redacted encoding (`counts` null, `hidden`), made once per snapshot by the hub, until
its viewer may see them: an auth frame of an admin or of a voter who has voted (one read of the
voter index), or a vote on the socket answered 201, 202 or 409 already-voted. From then on it gets
the full encoding, starting with the latest snapshot sent again. A closed poll's snapshots are
never redacted. Choosing the encoding is one attribute test per socket (benchmarks/
visibility_fanout.py).

Refusals at the handshake are HTTP responses with a problem document:
    400 invalid-request  a token in the query string (tokens never travel in URLs)
    429 too-many-connections   the per-IP or total limit is reached (Retry-After: 1)
    503 shutting-down          the gateway is shutting down (Retry-After: 1)
After the upgrade, an error frame ({"type": "error", ...}) precedes every 4xxx close.

A draft is an unknown poll to all but its organisers (VotingService.ensure_shown), but a socket
names its viewer only in its first message: on a draft the socket must send an admin's auth frame
first, within DRAFT_AUTH_WAIT_S; any other message, or none, gets the unknown poll's error frame
and 4404 close (unless the poll opened meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import logging
import re
import socket
from typing import cast

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State as CoreState
from websockets.server import ServerProtocol

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
from tally.gateway.problems import MEDIA_TYPE, Problem, from_error, invalid_poll_id, problem_body

log = logging.getLogger("tally.live")

LIVE_PATH = re.compile(r"/v1/polls/([^/?]*)/live(?:\?(.*))?")
MAX_MESSAGE_BYTES = 16 * 1024  # an auth frame carries a token of at most 8 KiB
MAX_VOTES_IN_FLIGHT = 16  # per socket; beyond it the socket stops reading (no queue)
SEND_BUFFER_BYTES = 16 * 1024  # SO_SNDBUF: a stalled reader is noticed after KiB, not MiB
CLOSE_TIMEOUT_S = 2.0  # how long a close handshake may take before the TCP connection is cut
# How long a socket on a draft waits for an admin's auth frame before it is answered as one on an
# unknown poll (a browser sends its auth frame as soon as the socket opens).
DRAFT_AUTH_WAIT_S = 2.0

_OPEN = WatcherState.OPEN
_JOINING = WatcherState.JOINING
_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class CloseCode(enum.IntEnum):
    """Close codes of the live WebSocket (4xxx: Tally's own, mirroring an HTTP status)."""

    NORMAL = 1000  # the client closed
    PROTOCOL_ERROR = 1002  # a frame broke RFC 6455 (sent by the websockets core)
    MESSAGE_TOO_BIG = 1009  # a message over MAX_MESSAGE_BYTES (sent by the websockets core)
    INTERNAL_ERROR = 1011  # no pong within the keepalive interval, or a bug
    SERVICE_RESTART = 1012  # graceful shutdown: reconnect, to this or another gateway
    TRY_AGAIN_LATER = 1013  # the store was unavailable while joining the poll's channel
    INVALID_POLL_ID = 4400  # the path's poll id is not 1-64 of a-z, 0-9, '_', '-'
    POLL_NOT_FOUND = 4404  # no such poll
    SLOW_CLIENT = 4408  # could not take snapshots for slow_client_s: fell too far behind


def refusal(problem: Problem, instance: str) -> Response:
    """An HTTP answer to an upgrade request we will not accept."""
    headers = Headers(
        {"Content-Type": MEDIA_TYPE, "Connection": "close", **problem.headers},
    )
    body = problem_body(problem, instance)
    headers["Content-Length"] = str(len(body))
    return Response(problem.status, http.HTTPStatus(problem.status).phrase, headers, body)


class LiveSocket(asyncio.Protocol):
    """One live WebSocket: handshake, joining the poll's channel, snapshots, votes, close."""

    __slots__ = (
        "_close_timer",
        "_draft_timer",
        "_evidence",
        "_fragments",
        "_gateway",
        "_heard",
        "_ip",
        "_paused",
        "_pending",
        "_poll_id",
        "_reading",
        "_sees",
        "_sent_seq",
        "_slow_timer",
        "_state",
        "_token",
        "_transport",
        "_votes",
        "_ws",
    )

    def __init__(self, gateway: LiveHost) -> None:
        self._gateway = gateway
        self._ws = ServerProtocol(max_size=MAX_MESSAGE_BYTES)
        self._state = WatcherState.CONNECTING
        self._transport: asyncio.Transport | None = None
        self._ip = ""
        self._evidence = Evidence(Transport.WEBSOCKET)
        self._poll_id = ""
        self._sent_seq = 0
        # Sent the full snapshot even where the poll hides its counts (result visibility): an
        # admin, or a voter who has voted. Starts False: redacted until the auth frame or a vote
        # on this socket says otherwise.
        self._sees = False
        self._pending: LiveSnapshot | None = None
        self._paused = False
        self._reading = True
        self._heard = True
        self._slow_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        # Set while the socket is on a draft and no admin's auth frame came (module docstring).
        self._draft_timer: asyncio.TimerHandle | None = None
        self._token: str | None = None
        self._votes = 0
        self._fragments: list[bytes] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if peer else ""

    def data_received(self, data: bytes) -> None:
        self._heard = True
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._on_handshake(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        if self._ws.state is not CoreState.OPEN and (
            self._state is _OPEN or self._state is _JOINING
        ):
            # The core is closing: the client's close frame, or a frame it had to refuse
            # (1002 protocol error, 1009 too big). Nothing may follow its close frame.
            self._stop_snapshots()
        self._flush()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None  # let the transport close: a WebSocket never writes after the peer's EOF

    def pause_writing(self) -> None:
        self._paused = True
        if self._slow_timer is None and self._state is _OPEN:
            loop = asyncio.get_running_loop()
            self._slow_timer = loop.call_later(self._gateway.slow_client_s, self._too_slow)
        self._update_reading()  # a client that does not read gets no answers to queue up

    def resume_writing(self) -> None:
        self._paused = False
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            self.deliver(pending)
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()  # idempotent: the core's state becomes CLOSED
        for timer in (self._slow_timer, self._close_timer, self._draft_timer):
            if timer is not None:
                timer.cancel()
        self._slow_timer = self._close_timer = self._draft_timer = None
        previous, self._state = self._state, moved(self._state, WatcherState.CLOSED)
        self._pending = None
        self._gateway.forget(self, self._ip, admitted=previous is not WatcherState.CONNECTING)

    # what the hub and the gateway call

    def deliver(self, snapshot: LiveSnapshot) -> None:
        """Send a newer snapshot now, or keep it as the one pending (LATEST_ONLY)."""
        if snapshot.seq <= self._sent_seq:
            return
        state = self._state
        if state is _OPEN and not self._paused:
            assert self._transport is not None
            self._sent_seq = snapshot.seq
            hidden = snapshot.hidden_ws_frame  # None on a live poll: no redaction to choose
            self._transport.write(snapshot.ws_frame if hidden is None or self._sees else hidden)
        elif (state is _OPEN or state is _JOINING) and (
            self._pending is None or snapshot.seq > self._pending.seq
        ):
            self._pending = snapshot

    def keepalive(self) -> None:
        """Called once per keepalive interval: ping, or give up on a peer silent since the last."""
        if self._state is not _OPEN:
            return
        if not self._heard:
            self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        self._heard = False
        self._ws.send_ping(b"")
        self._flush()

    def stop_reading(self) -> None:
        """Take no further messages once the gateway is closing (votes in flight may finish)."""
        self._update_reading()

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (once); the connection is cut after CLOSE_TIMEOUT_S."""
        state = self._state
        if state is WatcherState.CLOSING or state is WatcherState.CLOSED:
            return
        if state is WatcherState.CONNECTING:
            self.abort()
            return
        self._stop_snapshots()
        with contextlib.suppress(InvalidState):  # the client's close frame arrived first
            self._ws.send_close(code, reason)
        self._update_reading()  # to hear the client's close frame
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _stop_snapshots(self) -> None:
        self._state = moved(self._state, WatcherState.CLOSING)
        self._pending = None
        self._gateway.hub.leave(self._poll_id, self)

    # the handshake

    def _on_handshake(self, request: Request) -> None:
        gateway = self._gateway
        match = LIVE_PATH.fullmatch(request.path)
        problem: Problem | None = None
        if match is None:
            problem = Problem(404, "not-found")
        elif carries_token(match.group(2)):
            problem = token_in_url()
        elif gateway.closing:
            problem = shutting_down()
        else:
            # Behind a trusted proxy the client is the forwarded address, not the proxy.
            forwarded = request.headers.get_all("X-Forwarded-For")
            self._ip = gateway.addresses.resolve(self._ip, forwarded)
            if not gateway.limits.admit(self._ip):
                problem = too_many_connections()
        if problem is not None:
            self._ws.send_response(refusal(problem, request.path.partition("?")[0]))
            return
        user_agent = request.headers.get("User-Agent", "")
        self._evidence = Evidence(Transport.WEBSOCKET, self._ip, user_agent)
        assert match is not None
        response = self._ws.accept(request)
        if response.status_code != 101:  # not a valid WebSocket handshake
            gateway.limits.release(self._ip)
            self._ws.send_response(response)
            return
        self._ws.send_response(response)
        self._state = moved(self._state, _JOINING)
        self._poll_id = match.group(1)
        self._configure_transport()
        gateway.opened(self)
        gateway.track(self._join())

    def _configure_transport(self) -> None:
        assert self._transport is not None
        # Pause as soon as anything is left unsent. A TLS transport (WSS) pauses at size >= high
        # and a plain one at size > high (uvloop's and asyncio's sslproto), so high=0 would pause
        # a TLS socket at its first frame for good, never to resume.
        tls = self._transport.get_extra_info("sslcontext") is not None
        self._transport.set_write_buffer_limits(high=1 if tls else 0)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    async def _join(self) -> None:
        instance = f"/v1/polls/{self._poll_id}/live"
        if not is_poll_id(self._poll_id):
            problem = invalid_poll_id()
            self._close_with(problem, instance, CloseCode.INVALID_POLL_ID)
            return
        try:
            await self._gateway.hub.join(self._poll_id, self)
        except PollNotFound as exc:
            self._close_with(from_error(exc), instance, CloseCode.POLL_NOT_FOUND)
            return
        except StoreUnavailable as exc:
            self._close_with(from_error(exc), instance, CloseCode.TRY_AGAIN_LATER)
            return
        except Exception:
            log.exception("joining poll %s's live channel failed", self._poll_id)
            self._close_with(Problem(500, "internal-error"), instance, CloseCode.INTERNAL_ERROR)
            return
        try:
            draft = await self._gateway.voting.hidden_draft(self._poll_id)
        except StoreUnavailable as exc:
            self._close_with(from_error(exc), instance, CloseCode.TRY_AGAIN_LATER)  # leaves
            return
        if self._state is not _JOINING:  # closed while joining
            self._gateway.hub.leave(self._poll_id, self)
            return
        if draft:
            token = self._token  # an auth frame may have come while the channel opened
            if token is None:
                loop = asyncio.get_running_loop()
                self._draft_timer = loop.call_later(DRAFT_AUTH_WAIT_S, self._draft_waited)
            elif not self._gateway.voting.is_admin(token):
                self._close_with(
                    from_error(PollNotFound(self._poll_id)), instance, CloseCode.POLL_NOT_FOUND
                )
                return
        self._state = moved(self._state, _OPEN)
        if self._paused:
            self.pause_writing()  # start the slow-client clock now that it applies
        pending, self._pending = self._pending, None
        if pending is not None:
            self.deliver(pending)

    def _draft_waited(self) -> None:
        # The spent handle stays set, so messages stay held to the draft's rule until decided.
        self._gateway.track(self._draft_unseen())

    async def _draft_unseen(self) -> None:
        """No admin's auth frame came in time: answer as for an unknown poll, unless the poll has
        opened meanwhile (then it is anyone's to watch)."""
        with contextlib.suppress(TallyError):
            if not await self._gateway.voting.hidden_draft(self._poll_id):
                self._draft_timer = None
                return
        if self._draft_timer is not None:  # not decided meanwhile by a message
            self._hide_draft()

    def _hide_draft(self) -> None:
        if self._draft_timer is not None:
            self._draft_timer.cancel()
            self._draft_timer = None
        problem = from_error(PollNotFound(self._poll_id))
        self._close_with(problem, f"/v1/polls/{self._poll_id}/live", CloseCode.POLL_NOT_FOUND)

    def _close_with(self, problem: Problem, instance: str, code: CloseCode) -> None:
        self._send(error_frame(problem, instance))
        self.close(code, problem.code)

    # messages

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode not in _DATA_OPCODES:
            return  # PING and CLOSE are answered by the core; PONG only proves liveness
        if frame.opcode is not Opcode.CONT:
            self._fragments = [] if frame.opcode is Opcode.TEXT else None
            if frame.opcode is Opcode.BINARY:
                self._binary()
                return
        if self._fragments is None:  # continuation of a binary message: already answered
            return
        self._fragments.append(bytes(frame.data))
        if frame.fin:
            data, self._fragments = b"".join(self._fragments), None
            self._on_message(data)

    def _binary(self) -> None:
        detail = "messages are JSON in text frames"
        problem = Problem(415, "unsupported-media-type", detail)
        self._send(error_frame(problem, f"/v1/polls/{self._poll_id}/live"))

    def _on_message(self, data: bytes) -> None:
        if self._state is not _OPEN and self._state is not _JOINING:
            return
        instance = f"/v1/polls/{self._poll_id}/live"
        try:
            message = parse_message(data)
        except Problem as problem:
            if self._draft_timer is not None:
                self._hide_draft()
                return
            self._send(error_frame(problem, instance, request_id_of(data)))
            return
        if self._draft_timer is not None:  # on a draft: only an admin may go on
            if not isinstance(message, AuthMessage) or not self._gateway.voting.is_admin(
                message.token
            ):
                self._hide_draft()
                return
            self._draft_timer.cancel()
            self._draft_timer = None
        if isinstance(message, AuthMessage):
            # Kept even when invalid: each vote verifies it again and answers its precise 401.
            self._token = message.token
            valid, frame = self._gateway.voting.authenticate(message.token, instance)
            self._send(frame)
            if valid and not self._sees:
                self._gateway.track(self._entitle(message.token, voted=False))
            return
        self._votes += 1
        self._update_reading()
        self._gateway.track(self._vote(message, self._token))

    async def _vote(self, message: VoteMessage, token: str | None) -> None:
        try:
            answer = await self._gateway.voting.vote_answer(
                self._poll_id, token, message, self._evidence
            )
        finally:
            self._votes -= 1
        self._send(answer.frame)
        self._update_reading()
        if answer.voted and not self._sees and token is not None:
            await self._entitle(token, voted=True)

    async def _entitle(self, token: str, *, voted: bool) -> None:
        """Start sending this socket the counts if its viewer may now see them (result
        visibility): an admin's auth frame, a voter's who has voted, a vote on this socket."""
        viewers = self._gateway.voting.viewers
        if viewers is None:
            return
        if await viewers.token_sees_counts(self._poll_id, token, voted=voted) and not self._sees:
            self._sees = True
            latest = self._gateway.hub.latest(self._poll_id)
            if latest is not None and latest.hidden_ws_frame is not None:
                # Already sent redacted: send the same snapshot again, in full.
                self._sent_seq = min(self._sent_seq, latest.seq - 1)
                self.deliver(latest)

    def _update_reading(self) -> None:
        """Read while closing (to hear the close frame), else only with room for more answers:
        fewer than MAX_VOTES_IN_FLIGHT votes, a writable socket, a gateway not shutting down."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        wanted = self._state is WatcherState.CLOSING or (
            not self._paused and self._votes < MAX_VOTES_IN_FLIGHT and not self._gateway.closing
        )
        if wanted != self._reading:
            self._reading = wanted
            if wanted:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _send(self, payload: bytes) -> None:
        if self._state is _OPEN or self._state is _JOINING:
            self._ws.send_text(payload)
            self._flush()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the core asks to end the TCP stream
                transport.write_eof()
            else:
                transport.close()
        if self._ws.close_expected() and self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT_S, self.abort)

    def _too_slow(self) -> None:
        self._slow_timer = None
        seconds = self._gateway.slow_client_s
        self.close(CloseCode.SLOW_CLIENT, f"could not keep up for {seconds:g} s")

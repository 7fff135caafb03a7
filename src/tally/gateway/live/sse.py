"""`GET /v1/polls/{poll_id}/events`: the live snapshots as Server-Sent Events, the fallback for
clients that cannot hold a WebSocket.

Each event is `id: <seq>`, `event: snapshot`, `data: <the snapshot document>`, exactly the
document the WebSocket sends. A reconnect carrying `Last-Event-ID` gets the latest snapshot at
once unless that is the one it names; a comment line every `sse_keepalive_s` keeps proxies from
timing the stream out. Latest-only, like the WebSocket: one write in flight at most, and a one-slot
buffer holding the newest snapshot not yet sent. A write blocked for `slow_client_s` ends the
stream (ASGI offers no abort, so uvicorn logs it as an incomplete response).

Result visibility (domain.visibility): where the poll hides its counts, a stream gets them redacted
(`counts` null, `hidden` says why) unless its request carries an `Authorization` header of an
admin, or of a voter who has voted in an after-vote poll (checked once, when the stream starts; a
browser's EventSource cannot send the header, so it reconnects or uses the WebSocket, which
follows a vote at once). Once the poll closes every stream gets the counts: a closed snapshot is
never redacted.

Refusals before the stream starts are problem documents: 400 invalid-poll-id, 404 poll-not-found
(for a draft too, unless the request carries an admin's credential),
429 too-many-connections and 503 shutting-down (both with Retry-After), 503 store-unavailable, 401
for an invalid credential.
One task per stream plus one waiting for the disconnect: SSE is the fallback, not the bulk path.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Scope, Send

from tally.domain.errors import TallyError
from tally.domain.polls import is_poll_id
from tally.gateway.live.host import LiveHost
from tally.gateway.live.limits import shutting_down, too_many_connections
from tally.gateway.live.snapshot import LiveSnapshot
from tally.gateway.live.state import WatcherState, moved
from tally.gateway.problems import Problem, from_error, invalid_poll_id, problem_response
from tally.gateway.viewer import ANONYMOUS

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: do not buffer the stream
]
RETRY = b"retry: 1000\n\n"  # browsers reconnect after 1 s (with Last-Event-ID)
KEEPALIVE = b": keepalive\n\n"


class SseStream:
    """One stream's state: the slot, the wake-up, and the lifecycle."""

    __slots__ = ("_pending", "_sent_seq", "_wake", "sees", "state")

    def __init__(self, sees: bool = False) -> None:
        self.state = WatcherState.JOINING
        self.sees = sees  # counts even where the poll hides them (result visibility)
        self._pending: LiveSnapshot | None = None
        self._sent_seq = 0
        self._wake = asyncio.Event()

    def deliver(self, snapshot: LiveSnapshot) -> None:
        if snapshot.seq > self._sent_seq and (
            self._pending is None or snapshot.seq > self._pending.seq
        ):
            self._pending = snapshot
            self._wake.set()

    def resume_after(self, last_event_id: int | None) -> None:
        """Drop the pending snapshot if it is the one the client last received."""
        if (
            last_event_id is not None
            and self._pending is not None
            and self._pending.seq == last_event_id
        ):
            self._sent_seq, self._pending = last_event_id, None

    def take(self) -> LiveSnapshot | None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._sent_seq = pending.seq
        self._wake.clear()
        return pending

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()

    def keepalive(self) -> None:
        """The stream's own loop sends keepalive comments."""

    def stop_reading(self) -> None:
        """An SSE client sends nothing."""

    def close(self, code: int = 0, reason: str = "") -> None:
        if self.state is WatcherState.JOINING or self.state is WatcherState.OPEN:
            self.state = moved(self.state, WatcherState.CLOSING)
            self._wake.set()

    def abort(self) -> None:
        """Nothing to cut through ASGI; the server cancels the request after its own timeout."""


class EventStreams:
    """The ASGI endpoint (a Starlette route with `poll_id` in its path)."""

    def __init__(self, gateway: LiveHost) -> None:
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self._gateway
        poll_id: str = scope["path_params"]["poll_id"]
        ip = gateway.addresses.of_scope(scope)
        viewers = gateway.voting.viewers
        viewer = ANONYMOUS
        problem: Problem | None = None
        if not is_poll_id(poll_id):
            problem = invalid_poll_id()
        elif gateway.closing:
            problem = shutting_down()
        elif viewers is not None:
            # EventSource sends no headers: a browser is anonymous here. A client that can
            # send `Authorization` (curl, a server) is a viewer as on GET /results. Before the
            # connection limit, so a refused credential holds no slot.
            try:
                viewer = viewers.of(_header(scope, b"authorization"))
            except Problem as refused:
                problem = refused
        if problem is None and not gateway.limits.admit(ip):
            problem = too_many_connections()
        if problem is not None:
            await problem_response(problem, scope["path"])(scope, receive, send)
            return
        stream = SseStream()
        gateway.opened(stream)
        try:
            try:
                if viewers is not None:
                    await viewers.ensure_shown(poll_id, viewer)  # a draft: 404 but to an admin
                if viewers is not None and viewer is not ANONYMOUS:
                    stream.sees = await viewers.sees_counts(poll_id, viewer)
                await gateway.hub.join(poll_id, stream)
            except TallyError as exc:
                await problem_response(from_error(exc), scope["path"])(scope, receive, send)
                return
            stream.resume_after(_last_event_id(scope))
            await self._serve(stream, receive, send)
        finally:
            stream.state = WatcherState.CLOSED
            gateway.hub.leave(poll_id, stream)
            gateway.forget(stream, ip, admitted=True)

    async def _serve(self, stream: SseStream, receive: Receive, send: Send) -> None:
        gateway = self._gateway
        if stream.state is WatcherState.JOINING:
            stream.state = moved(stream.state, WatcherState.OPEN)
        disconnect = asyncio.get_running_loop().create_task(_until_disconnect(receive, stream))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            first = stream.take()
            chunk = RETRY + (first.sse_event_for(stream.sees) if first is not None else b"")
            while stream.state is WatcherState.OPEN:
                async with asyncio.timeout(gateway.slow_client_s):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await stream.wait(gateway.sse_keepalive_s)  # at once if a snapshot is pending
                snapshot = stream.take()
                chunk = snapshot.sse_event_for(stream.sees) if snapshot is not None else KEEPALIVE
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            return  # a stalled reader: give its slot back
        finally:
            disconnect.cancel()


async def _until_disconnect(receive: Receive, stream: SseStream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.close()


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _last_event_id(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return None

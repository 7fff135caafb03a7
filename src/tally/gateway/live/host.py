"""The contract between the live gateway and its transports, in both directions.

`LiveHost` is all a transport (websocket.py, asgi_socket.py, sse.py) sees of the gateway, and
`LiveConnection` all the gateway sees of a connection. The transports import this module, never
gateway.py, so the gateway can be built first and its transports handed to it afterwards by the
composition root (endpoints.py), with no import cycle.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from tally.gateway.client_address import ClientAddresses
from tally.gateway.live.fanout import LiveHub
from tally.gateway.live.limits import ConnectionLimits
from tally.gateway.live.votes import LiveVoting


class LiveConnection(Protocol):
    """What the gateway needs of a connection (a WebSocket or an SSE stream) to keep and end it."""

    def keepalive(self) -> None:
        """Called once per keepalive interval."""

    def stop_reading(self) -> None:
        """Take no more messages: the gateway is closing."""

    def close(self, code: int, reason: str = "") -> None:
        """Start closing (a WebSocket close frame, or the end of an SSE stream)."""

    def abort(self) -> None:
        """Cut the connection now (after the shutdown deadline)."""


class LiveHost(Protocol):
    """What a live transport needs from the gateway that owns its connections.

    All of it is used on the serving event loop only. The guarantees a transport relies on:

    - `closing` turns True once, at the start of shutdown, and never back: from then on a
      transport admits no new connection (503 shutting-down) and reads no further messages.
    - A connection holds a `limits` slot from a successful `limits.admit(ip)`. The transport
      reports it with `opened(connection)`, and reports its end exactly once with
      `forget(connection, ip, admitted=...)`, which gives the slot back when `admitted`.
      Between the two the gateway may call any `LiveConnection` method, at any time.
    - `track(work)` runs a connection's background work (joining a channel, answering a vote)
      as a task the gateway owns: a failure is logged, and shutdown lets it finish for up to
      half its timeout before cancelling it. A transport never starts such a task itself.
    - `hub` delivers snapshots to a joined watcher; `voting` answers auth and vote messages.
    - `addresses` says who a connection's client is (the socket peer, or the forwarded address
      behind a trusted proxy); `limits` and the votes' evidence count that address.
    - `slow_client_s`: how long a connection may fail to take snapshots before it is closed;
      `sse_keepalive_s`: how often an idle SSE stream gets a keepalive comment.
    """

    @property
    def hub(self) -> LiveHub: ...

    @property
    def voting(self) -> LiveVoting: ...

    @property
    def limits(self) -> ConnectionLimits: ...

    @property
    def addresses(self) -> ClientAddresses: ...

    @property
    def closing(self) -> bool: ...

    @property
    def slow_client_s(self) -> float: ...

    @property
    def sse_keepalive_s(self) -> float: ...

    def opened(self, connection: LiveConnection) -> None:
        """A connection was admitted (its limits slot taken)."""

    def forget(self, connection: LiveConnection, ip: str, *, admitted: bool) -> None:
        """A connection is gone: drop it, and give its limits slot back if it held one."""

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a connection's background work with an owner (see the class docstring)."""

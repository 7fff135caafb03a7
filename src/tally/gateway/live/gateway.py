"""Live results for one gateway process: the fan-out hub, every live connection on it (WebSocket
and SSE), their limits, one keepalive sweep, and an ordered shutdown.

The gateway knows its transports only through host.py's contract: it implements `LiveHost`, and
the composition root builds the transports on it and hands them over (all on the serving loop):

    hub = LiveHub(ValkeyLiveFeed(endpoint), ValkeySnapshots(client), service)
    live = LiveGateway(
        hub,
        LiveVoting(voting),                        # gateway.voting.Voting: the vote path
        ConnectionLimits(settings.max_connections, settings.max_connections_per_ip),
        slow_client_s=settings.slow_client_s,
    )
    endpoints = LiveEndpoints.bound_to(live)      # EventStreams, AsgiLiveSocket, uvicorn_protocol
    live.use_websocket_protocol(endpoints.websocket_protocol)
    supervise(live.run())                          # the feed, the keepalive sweep (or start())
    app = create_app(handlers, votes, demo_routes, live=endpoints)
    config = server_config(app, host, port, ...)
    config.ws = live.websocket_protocol            # /live natively; other paths stay ASGI
    ...
    await live.shutdown(settings.shutdown_timeout_s)   # FIRST, then uvicorn's own shutdown

`live.shutdown` must run before uvicorn's: uvicorn does not know the native sockets (it handed
them over) and would wait out its graceful timeout on the open SSE responses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from tally.gateway.client_address import ClientAddresses
from tally.gateway.live.fanout import LiveHub
from tally.gateway.live.host import LiveConnection
from tally.gateway.live.limits import ConnectionLimits
from tally.gateway.live.votes import LiveVoting

log = logging.getLogger("tally.live")

_SWEEP_SLICE = 1000  # sockets pinged between two yields to the event loop


class LiveGateway:
    """The live side of a gateway process (module docstring); the `LiveHost` of its transports."""

    def __init__(
        self,
        hub: LiveHub,
        voting: LiveVoting,
        limits: ConnectionLimits,
        *,
        slow_client_s: float,
        ping_interval_s: float = 20.0,
        sse_keepalive_s: float = 15.0,
        addresses: ClientAddresses | None = None,
    ) -> None:
        self.hub = hub
        self.voting = voting
        self.limits = limits
        self.addresses = ClientAddresses() if addresses is None else addresses
        self.slow_client_s = slow_client_s
        self.ping_interval_s = ping_interval_s
        self.sse_keepalive_s = sse_keepalive_s
        self.closing = False
        self._connections: set[LiveConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        self._protocol: type[asyncio.Protocol] | None = None

    def use_websocket_protocol(self, protocol: type[asyncio.Protocol]) -> None:
        """Keep the class for uvicorn's `ws=` that the composition root built on this gateway
        (`LiveEndpoints.websocket_protocol`), so that whoever configures uvicorn finds it here."""
        self._protocol = protocol

    @property
    def websocket_protocol(self) -> type[asyncio.Protocol]:
        """For uvicorn's `ws=` setting: serves /v1/polls/{id}/live natively (uvicorn_ws.py).
        Only after `use_websocket_protocol`: the gateway does not build its transports."""
        if self._protocol is None:
            raise RuntimeError("no WebSocket protocol handed over: see LiveEndpoints.bound_to")
        return self._protocol

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        """`run()` in a task of its own, for callers without a supervisor (tests, benchmarks);
        a crash is logged."""
        task = asyncio.get_running_loop().create_task(self.run(), name="tally-live")
        task.add_done_callback(self._finished)

    async def run(self) -> None:
        """The live side's own work, for a supervisor to own: start the upstream subscription
        (it reconnects by itself) and ping every connection once per interval, until `shutdown`
        stops it. A crash propagates to the caller."""
        self.hub.start()
        self._sweeper = asyncio.current_task()
        try:
            await self._sweep()
        except asyncio.CancelledError:
            if not self.closing:
                raise
            # shutdown() stopped the sweep: a normal end

    def opened(self, connection: LiveConnection) -> None:
        """A connection was admitted (its limits slot taken)."""
        self._connections.add(connection)

    def forget(self, connection: LiveConnection, ip: str, *, admitted: bool) -> None:
        """A connection is gone: drop it, and give its limits slot back if it held one."""
        self._connections.discard(connection)
        if admitted:
            self.limits.release(ip)
        if self.closing and not self._connections:
            self._drained.set()

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a connection's background work (joining a channel, a vote) with an owner."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live connection work failed", exc_info=task.exception())

    async def shutdown(self, timeout_s: float) -> None:
        """Close every live connection and the upstream subscription within `timeout_s`.

        1. refuse new connections (503 at the WebSocket handshake and on SSE requests);
        2. stop reading messages; votes in flight get up to half the time to be answered;
        3. close every WebSocket with 1012 (service restart) and end every SSE stream;
        4. wait for them to go until the deadline, then cut the connections still open;
        5. stop the keepalive sweep, cancel leftover work, close the upstream subscription.
        Calling it again waits for the first call."""
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._shut_down(timeout_s))
        await asyncio.shield(self._shutdown)

    async def _shut_down(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.closing = True  # 1
        for connection in list(self._connections):  # 2
            connection.stop_reading()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s / 2)
        for connection in list(self._connections):  # 3
            connection.close(1012, "server restarting")
        if self._connections:  # 4
            try:
                async with asyncio.timeout_at(deadline):
                    await self._drained.wait()
            except TimeoutError:
                log.warning("%d live connections outlived the shutdown", len(self._connections))
                for connection in list(self._connections):
                    connection.abort()
        if self._sweeper is not None:  # 5
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close()

    async def _sweep(self) -> None:
        """Ping every connection once per interval, in slices, so 20k sockets never stall the loop."""
        while True:
            await asyncio.sleep(self.ping_interval_s)
            for n, connection in enumerate(list(self._connections), 1):
                connection.keepalive()
                if n % _SWEEP_SLICE == 0:
                    await asyncio.sleep(0)

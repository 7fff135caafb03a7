"""The one HTTP server stack every Tally process (and the benchmark baseline) runs on.

Keeping the uvicorn settings in one place is what makes `tally bench`'s baseline honest: the
Starlette hello-world it compares against is served by exactly this configuration.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from starlette.types import ASGIApp


def server_config(
    app: ASGIApp, host: str, port: int, *, graceful_timeout_s: float = 10.0
) -> uvicorn.Config:
    """uvicorn on uvloop + httptools, no access log (a log line per vote is hot-path work)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",  # the composition root (tally.wiring) owns startup and shutdown
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # no trusted proxy in front by default; client IPs come from the socket
        date_header=False,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),  # uvicorn takes whole seconds
        backlog=4096,
    )


class GatewayServer(uvicorn.Server):
    """uvicorn, minus its own signal capture: Tally's supervisor installs the handlers and owns the
    shutdown order (uvicorn's capture re-raises SIGINT afterwards, which would skip stopping
    Valkey).

    `before_shutdown` runs first when the server stops: the gateway closes its live connections
    there, since uvicorn does not know the native WebSockets and would otherwise wait out its
    whole graceful timeout on open SSE streams. `after_startup` runs once the socket listens."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
        after_startup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown
        self._after_startup = after_startup

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._after_startup is not None:
            await self._after_startup()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._before_shutdown()
        await super().shutdown(sockets)

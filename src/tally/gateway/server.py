"""The one HTTP server stack every Tally process (and the benchmark baseline) runs on.

Keeping the uvicorn settings in one place is what makes `tally bench`'s baseline honest: the
Starlette hello-world it compares against is served by exactly this configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from tally.gateway.tls import HSTS, hsts_value


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


def use_tls(config: uvicorn.Config, context: ssl.SSLContext, hsts_max_age_s: int) -> None:
    """Serve `config` over TLS with `context` (gateway.tls.server_context), HSTS on every
    response uvicorn writes. Plain HTTP leaves the config untouched, with no HSTS."""
    config.ssl_context_factory = lambda _config, _default: context
    config.headers = [*config.headers, (HSTS, hsts_value(hsts_max_age_s))]


class GatewayServer(uvicorn.Server):
    """uvicorn, minus its own signal capture: Tally's supervisor installs the handlers and owns the
    shutdown order (uvicorn's capture re-raises SIGINT afterwards, which would skip stopping
    Valkey).

    `before_shutdown` runs first when the server stops: the gateway closes its live connections
    there, since uvicorn does not know the native WebSockets and would otherwise wait out its
    whole graceful timeout on open SSE streams. `after_startup` runs once the socket listens.

    Over TLS (use_tls) a handshake must finish within `handshake_timeout_s`: uvicorn does not
    pass a handshake timeout to the event loop (the loop's default is 60 s), and its protocol,
    with the edge's deadlines, only sees a connection once the handshake is done."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
        after_startup: Callable[[], Awaitable[None]] | None = None,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown
        self._after_startup = after_startup
        self._handshake_timeout_s = handshake_timeout_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.config.ssl is None:
            await super().startup(sockets)
        else:
            await self._listen_tls(sockets)
        if self.started and self._after_startup is not None:
            await self._after_startup()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._before_shutdown()
        await super().shutdown(sockets)

    async def _listen_tls(self, sockets: list[socket.socket] | None) -> None:
        """uvicorn's startup for the two ways Tally listens (its own host:port, or the sockets
        a `--workers` parent bound), with the handshake deadline uvicorn leaves out."""
        config = self.config
        await self.lifespan.startup()  # "off" in Tally (server_config); kept for uvicorn's state

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]  # uvicorn's own call
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        tls, backlog, handshake_s = config.ssl, config.backlog, self._handshake_timeout_s
        if sockets is not None:
            self.servers = [
                await loop.create_server(
                    protocol, sock=sock, ssl=tls, backlog=backlog, ssl_handshake_timeout=handshake_s
                )
                for sock in sockets
            ]
        else:
            self.servers = [
                await loop.create_server(
                    protocol,
                    host=config.host,
                    port=config.port,
                    ssl=tls,
                    backlog=backlog,
                    ssl_handshake_timeout=handshake_s,
                )
            ]
        self.started = True

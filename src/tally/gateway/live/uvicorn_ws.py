"""Serving the native live WebSocket (websocket.py) on uvicorn's own port, through uvicorn's `ws=`
setting: upgrades to /v1/polls/{id}/live become LiveSockets with no ASGI task behind them; every
other WebSocket path goes to uvicorn's usual ASGI protocol (websockets-sansio).

uvicorn hands an upgrade over by building `ws(config=..., server_state=..., app_state=...)`, then
calling `connection_made(transport)` and `data_received(<the request head>)` before switching the
transport to it; the path is known only then, so the class below chooses there and forwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tally.gateway.live.host import LiveHost
from tally.gateway.live.websocket import LIVE_PATH, LiveSocket


def uvicorn_protocol(gateway: LiveHost) -> type[asyncio.Protocol]:
    """A class for uvicorn's `ws=` setting, bound to this gateway (module docstring)."""

    class LiveOrAsgiWebSocket(asyncio.Protocol):
        """Chooses by path, then forwards every transport event to the chosen protocol."""

        __slots__ = ("_inner", "_kwargs", "_transport")

        def __init__(self, **kwargs: Any) -> None:
            # uvicorn passes config, server_state and app_state, as it does to its own classes.
            self._kwargs: dict[str, Any] | None = kwargs
            self._inner: asyncio.Protocol | None = None
            self._transport: asyncio.BaseTransport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._transport = transport

        def data_received(self, data: bytes) -> None:
            if self._inner is None:  # uvicorn replays the whole request head in one call
                assert self._kwargs is not None
                assert self._transport is not None
                target = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b""
                live = LIVE_PATH.fullmatch(target.decode("latin-1")) is not None
                inner = LiveSocket(gateway) if live else WebSocketsSansIOProtocol(**self._kwargs)
                self._inner, self._kwargs = inner, None
                inner.connection_made(self._transport)
            self._inner.data_received(data)

        def eof_received(self) -> bool | None:
            return None if self._inner is None else self._inner.eof_received()

        def pause_writing(self) -> None:
            if self._inner is not None:
                self._inner.pause_writing()

        def resume_writing(self) -> None:
            if self._inner is not None:
                self._inner.resume_writing()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._inner is not None:
                self._inner.connection_lost(exc)

    return LiveOrAsgiWebSocket

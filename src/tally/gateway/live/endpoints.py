"""The live transports of one gateway, built together on it by the composition root.

    live = LiveGateway(hub, voting, limits, slow_client_s=...)
    endpoints = LiveEndpoints.bound_to(live)
    app = create_app(..., live=endpoints)          # routes the two ASGI endpoints
    config.ws = endpoints.websocket_protocol        # uvicorn serves /live natively

This module and the composition root are the only places that know both sides: the transports
see the gateway as a `LiveHost`, and the gateway never imports a transport.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp

from tally.gateway.live.asgi_socket import AsgiLiveSocket
from tally.gateway.live.host import LiveHost
from tally.gateway.live.sse import EventStreams
from tally.gateway.live.uvicorn_ws import uvicorn_protocol


@dataclass(frozen=True, slots=True)
class LiveEndpoints:
    events: ASGIApp
    """GET /v1/polls/{poll_id}/events: the snapshots as Server-Sent Events (sse.py)."""
    websocket: ASGIApp
    """/v1/polls/{poll_id}/live as a plain ASGI WebSocket, for servers without `websocket_protocol`
    (asgi_socket.py)."""
    websocket_protocol: type[asyncio.Protocol]
    """For uvicorn's `ws=` setting: /v1/polls/{poll_id}/live natively (uvicorn_ws.py)."""

    @classmethod
    def bound_to(cls, host: LiveHost) -> LiveEndpoints:
        """Every live transport, serving the connections of `host` (a LiveGateway)."""
        return cls(EventStreams(host), AsgiLiveSocket(host), uvicorn_protocol(host))

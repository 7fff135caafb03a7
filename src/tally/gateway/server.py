"""The one HTTP server stack every Tally gateway (and the benchmark baseline) runs on.

Keeping the uvicorn settings in one place is what makes `tally bench`'s baseline honest: the
Starlette hello-world it compares against is served by exactly this configuration.
"""

from __future__ import annotations

import math

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
        lifespan="off",  # the composition root (wiring.py) owns startup and shutdown
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # no trusted proxy in front by default; client IPs come from the socket
        date_header=False,
        timeout_graceful_shutdown=math.ceil(graceful_timeout_s),  # uvicorn takes whole seconds
        backlog=4096,
    )

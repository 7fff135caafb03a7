"""The baseline `tally bench` compares the vote endpoint against.

Starlette's hello world served on exactly the gateway's stack (`server_config`), so the ratio
vote/baseline isolates what Tally adds per request: routing, validation and the Valkey round
trip, not the cost of uvicorn or the event loop.

Run it as `python -m tally.bench.baseline --port N`: it prints nothing unless something goes
wrong, and shuts down gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tally.gateway.server import server_config


async def hello(request: Request) -> JSONResponse:
    """The cheapest JSON response Starlette can give."""
    return JSONResponse({"hello": "world"})


def create_app() -> Starlette:
    """A Starlette app with the single route `GET /hello`."""
    return Starlette(routes=[Route("/hello", hello, methods=["GET"])])


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the baseline app until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tally.bench.baseline",
        description="Serve the benchmark baseline (GET /hello) on the gateway's server stack.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to bind")
    args = parser.parse_args(argv)
    uvicorn.Server(server_config(create_app(), args.host, args.port)).run()


if __name__ == "__main__":
    main()

"""`/v1/demo/token`: fresh voter tokens for the web page, in the local demo only.

A real deployment's voters get tokens from the identity provider. `tally serve --demo` on an
embedded store has the local DevIssuer instead, and this endpoint lets the page ask it for a
token of a new random voter:

    GET  /v1/demo/token   204: tokens are available here (the page shows its button)
    POST /v1/demo/token   201 {"token", "subject", "expires_in"}

Both answer 404 `not-found`, exactly like a path Tally does not serve, unless all of these hold:
- the route was built enabled (`--demo` with the embedded store and its dev issuer);
- the client's socket address is loopback (uvicorn runs without proxy headers, so it is the peer);
- the Host header names a loopback host, so a page on another site cannot reach the endpoint by
  pointing its own DNS name at 127.0.0.1 (DNS rebinding) and read the token same-origin.
No CORS headers are sent, so another origin's page cannot read a token either.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Final
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tally.gateway.problems import Problem, problem_response
from tally.security.dev_issuer import DevIssuer

PATH: Final = "/v1/demo/token"
TOKEN_TTL_S: Final = 24 * 3600
_NO_STORE: Final = {"Cache-Control": "no-store"}


def demo_token_routes(issuer: DevIssuer | None, *, enabled: bool) -> list[Route]:
    """The demo token route when `enabled` and there is a dev issuer; otherwise none (404)."""
    if not enabled or issuer is None:
        return []
    return [Route(PATH, DemoTokenEndpoint(issuer))]


class DemoTokenEndpoint:
    """The endpoint as a bare ASGI app, so the loopback check runs before any method check."""

    def __init__(self, issuer: DevIssuer) -> None:
        self._issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self._answer(request)
        await response(scope, receive, send)

    def _answer(self, request: Request) -> Response:
        if not _from_loopback(request):
            return problem_response(Problem(404, "not-found"), request.url.path)
        if request.method in ("GET", "HEAD"):
            return Response(status_code=204, headers=_NO_STORE)
        if request.method != "POST":
            problem = Problem(405, "method-not-allowed")
            problem.headers["Allow"] = "GET, HEAD, POST"
            return problem_response(problem, request.url.path)
        subject = "demo-" + secrets.token_hex(8)
        token = self._issuer.mint(subject, ttl_s=TOKEN_TTL_S)
        body = {"token": token, "subject": subject, "expires_in": TOKEN_TTL_S}
        return Response(orjson.dumps(body), 201, _NO_STORE, media_type="application/json")


def _from_loopback(request: Request) -> bool:
    client = request.client
    return (
        client is not None
        and _is_loopback(client.host)
        and _is_loopback(_host_name(request.headers.get("host", "")))
    )


def _host_name(host_header: str) -> str | None:
    try:
        return urlsplit("//" + host_header).hostname
    except ValueError:  # an unbalanced "[" in an IPv6 literal
        return None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback

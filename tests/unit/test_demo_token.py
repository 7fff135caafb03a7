"""The demo token route's gate: built only when enabled with a dev issuer, answering only
loopback clients (checked in-process, where the client address can be chosen)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from tally.gateway.demo_token import PATH, demo_token_routes
from tally.security.dev_issuer import DevIssuer


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    return DevIssuer.load_or_create(tmp_path_factory.mktemp("keys"))


async def answer(issuer: DevIssuer, client_host: str, method: str) -> int:
    app = Starlette(routes=demo_token_routes(issuer, enabled=True))
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        return (await http.request(method, PATH)).status_code


def test_no_route_is_built_unless_enabled_with_an_issuer(issuer: DevIssuer) -> None:
    """Disabled (no --demo, or an external store) or without a dev issuer, there is no route."""
    assert demo_token_routes(issuer, enabled=False) == []
    assert demo_token_routes(None, enabled=True) == []
    assert len(demo_token_routes(issuer, enabled=True)) == 1


@pytest.mark.parametrize("client_host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_loopback_clients_are_answered(issuer: DevIssuer, client_host: str) -> None:
    """Every loopback address, IPv4, IPv6 and IPv4-mapped, may ask for demo tokens."""
    assert await answer(issuer, client_host, "GET") == 204
    assert await answer(issuer, client_host, "POST") == 201


@pytest.mark.parametrize("client_host", ["192.0.2.7", "10.0.0.1", "::ffff:192.0.2.7", "fd00::2"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_other_clients_get_not_found(
    issuer: DevIssuer, client_host: str, method: str
) -> None:
    """A client from any other address gets 404 for every method: the route does not show."""
    assert await answer(issuer, client_host, method) == 404


async def test_a_loopback_client_gets_405_for_other_methods(issuer: DevIssuer) -> None:
    """On loopback, methods other than GET, HEAD and POST are refused with 405."""
    assert await answer(issuer, "127.0.0.1", "DELETE") == 405

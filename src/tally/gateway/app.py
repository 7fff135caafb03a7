"""The gateway's ASGI application: routes, and the one place errors become problem documents."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp

from tally.domain.errors import TallyError
from tally.gateway import openapi
from tally.gateway.docs import docs_routes
from tally.gateway.live.endpoints import LiveEndpoints
from tally.gateway.ops import OpsRoutes
from tally.gateway.pages import page_routes
from tally.gateway.problems import Problem, from_error, problem_response
from tally.gateway.routes import Handlers, poll_id_param
from tally.gateway.votes import HotPathRouter, VoteEndpoint, VoteRoute

log = logging.getLogger("tally.gateway")


def create_app(
    handlers: Handlers,
    votes: VoteEndpoint,
    ops: OpsRoutes,
    demo_routes: Sequence[BaseRoute] = (),
    *,
    live: LiveEndpoints | None = None,
    ledger: Sequence[BaseRoute] = (),
    review: Sequence[BaseRoute] = (),
    challenges: Sequence[BaseRoute] = (),
    signin: Sequence[BaseRoute] = (),
    present: Sequence[BaseRoute] = (),
    exports: Sequence[BaseRoute] = (),
) -> ASGIApp:
    spec = orjson.dumps(openapi.build())

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    routes: list[BaseRoute] = [
        Route("/v1/polls/{poll_id}/results", handlers.results, methods=["GET"]),
        Route("/v1/polls/{poll_id}/votes", VoteRoute(votes), methods=["POST"]),
        Route("/v1/polls", handlers.polls, methods=["GET", "POST"]),
        Route("/v1/polls/{poll_id}", handlers.get_poll, methods=["GET"]),
        Route("/v1/polls/{poll_id}/open", handlers.open_poll, methods=["POST"]),
        Route("/v1/polls/{poll_id}/close", handlers.close_poll, methods=["POST"]),
        *ops.routes(),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *page_routes(),
        *docs_routes(),
        *ledger,
        *review,
        *challenges,
        *signin,  # /auth/*: voter sign-in (gateway/signin.py)
        *present,  # /j/{code}, /v1/polls/{poll_id}/qr.svg
        *exports,  # /v1/polls/{poll_id}/results.csv and turnout.csv (gateway/export.py)
        *demo_routes,
    ]
    if live is not None:
        # The live WebSocket is served natively when uvicorn runs with live.websocket_protocol;
        # this route answers it on servers without that hook.
        routes.append(WebSocketRoute("/v1/polls/{poll_id}/live", live.websocket))
        routes.append(Route("/v1/polls/{poll_id}/live", _upgrade_required, methods=["GET"]))
        routes.append(Route("/v1/polls/{poll_id}/events", live.events, methods=["GET"]))
    app = Starlette(
        routes=routes,
        exception_handlers={
            Problem: _on_problem,
            TallyError: _on_domain_error,
            HTTPException: _on_http_exception,
            Exception: _on_crash,
        },
    )
    app.router.redirect_slashes = False  # a redirect would turn /v1/polls/..%2f into /v1/
    return HotPathRouter(app, votes)


async def _upgrade_required(request: Request) -> Response:
    """A plain GET of the live WebSocket's path: 426 says how to connect (a 404 said the poll
    was missing, though it may exist)."""
    poll_id_param(request)  # 400 invalid-poll-id first, as on every poll route
    problem = Problem(426, "upgrade-required", "this is a WebSocket: send Upgrade: websocket")
    problem.headers["Upgrade"] = "websocket"
    return problem_response(problem, request.url.path)


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TallyError)
    return problem_response(from_error(exc), request.url.path)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "internal-error")
    problem = Problem(exc.status_code, code)
    if exc.headers:
        problem.headers.update(exc.headers)
    return problem_response(problem, request.url.path)


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(Problem(500, "internal-error"), request.url.path)

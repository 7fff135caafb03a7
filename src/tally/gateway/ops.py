"""The operations endpoints of a process that serves no API: `/healthz`, `/readyz`, `/metrics`.

`tally aggregator` and `tally archiver` serve this app on their own port (loopback by default),
so an orchestrator can probe them and Prometheus can scrape them like a gateway. The answers
have the gateway's shapes: `{"status": "ok"}`, `{"status": "ready"}` or a 503 problem, and the
Prometheus text of the process's `Metrics`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tally.domain.errors import StoreUnavailable
from tally.gateway.metrics import Metrics
from tally.gateway.problems import Problem, from_error, problem_response
from tally.gateway.routes import json_response

# A readiness check: None when the process can do its work, else the reason it cannot.
# It may raise StoreUnavailable, which reads as "the store cannot be reached".
ReadinessCheck = Callable[[], Awaitable[str | None]]


class OpsRoutes:
    """Liveness (the process answers), readiness (each check passes, in order) and metrics."""

    def __init__(self, metrics: Metrics, checks: Sequence[ReadinessCheck]) -> None:
        self._metrics = metrics
        self._checks = tuple(checks)

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        for check in self._checks:
            try:
                reason = await check()
            except StoreUnavailable as exc:
                return problem_response(from_error(exc), request.url.path)
            if reason is not None:
                return problem_response(Problem(503, "store-unavailable", reason), request.url.path)
        return json_response({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        return Response(await self._metrics.scrape(), media_type="text/plain; version=0.0.4")


def ops_app(metrics: Metrics, checks: Sequence[ReadinessCheck]) -> ASGIApp:
    return Starlette(routes=OpsRoutes(metrics, checks).routes())

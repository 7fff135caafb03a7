"""The witness's HTTP interface (C2SP tlog-witness), as a Starlette app.

    POST /add-checkpoint              cosign a checkpoint (tally.witness.witness for the rules)
    GET  /<origin hash>/checkpoint    the latest checkpoint it cosigned for that log (monitors)
    GET  /healthz                     {"status": "ok", "key": "<the witness's verifier key>"}

The submission and monitoring prefixes are both the server's root. The blocking part of a
request (signature checks, the fsynced state write) runs in a worker thread; the per-origin lock
is a thread lock, so concurrent requests for one log are serialised there.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tally.witness.protocol import MAX_REQUEST_BYTES
from tally.witness.witness import Answer, Witness, problem

__all__ = ["witness_app"]


def witness_app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                answer = problem(413, "too-large", f"the body is over {MAX_REQUEST_BYTES} bytes")
                return _respond(answer)
        return _respond(await asyncio.to_thread(witness.add_checkpoint, bytes(body)))

    async def checkpoint(request: Request) -> Response:
        stored = await asyncio.to_thread(witness.latest, request.path_params["digest"])
        if stored is None:
            answer = problem(404, "unknown-log", "this witness has cosigned no such log")
            return _respond(answer)
        return Response(stored, media_type="text/plain; charset=utf-8")

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "key": str(witness.cosigner.verifier),
                "cosigned": witness.cosigned,
                "refused": witness.refused,
            }
        )

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{digest}/checkpoint", checkpoint, methods=["GET"]),
        ]
    )


def _respond(answer: Answer) -> Response:
    # The content type as given: Starlette would add "; charset=utf-8" to text/x.tlog.size,
    # which tlog-witness spells exactly.
    return Response(answer.body, answer.status, headers={"content-type": answer.content_type})

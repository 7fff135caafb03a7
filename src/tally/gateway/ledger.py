"""The published ledger over HTTP, read-only: static files under /ledger, and receipt proofs.

Everything here is public and cacheable. Files that never change (tiles, bundles, history
checkpoints, the certificate) are served as immutable for a year; a log's latest checkpoint and
the history document change as the log grows, so they may be cached for one second only.
Paths are checked against the one spelling each file has (tlog-tiles paths, decimal sizes), so
no request can name anything outside the ledger. The files come through a ports.LedgerReader,
whose reads never block the event loop.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tally.gateway.problems import Problem
from tally.gateway.routes import json_response, poll_id_param
from tally.ledger import layout
from tally.ledger.merkle import leaf_hash
from tally.ledger.proof import InclusionProofText
from tally.ledger.tiles import TileError, parse_path
from tally.ports import LedgerReader, ProvenEntry
from tally.service import VotingService

IMMUTABLE = "public, max-age=31536000, immutable"
FRESH = "public, max-age=1"
NOTE = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
_MAX_ENTRY_ID = 2**64 - 1

__all__ = ["LedgerRoutes"]


class LedgerRoutes:
    def __init__(
        self,
        files: LedgerReader,
        service: VotingService,
        *,
        retry_after_s: int,
        admission_keys: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        """`admission_keys`: the registered gateway admission keys, one line each, served at
        /ledger/keys after the ledger key."""
        self._files = files
        self._service = service
        self._retry_after = str(retry_after_s)
        self._admission_keys = admission_keys

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ledger/keys", self.keys, methods=["GET"]),
            Route("/ledger/{poll_id}/certificate", self.certificate, methods=["GET"]),
            Route("/ledger/{poll_id}/checkpoints", self.history, methods=["GET"]),
            Route("/ledger/{poll_id}/{log}/checkpoint", self.checkpoint, methods=["GET"]),
            Route(
                "/ledger/{poll_id}/{log}/checkpoints/{size}", self.old_checkpoint, methods=["GET"]
            ),
            Route("/ledger/{poll_id}/{log}/tile/{path:path}", self.tile, methods=["GET"]),
            Route(
                "/v1/polls/{poll_id}/receipts/{lane}/{entry_id}/proof", self.proof, methods=["GET"]
            ),
        ]

    async def keys(self, request: Request) -> Response:
        """The ledger's verifier key (first line, as ever), then one line per gateway admission
        key: ``<verifier key> <not before ms> <not after ms, 0: no end>``."""
        data = await self._files.keys()
        if data is None:
            raise Problem(404, "not-found", "no ledger key has been published yet")
        if self._admission_keys is not None:
            lines = await self._admission_keys()
            data = data + "".join(f"{line}\n" for line in lines).encode()
        return Response(data, headers={"Cache-Control": "public, max-age=300"}, media_type=NOTE)

    async def certificate(self, request: Request) -> Response:
        poll_id = poll_id_param(request)
        return await self._file(
            poll_id,
            layout.CERTIFICATE,
            IMMUTABLE,
            NOTE,
            "no certificate: the poll is not closed and certified",
        )

    async def history(self, request: Request) -> Response:
        poll_id = poll_id_param(request)
        logs = await self._files.history(poll_id)
        if logs is None:
            raise Problem(404, "not-found", "no ledger for this poll yet")
        body = layout.encode_history(poll_id, logs)
        return Response(body, headers={"Cache-Control": FRESH}, media_type="application/json")

    async def checkpoint(self, request: Request) -> Response:
        poll_id, log = poll_id_param(request), _log(request)
        return await self._file(
            poll_id, layout.checkpoint_path(log), FRESH, NOTE, "no checkpoint of this log yet"
        )

    async def old_checkpoint(self, request: Request) -> Response:
        poll_id, log = poll_id_param(request), _log(request)
        try:
            size = layout.parse_size(request.path_params["size"])
        except layout.LayoutError:
            raise Problem(
                404, "invalid-ledger-path", "a checkpoint is named by its tree size"
            ) from None
        return await self._file(
            poll_id, layout.history_path(log, size), IMMUTABLE, NOTE, "no checkpoint of that size"
        )

    async def tile(self, request: Request) -> Response:
        poll_id, log = poll_id_param(request), _log(request)
        relative = "tile/" + request.path_params["path"]
        try:
            parse_path(relative)
        except TileError:
            raise Problem(404, "invalid-ledger-path", "not a tlog-tiles path") from None
        return await self._file(poll_id, f"{log}/{relative}", IMMUTABLE, BINARY, "no such tile")

    async def proof(self, request: Request) -> Response:
        """A receipt's leaf, index and inclusion proof against its lane's latest checkpoint."""
        poll_id = poll_id_param(request)
        lane = _number(request.path_params["lane"], 0xFFFF, "lane")
        entry_id = _number(request.path_params["entry_id"], _MAX_ENTRY_ID, "entry id")
        poll = await self._service.get_poll(poll_id)  # 404 for an unknown poll
        if lane >= poll.lanes or entry_id < 1:
            raise Problem(404, "not-found", f"poll {poll_id} has no lane {lane} entry {entry_id}")
        proven = await self._files.entry(poll_id, layout.lane_log(lane), entry_id - 1)
        if proven is None:
            problem = Problem(
                404,
                "not-archived",
                f"entry {entry_id} of lane {lane} is not in a published checkpoint yet",
            )
            problem.headers["Retry-After"] = self._retry_after
            raise problem
        return json_response(_proof_doc(poll_id, lane, entry_id, proven))

    async def _file(
        self, poll_id: str, relative: str, cache: str, media_type: str, missing: str
    ) -> Response:
        data = await self._files.read(poll_id, relative)
        if data is None:
            raise Problem(404, "not-found", missing)
        return Response(data, headers={"Cache-Control": cache}, media_type=media_type)


def _proof_doc(poll_id: str, lane: int, entry_id: int, proven: ProvenEntry) -> dict[str, object]:
    text = InclusionProofText(proven.index, tuple(proven.proof), proven.checkpoint, proven.entry)
    return {
        "poll_id": poll_id,
        "lane": lane,
        "entry_id": entry_id,
        "index": proven.index,
        "leaf": base64.b64encode(proven.entry).decode(),
        "leaf_hash": leaf_hash(proven.entry).hex(),
        "tree_size": proven.tree_size,
        "root": base64.b64encode(proven.root).decode(),
        "proof": [base64.b64encode(h).decode() for h in proven.proof],
        "checkpoint": proven.checkpoint.decode(),
        "tlog_proof": text.format().decode(),
    }


def _log(request: Request) -> str:
    name: str = request.path_params["log"]
    try:
        layout.parse_log(name)
    except layout.LayoutError:
        raise Problem(404, "invalid-ledger-path", "a log is 'admin' or a lane number") from None
    return name


def _number(text: str, maximum: int, what: str) -> int:
    if (
        not text.isascii()
        or not text.isdigit()
        or (len(text) > 1 and text[0] == "0")
        or int(text) > maximum
    ):
        raise Problem(404, "not-found", f"{what} must be a decimal number up to {maximum}")
    return int(text)

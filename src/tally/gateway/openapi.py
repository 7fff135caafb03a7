"""The OpenAPI 3.1 document served at /openapi.json. Request schemas come from the same msgspec
shapes the handlers decode with, so the document cannot drift from what is enforced."""

from __future__ import annotations

from typing import Any

import msgspec

from tally import __version__
from tally.domain.polls import POLL_ID_PATTERN
from tally.gateway.bodies import CreatePollBody, VoteBody
from tally.gateway.review import DecisionBody

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": "problem",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
        for s in statuses
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _op(
    summary: str, responses: dict[str, Any], *, body: str | None = None, auth: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if auth:
        op["security"] = [{"bearer": []}]
    return op


_LOG = {
    "name": "log",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^(admin|0|[1-9][0-9]*)$"},
    "description": "'admin' or a lane number",
}


def build() -> dict[str, Any]:
    _, shapes = msgspec.json.schema_components(
        [CreatePollBody, VoteBody, DecisionBody], ref_template="#/components/schemas/{name}"
    )
    poll_id = [
        {
            "name": "poll_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": POLL_ID_PATTERN},
        }
    ]
    schemas: dict[str, Any] = dict(shapes)
    schemas.update(
        {
            "Option": {
                "type": "object",
                "required": ["id", "label"],
                "properties": {"id": {"type": "string"}, "label": {"type": "string"}},
            },
            "Poll": {
                "type": "object",
                "required": [
                    "id",
                    "title",
                    "options",
                    "state",
                    "lanes",
                    "closes_at",
                    "created_at",
                    "defences",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "options": {"type": "array", "items": {"$ref": "#/components/schemas/Option"}},
                    "state": {"enum": ["draft", "open", "closed"]},
                    "lanes": {"type": "integer"},
                    "closes_at": {"type": ["string", "null"], "format": "date-time"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "defences": {"$ref": "#/components/schemas/Defences"},
                    "integrity": {"$ref": "#/components/schemas/Integrity"},
                },
            },
            "Integrity": {
                "type": "array",
                "description": "Present only when the archiver raised an integrity alarm on the "
                "poll: its live counters disagree with its ledger, or the ledger lost entries",
                "items": {
                    "type": "object",
                    "required": ["kind", "lane", "details", "first_seen"],
                    "properties": {
                        "kind": {"enum": ["counter-mismatch", "ledger-gap", "unsigned-vote"]},
                        "lane": {"type": ["integer", "null"], "description": "null: admin log"},
                        "details": {"type": "string"},
                        "first_seen": {"type": "string", "format": "date-time"},
                    },
                },
            },
            "Rate": {
                "type": ["object", "null"],
                "description": "A GCRA limit; null turns it off",
                "properties": {"per_s": {"type": "number"}, "burst": {"type": "integer"}},
            },
            "Defences": {
                "type": "object",
                "description": "The poll's rate limits, proof-of-work challenge and risk rules "
                "(tally.domain.defences). In a create request every field is optional and "
                "overrides the server's defaults (TALLY_DEFENCES).",
                "properties": {
                    "limits": {
                        "type": "object",
                        "properties": {
                            scope: {"$ref": "#/components/schemas/Rate"}
                            for scope in ("address", "subnet", "voter", "poll")
                        },
                    },
                    "pow": {
                        "type": "object",
                        "properties": {
                            "difficulty": {"type": "integer", "minimum": 0, "maximum": 32},
                            "max_difficulty": {"type": "integer", "minimum": 0, "maximum": 32},
                            "ttl_s": {"type": "integer", "minimum": 1, "maximum": 3600},
                        },
                    },
                    "risk": {
                        "type": "object",
                        "properties": {
                            "rules": {"type": "array", "items": {"type": "object"}},
                            "challenge_at": {"type": "integer"},
                            "hold_at": {"type": "integer"},
                            "harder_by": {"type": "integer"},
                        },
                    },
                },
            },
            "PollList": {
                "type": "object",
                "properties": {
                    "polls": {"type": "array", "items": {"$ref": "#/components/schemas/Poll"}}
                },
            },
            "Receipt": {
                "type": "object",
                "required": ["poll_id", "lane", "entry_id", "option", "accepted_at", "leaf_hash"],
                "properties": {
                    "status": {
                        "enum": ["held", "released", "voided"],
                        "description": "only for a vote held for review; absent: accepted",
                    },
                    "poll_id": {"type": "string"},
                    "lane": {"type": "integer"},
                    "entry_id": {
                        "type": "integer",
                        "description": "1-based position in the lane's ledger",
                    },
                    "option": {"type": "string"},
                    "accepted_at": {"type": "string", "format": "date-time"},
                    "leaf_hash": {
                        "type": "string",
                        "description": "hex SHA-256 Merkle leaf hash of the vote's ledger record "
                        "(docs/ledger-format.md); check it with `tally audit receipt`",
                    },
                    "pseudonym": {
                        "type": "string",
                        "description": "hex, 16 bytes: the voter's pseudonym in this poll",
                    },
                    "admission": {
                        "type": "object",
                        "description": "the admitting gateway's Ed25519 signature of the vote, "
                        "checkable with its admission key (GET /ledger/keys); absent for a vote "
                        "from before admission signatures",
                        "required": ["key_id", "admitted_at", "signature"],
                        "properties": {
                            "key_id": {"type": "string", "description": "8 hex digits"},
                            "admitted_at": {"type": "string", "format": "date-time"},
                            "signature": {"type": "string", "description": "128 hex digits"},
                        },
                    },
                },
            },
            "Challenge": {
                "type": "object",
                "required": ["challenge", "algorithm", "difficulty", "expires_at"],
                "properties": {
                    "challenge": {"type": "string", "description": "signed; solve it as is"},
                    "algorithm": {"const": "SHA-256"},
                    "difficulty": {"type": "integer", "description": "leading zero bits"},
                    "expires_at": {"type": "string", "format": "date-time"},
                },
            },
            "VoteAccepted": {
                "type": "object",
                "properties": {"receipt": {"$ref": "#/components/schemas/Receipt"}},
            },
            "VoteHeld": {
                "type": "object",
                "description": "An admission check held the vote for review: recorded, not "
                "counted unless a reviewer releases it.",
                "properties": {
                    "receipt": {"$ref": "#/components/schemas/Receipt"},
                    "held": {"type": "object", "properties": {"reason": {"type": "string"}}},
                },
            },
            "Results": {
                "type": "object",
                "required": ["poll_id", "state", "counts", "total", "under_review", "updated_at"],
                "properties": {
                    "poll_id": {"type": "string"},
                    "state": {"enum": ["draft", "open", "closed"]},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "total": {"type": "integer"},
                    "under_review": {"type": "integer", "description": "votes held, not counted"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "integrity": {"$ref": "#/components/schemas/Integrity"},
                },
            },
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details; `type` is urn:tally:problem:<code>",
                "required": ["type", "title", "status", "code"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                    "receipt": {"$ref": "#/components/schemas/Receipt"},
                },
            },
        }
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tally",
            "version": __version__,
            "description": "Realtime, auditable voting.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "paths": {
            "/v1/polls": {
                "post": _op(
                    "Create a poll (admin)",
                    {"201": _json("Poll", "created"), **_problems(400, 401, 403, 413, 415, 422)},
                    body="CreatePollBody",
                    auth=True,
                ),
                "get": {
                    **_op(
                        "List the most recent open and closed polls; with `include=drafts` and an "
                        "admin credential, the drafts too (the organiser console's list)",
                        {"200": _json("PollList", "polls"), **_problems(401, 403, 422)},
                    ),
                    "parameters": [
                        {
                            "name": "include",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["drafts"]},
                            "description": "`drafts`: list drafts too (needs the admin role: "
                            "401 without a credential, 403 without the role)",
                        }
                    ],
                    "security": [{}, {"bearer": []}],
                },
            },
            "/v1/polls/{poll_id}": {
                "parameters": poll_id,
                "get": {
                    **_op(
                        "One poll. A draft is shown to an admin only: anyone else gets the 404 of "
                        "an unknown poll",
                        {"200": _json("Poll", "the poll"), **_problems(400, 404)},
                    ),
                    "security": [{}, {"bearer": []}],
                },
            },
            "/v1/polls/{poll_id}/open": {
                "parameters": poll_id,
                "post": _op(
                    "Open a poll (admin)",
                    {"200": _json("Poll", "opened"), **_problems(400, 401, 403, 404, 409)},
                    auth=True,
                ),
            },
            "/v1/polls/{poll_id}/close": {
                "parameters": poll_id,
                "post": _op(
                    "Close a poll (admin)",
                    {"200": _json("Poll", "closed"), **_problems(400, 401, 403, 404, 409)},
                    auth=True,
                ),
            },
            "/v1/polls/{poll_id}/votes": {
                "parameters": poll_id,
                "post": _op(
                    "Vote (once per voter and poll)",
                    {
                        "201": _json("VoteAccepted", "accepted"),
                        "202": _json("VoteHeld", "held for review"),
                        **_problems(400, 401, 403, 404, 409, 413, 415, 422, 428, 429, 503),
                    },
                    body="VoteBody",
                    auth=True,
                ),
            },
            "/v1/polls/{poll_id}/challenge": {
                "parameters": poll_id,
                "get": _op(
                    "A proof-of-work challenge for the voter, at the poll's difficulty (0: any "
                    "nonce solves it). Find a nonce such that SHA-256(challenge ':' nonce) starts "
                    "with `difficulty` zero bits; send `challenge:nonce` as the vote's `proof` "
                    "before `expires_at`. A vote that needs one and lacks it gets 428 "
                    "challenge-required with the same fields; a bad answer 403 challenge-invalid "
                    "with its `reason`. Each challenge is for one voter and one vote.",
                    {"200": _json("Challenge", "a challenge"), **_problems(400, 401, 404)},
                    auth=True,
                ),
            },
            "/v1/polls/{poll_id}/results": {
                "parameters": poll_id,
                "get": _op(
                    "Current counts (ETag; 304 on If-None-Match)",
                    {
                        "200": _json("Results", "counts"),
                        "304": {"description": "unchanged"},
                        **_problems(400, 404),
                    },
                ),
            },
            "/v1/polls/{poll_id}/receipts/{lane}/{entry_id}/proof": {
                "parameters": [
                    *poll_id,
                    {"name": "lane", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {
                        "name": "entry_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    },
                ],
                "get": _op(
                    "A vote's inclusion proof against its lane's latest signed checkpoint: "
                    "leaf (base64 record), leaf_hash (hex), index, tree_size, root, proof "
                    "(base64 hashes), checkpoint (signed note) and tlog_proof (C2SP tlog-proof). "
                    "404 not-archived with Retry-After until a checkpoint covers it.",
                    {"200": {"description": "the proof"}, **_problems(400, 404)},
                ),
            },
            "/v1/polls/{poll_id}/held": {
                "parameters": poll_id,
                "get": _op(
                    "Votes held for review (reviewer or admin), grouped by reason and subnet: "
                    '{"poll_id", "under_review", "groups": [{"reason", "subnet", "count", '
                    '"truncated", "entries": [{"lane", "entry_id", "option", "reason", "subnet", '
                    '"held_at", "evidence", "address"?, "user_agent"?}]}]}; at most 1000 entries '
                    "per group. The network evidence is stored sealed; address and user_agent "
                    "are shown to the reviewer role only",
                    {"200": {"description": "application/json"}, **_problems(400, 401, 403, 404)},
                    auth=True,
                ),
            },
            "/v1/polls/{poll_id}/held/decisions": {
                "parameters": poll_id,
                "post": _op(
                    "Release or void held votes (reviewer or admin), listed or as a group; each "
                    "is logged in the admin log. Answers counts (released, voided, "
                    "already_decided, refused) and each entry's outcome (released, voided, "
                    "already-decided, conflict, not-held); open and closed polls alike",
                    {
                        "200": {"description": "application/json"},
                        **_problems(400, 401, 403, 404, 413, 415, 422, 503),
                    },
                    body="DecisionBody",
                    auth=True,
                ),
            },
            "/ledger/keys": {
                "get": _op(
                    "The ledger's verifier key (C2SP signed-note format), one per line",
                    {"200": {"description": "text/plain"}, **_problems(404)},
                )
            },
            "/ledger/{poll_id}/checkpoints": {
                "parameters": poll_id,
                "get": _op(
                    'Every published checkpoint: {"poll_id", "logs": {"admin"|"<lane>": [note]}}',
                    {"200": {"description": "application/json"}, **_problems(400, 404)},
                ),
            },
            "/ledger/{poll_id}/certificate": {
                "parameters": poll_id,
                "get": _op(
                    "The signed result certificate (docs/ledger-format.md), once closed",
                    {"200": {"description": "text/plain"}, **_problems(400, 404)},
                ),
            },
            "/ledger/{poll_id}/{log}/checkpoint": {
                "parameters": [*poll_id, _LOG],
                "get": _op(
                    "A log's latest signed checkpoint (C2SP tlog-checkpoint)",
                    {"200": {"description": "text/plain"}, **_problems(400, 404)},
                ),
            },
            "/ledger/{poll_id}/{log}/checkpoints/{size}": {
                "parameters": [
                    *poll_id,
                    _LOG,
                    {"name": "size", "in": "path", "required": True, "schema": {"type": "integer"}},
                ],
                "get": _op(
                    "The log's checkpoint at that tree size (immutable)",
                    {"200": {"description": "text/plain"}, **_problems(400, 404)},
                ),
            },
            "/ledger/{poll_id}/{log}/tile/{path}": {
                "parameters": [
                    *poll_id,
                    _LOG,
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "get": _op(
                    "A Merkle tile or entry bundle at its C2SP tlog-tiles path (immutable)",
                    {"200": {"description": "application/octet-stream"}, **_problems(400, 404)},
                ),
            },
            "/healthz": {"get": _op("Liveness", {"200": {"description": "alive"}})},
            "/readyz": {
                "get": _op(
                    "Readiness: Valkey reachable, functions loaded",
                    {"200": {"description": "ready"}, **_problems(503)},
                )
            },
            "/metrics": {
                "get": _op("Prometheus metrics", {"200": {"description": "text exposition format"}})
            },
            "/v1/polls/{poll_id}/live": {
                "parameters": poll_id,
                "get": {
                    "summary": "Live results and voting over WebSocket",
                    "description": (
                        "Upgrade to a WebSocket. The server sends the latest snapshot "
                        '`{"type":"snapshot","poll_id","seq","state","counts","total","under_review",'
                        '"ts"}` at once, '
                        "then every newer one (latest-only per client). Vote by sending "
                        '`{"type":"auth","token"}` once, then `{"type":"vote","request_id","option"[,"proof"]}`; '
                        'answers are `{"type":"vote_result","request_id","status","receipt"|"error"}` '
                        "with the HTTP vote's status codes and problem documents. Close codes: 1012 "
                        "restart, 1013 store unavailable, 4400 invalid poll id, 4404 unknown poll, "
                        "4408 too slow."
                    ),
                    "responses": {
                        "101": {"description": "switching protocols"},
                        **_problems(400, 429, 503),
                    },
                },
            },
            "/v1/polls/{poll_id}/events": {
                "parameters": poll_id,
                "get": {
                    "summary": "Live results as Server-Sent Events",
                    "description": (
                        "`event: snapshot`, `id:` the snapshot's seq, `data:` the snapshot document. "
                        "Reconnect with `Last-Event-ID` to get the latest snapshot at once if newer."
                    ),
                    "responses": {
                        "200": {"description": "text/event-stream"},
                        **_problems(400, 404, 429, 503),
                    },
                },
            },
        },
    }

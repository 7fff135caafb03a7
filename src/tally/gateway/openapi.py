"""The OpenAPI 3.1 document served at /openapi.json. Request schemas come from the same msgspec
shapes the handlers decode with, so the document cannot drift from what is enforced."""

from __future__ import annotations

from typing import Any

import msgspec

from tally import __version__
from tally.domain import defences as d
from tally.domain import polls
from tally.domain.polls import POLL_ID_PATTERN
from tally.gateway.bodies import CreatePollBody, VoteBody
from tally.gateway.review import DecisionBody

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


# The `code` each problem status can carry (problems.TITLES has them all; a test checks that
# every code is here once), so a client can switch on `code` and the schema checks both.
PROBLEM_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "malformed-json",
        "invalid-poll-id",
        "invalid-request",
        "duplicate-authorization",
        "signin-state",
        "signin-refused",
        "invalid-next",
    ),
    401: ("unauthorized", "signin-token"),
    403: ("forbidden", "challenge-invalid", "results-hidden"),
    404: (
        "not-found",
        "poll-not-found",
        "not-archived",
        "invalid-ledger-path",
        "join-code-not-found",
    ),
    405: ("method-not-allowed",),
    408: ("request-timeout",),
    409: ("invalid-transition", "already-voted", "poll-not-open"),
    413: ("body-too-large",),
    415: ("unsupported-media-type",),
    422: ("validation-failed", "unknown-option"),
    426: ("upgrade-required",),
    428: ("challenge-required",),
    429: ("rate-limited", "too-many-connections"),
    431: ("headers-too-large",),
    500: ("internal-error",),
    502: ("signin-provider",),
    503: ("store-unavailable", "shutting-down"),
}


# Headers a problem of that status comes with (where its code sets them).
_PROBLEM_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": 'Bearer realm="tally" (unauthorized)'},
    426: {"Upgrade": "websocket"},
    404: {"Retry-After": "seconds (not-archived: when a checkpoint may cover it)"},
    429: {"Retry-After": "seconds until the limit lets a request through"},
    503: {"Retry-After": "seconds (store-unavailable)"},
}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": "problem: " + ", ".join(PROBLEM_CODES[s]),
            "headers": {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in _PROBLEM_HEADERS.get(s, {}).items()
            },
            "content": {
                "application/problem+json": {
                    "schema": {
                        "allOf": [_PROBLEM],
                        "properties": {
                            "status": {"const": s},
                            "code": {"enum": list(PROBLEM_CODES[s])},
                        },
                    }
                }
            },
        }
        for s in statuses
    }


_VISIBILITY = {
    "enum": [v.value for v in polls.Visibility],
    "description": "who sees the counts before the poll closes: everyone (live), a voter once "
    "they have voted (after-vote), nobody but admins (after-close); everyone once it closes",
}


def _csv(filename: str) -> dict[str, Any]:
    return {
        "description": f"an attachment, {filename}",
        "content": {"text/csv": {"schema": {"type": "string"}}},
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
    headline = _headline(summary)
    if headline != summary:  # the docs list the headline; the whole text shows when opened
        op.update(summary=headline, description=summary)
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if auth:
        op["security"] = [{"bearer": []}]
    return op


# The docs' sections, by the path's first words (the first match wins).
TAGS: tuple[tuple[str, str], ...] = (
    ("/v1/polls/{poll_id}/held", "review"),
    ("/v1/polls/{poll_id}/votes", "voting"),
    ("/v1/polls/{poll_id}/challenge", "voting"),
    ("/v1/polls/{poll_id}/receipts", "ledger"),
    ("/v1/polls/{poll_id}/live", "live"),
    ("/v1/polls/{poll_id}/events", "live"),
    ("/v1/polls/{poll_id}/results", "results"),
    ("/v1/polls/{poll_id}/turnout", "results"),
    ("/v1/polls", "polls"),
    ("/j/", "polls"),
    ("/ledger", "ledger"),
    ("/auth", "sign-in"),
)


def _tag(path: str) -> str:
    return next((tag for prefix, tag in TAGS if path.startswith(prefix)), "operations")


def _headline(text: str) -> str:
    """The text up to its first '. ' or ': ' outside parentheses and backticks."""
    depth, code = 0, False
    for i, ch in enumerate(text):
        if ch == "`":
            code = not code
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch in ".:" and not depth and not code and text[i + 1 : i + 2] == " ":
            return text[:i]
    return text


_LOG = {
    "name": "log",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^(admin|0|[1-9][0-9]*)$"},
    "description": "'admin' or a lane number",
}


_NEXT = {
    "name": "next",
    "in": "query",
    # signin.safe_next: empty, or a path of this site (one '/', then no '/' or '\\'), with no
    # backslash and no control character anywhere (else 400 invalid-next).
    "schema": {
        "type": "string",
        "maxLength": 512,
        "pattern": r"^(/(?![/\\])[^\\\x00-\x1f\x7f]*)?$",
    },
    "description": "where to return once signed in: a path on this site (default /)",
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
    _request_rules(schemas)
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
                    "visibility": _VISIBILITY,
                    "join_code": {
                        "type": "string",
                        "pattern": "^[2-9A-HJKMNP-Z]{6}$",
                        "description": "the short code of the poll's join link, /j/<code> "
                        "(typed in any case; dashes and spaces ignored)",
                    },
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
            "Rate": _RATE,
            "Defences": _DEFENCES,
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
                    "counts": {
                        "type": ["object", "null"],
                        "additionalProperties": {"type": "integer"},
                        "description": "null where the poll hides its counts from this caller "
                        "(then `hidden` says why; the total stays)",
                    },
                    "hidden": {
                        "enum": ["until-vote", "until-close"],
                        "description": "present only when `counts` is null: the counts are "
                        "shown once the caller has voted (after-vote), or once the poll closes",
                    },
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
                    "type": {"type": "string", "pattern": "^urn:tally:problem:[a-z-]+$"},
                    "title": {"type": "string"},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "code": {"enum": sorted({c for cs in PROBLEM_CODES.values() for c in cs})},
                    "detail": {"type": "string"},
                    "instance": {"type": "string", "description": "the request's path"},
                    "errors": {
                        "type": "array",
                        "description": "validation-failed: which field broke which rule",
                        "items": {
                            "type": "object",
                            "required": ["field", "message"],
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "reason": {
                        "type": "string",
                        "description": "unauthorized: token-missing, token-expired, ...; "
                        "challenge-invalid: why the answer failed",
                    },
                    "state": {"description": "invalid-transition, poll-not-open: the poll's state"},
                    "scope": {
                        "enum": ["address", "subnet", "voter", "poll"],
                        "description": "rate-limited: which limit was reached (Retry-After says "
                        "when to retry)",
                    },
                    "option": {"type": "string", "description": "unknown-option: as sent"},
                    "options": {
                        "type": "array",
                        "description": "unknown-option: the poll's options, to choose from",
                        "items": {"$ref": "#/components/schemas/Option"},
                    },
                    "outcome": {
                        "const": "unknown",
                        "description": "store-unavailable: the write may or may not have "
                        "happened; retrying never counts twice",
                    },
                    "receipt": {"$ref": "#/components/schemas/Receipt"},
                    "hidden": {
                        "enum": ["until-vote", "until-close"],
                        "description": "results-hidden: when the counts will show",
                    },
                    "challenge": {**_STR, "description": "challenge-required: solve it as is"},
                    "algorithm": {"const": "SHA-256", "description": "challenge-required"},
                    "difficulty": {"type": "integer", "description": "challenge-required"},
                    "expires_at": {
                        "type": ["string", "null"],
                        "format": "date-time",
                        "description": "challenge-required",
                    },
                },
            },
        }
    )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Tally",
            "version": __version__,
            "description": "Realtime, auditable voting. Errors are RFC 9457 problem "
            "documents (application/problem+json) with a stable `code`. An integer field "
            "takes an integer written as one (2, not 2.0 or 2e0): 422 otherwise.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <credential>`: a JWT from the "
                    "organiser's issuer (TALLY_JWKS, or the dev issuer: `tally token`), or the "
                    "Tally voting session credential the browser holds after sign-in; both are "
                    "bearers and are sent the same way. The role `admin` creates and runs polls; "
                    "`reviewer` (or admin) decides held votes.",
                }
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
                        "List the 100 most recent open and closed polls (newer drafts do not "
                        "count); with `include=drafts` and an admin credential, the 100 most "
                        "recent polls, drafts too (the organiser console's list)",
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
                        {
                            "200": {
                                **_json("Poll", "the poll"),
                                "headers": {
                                    "Date": {
                                        "description": "the server's clock (RFC 9110), which a "
                                        "countdown to closes_at runs on",
                                        "schema": {"type": "string"},
                                    }
                                },
                            },
                            **_problems(400, 404),
                        },
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
                    "with its `reason`. Each challenge is for one voter and one vote. A "
                    "draft's: an admin's only, anyone else gets the 404 of an unknown poll.",
                    {"200": _json("Challenge", "a challenge"), **_problems(400, 401, 404)},
                    auth=True,
                ),
            },
            "/v1/polls/{poll_id}/results": {
                "parameters": poll_id,
                "get": _op(
                    "Current counts (ETag; 304 on If-None-Match). Follows the poll's result "
                    "visibility: an optional bearer credential (an admin; a voter who has voted "
                    "in an after-vote poll) may see counts an anonymous caller does not "
                    "(Vary: Authorization; private when a credential is sent). A draft's results "
                    "are an admin's only: anyone else gets the 404 of an unknown poll",
                    {
                        "200": _json("Results", "counts"),
                        "304": {"description": "unchanged"},
                        **_problems(400, 401, 404),
                    },
                ),
            },
            "/v1/polls/{poll_id}/results.csv": {
                "parameters": poll_id,
                "get": _op(
                    "The counts as CSV (RFC 4180): option_id,label,votes,share and a Total row; "
                    "the same visibility rule as /results (403 results-hidden otherwise); a "
                    "draft's: an admin's only, anyone else gets the 404 of an unknown poll",
                    {
                        "200": _csv("tally-results-<poll>.csv"),
                        **_problems(400, 401, 403, 404),
                    },
                ),
            },
            "/v1/polls/{poll_id}/turnout.csv": {
                "parameters": poll_id,
                "get": _op(
                    "Ballots per UTC minute as CSV (RFC 4180): minute,votes,cumulative, counted "
                    "from the ledger (up to one checkpoint interval behind). Admins any time; "
                    "everyone once the poll is closed (403 results-hidden before); a draft's: "
                    "anyone but an admin gets the 404 of an unknown poll",
                    {
                        "200": _csv("tally-turnout-<poll>.csv"),
                        **_problems(400, 401, 403, 404),
                    },
                ),
            },
            "/v1/polls/{poll_id}/qr.svg": {
                "parameters": poll_id,
                "get": _op(
                    "The QR code (SVG) of the poll's join link, <origin>/j/<join_code>: the "
                    "origin is TALLY_PUBLIC_URL, else the scheme and Host of the request "
                    "(Vary: Host; ETag, cacheable for a day). A draft's only with an admin "
                    "credential, and never stored by a cache (private, no-store); anyone else "
                    "gets the 404 of an unknown poll",
                    {
                        "200": {
                            "description": "the QR code; its <title> is the URL it encodes",
                            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                        },
                        "304": {"description": "unchanged"},
                        **_problems(400, 404),
                    },
                ),
            },
            # Voter sign-in (gateway/signin.py): browser navigations, not API calls.
            "/auth/config": {
                "get": _op(
                    'Which sign-in this server offers: {"oidc": bool, "demo": bool} (demo: '
                    "`tally serve --demo`, asked from loopback)",
                    {"200": {"description": "application/json"}},
                )
            },
            "/auth/login": {
                "parameters": [
                    _NEXT,
                    {"name": "role", "in": "query", "schema": {"type": "string"}},
                ],
                "get": _op(
                    "Start signing in: 303 to the OpenID Connect provider (code flow, PKCE "
                    "S256, state and nonce in a sealed HttpOnly cookie on /auth), or to the demo "
                    "sign-in page (role=admin preselects the organiser). 404 when neither is set up",
                    {
                        "303": {"description": "to the provider or the demo sign-in page"},
                        **_problems(400, 404, 502),
                    },
                ),
            },
            "/auth/callback": {
                "get": _op(
                    "The provider's answer (code, state, iss, or error): the code is exchanged "
                    "once, the ID token checked (signature by the provider's JWKS, iss, aud, "
                    "nonce, exp), and a page hands the Tally voting session to /static/signin.js "
                    "(never in a URL). Failures: problem+json, or an HTML page for a browser",
                    {
                        "200": {"description": "text/html: signed in, returning to next"},
                        **_problems(400, 401, 404, 502),
                    },
                )
            },
            "/j/{code}": {
                "parameters": [
                    {
                        "name": "code",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "a poll's join_code, in any case",
                    }
                ],
                "get": _op(
                    "A poll's join link: 303 to its voting page, /?poll=<poll id>. An unknown "
                    "code is a 404: an HTML page, or problem+json join-code-not-found when the "
                    "request accepts JSON; so is a draft's code, but to an admin's request",
                    {
                        "303": {
                            "description": "to the voting page",
                            "headers": {
                                "Location": {
                                    "schema": {"type": "string"},
                                    "description": "/?poll=<poll id>",
                                }
                            },
                        },
                        "404": {
                            "description": "problem: join-code-not-found (or an HTML page)",
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                "application/problem+json": {
                                    "schema": {"$ref": "#/components/schemas/Problem"}
                                },
                            },
                        },
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
            "/v1/demo/token": {
                "get": _op(
                    "Whether the demo hands out voter tokens here: `tally serve --demo` on its "
                    "embedded store, asked from loopback (else 404, as for any unknown path)",
                    {"204": {"description": "available"}, **_problems(404)},
                ),
                "post": _op(
                    "A fresh random voter's token (demo only, loopback only: else 404)",
                    {
                        "201": {
                            "description": "application/json",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["token", "subject", "expires_in"],
                                        "properties": {
                                            "token": _STR,
                                            "subject": _STR,
                                            "expires_in": {
                                                "type": "integer",
                                                "description": "seconds",
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **_problems(404),
                    },
                ),
            },
            "/openapi.json": {
                "get": _op(
                    "This document (OpenAPI 3.1)",
                    {"200": {"description": "the document", "content": {"application/json": {}}}},
                )
            },
            "/docs": {
                "get": _op(
                    "These docs: Swagger UI from files bundled with the server (no CDN)",
                    {"200": {"description": "the page", "content": {"text/html": {}}}},
                )
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
                        # A plain GET (no `Upgrade: websocket`) is told to upgrade.
                        **_problems(400, 404, 426, 429, 503),
                    },
                },
            },
            "/v1/polls/{poll_id}/events": {
                "parameters": poll_id,
                "get": {
                    "summary": "Live results as Server-Sent Events",
                    "description": (
                        "`event: snapshot`, `id:` the snapshot's seq, `data:` the snapshot document. "
                        "Reconnect with `Last-Event-ID` to get the latest snapshot at once if newer. "
                        "Where the poll hides its counts, snapshots come redacted (`counts` null, "
                        "`hidden`) unless the request's optional `Authorization` names an admin or "
                        "a voter who has voted (after-vote); a browser's EventSource sends none. "
                        "A draft's stream is an admin's only: anyone else gets the 404 of an "
                        "unknown poll."
                    ),
                    "responses": {
                        "200": {"description": "text/event-stream"},
                        **_problems(400, 401, 404, 429, 503),
                    },
                },
            },
        },
    }
    for path, item in document["paths"].items():
        for op in item.values():
            if isinstance(op, dict):
                op.setdefault("tags", [_tag(path)])
    _link(document["paths"])
    _answers(document["components"]["schemas"], document["paths"])
    _edge(document["paths"])
    _media_types(document["paths"])
    return document


_INT0 = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
# The JSON answers documented in words until now, as schemas (gateway/review.py held_doc and
# decision_doc, gateway/ledger.py _proof_doc and the checkpoints listing).
_ANSWERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "HeldVotes": (
        "/v1/polls/{poll_id}/held",
        "get",
        {
            "type": "object",
            "required": ["poll_id", "under_review", "groups"],
            "properties": {
                "poll_id": _STR,
                "under_review": _INT0,
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["reason", "subnet", "count", "truncated", "entries"],
                        "properties": {
                            "reason": _STR,
                            "subnet": _STR,
                            "count": _INT0,
                            "truncated": {"type": "boolean"},
                            "entries": {
                                "type": "array",
                                "maxItems": 1000,
                                "items": {
                                    "type": "object",
                                    "required": [
                                        "lane",
                                        "entry_id",
                                        "option",
                                        "reason",
                                        "subnet",
                                        "held_at",
                                        "evidence",
                                    ],
                                    "properties": {
                                        "lane": _INT0,
                                        "entry_id": {"type": "integer", "minimum": 1},
                                        "option": _STR,
                                        "reason": _STR,
                                        "subnet": _STR,
                                        "held_at": {"type": "string", "format": "date-time"},
                                        "evidence": {
                                            "enum": [
                                                "kept",
                                                "none",
                                                "deleted",
                                                "unreadable",
                                                "clear",
                                            ]
                                        },
                                        "address": {**_STR, "description": "reviewer role only"},
                                        "user_agent": {**_STR, "description": "reviewer role only"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
    "DecisionReport": (
        "/v1/polls/{poll_id}/held/decisions",
        "post",
        {
            "type": "object",
            "required": [
                "poll_id",
                "decision",
                "released",
                "voided",
                "already_decided",
                "refused",
                "entries",
            ],
            "properties": {
                "poll_id": _STR,
                "decision": {"enum": ["release", "void"]},
                "released": _INT0,
                "voided": _INT0,
                "already_decided": _INT0,
                "refused": _INT0,
                "entries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["lane", "entry_id", "outcome"],
                        "properties": {
                            "lane": _INT0,
                            "entry_id": _INT0,
                            "outcome": {
                                "enum": [
                                    "released",
                                    "voided",
                                    "already-decided",
                                    "conflict",
                                    "not-held",
                                ]
                            },
                        },
                    },
                },
            },
        },
    ),
    "InclusionProof": (
        "/v1/polls/{poll_id}/receipts/{lane}/{entry_id}/proof",
        "get",
        {
            "type": "object",
            "required": [
                "poll_id",
                "lane",
                "entry_id",
                "index",
                "leaf",
                "leaf_hash",
                "tree_size",
                "root",
                "proof",
                "checkpoint",
                "tlog_proof",
            ],
            "properties": {
                "poll_id": _STR,
                "lane": _INT0,
                "entry_id": {"type": "integer", "minimum": 1},
                "index": {**_INT0, "description": "the leaf's 0-based index: entry_id - 1"},
                "leaf": {**_STR, "description": "base64 ledger record"},
                "leaf_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "tree_size": {"type": "integer", "minimum": 1},
                "root": {**_STR, "description": "base64 SHA-256 Merkle root"},
                "proof": {"type": "array", "items": _STR, "description": "base64 hashes"},
                "checkpoint": {**_STR, "description": "the signed note it is proved against"},
                "tlog_proof": {**_STR, "description": "C2SP tlog-proof text"},
            },
        },
    ),
}


# Answers that list every member they can have: a member the server adds without documenting
# it here fails response_schema_conformance (tests/api/test_schemathesis.py). Problem stays
# open: its extension members depend on the code.
_CLOSED = ("Poll", "Option", "PollList", "Results", "Receipt", "VoteAccepted", "VoteHeld")


# What the edge (gateway/edge.py) may answer for any request before a route sees it: two
# Authorization headers (400), a head or body too slow (408), too many connections from one
# address (429), headers too large (431); and a store that does not answer, or a shutdown (503).
_EDGE = (400, 408, 429, 431, 503)


def _edge(paths: dict[str, Any]) -> None:
    for item in paths.values():
        for op in item.values():
            if isinstance(op, dict):
                for status, answer in _problems(*_EDGE).items():
                    op["responses"].setdefault(status, answer)


def _answers(schemas: dict[str, Any], paths: dict[str, Any]) -> None:
    for name in _CLOSED:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    for name, (path, method, schema) in _ANSWERS.items():
        schema["additionalProperties"] = False
        op = paths.get(path, {}).get(method)
        if op is None:
            continue
        schemas[name] = schema
        op["responses"]["200"]["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
        }


# What a 2xx whose description names its media type carries, so content_type_conformance can
# check it; `{}`: any body of that type.
_MEDIA_TYPES = ("application/json", "text/plain", "application/octet-stream", "text/html")


def _media_types(paths: dict[str, Any]) -> None:
    for item in paths.values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for status, answer in op["responses"].items():
                named = answer["description"].split(":", 1)[0]
                if status.startswith("2") and "content" not in answer and named in _MEDIA_TYPES:
                    answer["content"] = {named: {}}
    for path, media_type in (
        ("/metrics", "text/plain"),
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/v1/polls/{poll_id}/receipts/{lane}/{entry_id}/proof", "application/json"),
    ):
        op = paths.get(path, {}).get("get")
        if op is not None:
            op["responses"]["200"].setdefault("content", {media_type: {}})


def _op_ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _link(paths: dict[str, Any]) -> None:
    """OpenAPI links from a poll (as created, opened or shown) to what can be done with it: a
    client (and schemathesis's stateful phase) follows a poll from creation to a vote on its
    first option, its results and its close."""
    poll_id = {"poll_id": "$response.body#/id"}
    follow = {
        "OpenIt": ("/v1/polls/{poll_id}/open", "post", None),
        "VoteOnItsFirstOption": (
            "/v1/polls/{poll_id}/votes",
            "post",
            {"option": "$response.body#/options/0/id"},
        ),
        "ItsResults": ("/v1/polls/{poll_id}/results", "get", None),
        "CloseIt": ("/v1/polls/{poll_id}/close", "post", None),
    }
    links = {}
    for name, (path, method, body) in follow.items():
        if path in paths:
            links[name] = {"operationRef": _op_ref(path, method), "parameters": poll_id}
            if body is not None:
                links[name]["requestBody"] = body
    for path, method, status in (
        ("/v1/polls", "post", "201"),
        ("/v1/polls/{poll_id}/open", "post", "200"),
    ):
        if path in paths:
            paths[path][method]["responses"][status]["links"] = links


# What Python's str.strip() trims (str.isspace), spelled out: `\s` differs between Python and
# the ECMA-262 patterns of JSON Schema (ECMA's lacks \x1c-\x1f and \x85, and has \ufeff).
SPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _trimmed(most: int) -> dict[str, Any]:
    """A string that is 1 to `most` characters once white space is trimmed off both ends (the
    domain trims titles and labels before it measures them)."""
    space, text = f"[{SPACE}]", f"[^{SPACE}]"
    return {
        "type": "string",
        "minLength": 1,
        "pattern": f"^{space}*{text}(?:[\\s\\S]{{0,{most - 2}}}{text})?{space}*$",
        "description": f"1 to {most} characters once leading and trailing white space is trimmed",
    }


_RATE: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "A GCRA limit; null turns it off. In a create request a field left out keeps "
    "the server's default for that scope (both are needed where that default is off: else 422)",
    "additionalProperties": False,
    "properties": {
        "per_s": {"type": "number", "exclusiveMinimum": 0, "maximum": d.MAX_RATE_PER_S},
        "burst": {"type": "integer", "minimum": 1, "maximum": d.MAX_BURST},
    },
}
_DEFENCES: dict[str, Any] = {
    "type": "object",
    "description": "The poll's rate limits, proof-of-work challenge and risk rules "
    "(tally.domain.defences). In a create request every field is optional and overrides the "
    "server's defaults (TALLY_DEFENCES); unknown fields are refused. Rules across fields, "
    "answered 422 validation-failed: difficulty <= max_difficulty, 1 <= challenge_at <= hold_at "
    "(each side defaulting to the server's value).",
    "additionalProperties": False,
    "properties": {
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                scope.value: {"$ref": "#/components/schemas/Rate"} for scope in d.LimitScope
            },
        },
        "pow": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "difficulty": {"type": "integer", "minimum": 0, "maximum": d.MAX_DIFFICULTY},
                "max_difficulty": {"type": "integer", "minimum": 0, "maximum": d.MAX_DIFFICULTY},
                "ttl_s": {"type": "integer", "minimum": 1, "maximum": d.MAX_CHALLENGE_TTL_S},
            },
        },
        "risk": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "rules": {
                    "type": "array",
                    "maxItems": d.MAX_RULES,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["signal", "comparison", "value", "score", "reason"],
                        "properties": {
                            "signal": {"enum": [s.value for s in d.Signal]},
                            "comparison": {"enum": [c.value for c in d.Comparison]},
                            "value": {"type": "number", "minimum": 0},
                            "score": {"type": "integer", "minimum": -1000, "maximum": 1000},
                            "reason": {
                                "type": "string",
                                "pattern": f"^[a-z0-9-]{{1,{d.MAX_REASON}}}$",
                            },
                        },
                    },
                },
                "challenge_at": {"type": "integer", "minimum": 1},
                "hold_at": {"type": "integer", "minimum": 1},
                "harder_by": {"type": "integer", "minimum": 0, "maximum": d.MAX_DIFFICULTY},
            },
        },
    },
}


def _request_rules(schemas: dict[str, Any]) -> None:
    """Add to the msgspec shapes the rules the domain checks after decoding (tally.domain.polls,
    tally.domain.defences, gateway.review), from the same constants, so a client (and
    schemathesis) learns every rule from the document. Rules across fields or against the
    server's state cannot be written as a schema: each is named in a description, and answered
    422 validation-failed."""
    create = schemas["CreatePollBody"]
    create["description"] = (
        "Rules across fields, answered 422 validation-failed: option labels are unique "
        "(case-insensitive) and so are ids; closes_at is in the future; expected_voters fits "
        "the lanes (at most lanes x 25,165,824)."
    )
    create["examples"] = [
        {"title": "Song of the night", "options": ["Aurora", "Borealis", "Comet"], "lanes": 4},
        {
            "title": "Which day?",
            "options": [{"label": "Saturday", "id": "sat"}, {"label": "Sunday", "id": "sun"}],
            "visibility": "after-vote",
            "defences": {"pow": {"difficulty": 0}},
        },
    ]
    schemas["VoteBody"]["examples"] = [{"option": "aurora"}]
    fields = create["properties"]
    fields["title"] = _trimmed(polls.MAX_TITLE)
    fields["options"].update(
        minItems=polls.MIN_OPTIONS,
        maxItems=polls.MAX_OPTIONS,
        description="labels (the id is made from the label) or {label, id} objects",
    )
    fields["options"]["items"]["anyOf"][0] = _trimmed(polls.MAX_LABEL)
    fields["lanes"]["anyOf"][0].update(
        enum=[1 << n for n in range(polls.MAX_LANES.bit_length())],
        description="a power of two; null or absent: the server's default for its store",
    )
    fields["closes_at"]["anyOf"][0].update(
        format="date-time",
        pattern=r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$",
        description="RFC 3339 with an offset; in the future; the poll closes itself then",
    )
    fields["expected_voters"].update(
        minimum=1,
        maximum=polls.MAX_EXPECTED_VOTERS,
        description="sizes the voter index (more needs more lanes)",
    )
    fields["defences"]["anyOf"][0] = {"$ref": "#/components/schemas/Defences"}
    fields["visibility"] = {**_VISIBILITY, "default": polls.Visibility.LIVE.value}
    option = schemas["OptionBody"]["properties"]
    option["label"] = _trimmed(polls.MAX_LABEL)
    option["id"]["anyOf"][0].update(
        minLength=1,
        maxLength=polls.MAX_OPTION_ID,
        # The ASCII part of the rule; the rest (lower case, NFC, letters and digits of any
        # script) is in the description.
        pattern=r"^[^\x00-\x2f\x3a-\x60\x7b-\x7f][^\x00-\x2c\x2e\x2f\x3a-\x60\x7b-\x7f]*$",
        description=f"1 to {polls.MAX_OPTION_ID} lower-case letters (any script), digits, "
        "marks and '-', starting with a letter or digit, in NFC; absent: made from the label",
    )
    decision = schemas["DecisionBody"]
    decision["description"] = "Either `entries` or `group`, not both"
    decision["examples"] = [
        {"decision": "release", "entries": [{"lane": 0, "entry_id": 1}]},
        {"decision": "void", "group": {"reason": "subnet-velocity"}},
    ]
    decision["oneOf"] = [
        {"required": ["entries"], "properties": {"entries": {"type": "array"}}},
        {"required": ["group"], "properties": {"group": {"type": "object"}}},
    ]
    schemas["EntryBody"]["properties"]["entry_id"].update(
        minimum=1, description="1-based, as in the receipt"
    )
    group = schemas["GroupBody"]
    group["description"] = "A reason, a subnet or both"
    group["anyOf"] = [
        {"required": ["reason"], "properties": {"reason": {"type": "string"}}},
        {"required": ["subnet"], "properties": {"subnet": {"type": "string"}}},
    ]

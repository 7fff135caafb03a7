"""Bad requests to every endpoint: each gets its stable problem, and none of them changes anything.

One table, one test. Every row is sent against a live poll that already holds a vote; before and
after, the poll list, the poll and its results are read back and must be identical, so a refused
create that half-wrote a poll, or a refused vote that was counted anyway, fails the row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from api_http import JSON, assert_problem, get_json, send, send_json

from conftest import RunningTally

POLL = "{poll}"  # stands for the live poll's id in a row's path
# "admin", "voter" (a fresh voter) or "none"; any other string is sent as the bearer token itself
Auth = str


@dataclass(frozen=True, slots=True)
class Bad:
    """A refused request and the problem it must get. `mentions`: a word `detail` must contain."""

    method: str
    path: str
    status: int
    code: str
    body: bytes | None = None
    chunks: list[bytes] | None = None
    content_type: str | None = JSON
    auth: Auth = "admin"
    mentions: str | None = None


def doc(document: object) -> bytes:
    return json.dumps(document).encode()


def padded(document: dict[str, Any], size: int) -> bytes:
    """`document` as valid JSON of exactly `size` bytes (spaces before the closing brace)."""
    compact = doc(document)
    assert len(compact) <= size
    return compact[:-1] + b" " * (size - len(compact)) + b"}"


VALID_POLL: dict[str, Any] = {"title": "Best colour", "options": ["Red", "Green"]}
VALID_VOTE: dict[str, Any] = {"option": "red"}


def poll_with(**changes: object) -> bytes:
    """A valid create body with `changes` applied (a change to ... removes the field)."""
    body = {**VALID_POLL, **changes}
    return doc({name: value for name, value in body.items() if value is not ...})


def create(
    case: str, body: bytes | None, status: int, code: str, *, mentions: str | None = None, **kw: Any
) -> object:
    return pytest.param(
        Bad("POST", "/v1/polls", status, code, body=body, mentions=mentions, **kw),
        id=f"create: {case}",
    )


def vote(
    case: str, body: bytes | None, status: int, code: str, *, mentions: str | None = None, **kw: Any
) -> object:
    kw.setdefault("auth", "voter")
    path = f"/v1/polls/{POLL}/votes"
    return pytest.param(
        Bad("POST", path, status, code, body=body, mentions=mentions, **kw), id=f"vote: {case}"
    )


def invalid(case: str, mentions: str, **changes: object) -> object:
    return create(case, poll_with(**changes), 422, "validation-failed", mentions=mentions)


CREATE_CASES = [
    # wrong types
    invalid("title is a number", "title", title=5),
    invalid("title is null", "title", title=None),
    invalid("options is a string", "options", options="Red, Green"),
    invalid("options are numbers", "options", options=[1, 2]),
    invalid("option object without label", "label", options=[{"id": "a"}, {"id": "b"}]),
    invalid("lanes is a string", "lanes", lanes="4"),
    invalid("lanes is a float", "lanes", lanes=4.5),
    invalid("lanes is a boolean", "lanes", lanes=True),
    invalid("closes_at is a number", "closes_at", closes_at=1_900_000_000),
    invalid("expected_voters is a string", "expected_voters", expected_voters="many"),
    # unknown and missing fields
    invalid("unknown field", "colour", colour="red"),
    invalid(
        "unknown field in an option",
        "colour",
        options=[{"label": "Red", "colour": "red"}, {"label": "Green"}],
    ),
    invalid("title missing", "title", title=...),
    invalid("options missing", "options", options=...),
    create("body is an array", b"[]", 422, "validation-failed"),
    create("body is null", b"null", 422, "validation-failed"),
    create("body is a string", b'"a poll"', 422, "validation-failed"),
    # not JSON at all
    create("empty body", b"", 400, "malformed-json"),
    create("truncated JSON", b'{"title": "Best colour",', 400, "malformed-json"),
    create("single quotes", b"{'title': 'Best colour'}", 400, "malformed-json"),
    create("trailing garbage", doc(VALID_POLL) + b" x", 400, "malformed-json"),
    create("NaN", poll_with()[:-1] + b', "lanes": NaN}', 400, "malformed-json"),
    create("invalid UTF-8", b'{"title": "\xff\xfe", "options": ["a", "b"]}', 400, "malformed-json"),
    # too big (the limit is 16 KiB for everything but votes)
    create("one byte over 16 KiB", padded(VALID_POLL, 16 * 1024 + 1), 413, "body-too-large"),
    create("1 MiB", padded(VALID_POLL, 1024 * 1024), 413, "body-too-large"),
    create(
        "chunked, over 16 KiB in total",
        None,
        413,
        "body-too-large",
        chunks=[b'{"title": "' + b"x" * 8192, b"x" * 8192, b'", "options": ["a", "b"]}'],
    ),
    # not JSON by content type
    create("no content type", poll_with(), 415, "unsupported-media-type", content_type=None),
    create("text/plain", poll_with(), 415, "unsupported-media-type", content_type="text/plain"),
    create(
        "form encoded",
        b"title=Best+colour&options=Red&options=Green",
        415,
        "unsupported-media-type",
        content_type="application/x-www-form-urlencoded",
    ),
    create(
        "application/jsonl",
        poll_with(),
        415,
        "unsupported-media-type",
        content_type="application/jsonl",
    ),
    # options: count, duplicates, ids, labels
    invalid("no options", "options", options=[]),
    invalid("one option", "options", options=["Red"]),
    invalid("65 options", "options", options=[f"Option {i}" for i in range(65)]),
    invalid("duplicate labels", "duplicate label", options=["Red", "Red"]),
    invalid("labels equal but for case", "duplicate label", options=["Red", "RED"]),
    invalid("labels equal but for spaces", "duplicate label", options=["Red", " Red "]),
    invalid(
        "duplicate ids",
        "duplicate id",
        options=[{"id": "x", "label": "Red"}, {"id": "x", "label": "Green"}],
    ),
    invalid(
        "option id with uppercase and space",
        "options[0].id",
        options=[{"id": "Not Valid", "label": "Red"}, {"label": "Green"}],
    ),
    invalid("empty label", "options[1].label", options=["Red", ""]),
    invalid("blank label", "options[1].label", options=["Red", "   "]),
    invalid("label of 101 characters", "options[1].label", options=["Red", "x" * 101]),
    # lanes
    invalid("lanes not a power of two", "lanes", lanes=3),
    invalid("zero lanes", "lanes", lanes=0),
    invalid("negative lanes", "lanes", lanes=-4),
    invalid("2048 lanes", "lanes", lanes=2048),
    invalid("lanes beyond 64 bits", "lanes", lanes=2**70),
    # closes_at
    invalid("closes_at in the past", "closes_at", closes_at="2000-01-01T00:00:00Z"),
    invalid("closes_at without a time zone", "closes_at", closes_at="2099-01-01T20:00:00"),
    invalid("closes_at a date only", "closes_at", closes_at="2099-01-01"),
    invalid("closes_at garbage", "closes_at", closes_at="next tuesday"),
    invalid("closes_at empty", "closes_at", closes_at=""),
    # title
    invalid("empty title", "title", title=""),
    invalid("blank title", "title", title="   "),
    invalid("title of 201 characters", "title", title="x" * 201),
    # expected_voters
    invalid("no expected voters", "expected_voters", expected_voters=0),
    invalid("too many expected voters", "expected_voters", expected_voters=10**11),
    # who may create
    create("no token", poll_with(), 401, "unauthorized", auth="none"),
    create("garbage token", poll_with(), 401, "unauthorized", auth="not-a-jwt"),
    create("voter token", poll_with(), 403, "forbidden", auth="voter"),
]

VOTE_CASES = [
    vote("option is a number", doc({"option": 1}), 422, "validation-failed", mentions="option"),
    vote("option is null", doc({"option": None}), 422, "validation-failed", mentions="option"),
    vote("option is a list", doc({"option": ["red"]}), 422, "validation-failed"),
    vote("option is an object", doc({"option": {"id": "red"}}), 422, "validation-failed"),
    vote("option missing", doc({}), 422, "validation-failed", mentions="option"),
    vote(
        "unknown field",
        doc({"option": "red", "weight": 2}),
        422,
        "validation-failed",
        mentions="weight",
    ),
    vote("body is an array", doc(["red"]), 422, "validation-failed"),
    vote("body is null", b"null", 422, "validation-failed"),
    vote("empty body", b"", 400, "malformed-json"),
    vote("truncated JSON", b'{"option": "re', 400, "malformed-json"),
    vote("invalid UTF-8", b'{"option": "\xc3\x28"}', 400, "malformed-json"),
    vote("one byte over 1 KiB", padded(VALID_VOTE, 1025), 413, "body-too-large"),
    vote("16 KiB", padded(VALID_VOTE, 16 * 1024), 413, "body-too-large"),
    vote(
        "chunked, over 1 KiB in total",
        None,
        413,
        "body-too-large",
        chunks=[b'{"option": "red"', b" " * 1000, b" " * 1000, b"}"],
    ),
    vote("no content type", doc(VALID_VOTE), 415, "unsupported-media-type", content_type=None),
    vote("text/plain", doc(VALID_VOTE), 415, "unsupported-media-type", content_type="text/plain"),
    vote(
        "form encoded",
        b"option=red",
        415,
        "unsupported-media-type",
        content_type="application/x-www-form-urlencoded",
    ),
    vote("unknown option", doc({"option": "purple"}), 422, "unknown-option", mentions="purple"),
    vote("option label instead of id", doc({"option": "Red"}), 422, "unknown-option"),
    vote("empty option", doc({"option": ""}), 422, "unknown-option"),
    vote("unicode option", doc({"option": "rød"}), 422, "unknown-option"),
    vote("no token", doc(VALID_VOTE), 401, "unauthorized", auth="none"),
    vote("garbage token", doc(VALID_VOTE), 401, "unauthorized", auth="a.b.c"),
]

# Each endpoint that takes a poll id, with the token and body it would otherwise accept.
POLL_ID_ENDPOINTS: list[tuple[str, str, Auth, bytes | None]] = [
    ("GET", "/v1/polls/{id}", "none", None),
    ("GET", "/v1/polls/{id}/results", "none", None),
    ("POST", "/v1/polls/{id}/open", "admin", None),
    ("POST", "/v1/polls/{id}/close", "admin", None),
    ("POST", "/v1/polls/{id}/votes", "voter", doc(VALID_VOTE)),
]
MALFORMED_POLL_IDS = {
    "dot-dot-slash": "..%2f",
    "encoded slash": "abc%2Fdef",
    "dot-dot": "%2e%2e",
    "uppercase": "ABCDEF",
    "leading dash": "-abc",
    "leading underscore": "_abc",
    "a dot": "abc.def",
    "a space": "abc%20def",
    "NUL": "abc%00",
    "unicode": "%C3%A9lection",
    "65 characters": "a" * 65,
    "4000 characters": "a" * 4000,
}


def poll_id_cases() -> Iterator[object]:
    """Each endpoint with each malformed poll id (400) and with a well-formed unknown one (404)."""
    for method, template, auth, body in POLL_ID_ENDPOINTS:
        expected = [(case, id_, 400, "invalid-poll-id") for case, id_ in MALFORMED_POLL_IDS.items()]
        expected.append(("unknown poll", "no-such-poll", 404, "poll-not-found"))
        for case, poll_id, status, code in expected:
            bad = Bad(method, template.format(id=poll_id), status, code, body=body, auth=auth)
            yield pytest.param(bad, id=f"{method} {template}: {case}")


ADMIN_ROUTE_CASES = [
    pytest.param(
        Bad("POST", f"/v1/polls/{POLL}/{move}", status, code, content_type=None, auth=auth),
        id=f"{move}: {who}",
    )
    for move in ("open", "close")
    for who, auth, status, code in (
        ("no token", "none", 401, "unauthorized"),
        ("voter token", "voter", 403, "forbidden"),
    )
]


@pytest.fixture(scope="module")
def poll(tally: RunningTally) -> str:
    """An open poll (red, green, blue) that already counts one vote for red."""
    poll_id = str(tally.open_poll()["id"])
    accepted = send_json(
        tally, "POST", f"/v1/polls/{poll_id}/votes", VALID_VOTE, token=tally.voter_token("first")
    )
    assert accepted.status == 201
    tally.results(poll_id, total=1)  # so "before" and "after" both see the settled snapshot
    return poll_id


def observable(tally: RunningTally, poll_id: str) -> dict[str, Any]:
    """What a refused request must leave as it was: the poll list, the poll, its results."""
    return {
        "polls": get_json(tally, "/v1/polls"),
        "poll": get_json(tally, f"/v1/polls/{poll_id}"),
        "results": get_json(tally, f"/v1/polls/{poll_id}/results"),
    }


def bearer(tally: RunningTally, auth: Auth) -> str | None:
    if auth == "none":
        return None
    if auth == "admin":
        return tally.admin_token()
    if auth == "voter":  # a voter nobody has seen: if the vote counted, the results would show it
        return tally.voter_token(f"bad-input-{uuid.uuid4().hex}")
    return auth


@pytest.mark.parametrize("bad", [*CREATE_CASES, *VOTE_CASES, *poll_id_cases(), *ADMIN_ROUTE_CASES])
def test_a_bad_request_gets_its_problem_and_changes_nothing(
    tally: RunningTally, poll: str, bad: Bad
) -> None:
    """The request is refused with its status and stable problem code, and nothing is written."""
    before = observable(tally, poll)
    answer = send(
        tally,
        bad.method,
        bad.path.replace(POLL, poll),
        body=bad.body,
        chunks=bad.chunks,
        token=bearer(tally, bad.auth),
        content_type=bad.content_type if bad.body is not None or bad.chunks else None,
    )
    problem = assert_problem(answer, bad.status, bad.code)
    if bad.mentions is not None:
        assert bad.mentions in problem["detail"]
    if bad.status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert observable(tally, poll) == before

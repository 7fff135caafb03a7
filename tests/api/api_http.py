"""Raw HTTP/1.1 against a running Tally on a real socket, and the checks every problem must pass.

The API tests send requests exactly as written: the path is not normalised (so `..%2f` reaches
the server as `..%2f`), headers are only the ones given, a body may be chunked. `http.client` does
that; an HTTP client library would "fix" the very requests these tests are about.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:tally:problem:"


class Listening(Protocol):
    """Where a server listens (a `RunningTally` is one)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP response; header names are lower-cased."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        """The content type without parameters (`charset=...`), or "" when there is none."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    server: Listening,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    chunks: list[bytes] | None = None,
    token: str | None = None,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection. `chunks` sends the body chunked (no Content-Length)."""
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, path, body=chunks if chunks is not None else body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        received = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, received, data)
    finally:
        connection.close()


def send_json(
    server: Listening, method: str, path: str, document: object, *, token: str | None = None
) -> Answer:
    """`document` as an application/json body."""
    return send(
        server, method, path, body=json.dumps(document).encode(), token=token, content_type=JSON
    )


def get_json(server: Listening, path: str, *, token: str | None = None) -> Any:
    """The JSON document a GET of `path` answers with, which must be a 200. `token`: as whom
    (a draft poll is shown to an admin only)."""
    answer = send(server, "GET", path, token=token)
    assert answer.status == 200, (path, answer.status, answer.body)
    assert answer.media_type == JSON
    return answer.json()


def assert_problem(answer: Answer, status: int, code: str) -> dict[str, Any]:
    """`answer` is an RFC 9457 problem with this status and stable code; returns the document."""
    assert (answer.status, answer.media_type) == (status, PROBLEM_JSON), answer.body[:500]
    problem: dict[str, Any] = answer.json()
    assert problem["type"] == PROBLEM_TYPE_PREFIX + code
    assert problem["code"] == code
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    assert problem["title"]
    return problem

"""A small synchronous HTTP client for the CLI: talks to a Tally gateway's REST API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tally.security.pow import solve

# A vote may be asked for a proof of work by the poll, then for a harder one by the risk scorer.
MAX_CHALLENGES = 3


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """The server answered with a problem document (or could not be reached: status 0)."""

    status: int
    code: str
    detail: str
    document: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}" if self.status else self.detail


class TallyClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("POST", path, body)

    def vote(
        self,
        poll_id: str,
        option: str,
        *,
        solving: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Vote; a `428 challenge-required` is solved here (about 2**difficulty SHA-256) and the
        vote sent again with its answer as `proof`. `solving` is told each challenge document
        before it is solved (the CLI says so: a hard one takes seconds)."""
        body: dict[str, Any] = {"option": option}
        for _ in range(MAX_CHALLENGES):
            try:
                return self.post(f"/v1/polls/{poll_id}/votes", body)
            except ApiError as exc:
                if exc.code != "challenge-required":
                    raise
                if solving is not None:
                    solving(exc.document)
                challenge = str(exc.document["challenge"])
                body = {"option": option, "proof": f"{challenge}:{solve(challenge)}"}
        return self.post(f"/v1/polls/{poll_id}/votes", body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310  # scheme checked above
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310  # scheme checked above
                document: dict[str, Any] = json.loads(response.read() or b"{}")
                return document
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"code": "http-error", "detail": raw.decode(errors="replace")}
            raise ApiError(
                exc.code,
                problem.get("code", "error"),
                problem.get("detail") or problem.get("title", ""),
                problem,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(
                0, "unreachable", f"cannot reach Tally at {self.base_url}: {reason}", {}
            ) from None

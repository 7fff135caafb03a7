"""A small synchronous HTTP client for the CLI: talks to a Tally gateway's REST API, over
http:// or https://.

Over https the server's certificate is checked against the system's trust store, or against
`ca_file` alone (a private CA, PEM; TALLY_CA_FILE when none is given): the CLI carries bearer
tokens, so it never talks to a server it cannot authenticate.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.security.pow import solve

# A vote may be asked for a proof of work by the poll, then for a harder one by the risk scorer.
MAX_CHALLENGES = 3
# Where `tally serve` listens with no settings, and so where the CLI looks with none.
DEFAULT_URL = "http://127.0.0.1:8000"


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
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        *,
        ca_file: Path | str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        scheme = self.base_url.partition("://")[0].lower()
        if scheme not in ("http", "https"):
            raise ApiError(0, "invalid-url", f"{base_url!r} is not an http:// or https:// URL", {})
        self.ca_file = ca_file if ca_file is not None else os.environ.get("TALLY_CA_FILE") or None
        self._tls: ssl.SSLContext | None = None
        if scheme == "https":
            try:
                self._tls = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ApiError(
                    0, "invalid-ca-file", f"cannot use the CA file {self.ca_file}: {exc}", {}
                ) from None

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

    def get_text(self, path: str, accept: str = "text/csv") -> str:
        """A non-JSON resource (a CSV export) as text; errors as `get`'s."""
        return self._send("GET", path, None, accept).decode("utf-8")

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self._send(method, path, body) or b"{}")
        return document

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, accept: str = "application/json"
    ) -> bytes:
        headers = {"Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310  # scheme checked in __init__
        try:
            with urllib.request.urlopen(  # noqa: S310  # scheme checked in __init__
                request, timeout=self.timeout_s, context=self._tls
            ) as response:
                raw: bytes = response.read()
                return raw
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
            if isinstance(reason, ssl.SSLCertVerificationError):
                hint = " (a private CA? give its certificate with --ca-file or TALLY_CA_FILE)"
            else:
                # The first thing a newcomer meets when the server runs on another port.
                hint = (
                    f"; is Tally running there? Point the CLI at the server with --url URL or "
                    f"TALLY_URL (tried {url})"
                )
            raise ApiError(
                0, "unreachable", f"cannot reach Tally at {self.base_url}: {reason}{hint}", {}
            ) from None


def default_url(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The server a CLI command talks to when it has no --url, and where that came from:
    TALLY_URL, else the gateway's own TALLY_HOST/TALLY_PORT (https with TALLY_TLS_CERT), so a
    shell that started `tally serve` on another port reaches it without --url."""
    source = os.environ if env is None else env
    if source.get("TALLY_URL"):
        return source["TALLY_URL"], "TALLY_URL"
    from tally import config  # the settings' own parsers, so a bad TALLY_PORT reads the same

    names = ("TALLY_HOST", "TALLY_PORT", "TALLY_TLS_CERT")
    settings = config.load({name: source[name] for name in names if source.get(name)})
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)  # noqa: S104  # a wildcard bind is reached on loopback
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert is not None else "http"
    given = [name for name in names[:2] if source.get(name)]
    origin = " and ".join(given) if given else "the default (no --url, TALLY_URL or TALLY_PORT)"
    return f"{scheme}://{host}:{settings.port}", origin

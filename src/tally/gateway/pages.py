"""The web page: `GET /` and its few static files, served from memory with validators.

The page is plain HTML, CSS and one ES module (no build step), so it cannot carry fingerprinted
file names. Every file is therefore sent with `Cache-Control: no-cache` and an ETag: browsers
keep a copy but revalidate it (a cheap 304), and an upgraded Tally is never shown half old.

The page runs under a strict Content-Security-Policy: no inline script or style, nothing from
another origin. `connect-src 'self'` covers fetch, EventSource and same-origin ws(s)://.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.gateway.problems import Problem

STATIC_PACKAGE = "tally.gateway"
STATIC_DIR = "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_COMMON_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file's bytes, media type and strong validator, read once at start."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        suffix = name[name.rfind(".") :]
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        return cls(body, CONTENT_TYPES[suffix], etag)

    def response(self, request: Request, extra_headers: dict[str, str] | None = None) -> Response:
        headers = {"ETag": self.etag, **_COMMON_HEADERS, **(extra_headers or {})}
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, headers=headers, media_type=self.media_type)


def load_static() -> dict[str, StaticFile]:
    """Every servable file of the static directory, by name (so a request can only name these)."""
    folder = resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR)
    return {
        entry.name: StaticFile.of(entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.is_file() and entry.name[entry.name.rfind(".") :] in CONTENT_TYPES
    }


def page_routes() -> list[Route]:
    """`GET /` (the page) and `GET /static/{name}`; HEAD comes with GET."""
    files = load_static()
    index = files["index.html"]

    async def page(request: Request) -> Response:
        return index.response(request, _PAGE_HEADERS)

    async def presenter(request: Request) -> Response:
        # One page for every poll id: present.js reads it from the path (and says "no such poll").
        return files["present.html"].response(request, _PAGE_HEADERS)

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            raise Problem(404, "not-found")
        return found.response(request)

    async def verify(request: Request) -> Response:  # "verify my vote": static/verify.*
        return files["verify.html"].response(request, _PAGE_HEADERS)

    async def console(request: Request) -> Response:  # the organiser console: static/admin.*
        return files["admin.html"].response(request, _PAGE_HEADERS)

    return [
        Route("/", page, methods=["GET"]),
        Route("/verify", verify, methods=["GET"]),
        Route("/admin", console, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/present/{poll_id}", presenter, methods=["GET"]),
    ]


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}

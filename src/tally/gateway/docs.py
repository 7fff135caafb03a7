"""`GET /docs`: interactive API docs (Swagger UI) over this server's /openapi.json, from files
bundled in the package (static/docs, vendored from swagger-ui-dist with its licence): no CDN, no
network, nothing fetched from another origin.

The page runs under the pages' strict Content-Security-Policy (no inline script: Swagger UI is
started by docs.js, a file), widened by one source only: `img-src data:`, for the icons that
swagger-ui.css embeds as data: URLs. "Try it out" calls this origin (`connect-src 'self'`).
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.gateway.pages import CONTENT_SECURITY_POLICY, STATIC_DIR, STATIC_PACKAGE, StaticFile
from tally.gateway.problems import Problem

DOCS_DIR = "docs"
# The files a request may name (everything else in static/docs is licence text and notes).
SERVED = ("docs.html", "docs.js", "swagger-ui-bundle.js", "swagger-ui.css")
DOCS_CSP = CONTENT_SECURITY_POLICY.replace("img-src 'self'", "img-src 'self' data:")
_PAGE_HEADERS = {"Content-Security-Policy": DOCS_CSP, "Referrer-Policy": "no-referrer"}


def load_docs() -> dict[str, StaticFile]:
    folder = resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR).joinpath(DOCS_DIR)
    return {name: StaticFile.of(name, folder.joinpath(name).read_bytes()) for name in SERVED}


def docs_routes() -> list[Route]:
    """`GET /docs` (the page) and `GET /docs/{name}` (its script and style); HEAD comes with GET."""
    files = load_docs()
    page = files.pop("docs.html")

    async def docs(request: Request) -> Response:
        return page.response(request, _PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            raise Problem(404, "not-found")
        return found.response(request)

    return [
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/{name}", asset, methods=["GET"]),
    ]

"""What gets an audience from a big screen to the voting page: `GET /j/{code}` (a poll's short
join code, typed or scanned) and `GET /v1/polls/{poll_id}/qr.svg` (the QR code of that join URL,
drawn here by segno: no CDN, no script). The presenter page itself is static (pages.py).

The join URL is `<public origin>/j/<code>`: TALLY_PUBLIC_URL where the gateway sits behind a
proxy or a name the audience knows, else the scheme and host the request came to (what the
presenter's own browser used, so a phone on the same network gets there too).
"""

from __future__ import annotations

import hashlib
import html
import io
from urllib.parse import quote

import segno
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tally.domain.errors import PollNotFound
from tally.domain.polls import PollState
from tally.gateway.auth import Authenticator
from tally.gateway.pages import CONTENT_SECURITY_POLICY
from tally.gateway.problems import Problem
from tally.gateway.routes import poll_id_param
from tally.gateway.viewer import ensure_shown_to
from tally.service import VotingService
from tally.service.join_codes import JoinCodes

SVG = "image/svg+xml"
# The code of a poll never changes; the origin only with a restart under another
# TALLY_PUBLIC_URL (or another Host, which Vary names), so a day of caching is safe.
QR_CACHE = "public, max-age=86400"
# A draft's code is the organiser's only: no shared cache may keep the answer to their request.
DRAFT_QR_CACHE = "private, no-store"
_NO_SUCH_CODE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>No such join code</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main><h1>No such join code</h1>
<p>No poll has the join code <strong>{code}</strong>. Check the code on the screen and try again,
or <a href="/">see the open polls</a>.</p></main></body>
</html>
"""


class PresentRoutes:
    def __init__(
        self,
        service: VotingService,
        join_codes: JoinCodes,
        auth: Authenticator,
        public_url: str | None = None,
    ) -> None:
        """`public_url`: TALLY_PUBLIC_URL (scheme://host[:port], no trailing slash), or None to
        take the request's own scheme and host."""
        self._service = service
        self._join_codes = join_codes
        self._auth = auth
        self._public_url = public_url

    def routes(self) -> list[Route]:
        return [
            Route("/j/{code}", self.join, methods=["GET"]),
            Route("/v1/polls/{poll_id}/qr.svg", self.qr, methods=["GET"]),
        ]

    async def join(self, request: Request) -> Response:
        """303 to the voting page of the code's poll; an unknown code (or a draft's, but for an
        admin's request) is a 404, in HTML for a person (the usual caller: a phone that scanned
        or typed it), problem+json for a client that asks for JSON."""
        text: str = request.path_params["code"]
        poll_id = await self._join_codes.poll_for(text)
        if poll_id is not None:
            # A draft's code is an unknown one to all but an admin (VotingService.ensure_shown).
            authorization = request.headers.get("authorization")
            try:
                await ensure_shown_to(self._service, self._auth, authorization, poll_id)
            except PollNotFound:
                poll_id = None
        if poll_id is None:
            if "json" in request.headers.get("accept", ""):
                raise Problem(404, "join-code-not-found", f"no poll has the join code {text!r}")
            body = _NO_SUCH_CODE.format(code=html.escape(text[:32]))
            return Response(
                body,
                404,
                media_type="text/html; charset=utf-8",
                headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
            )
        return RedirectResponse(f"/?poll={quote(poll_id)}", 303)

    async def qr(self, request: Request) -> Response:
        """The QR code of the poll's join URL, as SVG (a draft's only for an admin: to anyone
        else a draft is an unknown poll)."""
        poll = await self._service.get_poll(poll_id_param(request))
        cache = QR_CACHE
        if poll.state is PollState.DRAFT:
            authorization = request.headers.get("authorization")
            await ensure_shown_to(self._service, self._auth, authorization, poll.id, poll.state)
            cache = DRAFT_QR_CACHE
        code = await self._join_codes.code_for(poll.id)
        body = qr_svg(f"{self._origin(request)}/j/{code}")
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        headers = {
            "ETag": etag,
            "Cache-Control": cache,
            "Vary": "Host",
            "X-Content-Type-Options": "nosniff",
        }
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type=SVG)

    def _origin(self, request: Request) -> str:
        if self._public_url is not None:
            return self._public_url
        return f"{request.url.scheme}://{request.url.netloc}"


def qr_svg(url: str) -> bytes:
    """`url` as a QR code (error correction M: a screen photographed at an angle, a glare),
    one unit per module with the standard 4-module quiet zone, scaled by its viewBox."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(
        out,
        kind="svg",
        scale=1,
        border=4,
        xmldecl=False,
        nl=False,
        omitsize=True,
        title=url,
        dark="#000",
        light="#fff",
    )
    return out.getvalue()

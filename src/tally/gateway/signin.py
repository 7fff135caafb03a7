"""Voter sign-in: `/auth/*`, ending in a Tally voting session the browser keeps.

    GET  /auth/config    {"oidc": bool, "demo": bool}: which sign-in this gateway offers
    GET  /auth/login     ?next=/path: to the provider (OIDC), or to the demo sign-in page
    GET  /auth/callback  the provider's answer: code exchanged once, ID token checked, session made
    GET  /auth/demo      the demo sign-in page (`tally serve --demo`, loopback only)
    POST /auth/demo      the demo form: a name and a role, the same session result

The OIDC flow is security/oidc.py's; what is in flight (state, nonce, PKCE verifier, `next`) lives
in a sealed cookie `tally_signin` (HttpOnly, SameSite=Lax, Path=/auth, 10 minutes), so any gateway
of a deployment can finish a sign-in another began. The session never travels in a URL: the
callback (and the demo form) answer a small HTML page carrying the session document in a data
attribute; /static/signin.js stores it in localStorage `tally.session` and replaces the location
with `next`, which must be a same-origin path (no open redirect).

Failures are problem documents with stable codes (signin-state, signin-refused, signin-token,
signin-provider, invalid-next); a browser (Accept: text/html) gets them as a readable page.
"""

from __future__ import annotations

import html
import re
import secrets
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

# The demo token's loopback rule (loopback peer and Host), so both demo doors open alike.
from tally.gateway.demo_token import _from_loopback as from_loopback
from tally.gateway.pages import CONTENT_SECURITY_POLICY, StaticFile, load_static
from tally.gateway.problems import Problem, problem_response
from tally.security.oidc import LoginState, OidcError, Provider, StateSeal, roles_of
from tally.security.oidc import verified_claims as oidc_claims
from tally.security.sessions import Sessions
from tally.security.tokens import Principal

COOKIE: Final = "tally_signin"
CALLBACK_PATH: Final = "/auth/callback"
MAX_NEXT_CHARS: Final = 512
MAX_NAME_CHARS: Final = 40
MAX_FORM_BYTES: Final = 2048
_STATUS: Final = {
    "signin-state": 400,
    "signin-refused": 400,
    "signin-token": 401,
    "signin-provider": 502,
}
_NO_STORE: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
# The demo page posts its form to itself; every other rule of the pages' policy stays.
_FORM_CSP: Final = CONTENT_SECURITY_POLICY.replace("form-action 'none'", "form-action 'self'")
_PAGE_HEADERS: Final = {**_NO_STORE, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """How this gateway signs voters in at the organiser's provider."""

    provider: Provider
    redirect_url: str | None  # None: /auth/callback on the request's own origin
    roles_claim: str
    admin_subjects: tuple[str, ...]


class SignIn:
    def __init__(
        self,
        sessions: Sessions,
        seal: StateSeal,
        oidc: OidcSettings | None,
        *,
        demo_issuer: str | None,
    ) -> None:
        """`demo_issuer`: the issuer demo sessions are minted under (the dev issuer's, so a
        demo voter is the same kind of voter as a `tally token` one); None: no demo sign-in."""
        self._sessions = sessions
        self._seal = seal
        self._oidc = oidc
        self._demo_issuer = demo_issuer
        self._demo_page: StaticFile = load_static()["signin.html"]

    def routes(self) -> list[Route]:
        return [
            Route("/auth/config", self.config, methods=["GET"]),
            Route("/auth/login", self.login, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
            Route("/auth/demo", self.demo, methods=["GET", "POST"]),
        ]

    def _demo_here(self, request: Request) -> bool:
        return self._demo_issuer is not None and from_loopback(request)

    async def config(self, request: Request) -> Response:
        body = {"oidc": self._oidc is not None, "demo": self._demo_here(request)}
        return Response(orjson.dumps(body), headers=_NO_STORE, media_type="application/json")

    async def login(self, request: Request) -> Response:
        try:
            next_path = safe_next(request.query_params.get("next"))
            if self._oidc is None:
                if not self._demo_here(request):
                    raise Problem(404, "not-found", "sign-in is not configured on this server")
                role = "admin" if request.query_params.get("role") == "admin" else "voter"
                query = urlencode({"next": next_path, "role": role})
                return RedirectResponse(f"/auth/demo?{query}", 303, headers=_NO_STORE)
            provider = self._oidc.provider
            metadata = await provider.metadata()
            login = LoginState.new(next_path, time.time())
            target = provider.authorization_url(metadata, login, self._redirect_url(request))
        except (Problem, OidcError) as exc:
            return _failure(request, exc)
        response = RedirectResponse(target, 303, headers=_NO_STORE)
        response.set_cookie(
            COOKIE,
            self._seal.seal(login),
            max_age=600,
            path="/auth",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        try:
            if self._oidc is None:
                raise Problem(404, "not-found", "sign-in is not configured on this server")
            login = self._seal.open(request.cookies.get(COOKIE), params.get("state"), time.time())
            provider = self._oidc.provider
            metadata = await provider.metadata()
            if params.get("error"):
                raise OidcError("signin-refused", f"the provider said {params['error'][:60]!r}")
            if "iss" in params and params["iss"] != metadata.issuer:  # RFC 9207 mix-up defence
                raise OidcError("signin-refused", "the answer names another issuer")
            code = params.get("code")
            if not code:
                raise OidcError("signin-refused", "the provider's answer has no code")
            redirect_url = self._redirect_url(request)
            id_token = await provider.exchange(code, login, redirect_url)
            claims = await oidc_claims(provider, id_token, login)
            roles = roles_of(claims, self._oidc.roles_claim, self._oidc.admin_subjects)
            subject = str(claims["sub"])
            token, principal = self._sessions.mint(metadata.issuer, subject, roles)
        except (Problem, OidcError) as exc:
            response = _failure(request, exc)
        except ValueError as exc:  # an issuer or subject a session cannot carry
            response = _failure(request, OidcError("signin-token", str(exc)))
        else:
            name = str(claims.get("name") or claims.get("preferred_username") or subject)
            response = _signed_in_page(token, principal, name[:MAX_NAME_CHARS], login.next_path)
        # The sign-in is over either way: a second visit of the callback finds no cookie.
        response.delete_cookie(COOKIE, path="/auth", httponly=True, samesite="lax")
        return response

    async def demo(self, request: Request) -> Response:
        if not self._demo_here(request):
            return problem_response(Problem(404, "not-found"), request.url.path)
        if request.method == "GET":
            # same-origin: the form's post then carries this origin (no-referrer sends null).
            headers = {
                **_NO_STORE,
                "Referrer-Policy": "same-origin",
                "Content-Security-Policy": _FORM_CSP,
            }
            return self._demo_page.response(request, headers)
        try:
            if not _same_origin(request):
                # A form on another site could post here and sign this browser in as its voter.
                raise Problem(403, "forbidden", "the demo sign-in accepts its own form only")
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                raise Problem(413, "body-too-large")
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            name = " ".join(form.get("name", "").split())
            if not 0 < len(name) <= MAX_NAME_CHARS or _UNPRINTABLE.search(name):
                raise Problem(422, "validation-failed", f"a name of 1-{MAX_NAME_CHARS} characters")
            role = form.get("role", "voter")
            if role not in ("voter", "admin"):
                raise Problem(422, "validation-failed", "role is voter or admin")
            next_path = safe_next(form.get("next"))
        except Problem as exc:
            return _failure(request, exc)
        assert self._demo_issuer is not None  # _demo_here
        subject = "demo-" + secrets.token_hex(8)  # two voters may pick one name
        roles = {"voter", "admin"} if role == "admin" else {"voter"}
        token, principal = self._sessions.mint(self._demo_issuer, subject, roles)
        return _signed_in_page(token, principal, name, next_path)

    def _redirect_url(self, request: Request) -> str:
        assert self._oidc is not None
        if self._oidc.redirect_url is not None:
            return self._oidc.redirect_url
        return f"{request.url.scheme}://{request.url.netloc}{CALLBACK_PATH}"


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this origin: Fetch Metadata where the browser
    sends it, else the Origin header (a page with a no-referrer policy sends `Origin: null`)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    return request.headers.get("origin") == f"{request.url.scheme}://{request.url.netloc}"


def safe_next(raw: str | None) -> str:
    """Where to return after signing in: a path on this origin, never another site."""
    if not raw:
        return "/"
    refused = Problem(400, "invalid-next", "next must be a path on this site, like /?poll=abc")
    if (
        len(raw) > MAX_NEXT_CHARS
        or not raw.startswith("/")
        or raw.startswith("//")
        or "\\" in raw
        or _UNPRINTABLE.search(raw)
    ):
        raise refused
    try:
        parts = urlsplit(raw)
    except ValueError:  # urlsplit's own refusals (an unbalanced IPv6 bracket), never a 500
        raise refused from None
    if parts.scheme or parts.netloc:
        raise refused
    return raw


def session_document(token: str, principal: Principal, name: str) -> dict[str, object]:
    """What the browser keeps in localStorage `tally.session` (the common brief's contract)."""
    return {
        "token": token,
        "subject": principal.subject,
        "name": name,
        "roles": sorted(principal.roles),
        "expires_at": principal.expires_at,
    }


def _signed_in_page(token: str, principal: Principal, name: str, next_path: str) -> Response:
    document = orjson.dumps(session_document(token, principal, name)).decode()
    page = _PAGE.format(
        title="Signing in",
        body=(
            f'<main id="signin-done" data-session="{html.escape(document)}" '
            f'data-next="{html.escape(next_path)}"><h1>Signed in</h1>'
            f"<p>Welcome, {html.escape(name)}. Taking you back&hellip;</p></main>"
        ),
    )
    return Response(page, 200, headers=_PAGE_HEADERS, media_type="text/html; charset=utf-8")


def _failure(request: Request, exc: Problem | OidcError) -> Response:
    problem = exc if isinstance(exc, Problem) else Problem(_STATUS[exc.code], exc.code, exc.detail)
    if "text/html" not in request.headers.get("accept", ""):
        response = problem_response(problem, request.url.path)
        response.headers.update(_NO_STORE)
        return response
    page = _PAGE.format(
        title="Sign-in failed",
        body=(
            f'<main id="signin-failed" data-code="{html.escape(problem.code)}">'
            f"<h1>Sign-in failed</h1><p>{html.escape(str(problem))}</p>"
            f"<p><code>{html.escape(problem.code)}</code></p>"
            '<p><a href="/">Back to Tally</a></p></main>'
        ),
    )
    return Response(page, problem.status, _PAGE_HEADERS, media_type="text/html; charset=utf-8")


_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Tally</title>
<link rel="stylesheet" href="/static/signin.css">
<script type="module" src="/static/signin.js"></script>
</head>
<body>
{body}
</body>
</html>
"""

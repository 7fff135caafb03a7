"""The page's files and the demo token endpoint over real HTTP, without a browser."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from demo_server import DemoTally, demo_tally

from conftest import RunningTally
from tally.gateway.pages import CONTENT_SECURITY_POLICY
from tally.security.tokens import TokenVerifier

STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "receipts.js": "text/javascript; charset=utf-8",
    "session.js": "text/javascript; charset=utf-8",  # signin's, loaded by the page too
    "pow.js": "text/javascript; charset=utf-8",
    "pow-worker.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# 30 KB until issue 12 added signing in (session.js, 3 KB), the voter's receipt (save, verify,
# shown again after a reload) and hidden results; still one request each, about 15 KB gzipped.
PAGE_BUDGET_BYTES = 48 * 1024
DEMO_TOKENS = pytest.mark.single_node(
    "the demo voter token endpoint exists only for `tally serve --demo` on its embedded "
    "valkey-server (gateway/demo_token.py); on an external store it is a 404"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    """One demo server for the module: these tests only read, or mint tokens."""
    with demo_tally(tmp_path_factory.mktemp("page-http")) as server:
        yield server


@pytest.fixture
def http(demo: DemoTally) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=10) as client:
        yield client


def test_the_page_is_html_under_a_strict_content_security_policy(http: httpx.Client) -> None:
    """`GET /` is the HTML page, sent with the CSP, nosniff, no referrer and revalidation."""
    answer = http.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = set(policy.split("; "))
    assert {"default-src 'none'", "script-src 'self'", "style-src 'self'"} <= directives
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/app.js"></script>' in answer.text


@pytest.mark.parametrize(("name", "media_type"), STATIC.items())
def test_static_files_revalidate_with_their_etag(
    http: httpx.Client, name: str, media_type: str
) -> None:
    """Each static file has its media type, `no-cache` and an ETag that answers 304."""
    answer = http.get(f"/static/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == media_type
    assert answer.headers["cache-control"] == "no-cache"
    again = http.get(f"/static/{name}", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == answer.headers["etag"]


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/", "/static/..%2fpages.py"])
def test_a_file_outside_the_static_set_is_a_404_problem(http: httpx.Client, path: str) -> None:
    """Only the files of the static directory are served; anything else is not-found."""
    answer = http.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "not-found"


def test_the_page_and_its_files_stay_small(http: httpx.Client) -> None:
    """Page, scripts, styles and icon together stay under 48 KB."""
    total = len(http.get("/").content) + sum(len(http.get(f"/static/{n}").content) for n in STATIC)
    assert total < PAGE_BUDGET_BYTES


@DEMO_TOKENS
def test_a_loopback_client_gets_fresh_demo_voter_tokens(
    demo: DemoTally, http: httpx.Client
) -> None:
    """With --demo, GET answers 204 and each POST mints a voter token for a new subject that votes."""
    assert http.get("/v1/demo/token").status_code == 204
    first, second = (http.post("/v1/demo/token") for _ in range(2))
    assert first.status_code == second.status_code == 201
    assert first.headers["cache-control"] == "no-store"
    verifier = TokenVerifier(demo.issuer.key_set(), issuer="tally-dev", audience="tally")
    principals = [verifier.verify(answer.json()["token"]) for answer in (first, second)]
    assert [p.subject for p in principals] == [first.json()["subject"], second.json()["subject"]]
    assert principals[0].subject != principals[1].subject
    assert all(p.roles == frozenset({"voter"}) and not p.is_admin for p in principals)
    vote = http.post(
        f"/v1/polls/{demo.demo_poll['id']}/votes",
        json={"option": "cascade"},
        headers={"Authorization": f"Bearer {first.json()['token']}"},
    )
    assert vote.status_code == 201


@DEMO_TOKENS
@pytest.mark.parametrize("host", ["tally.example", "tally.example:8000", "192.0.2.1", "[::1"])
def test_a_foreign_host_header_gets_no_demo_token(http: httpx.Client, host: str) -> None:
    """A Host that is not loopback (say, a rebinding DNS name) gets 404, as if there were no route."""
    for method in ("GET", "POST"):
        answer = http.request(method, "/v1/demo/token", headers={"Host": host})
        assert answer.status_code == 404
        assert answer.json()["code"] == "not-found"


@DEMO_TOKENS
@pytest.mark.parametrize("host", ["localhost:1", "127.0.0.1", "[::1]:8000"])
def test_loopback_host_names_are_accepted(http: httpx.Client, host: str) -> None:
    """localhost and loopback address literals, with or without a port, are loopback hosts."""
    assert http.get("/v1/demo/token", headers={"Host": host}).status_code == 204


def test_without_demo_there_is_no_demo_token_endpoint(tally: RunningTally) -> None:
    """`tally serve` without --demo answers 404 not-found on the demo token path."""
    with httpx.Client(base_url=tally.url, timeout=10) as http:
        for method in ("GET", "POST"):
            answer = http.request(method, "/v1/demo/token")
            assert answer.status_code == 404
            assert answer.json()["code"] == "not-found"

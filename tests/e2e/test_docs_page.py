"""/docs in a real Chromium against a real `tally serve`: the bundled Swagger UI renders every
operation of /openapi.json, and "Try it out" on GET /v1/polls answers, with no request leaving
the server's own origin (every request the page makes is logged and checked) and no script
error or Content-Security-Policy violation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, Route, expect
from screenshots import save_screenshot

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    with demo_tally(tmp_path_factory.mktemp("docs") / "data", demo=False) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with checked_page(browser, TIMEOUT_MS) as opened:
        yield opened


def test_docs_render_every_operation_and_try_it_out_stays_on_the_server(
    server: DemoTally, page: Page
) -> None:
    poll = server.open_poll("Docs poll", "Yes", "No")
    requested: list[str] = []
    elsewhere: list[str] = []

    def log(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    page.context.route("**/*", log)
    answer = page.goto(server.url + "/docs")
    assert answer is not None
    assert answer.status == 200
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp

    spec = httpx.get(server.url + "/openapi.json").json()
    operations = sum(
        1 for item in spec["paths"].values() for method in item if method in {"get", "post"}
    )
    expect(page.locator(".opblock")).to_have_count(operations)
    expect(page.locator(".info .title")).to_contain_text("Tally")

    listing = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/polls"]')
    )
    listing.locator(".opblock-summary").click()
    listing.locator(".try-out__btn").click()
    listing.locator(".execute").click()
    result = listing.locator(".live-responses-table tbody")
    expect(result.locator(".response-col_status")).to_have_text("200")
    expect(result.locator(".response-col_description")).to_contain_text(str(poll["id"]))
    result.scroll_into_view_if_needed()
    save_screenshot(page, "api-docs")

    assert elsewhere == [], f"requests that left {server.url}: {elsewhere}"
    assert f"{server.url}/openapi.json" in requested
    assert any(url.startswith(f"{server.url}/v1/polls") for url in requested)


def test_docs_assets_are_served_from_the_package_and_nothing_else(server: DemoTally) -> None:
    for name, media_type in [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("docs.js", "text/javascript"),
    ]:
        got = httpx.get(f"{server.url}/docs/{name}")
        assert got.status_code == 200
        assert got.headers["content-type"].startswith(media_type)
        assert got.headers["etag"]
    for name in ("LICENSE", "README.md", "..%2fapp.py", "docs.html"):
        missing = httpx.get(f"{server.url}/docs/{name}")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

"""The page over HTTPS and WSS in a real Chromium, against `tally serve --demo --tls-cert ...`
with a certificate from a throwaway CA (tests/tls_certs.py).

Chromium is told to trust exactly that server key (`--ignore-certificate-errors-spki-list` with
its SPKI hash), not to ignore certificate errors in general: a page served with any other
certificate would fail to load, so the test proves the right certificate was served."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import CHROMIUM, LAUNCH_ARGS, checked_page, chromium
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from tally.client import TallyClient
from tls_certs import Certificates, make_certificates

TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def browser(certs: Certificates) -> Iterator[Browser]:
    """Chromium that trusts the test server's key alone (skips when it is not installed)."""
    with chromium():  # the skip (or CI's failure) when /usr/bin/chromium is absent
        pass
    pinned = [*LAUNCH_ARGS, f"--ignore-certificate-errors-spki-list={certs.spki_sha256}"]
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=pinned, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def demo(tmp_path: Path, certs: Certificates) -> Iterator[DemoTally]:
    with demo_tally(tmp_path / "data", tls=(certs.cert, certs.key, certs.ca)) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with checked_page(browser, TIMEOUT_MS, reduced_motion="reduce") as opened:
        yield opened


def figures(page: Page, option_id: str) -> str:
    return f'#options li[data-option="{option_id}"] .figures'


def test_the_page_votes_over_https_and_sees_live_totals_over_wss(
    demo: DemoTally, page: Page
) -> None:
    """The page loads over https (HSTS with it), its live connection is a wss:// WebSocket, its
    own vote gets a receipt, and a vote cast elsewhere shows up live."""
    assert demo.url.startswith("https://")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    with page.expect_response(lambda answer: answer.url == demo.url + "/") as loaded:
        page.goto(demo.url + "/")
    assert loaded.value.headers["strict-transport-security"].startswith("max-age=")
    expect(page.locator("#live")).to_have_attribute("data-mode", "websocket")
    assert sockets, "the page opened no WebSocket"
    assert all(url.startswith("wss://127.0.0.1:") for url in sockets), sockets

    page.get_by_text("Advanced: use an API token").click()
    page.get_by_label("Voter token").fill(demo.issuer.mint("https-page-voter"))
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#voter")).to_have_text("Voting as https-page-voter")
    page.get_by_role("button", name="Vote for Aurora").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    expect(page.locator(figures(page, "aurora"))).to_have_text("1 vote · 100%")

    # Another voter, over the CLI's https client: the page hears it on its wss socket.
    other = TallyClient(demo.url, demo.issuer.mint("https-cli-voter"), ca_file=demo.ca_file)
    other.vote(str(demo.demo_poll["id"]), "borealis")
    expect(page.locator(figures(page, "borealis"))).to_have_text("1 vote · 50%")
    expect(page.locator("#poll-total")).to_have_text("2")
    expect(page.locator("#live")).to_have_attribute("data-mode", "websocket")


def test_another_certificate_is_not_trusted(tmp_path: Path, browser: Browser) -> None:
    """The pin is to the test server's key: a server with a certificate for another key (from
    another CA) fails to load, so the test above saw the certificate it made."""
    other = make_certificates(tmp_path / "other")
    with (
        demo_tally(tmp_path / "data", demo=False, tls=(other.cert, other.key, other.ca)) as server,
        checked_page(browser, TIMEOUT_MS) as page,
        pytest.raises(Error, match=re.compile("ERR_CERT", re.IGNORECASE)),
    ):
        page.goto(server.url + "/")

"""Results a poll hides (its `visibility`) on the voting page, in a real Chromium against a real
`tally serve --demo`: the turnout and a plain sentence instead of bars, and the counts once the
server sends them (after the voter's vote, or at the close), over the WebSocket, SSE and polling."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, Route, ViewportSize, WebSocketRoute, expect
from voter_session import sign_in_with_token

from tally.client import TallyClient

TIMEOUT_MS = 10_000
PHONE: ViewportSize = {"width": 390, "height": 844}
UNTIL_VOTE = "Results are hidden until you vote."
UNTIL_CLOSE = "Results are hidden until the poll closes."


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    """One demo server for the module: each test opens its own poll and uses its own voters."""
    with demo_tally(tmp_path_factory.mktemp("voter-hidden")) as running:
        yield running


@pytest.fixture(params=["websocket", "sse", "polling"])
def transport(request: pytest.FixtureRequest) -> str:
    """How the page follows the results: the WebSocket; SSE when the network refuses the
    WebSocket; polling /results when it refuses both."""
    return str(request.param)


@pytest.fixture
def page(transport: str, browser: Browser) -> Iterator[Page]:
    """A phone-sized page following the results over `transport`."""
    with checked_page(browser, TIMEOUT_MS, reduced_motion="reduce") as opened:
        opened.set_viewport_size(PHONE)
        if transport != "websocket":
            opened.route_web_socket(re.compile(r".*/live$"), _refuse_socket)
        if transport == "polling":
            opened.route(re.compile(r".*/events$"), _refuse_request)
        yield opened


def _refuse_socket(socket: WebSocketRoute) -> None:
    socket.close(code=1011, reason="refused by the test")


def _refuse_request(route: Route) -> None:
    route.abort("connectionrefused")


def hidden_poll(server: DemoTally, title: str, visibility: str) -> str:
    admin = server.admin()
    body = {"title": title, "options": ["Yes", "No"], "lanes": 2, "visibility": visibility}
    poll = admin.post("/v1/polls", body)
    admin.post(f"/v1/polls/{poll['id']}/open")
    return str(poll["id"])


def vote_elsewhere(server: DemoTally, poll_id: str, subject: str, option: str) -> None:
    TallyClient(server.url, server.issuer.mint(subject)).vote(poll_id, option)


def expect_hidden(page: Page, sentence: str, total: str) -> None:
    """The sentence and the turnout; no figure or bar of any option."""
    expect(page.locator("#results-hidden")).to_have_text(sentence)
    expect(page.locator("#poll-total")).to_have_text(total)
    expect(page.locator("#options .label")).to_have_text(["Yes", "No"])
    expect(page.locator("#options .figures")).to_have_text(["", ""])
    for part in (".figures", ".bar"):
        for index in range(2):
            expect(page.locator(f"#options {part}").nth(index)).to_be_hidden()


def expect_counts(page: Page, yes: str, no: str) -> None:
    expect(page.locator("#results-hidden")).to_be_hidden()
    figures = page.locator("#options .figures")
    expect(figures).to_have_text([yes, no])
    expect(figures.nth(0)).to_be_visible()
    expect(page.locator("#options .bar").nth(0)).to_be_visible()


def test_after_vote_a_voter_sees_the_counts_once_they_voted(
    server: DemoTally, page: Page, transport: str
) -> None:
    """Before voting: "hidden until you vote" beside a turnout of 1; after this voter's vote the
    same page shows both options' counts (the server sends them to this voter only)."""
    poll_id = hidden_poll(server, f"After vote ({transport})", "after-vote")
    vote_elsewhere(server, poll_id, f"early-{transport}", "yes")
    subject = f"hidden-voter-{transport}"
    url = f"{server.url}/?poll={poll_id}"
    sign_in_with_token(page, url, server.issuer.mint(subject), subject)
    expect(page.locator("#live")).to_have_attribute("data-mode", transport)
    expect_hidden(page, UNTIL_VOTE, "1")

    page.get_by_role("button", name="Vote for No").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    expect_counts(page, "1 vote · 50%", "1 vote · 50%")
    expect(page.locator("#poll-total")).to_have_text("2")
    expect(page.locator('#options li[data-option="no"]')).to_have_class(re.compile(r"\bchosen\b"))


def test_after_close_counts_stay_hidden_after_a_vote_and_appear_at_the_close(
    server: DemoTally, page: Page, transport: str
) -> None:
    """Hidden "until the poll closes" even to a voter who has voted; the close shows them."""
    poll_id = hidden_poll(server, f"After close ({transport})", "after-close")
    vote_elsewhere(server, poll_id, f"first-{transport}", "yes")
    subject = f"patient-voter-{transport}"
    url = f"{server.url}/?poll={poll_id}"
    sign_in_with_token(page, url, server.issuer.mint(subject), subject)
    expect(page.locator("#live")).to_have_attribute("data-mode", transport)
    expect_hidden(page, UNTIL_CLOSE, "1")

    page.get_by_role("button", name="Vote for Yes").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    expect_hidden(page, UNTIL_CLOSE, "2")

    server.admin().post(f"/v1/polls/{poll_id}/close")
    expect(page.locator("#poll-state")).to_have_text("closed")
    expect_counts(page, "2 votes · 100%", "0 votes · 0%")

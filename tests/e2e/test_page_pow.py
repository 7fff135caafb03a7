"""The page solves proof-of-work challenges in real Chromium (a Web Worker with WebCrypto) and
votes with the answer, against a real `tally serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, Route, expect

from tally.client import TallyClient
from tally.security.pow import solve

TIMEOUT_MS = 30_000  # a 16-bit challenge is ~65,000 hashes: about a second in Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    with demo_tally(tmp_path_factory.mktemp("pow-page") / "data", demo=False) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context; fails the test on script errors or Content-Security-Policy violations
    (the worker must load under the page's policy)."""
    with checked_page(browser, TIMEOUT_MS) as opened:
        yield opened


def pow_poll(server: DemoTally, title: str, difficulty: int) -> str:
    admin = server.admin()
    poll = admin.post(
        "/v1/polls",
        {
            "title": title,
            "options": ["Yes", "No"],
            "lanes": 2,
            "defences": {"pow": {"difficulty": difficulty}},
        },
    )
    admin.post(f"/v1/polls/{poll['id']}/open")
    return str(poll["id"])


def use_token(page: Page, server: DemoTally, subject: str) -> None:
    """Sign in on the page's advanced path: a bearer token pasted into its form."""
    page.get_by_text("Advanced: use an API token").click()
    page.get_by_label("Voter token").fill(server.issuer.mint(subject))
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#voter")).to_have_text(f"Voting as {subject}")


def test_the_page_solves_the_challenge_and_votes(server: DemoTally, page: Page) -> None:
    """A poll asking for 16 bits: the page shows it is checking, with a running hash count, then
    sends the answer with the vote, which is accepted and counted."""
    poll_id = pow_poll(server, "Proof of work", 16)
    # A solve is geometric: a lucky one ends before the first progress report. So the page gets
    # a challenge (real, for this voter) whose first answer is past nonce 40,000: ~20,000
    # hashes for each of its two workers, seconds here, long enough to report progress.
    voter = TallyClient(server.url, server.issuer.mint("pow-voter"))
    while True:
        document = voter.get(f"/v1/polls/{poll_id}/challenge")
        if int(solve(document["challenge"])) >= 40_000:
            break
    page.route(
        f"**/v1/polls/{poll_id}/challenge",
        lambda route: route.fulfill(json=document, headers={"Cache-Control": "no-store"}),
    )
    page.goto(f"{server.url}/?poll={poll_id}")
    use_token(page, server, "pow-voter")
    with page.expect_request(lambda r: r.url.endswith(f"/v1/polls/{poll_id}/votes")) as sent:
        page.get_by_role("button", name="Vote for Yes").click()
        outcome = page.locator("#outcome")
        expect(outcome).to_have_attribute("data-kind", "solving")
        expect(outcome).to_contain_text("Checking you\u2019re human")
        expect(outcome).to_contain_text("hashes")
    body = json.loads(sent.value.post_data or "{}")
    assert body["option"] == "yes"
    assert body["proof"].count(":") == 1
    expect(outcome).to_have_attribute("data-kind", "accepted")
    expect(page.locator("#poll-total")).to_have_text("1")
    assert server.admin().get(f"/v1/polls/{poll_id}/results")["counts"]["yes"] == 1


def test_a_428_is_solved_and_the_vote_sent_again(server: DemoTally, page: Page) -> None:
    """When the page did not expect a challenge (here its poll list says none is needed, as when
    the risk scorer asks for one) the server's 428 carries one: the page solves it and retries
    once, and the vote counts."""
    poll_id = pow_poll(server, "Asked later", 12)

    def without_pow(route: Route) -> None:
        listing = route.fetch().json()
        for poll in listing["polls"]:
            poll["defences"]["pow"]["difficulty"] = 0
        route.fulfill(json=listing)

    page.route("**/v1/polls", without_pow)
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if r.url.endswith(f"/{poll_id}/votes") else None,
    )
    page.goto(f"{server.url}/?poll={poll_id}")
    use_token(page, server, "asked-later")
    page.get_by_role("button", name="Vote for No").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    expect(page.locator("#poll-total")).to_have_text("1")
    assert statuses == [428, 201]
    assert server.admin().get(f"/v1/polls/{poll_id}/results")["counts"]["no"] == 1


def test_the_worker_is_served_under_the_page_policy(server: DemoTally, page: Page) -> None:
    """The worker and its module are static files of the page (script-src 'self')."""
    for name in ("pow.js", "pow-worker.js"):
        answer = page.request.get(f"{server.url}/static/{name}")
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/javascript")

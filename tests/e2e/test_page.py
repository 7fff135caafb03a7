"""The web page in a real Chromium against a real `tally serve --demo`: what a viewer sees and does."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Locator, Page, expect
from voter_session import sign_in_with_token

from tally.client import TallyClient
from tally.demo import DEMO_OPTIONS, DEMO_TITLE

# Kept after the run for a human to look at (a pytest tmp_path is removed after a few runs).
SCREENSHOT = Path(tempfile.gettempdir()) / "tally-page.png"
SCREENSHOT_NARROW = Path(tempfile.gettempdir()) / "tally-page-narrow.png"
TIMEOUT_MS = 10_000
LIVE = re.compile(r"^(websocket|sse|polling)$")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (skips when it is not installed)."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoTally]:
    """A fresh demo server per test, so the demo poll starts with no votes."""
    with demo_tally(tmp_path / "data") as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (empty localStorage); fails the test on script errors
    or Content-Security-Policy violations."""
    # Reduced motion turns off the bars' transition, so screenshots show final widths.
    with checked_page(browser, TIMEOUT_MS, reduced_motion="reduce") as opened:
        yield opened


def figures(page: Page, option_id: str) -> Locator:
    """The "N votes · P%" text of one option."""
    return page.locator(f'#options li[data-option="{option_id}"] .figures')


def test_the_demo_poll_is_shown_with_its_four_options(demo: DemoTally, page: Page) -> None:
    """The page opens the demo poll: title, open state, four options at 0 votes, live updates."""
    page.goto(demo.url + "/")
    expect(page.locator("#poll-title")).to_have_text(DEMO_TITLE)
    expect(page.locator("#poll-state")).to_have_text("open")
    expect(page.locator("#options .label")).to_have_text(DEMO_OPTIONS)
    expect(page.locator("#options .figures")).to_have_text(["0 votes · 0%"] * 4)
    expect(page.locator("#poll-total")).to_have_text("0")
    expect(page.locator("#live")).to_have_attribute("data-mode", LIVE)
    for label in DEMO_OPTIONS:
        expect(page.get_by_role("button", name=f"Vote for {label}")).to_be_enabled()


def test_the_demo_sign_in_brings_the_voter_back_to_the_poll_signed_in(
    demo: DemoTally, page: Page
) -> None:
    """ "Sign in to vote" -> the demo sign-in (a name) -> back on the same poll, voting as that
    name, with a Tally session that votes."""
    poll_url = f"{demo.url}/?poll={demo.demo_poll['id']}"
    page.goto(poll_url)
    page.get_by_role("button", name="Sign in to vote").click()
    page.get_by_label("Your name").fill("Ana")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(poll_url)
    expect(page.locator("#voter")).to_have_text("Voting as Ana")
    page.get_by_role("button", name="Vote for Cascade").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    expect(figures(page, "cascade")).to_have_text("1 vote · 100%")


def test_a_voter_votes_sees_the_count_and_a_repeat_gets_the_original_receipt(
    demo: DemoTally, page: Page
) -> None:
    """Signed in -> vote -> receipt and a count of 1; a second vote answers already-voted with
    the first vote's receipt, and the count stays 1."""
    sign_in_with_token(page, demo.url + "/", demo.issuer.mint("repeat-voter"), "repeat-voter")
    expect(page.locator("#voter")).to_have_text("Voting as repeat-voter")

    page.get_by_role("button", name="Vote for Aurora").click()
    outcome = page.locator("#outcome")
    expect(outcome).to_have_attribute("data-kind", "accepted")
    expect(outcome).to_contain_text("Your vote for Aurora is recorded.")
    expect(outcome.locator('[data-field="option"]')).to_have_text("Aurora")
    receipt = {
        field: outcome.locator(f'[data-field="{field}"]').text_content()
        for field in ("lane", "entry_id", "leaf_hash", "accepted_at")
    }
    assert receipt["entry_id"] == "1"
    assert len(bytes.fromhex(receipt["leaf_hash"] or "")) == 32
    expect(outcome.get_by_role("link", name="Save receipt")).to_have_attribute(
        "download", re.compile(r"^tally-receipt-.+\.json$")
    )
    expect(figures(page, "aurora")).to_have_text("1 vote · 100%")
    expect(page.locator("#poll-total")).to_have_text("1")

    page.get_by_role("button", name="Vote for Borealis").click()
    expect(outcome).to_have_attribute("data-kind", "already-voted")
    expect(outcome).to_contain_text("You have already voted in this poll, for Aurora.")
    expect(outcome.locator('[data-field="option"]')).to_have_text("Aurora")
    for field, value in receipt.items():
        expect(outcome.locator(f'[data-field="{field}"]')).to_have_text(value or "")
    expect(figures(page, "borealis")).to_have_text("0 votes · 0%")
    expect(page.locator("#poll-total")).to_have_text("1")

    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SCREENSHOT_NARROW), full_page=True)


def test_voting_signed_out_asks_to_sign_in_from_the_keyboard(demo: DemoTally, page: Page) -> None:
    """Enter on a vote button while signed out explains what is missing and focuses the
    sign-in button."""
    page.goto(demo.url + "/")
    page.get_by_role("button", name="Vote for Cascade").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#outcome")).to_contain_text("Sign in to vote")
    expect(page.get_by_role("button", name="Sign in to vote")).to_be_focused()


def test_a_pasted_token_is_used_and_a_refusal_shows_the_problem(
    demo: DemoTally, page: Page
) -> None:
    """The advanced path: a token typed into the field votes; an invalid one shows the problem's
    title; signing out forgets it."""
    page.goto(demo.url + "/")
    page.get_by_text("Advanced: use an API token").click()
    page.get_by_label("Voter token").fill("not-a-token")
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name="Vote for Dynamo").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "problem")
    expect(page.locator("#outcome")).to_contain_text("A valid bearer token is required")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in to vote")).to_be_visible()
    page.get_by_label("Voter token").fill(demo.issuer.mint("pasted-voter"))
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#voter")).to_have_text("Voting as pasted-voter")
    page.get_by_role("button", name="Vote for Dynamo").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    expect(figures(page, "dynamo")).to_have_text("1 vote · 100%")


def test_the_newest_open_poll_is_the_default_and_the_list_switches_polls(
    demo: DemoTally, page: Page
) -> None:
    """`/` shows the newest open poll; the poll list and `?poll=` select another one."""
    newer = demo.open_poll("Best colour", "Red", "Green", "Blue")
    page.goto(demo.url + "/")
    expect(page.locator("#poll-title")).to_have_text("Best colour")
    expect(page.locator("#options .label")).to_have_text(["Red", "Green", "Blue"])

    page.get_by_role("navigation").get_by_role("link", name=re.compile(DEMO_TITLE)).click()
    expect(page.locator("#poll-title")).to_have_text(DEMO_TITLE)
    assert page.url.endswith(f"?poll={demo.demo_poll['id']}")
    expect(page.locator('#poll-list a[aria-current="page"]')).to_contain_text(DEMO_TITLE)

    page.goto(f"{demo.url}/?poll={newer['id']}")
    expect(page.locator("#poll-title")).to_have_text("Best colour")


def test_a_closed_poll_shows_closed_with_voting_disabled(demo: DemoTally, page: Page) -> None:
    """A closed poll reads `closed` and its vote buttons are disabled."""
    poll = demo.open_poll("Already decided", "Yes", "No")
    demo.admin().post(f"/v1/polls/{poll['id']}/close")
    page.goto(f"{demo.url}/?poll={poll['id']}")
    expect(page.locator("#poll-state")).to_have_text("closed")
    expect(page.get_by_role("button", name="Vote for Yes")).to_be_disabled()
    expect(page.get_by_role("button", name="Vote for No")).to_be_disabled()


def test_without_any_sign_in_the_button_leads_to_the_token_form(tmp_path: Path, page: Page) -> None:
    """A server started without --demo and without a provider offers no sign-in (/auth/config):
    "Sign in to vote" says so and opens the token form instead."""
    with demo_tally(tmp_path / "data", demo=False) as server:
        server.open_poll("Plain", "Yes", "No")
        page.goto(server.url + "/")
        expect(page.locator("#poll-title")).to_have_text("Plain")
        expect(page.get_by_label("Voter token")).to_be_hidden()
        with page.expect_response(lambda answer: answer.url.endswith("/auth/config")) as asked:
            page.get_by_role("button", name="Sign in to vote").click()
        assert asked.value.json() == {"oidc": False, "demo": False}
        expect(page.locator("#sign-in-note")).to_contain_text("no sign-in set up")
        expect(page.get_by_label("Voter token")).to_be_focused()


def test_held_votes_show_as_under_review_beside_the_counts(demo: DemoTally, page: Page) -> None:
    """A poll whose risk rules hold every vote: the held vote is not counted, and the page says
    "1 under review" (hidden while nothing is held)."""
    fresh = {"signal": "token_age_s", "comparison": "below", "value": 3600, "score": 100,
             "reason": "fresh-token"}  # fmt: skip
    defences = {"risk": {"rules": [fresh], "challenge_at": 50, "hold_at": 100}}
    admin = demo.admin()
    poll = admin.post(
        "/v1/polls", {"title": "Held", "options": ["Yes", "No"], "lanes": 2, "defences": defences}
    )
    admin.post(f"/v1/polls/{poll['id']}/open")
    page.goto(f"{demo.url}/?poll={poll['id']}")
    expect(page.locator("#poll-title")).to_have_text("Held")
    expect(page.locator("#poll-review")).to_be_hidden()
    voter = TallyClient(demo.url, demo.issuer.mint("held-voter"))
    assert voter.post(f"/v1/polls/{poll['id']}/votes", {"option": "yes"})["held"]
    expect(page.locator("#poll-review")).to_have_text("1 under review")
    expect(page.locator("#poll-review")).to_be_visible()
    expect(page.locator("#poll-total")).to_have_text("0")

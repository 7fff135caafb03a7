"""The voting page as a voter uses it, in a real Chromium against a real `tally serve --demo`, at
phone (390x844) and desktop sizes: the vote, the chosen option highlighted (also after a reload),
the receipt saved and linked to its verification, signing out, and an unknown poll."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, ViewportSize, expect
from screenshots import save_screenshot
from voter_session import SESSION_KEY, sign_in_with_token, stored_receipts

from tally.audit.receipt_parse import parse_receipt

TIMEOUT_MS = 10_000
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
MIN_TAP_PX = 44  # the smallest comfortable touch target (Apple HIG 44 pt, Material 48 dp)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    """One demo server for the module: each test opens its own poll and uses its own voters."""
    with demo_tally(tmp_path_factory.mktemp("voter-page")) as running:
        yield running


@contextlib.contextmanager
def page_at(browser: Browser, viewport: ViewportSize) -> Iterator[Page]:
    """A checked page (no script error, no CSP violation) at `viewport`, downloads allowed;
    reduced motion, so a screenshot shows the bars' final widths."""
    with checked_page(
        browser, TIMEOUT_MS, reduced_motion="reduce", accept_downloads=True
    ) as opened:
        opened.set_viewport_size(viewport)
        yield opened


def row(page: Page, option_id: str) -> Any:
    return page.locator(f'#options li[data-option="{option_id}"]')


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_voter_votes_sees_the_choice_and_keeps_the_receipt(
    server: DemoTally, browser: Browser, size: str
) -> None:
    """Signed in, a vote for Green: Green is highlighted ("Your vote"), the receipt is said in
    words, stored in `tally.receipts` as the vote answered it, saved as a file the auditor reads,
    and linked to /verify; after a reload the page still shows Green as this browser's vote."""
    poll = server.open_poll("Which colour for the new hall?", "Red", "Green", "Blue")
    poll_id = str(poll["id"])
    subject = f"ana-{size}"
    with page_at(browser, PHONE if size == "phone" else DESKTOP) as page:
        url = f"{server.url}/?poll={poll_id}"
        sign_in_with_token(page, url, server.issuer.mint(subject), subject)
        expect(page.locator("#voter")).to_have_text(f"Voting as {subject}")
        expect(page.get_by_role("button", name="Sign in to vote")).to_be_hidden()
        expect(page.locator("#poll-title")).to_have_text("Which colour for the new hall?")

        with page.expect_response(lambda r: r.url.endswith(f"/{poll_id}/votes")) as answered:
            page.get_by_role("button", name="Vote for Green").click()
        receipt = answered.value.json()["receipt"]
        outcome = page.locator("#outcome")
        expect(outcome).to_have_attribute("data-kind", "accepted")
        expect(outcome).to_contain_text("Your vote for Green is recorded.")
        expect(outcome).to_contain_text(
            f"It is entry {receipt['entry_id']} of lane {receipt['lane']} in this poll's public ledger"
        )
        expect(row(page, "green")).to_have_class(re.compile(r"\bchosen\b"))
        expect(row(page, "green").get_by_text("Your vote")).to_be_visible()
        for other in ("red", "blue"):
            expect(row(page, other)).not_to_have_class(re.compile(r"\bchosen\b"))
            expect(row(page, other).get_by_text("Your vote")).to_be_hidden()
        expect(row(page, "green").locator(".figures")).to_have_text("1 vote · 100%")

        assert stored_receipts(page) == {poll_id: receipt}
        expect(outcome.get_by_role("link", name="Verify my vote")).to_have_attribute(
            "href", f"/verify?poll={poll_id}"
        )
        with page.expect_download() as saving:
            outcome.get_by_role("link", name="Save receipt").click()
        assert saving.value.suggested_filename == f"tally-receipt-{poll_id}.json"
        saved = Path(saving.value.path()).read_bytes()
        assert json.loads(saved) == receipt
        parsed = parse_receipt(saved)  # the file is one `tally audit receipt` takes
        assert (parsed.poll_id, parsed.option) == (poll_id, "green")
        assert parsed.leaf_hash.hex() == receipt["leaf_hash"]

        if size == "phone":
            # Thumb-sized vote buttons, and the poll before the list of polls.
            for option in ("red", "green", "blue"):
                box = row(page, option).get_by_role("button").bounding_box()
                assert box is not None
                assert box["height"] >= MIN_TAP_PX, box
            poll_box = page.locator("#poll-card").bounding_box()
            list_box = page.locator("#polls").bounding_box()
            assert poll_box is not None
            assert list_box is not None
            assert list_box["y"] > poll_box["y"] + poll_box["height"]
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            page.locator("#poll-card").scroll_into_view_if_needed()
            save_screenshot(page, "voting-phone")

        page.reload()
        expect(row(page, "green")).to_have_class(re.compile(r"\bchosen\b"))
        expect(outcome).to_have_attribute("data-kind", "stored")
        expect(outcome).to_contain_text("You voted for Green from this browser.")
        expect(outcome.locator('[data-field="leaf_hash"]')).to_have_text(receipt["leaf_hash"])
        expect(outcome.get_by_role("link", name="Verify my vote")).to_be_visible()

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("button", name="Sign in to vote")).to_be_visible()
        assert page.evaluate("(key) => localStorage.getItem(key)", SESSION_KEY) is None


def test_an_unknown_poll_shows_only_no_such_poll(server: DemoTally, browser: Browser) -> None:
    """`?poll=nope`: "No such poll" and a way to the list, nothing of any poll; reached from a
    poll by the history (the page's own navigation), no title, option or vote form stays."""
    shown = server.open_poll("Shown first", "Yes", "No")
    with page_at(browser, PHONE) as page:
        page.goto(f"{server.url}/?poll=nope")
        expect(page.get_by_role("heading", name="No such poll")).to_be_visible()
        assert page.title() == "No such poll · Tally"
        expect(page.locator("#poll-card")).to_be_hidden()
        expect(page.locator("#vote-card")).to_be_hidden()
        expect(page.locator("#options li")).to_have_count(0)
        expect(page.locator("#live")).to_have_attribute("data-mode", "idle")

        page.goto(f"{server.url}/?poll={shown['id']}")
        expect(page.locator("#poll-title")).to_have_text("Shown first")
        page.evaluate(
            "history.pushState(null, '', '?poll=also-nope');"
            "dispatchEvent(new PopStateEvent('popstate'))"
        )
        expect(page.get_by_role("heading", name="No such poll")).to_be_visible()
        expect(page.locator("#poll-card")).to_be_hidden()
        expect(page.locator("#vote-card")).to_be_hidden()
        expect(page.locator("#options li")).to_have_count(0)
        expect(page.get_by_role("button", name=re.compile("^Vote for"))).to_have_count(0)

        page.get_by_role("link", name="See the polls").click()
        expect(page).to_have_url(f"{server.url}/#polls")
        expect(page.locator("#poll-card")).to_be_visible()
        expect(page.locator("#poll-list")).to_contain_text("Shown first")
        expect(page.get_by_role("heading", name="No such poll")).to_be_hidden()


def test_a_poll_opened_after_the_page_loaded_is_found_by_its_link(
    server: DemoTally, browser: Browser
) -> None:
    """A join code's link may name a poll newer than the page's list: the page asks for it."""
    with page_at(browser, PHONE) as page:
        page.goto(server.url + "/")
        expect(page.locator("#poll-title")).not_to_have_text("Loading…")
        fresh = server.open_poll("Opened just now", "Left", "Right")
        page.evaluate(
            f"history.pushState(null, '', '?poll={fresh['id']}');"
            "dispatchEvent(new PopStateEvent('popstate'))"
        )
        expect(page.locator("#poll-title")).to_have_text("Opened just now")
        expect(page.locator("#options .label")).to_have_text(["Left", "Right"])


def test_a_join_code_opens_its_poll_on_a_phone(server: DemoTally, browser: Browser) -> None:
    """`/j/<code>` (typed from the big screen or scanned) lands on the voting page of that poll,
    the poll first and its vote buttons ready."""
    poll = server.open_poll("Joined by code", "Tea", "Coffee")
    with page_at(browser, PHONE) as page:
        page.goto(f"{server.url}/j/{poll['join_code']}")
        expect(page).to_have_url(f"{server.url}/?poll={poll['id']}")
        expect(page.locator("#poll-title")).to_have_text("Joined by code")
        expect(page.get_by_role("button", name="Vote for Coffee")).to_be_in_viewport()
        expect(page.get_by_role("button", name="Sign in to vote")).to_be_in_viewport()

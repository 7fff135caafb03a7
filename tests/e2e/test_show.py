"""The whole show in real Chromium, as issue 12's acceptance names it: an organiser signs in at the
OpenID Connect provider and creates, opens and closes a poll in /admin; the presenter screen
(1920x1080) shows its QR code and join code; three voters reach the voting page on phones by the
join code, sign in at the same provider and vote; the presenter's bars move to the right totals
and, at close, reveal the winner with the certificate's fingerprint; one voter's "verify my vote"
passes against the published ledger.

Every part is real: `tally serve` with its embedded Valkey, aggregator and archiver, the test OIDC
provider (oidc-provider on node), and the browser's own WebCrypto."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from conftest import RunningTally
from oidc.provider import (
    ORGANISER,
    gateway_signing_in_here,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless_chromium import chromium

pytestmark = pytest.mark.timeout(300)
PHONE: ViewportSize = {"width": 390, "height": 844}
HALL: ViewportSize = {"width": 1920, "height": 1080}
DESK: ViewportSize = {"width": 1440, "height": 900}
TIMEOUT_MS = 30_000
VOTERS = {"alice": "Aurora", "bob": "Aurora", "carol": "Comet"}


@pytest.fixture(scope="module")
def show(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    """`tally serve` signing voters in at a real provider, checkpointing every 200 ms."""
    env = {"TALLY_CHECKPOINT_INTERVAL_MS": "200"}
    with gateway_signing_in_here(tmp_path_factory.mktemp("show"), env) as server:
        yield server


def sign_in_at_provider(page: Page, login: str, back_to: str) -> None:
    """The provider's own login and consent pages, then back to `back_to`."""
    page.wait_for_url("http://127.0.0.1:*/interaction/**")
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("anything")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()  # consent
    page.wait_for_url(back_to)


def test_an_organiser_runs_a_show_that_voters_join_by_code_and_verify(
    show: RunningTally,
) -> None:
    with chromium() as browser:
        console = new_page(browser, DESK)
        console.goto(f"{show.url}/admin")
        console.get_by_role("button", name="Sign in").click()
        sign_in_at_provider(console, ORGANISER, f"{show.url}/admin")
        expect(console.locator("#console")).to_be_visible()

        console.get_by_label("Title", exact=True).fill("Which light show opens the final?")
        console.get_by_role("textbox", name=re.compile("^Options")).fill("Aurora\nBorealis\nComet")
        console.locator("#defences summary").click()
        console.get_by_label("Proof-of-work bits").fill("0")  # phones in a test solve no puzzle
        console.get_by_role("button", name="Create draft").click()
        expect(console.locator("#poll-state")).to_have_text("draft")
        # A draft is the organiser's only: the public list does not show it.
        assert httpx.get(f"{show.url}/v1/polls").json()["polls"] == []
        console.get_by_role("button", name="Open poll").click()
        expect(console.locator("#poll-state")).to_have_text("open")
        expect(console.locator("#links .code")).to_have_text(re.compile(r"^[0-9A-Z]{6}$"))
        join_code = console.locator("#links .code").inner_text()
        poll_id = poll_id_of(show, "Which light show opens the final?")

        presenter = new_page(browser, HALL)
        presenter.goto(f"{show.url}/present/{poll_id}")
        expect(presenter.locator("#banner")).to_have_text("Voting is open")
        expect(presenter.locator("#join-code")).to_have_text(join_code)
        expect(presenter.locator("#qr svg")).to_be_visible()
        expect(presenter.locator("#total")).to_have_text("0")

        phones = {}
        for login, option in VOTERS.items():
            phone = new_page(browser, PHONE)
            # What a voter types after scanning or reading the code: /j/<code>.
            phone.goto(f"{show.url}/j/{join_code.lower()}")
            phone.wait_for_url(f"{show.url}/?poll={poll_id}")
            phone.get_by_role("button", name="Sign in to vote").click()
            sign_in_at_provider(phone, login, f"{show.url}/?poll={poll_id}")
            phone.get_by_role("button", name=f"Vote for {option}").click()
            expect(phone.locator(".chosen")).to_contain_text(option)
            phones[login] = phone

        expect(presenter.locator("#total")).to_have_text("3")
        expect(bar(presenter, "aurora")).to_have_attribute("data-count", "2")
        expect(bar(presenter, "comet")).to_have_attribute("data-count", "1")
        expect(bar(presenter, "borealis")).to_have_attribute("data-count", "0")
        expect(console.locator("#t-total")).to_have_text("3")

        console.get_by_role("button", name="Close poll").click()
        console.get_by_role("button", name="Close now").click()
        expect(console.locator("#poll-state")).to_have_text("closed")
        expect(presenter.locator("#banner")).to_have_text("Voting has closed")
        expect(presenter.locator("#winner")).to_have_text("Aurora")
        expect(presenter.locator("#winner-figures")).to_have_text("2 votes · 67%")
        expect(presenter.locator("#certificate")).to_have_attribute("data-state", "certified")
        certificate = httpx.get(f"{show.url}/ledger/{poll_id}/certificate")
        assert certificate.status_code == 200
        digest = hashlib.sha256(certificate.content).hexdigest()
        shown = presenter.locator("#fingerprint").inner_text()
        assert re.sub(r"[^0-9a-f]", "", shown.lower()) == digest

        voter = phones["carol"]
        voter.get_by_role("link", name="Verify my vote").click()
        voter.wait_for_url(f"{show.url}/verify?poll={poll_id}")
        expect(voter.locator("#verdict")).to_have_attribute("data-verdict", "ok")
        expect(voter.locator("#proved")).to_contain_text("Comet")


def new_page(browser: Browser, size: ViewportSize) -> Page:
    context = browser.new_context(viewport=size)
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    return context.new_page()


def poll_id_of(server: RunningTally, title: str) -> str:
    polls = httpx.get(f"{server.url}/v1/polls").json()["polls"]
    return str(next(p["id"] for p in polls if p["title"] == title))


def bar(page: Page, option: str) -> Locator:
    return page.locator(f'#bars li[data-option="{option}"]')

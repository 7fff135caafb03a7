"""The organiser console (/admin) in a real Chromium against a real `tally serve --demo`: an
organiser creates, opens and closes a poll, watches its turnout move as votes arrive over HTTP,
and sees its ledger and certificate; drafts stay out of public view; a voter is refused; a bad
definition is shown next to its field and creates nothing."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, ViewportSize, expect
from screenshots import save_screenshot

from tally.client import TallyClient
from tally.gateway.pages import CONTENT_SECURITY_POLICY

TIMEOUT_MS = 10_000
CERTIFICATE_TIMEOUT_MS = 30_000  # the archiver certifies a closed poll within seconds
SESSION_KEY = "tally.session"
DESKTOP: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
MAX_SCREENSHOT_BYTES = 300_000
# The console's page, script, styles and the modules it loads (live.js, session.js), uncompressed:
# about 55 KB today, ~15 KB gzipped; an organiser's laptop, not a phone in a crowd.
CONSOLE_FILES = ("admin.js", "admin.css", "live.js", "session.js", "icon.svg")
CONSOLE_BUDGET_BYTES = 72 * 1024


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    """One server for the module: every test makes its own polls, with titles of its own."""
    with demo_tally(tmp_path_factory.mktemp("console") / "data") as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context (empty localStorage) that fails the test on script errors or CSP
    violations; reduced motion, so bars and screenshots show final widths."""
    with checked_page(browser, TIMEOUT_MS, reduced_motion="reduce") as opened:
        yield opened


def sign_in(page: Page, demo: DemoTally, subject: str, roles: list[str]) -> None:
    """Put a Tally session into the browser as sign-in leaves it (contract: localStorage
    `tally.session`); its credential is a dev-issuer JWT, which the server takes as a bearer."""
    token = demo.issuer.mint(subject, roles=roles) if roles else demo.issuer.mint(subject)
    session = {
        "token": token,
        "subject": subject,
        "name": subject.replace("-", " ").title(),
        "roles": roles,
        "expires_at": int(time.time()) + 3600,
    }
    page.goto(demo.url + "/static/icon.svg")  # the origin whose storage the console reads
    page.evaluate(
        "([key, value]) => localStorage.setItem(key, value)", [SESSION_KEY, json.dumps(session)]
    )


def open_console(page: Page, demo: DemoTally, path: str = "/admin") -> None:
    sign_in(page, demo, "organiser-olga", ["admin"])
    page.goto(demo.url + path)
    expect(page.locator("#console")).to_be_visible()


def fill_poll(page: Page, title: str, options: list[str], *, lanes: str = "2") -> None:
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_role("textbox", name=re.compile("^Options")).fill("\n".join(options))
    page.get_by_label("Lanes").select_option(lanes)


def admin_view(demo: DemoTally, poll_id: str) -> dict[str, Any]:
    return demo.admin().get(f"/v1/polls/{poll_id}")


def current_poll_id(page: Page) -> str:
    match = re.search(r"[?&]poll=([^&]+)", page.url)
    assert match, page.url
    return match.group(1)


def figures(page: Page, option_id: str) -> str:
    return page.locator(f'#options li[data-option="{option_id}"] .figures').inner_text()


def test_an_organiser_creates_opens_and_closes_a_poll_and_watches_it_live(
    demo: DemoTally, page: Page
) -> None:
    """Create (a draft, with the proof of work turned off in the defences), open, six votes
    arrive over HTTP and the turnout follows them (total, votes/s, per option), close, and the
    certificate's fingerprint appears. Every step is checked against the API too."""
    page.set_viewport_size(DESKTOP)
    open_console(page, demo)
    expect(page.locator("#create-card")).to_be_visible()
    fill_poll(page, "Song of the night", ["Aurora", "Borealis", "Cascade"])
    page.locator("#defences summary").click()
    page.get_by_label("Proof-of-work bits").fill("0")
    page.get_by_role("button", name="Create draft").click()

    expect(page.locator("#poll-title")).to_have_text("Song of the night")
    expect(page.locator("#poll-state")).to_have_text("draft")
    poll_id = current_poll_id(page)
    created = admin_view(demo, poll_id)
    assert created["state"] == "draft"
    assert [o["label"] for o in created["options"]] == ["Aurora", "Borealis", "Cascade"]
    assert (created["lanes"], created["defences"]["pow"]["difficulty"]) == (2, 0)
    listed = page.locator(f'#poll-list a[data-poll="{poll_id}"]')
    expect(listed).to_contain_text("draft")
    expect(page.get_by_role("button", name="Close poll")).to_be_visible()
    expect(page.get_by_role("link", name="Voting page")).to_have_count(0)  # nobody sees a draft
    expect(page.locator("#exports")).to_be_hidden()

    page.get_by_role("button", name="Open poll").click()
    expect(page.locator("#poll-state")).to_have_text("open")
    expect(page.get_by_role("button", name="Open poll")).to_be_hidden()
    expect(listed).to_contain_text("open")
    assert admin_view(demo, poll_id)["state"] == "open"
    expect(page.get_by_role("link", name="Presenter screen")).to_have_attribute(
        "href", f"/present/{poll_id}"
    )
    expect(page.get_by_role("link", name="Voting page")).to_have_attribute(
        "href", f"/?poll={poll_id}"
    )
    join_code = admin_view(demo, poll_id)["join_code"]
    expect(page.locator("#links .code")).to_have_text(join_code)
    expect(page.locator("#live")).to_have_attribute(
        "data-mode", re.compile("websocket|sse|polling")
    )
    expect(page.locator("#t-total")).to_have_text("0")

    # One vote first, seen, so the console has a baseline before the other three arrive.
    ballots = ["aurora", "aurora", "cascade", "aurora"]
    for n, option in enumerate(ballots):
        TallyClient(demo.url, demo.issuer.mint(f"console-voter-{n}")).vote(poll_id, option)
        if n == 0:
            expect(page.locator("#t-total")).to_have_text("1")
    expect(page.locator("#t-total")).to_have_text("4")
    expect(page.locator('#options li[data-option="aurora"] .figures')).to_have_text("3 · 75.0%")
    expect(page.locator('#options li[data-option="cascade"] .figures')).to_have_text("1 · 25.0%")
    expect(page.locator('#options li[data-option="borealis"] .figures')).to_have_text("0 · 0.0%")
    rate = float(page.locator("#t-rate").inner_text())
    assert rate > 0  # four votes within the last five seconds
    # The lanes' published checkpoints come to hold the four votes (the archiver trails by a few
    # seconds; the console asks every five).
    page.wait_for_function(
        """() => [...document.querySelectorAll('#checkpoint-rows tr:not([data-log="admin"]) td')]
            .filter((cell, i) => i % 2 === 0)
            .reduce((sum, cell) => sum + Number(cell.textContent), 0) >= 4""",
        timeout=CERTIFICATE_TIMEOUT_MS,
    )
    # Two more votes, so the screenshot shows a poll in full flow (votes/s above 0 again).
    for n in (4, 5):
        TallyClient(demo.url, demo.issuer.mint(f"console-voter-{n}")).vote(poll_id, "borealis")
    expect(page.locator("#t-total")).to_have_text("6")
    expect(page.locator('#options li[data-option="borealis"] .figures')).to_have_text("2 · 33.3%")
    assert float(page.locator("#t-rate").inner_text()) > 0
    screenshot = save_screenshot(page, "console")
    assert screenshot.stat().st_size < MAX_SCREENSHOT_BYTES

    page.get_by_role("button", name="Close poll").click()
    page.get_by_role("button", name="Close now").click()
    expect(page.locator("#poll-state")).to_have_text("closed")
    expect(page.get_by_role("button", name="Close poll")).to_be_hidden()
    assert admin_view(demo, poll_id)["state"] == "closed"
    expect(page.locator("#certificate")).to_have_attribute(
        "data-state", "certified", timeout=CERTIFICATE_TIMEOUT_MS
    )
    expect(page.locator("#fingerprint")).to_have_text(
        re.compile(r"^([0-9a-f]{4} ){15}[0-9a-f]{4}$")
    )
    expect(page.locator("#certificate-text")).to_contain_text(
        "count aurora 3", use_inner_text=False
    )
    expect(page.locator('#checkpoint-rows tr[data-log="admin"]')).to_be_visible()
    # The exports come down with the organiser's credential, as files.
    with page.expect_download() as results_csv:
        page.get_by_role("button", name="Results (CSV)").click()
    assert results_csv.value.suggested_filename == f"tally-results-{poll_id}.csv"
    rows = Path(results_csv.value.path()).read_text().splitlines()
    assert rows[0] == "option_id,label,votes,share"
    assert rows[1].startswith("aurora,Aurora,3,")
    assert rows[-1].startswith(",Total,6,")
    with page.expect_download() as turnout_csv:
        page.get_by_role("button", name="Turnout per minute (CSV)").click()
    turnout = Path(turnout_csv.value.path()).read_text().splitlines()
    assert turnout[0] == "minute,votes,cumulative"
    assert turnout[-1].endswith(",6")  # certified: every ballot is in the ledger's count
    # The votes per second fall back to 0 once nothing arrives for the length of the window.
    expect(page.locator("#t-rate")).to_have_text("0.0", timeout=CERTIFICATE_TIMEOUT_MS)


def test_the_organiser_sees_the_counts_a_poll_hides_until_close(
    demo: DemoTally, page: Page
) -> None:
    """Created in the console with results after close (contract: result visibility): the public
    results keep the counts back, the console, watching as an organiser, shows them."""
    open_console(page, demo)
    fill_poll(page, "Secret ballot", ["Yes", "No"], lanes="1")
    page.get_by_label("Results").select_option("after-close")
    page.locator("#defences summary").click()
    page.get_by_label("Proof-of-work bits").fill("0")
    page.get_by_role("button", name="Create draft").click()
    expect(page.locator("#poll-state")).to_have_text("draft")
    poll_id = current_poll_id(page)
    assert admin_view(demo, poll_id)["visibility"] == "after-close"
    expect(page.locator("#poll-facts")).to_contain_text("results after close")
    page.get_by_role("button", name="Open poll").click()
    expect(page.locator("#poll-state")).to_have_text("open")
    TallyClient(demo.url, demo.issuer.mint("secret-voter")).vote(poll_id, "yes")
    expect(page.locator("#t-total")).to_have_text("1")
    expect(page.locator('#options li[data-option="yes"] .figures')).to_have_text("1 · 100.0%")
    expect(page.locator("#counts-hidden")).to_be_hidden()
    public = TallyClient(demo.url).get(f"/v1/polls/{poll_id}/results")
    assert (public["counts"], public["hidden"], public["total"]) == (None, "until-close", 1)


def test_the_console_fits_a_phone(demo: DemoTally, page: Page) -> None:
    """At 390x844 the poll, its turnout and its controls are on screen without sideways
    scrolling."""
    poll = demo.open_poll("Phone poll", "Yes", "No")
    page.set_viewport_size(PHONE)
    open_console(page, demo, f"/admin?poll={poll['id']}")
    expect(page.locator("#poll-title")).to_have_text("Phone poll")
    expect(page.get_by_role("button", name="Close poll")).to_be_in_viewport()
    expect(page.locator("#t-total")).to_be_in_viewport()
    for n, option in enumerate(["yes", "yes", "no"]):
        TallyClient(demo.url, demo.issuer.mint(f"phone-voter-{n}")).vote(poll["id"], option)
    expect(page.locator("#t-total")).to_have_text("3")
    expect(page.locator('#options li[data-option="yes"] .figures')).to_have_text("2 · 66.7%")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot = save_screenshot(page, "console-phone")
    assert screenshot.stat().st_size < MAX_SCREENSHOT_BYTES


def test_held_votes_show_in_the_turnout_with_their_reasons(demo: DemoTally, page: Page) -> None:
    """A poll whose risk rules hold every vote: the held vote is not in the total, and the
    console shows it held for review with its reason."""
    fresh = {"signal": "token_age_s", "comparison": "below", "value": 3600, "score": 100,
             "reason": "fresh-token"}  # fmt: skip
    defences = {"risk": {"rules": [fresh], "challenge_at": 50, "hold_at": 100}}
    admin = demo.admin()
    poll = admin.post("/v1/polls", {"title": "Held", "options": ["Yes", "No"], "lanes": 1,
                                    "defences": defences})  # fmt: skip
    admin.post(f"/v1/polls/{poll['id']}/open")
    open_console(page, demo, f"/admin?poll={poll['id']}")
    expect(page.locator("#poll-title")).to_have_text("Held")
    expect(page.locator("#held-detail")).to_be_hidden()
    voter = TallyClient(demo.url, demo.issuer.mint("console-held-voter"))
    assert voter.vote(poll["id"], "yes")["held"]
    expect(page.locator("#t-held")).to_have_text("1")
    expect(page.locator("#t-total")).to_have_text("0")
    expect(page.locator("#held-detail")).to_contain_text("fresh-token 1")


def test_drafts_are_in_the_console_but_not_on_the_public_page_or_list(
    demo: DemoTally, page: Page
) -> None:
    """A draft is listed in /admin (and opens there); GET /v1/polls and the voting page's list
    leave it out, and the voting page at its address says there is no such poll."""
    draft = demo.admin().post("/v1/polls", {"title": "Secret draft", "options": ["A", "B"]})
    public = TallyClient(demo.url).get("/v1/polls")["polls"]
    assert draft["id"] not in [p["id"] for p in public]
    assert public  # the open demo poll is listed: the list works, it leaves the draft out

    page.goto(demo.url + "/")
    expect(page.locator("#poll-list a").first).to_be_visible()
    expect(page.locator("#poll-list")).not_to_contain_text("Secret draft")
    page.goto(f"{demo.url}/?poll={draft['id']}")
    expect(page.locator("#missing")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Secret draft")

    open_console(page, demo)
    listed = page.locator(f'#poll-list a[data-poll="{draft["id"]}"]')
    expect(listed).to_contain_text("Secret draft")
    expect(listed).to_contain_text("draft")
    listed.click()
    expect(page.locator("#poll-title")).to_have_text("Secret draft")
    expect(page.locator("#poll-state")).to_have_text("draft")
    assert current_poll_id(page) == draft["id"]


def test_a_voter_is_told_the_console_needs_the_organiser_role(demo: DemoTally, page: Page) -> None:
    """Signed in without the admin role: the console is not shown, the reason is."""
    sign_in(page, demo, "voter-vera", [])
    page.goto(demo.url + "/admin")
    expect(page.locator("#gate")).to_be_visible()
    expect(page.locator("#gate-text")).to_contain_text(
        "this needs the organiser role", ignore_case=True
    )
    expect(page.locator("#console")).to_be_hidden()
    expect(page.locator("#who-name")).to_have_text("Voter Vera")


def test_without_a_session_the_console_asks_to_sign_in(demo: DemoTally, page: Page) -> None:
    page.goto(demo.url + "/admin")
    expect(page.locator("#gate-text")).to_contain_text("Sign in as an organiser")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()


def test_an_organiser_signs_in_through_the_demo_sign_in_and_out_again(
    demo: DemoTally, page: Page
) -> None:
    """The console's Sign in goes through the server's sign-in (here `--demo`'s, as organiser)
    and comes back to /admin with a Tally session; Sign out leaves the console again."""
    page.goto(demo.url + "/admin")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Your name").fill("Olga Organiser")
    page.get_by_label("Organiser (admin)").check()
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/admin$"))
    expect(page.locator("#console")).to_be_visible()
    expect(page.locator("#who-name")).to_have_text("Olga Organiser")
    session = json.loads(page.evaluate("key => localStorage.getItem(key)", SESSION_KEY))
    assert "admin" in session["roles"]
    expect(page.locator("#poll-list")).to_contain_text("Tally demo")  # the admin list answered
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#console")).to_be_hidden()
    expect(page.locator("#gate-text")).to_contain_text("signed out")
    assert page.evaluate("key => localStorage.getItem(key)", SESSION_KEY) is None


def test_a_credential_the_server_refuses_shows_the_sign_in_again(
    demo: DemoTally, page: Page
) -> None:
    """A session whose roles say admin but whose token the server does not take (forged): the
    server's 401 decides, not the browser's copy of the roles."""
    sign_in(page, demo, "forger-fred", ["admin"])
    page.evaluate(
        """key => {
          const session = JSON.parse(localStorage.getItem(key));
          session.token = session.token.slice(0, -4) + "AAAA";
          localStorage.setItem(key, JSON.stringify(session));
        }""",
        SESSION_KEY,
    )
    page.goto(demo.url + "/admin")
    expect(page.locator("#gate-text")).to_contain_text("sign in again")
    expect(page.locator("#console")).to_be_hidden()


def test_bad_input_is_shown_next_to_its_field_and_creates_nothing(
    demo: DemoTally, page: Page
) -> None:
    """The server's problem+json errors land beside the field they name, one after another as
    each is fixed; a refused definition leaves no poll behind."""
    open_console(page, demo)
    title_error, options_error = page.locator("#e-title"), page.locator("#e-options")

    fill_poll(page, "   ", ["Only", "Two"])
    page.get_by_role("button", name="Create draft").click()
    expect(title_error).to_contain_text("1 to 200 characters")
    expect(page.get_by_label("Title", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(options_error).to_be_empty()

    fill_poll(page, "Bad input poll", ["Only one"])
    page.get_by_role("button", name="Create draft").click()
    expect(options_error).to_contain_text("2 to 64 options")
    expect(title_error).to_be_empty()

    fill_poll(page, "Bad input poll", ["Same", "same"])
    page.get_by_role("button", name="Create draft").click()
    expect(options_error).to_contain_text("Option 2")
    expect(options_error).to_contain_text("duplicate")

    fill_poll(page, "Bad input poll", ["Yes", "No"])
    page.get_by_label("Deadline").fill("2001-01-01T10:00")
    page.get_by_role("button", name="Create draft").click()
    expect(page.locator("#e-closes_at")).to_contain_text("in the future")
    expect(options_error).to_be_empty()

    page.get_by_label("Deadline").fill("")
    page.locator("#defences summary").click()
    page.get_by_label("Hold for review at score").fill("lots")
    page.get_by_role("button", name="Create draft").click()
    expect(page.locator("#e-hold-at")).not_to_be_empty()
    expect(page.get_by_label("Hold for review at score")).to_have_attribute("aria-invalid", "true")

    expect(page.locator("#create-card")).to_be_visible()
    titles = [p["title"] for p in demo.admin().get("/v1/polls?include=drafts")["polls"]]
    assert "Bad input poll" not in titles


def test_the_console_is_served_under_the_pages_strict_policy(demo: DemoTally) -> None:
    """`GET /admin` is the console's HTML with the CSP and headers of every page; its files
    revalidate with their ETags; all of it stays within its size budget."""
    with httpx.Client(base_url=demo.url, timeout=10) as http:
        answer = http.get("/admin")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-cache"
        assert '<script type="module" src="/static/admin.js"></script>' in answer.text
        again = http.get("/admin", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
        total = len(answer.content)
        for name in CONSOLE_FILES:
            served = http.get(f"/static/{name}")
            assert served.status_code == 200, name
            assert served.headers["cache-control"] == "no-cache"
            total += len(served.content)
        assert total < CONSOLE_BUDGET_BYTES

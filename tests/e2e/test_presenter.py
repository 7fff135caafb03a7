"""The presenter screen (/present/{poll}) in a real Chromium against a real `tally serve --demo`:
what a hall sees. Bars follow the votes as they arrive (HTTP votes with dev-issuer tokens), the
QR code on screen scans to the join URL (zxing-cpp, tests/qr_reader.py) and the join link
reaches the voting page, the countdown runs, and at close the winner (or a tie) is revealed
with the fingerprint of the certificate the archiver signed."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, ViewportSize, expect
from screenshots import save_screenshot

from qr_reader import decode_svg
from tally.client import TallyClient

TIMEOUT_MS = 10_000
CERTIFICATE_TIMEOUT_MS = 30_000  # the archiver certifies a closed poll within a few checkpoints
FULL_HD: ViewportSize = {"width": 1920, "height": 1080}
OPTIONS = ("Aurora", "Borealis", "Comet")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    """One server for the module (each test makes its own polls), checkpointing often so that a
    closed poll is certified in about a second."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TALLY_CHECKPOINT_INTERVAL_MS", "200")
        with demo_tally(tmp_path_factory.mktemp("presenter") / "data") as server:
            yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with checked_page(browser, TIMEOUT_MS) as opened:
        opened.set_viewport_size(FULL_HD)
        yield opened


def open_poll(demo: DemoTally, title: str, **extra: Any) -> dict[str, Any]:
    admin = demo.admin()
    poll = admin.post("/v1/polls", {"title": title, "options": list(OPTIONS), "lanes": 2, **extra})
    return admin.post(f"/v1/polls/{poll['id']}/open")


def vote(demo: DemoTally, poll: dict[str, Any], voter: str, option: str) -> None:
    client = TallyClient(demo.url, demo.issuer.mint(f"{poll['id']}-{voter}"))
    client.post(f"/v1/polls/{poll['id']}/votes", {"option": option})


def bar(page: Page, option: str) -> Any:
    return page.locator(f'#bars li[data-option="{option}"]')


def fill_ratio(page: Page, option: str) -> float:
    """How much of its track an option's bar fills now (as drawn, mid-transition included)."""
    ratio: float = bar(page, option).evaluate(
        "li => li.querySelector('.fill').getBoundingClientRect().width"
        " / li.querySelector('.track').getBoundingClientRect().width"
    )
    return ratio


def fingerprint_of(demo: DemoTally, poll_id: str) -> str:
    with urllib.request.urlopen(f"{demo.url}/ledger/{poll_id}/certificate") as answer:  # noqa: S310 - the test's own http server
        digest = hashlib.sha256(answer.read()).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def test_bars_follow_the_votes_and_the_winner_is_revealed_with_the_certificate(
    demo: DemoTally, page: Page
) -> None:
    closes_at = datetime.now(UTC) + timedelta(minutes=10)
    poll = open_poll(demo, "Which light show opens the final?", closes_at=closes_at.isoformat())
    page.goto(f"{demo.url}/present/{poll['id']}")
    expect(page.locator("#title")).to_have_text("Which light show opens the final?")
    expect(page.locator("#banner")).to_have_text("Voting is open")
    expect(page.locator("#live")).to_have_attribute("data-mode", "websocket")
    expect(page.locator("#bars .label")).to_have_text(list(OPTIONS))

    # Join: the code, the URL in words, and a QR code that scans to that URL.
    code = poll["join_code"]
    join_url = f"{demo.url}/j/{code}"
    expect(page.locator("#join-code")).to_have_text(code)
    expect(page.locator("#join-url")).to_have_text(join_url.removeprefix("http://"))
    expect(page.locator("#qr svg")).to_be_visible()
    assert decode_svg(page.locator("#qr").inner_html().encode()) == join_url

    # Countdown to the deadline, running.
    countdown = page.locator("#countdown-time")
    expect(countdown).to_have_text(_clock_between(9 * 60 + 50, 10 * 60))
    first = _seconds(countdown.inner_text())
    time.sleep(1.2)
    assert _seconds(countdown.inner_text()) < first

    # Votes arrive: the bars grow (a CSS transition) to the totals.
    for number, option in enumerate(["aurora", "borealis", "aurora", "aurora", "borealis"]):
        vote(demo, poll, f"v{number}", option)
    expect(page.locator("#total")).to_have_text("5")
    # Votes/s over the last seconds, updated each second: above 0 while they are recent.
    expect(page.locator("#rate")).not_to_have_text(re.compile(r"^0(\.0)?$"))
    expect(bar(page, "aurora")).to_have_attribute("data-count", "3")
    expect(bar(page, "borealis")).to_have_attribute("data-count", "2")
    expect(bar(page, "comet")).to_have_attribute("data-count", "0")
    expect(bar(page, "aurora").locator(".figures")).to_have_text("3 · 60%")
    expect(bar(page, "borealis").locator(".figures")).to_have_text("2 · 40%")
    transition = (
        bar(page, "aurora")
        .locator(".fill")
        .evaluate(
            "f => getComputedStyle(f).transitionProperty + ' ' + getComputedStyle(f).transitionDuration"
        )
    )
    assert transition.startswith("width")
    assert "0.8s" in transition
    _eventually(lambda: abs(fill_ratio(page, "aurora") - 1) < 0.01)  # the leader spans it
    _eventually(lambda: abs(fill_ratio(page, "borealis") - 2 / 3) < 0.01)
    assert fill_ratio(page, "comet") == 0
    save_screenshot(page, "presenter")

    # Close: the winner, and the certificate's fingerprint once the archiver signed it.
    demo.admin().post(f"/v1/polls/{poll['id']}/close")
    expect(page.locator("#banner")).to_have_text("Voting has closed")
    expect(page.locator("#reveal-word")).to_have_text("Winner")
    expect(page.locator("#winner")).to_have_text("Aurora")
    expect(page.locator("#winner-figures")).to_have_text("3 votes · 60%")
    expect(bar(page, "aurora")).to_have_attribute("data-winner", "true")
    expect(page.locator("#countdown")).to_be_hidden()
    expect(page.locator("#certificate")).to_have_attribute(
        "data-state", "certified", timeout=CERTIFICATE_TIMEOUT_MS
    )
    expect(page.locator("#fingerprint")).to_have_text(fingerprint_of(demo, poll["id"]))
    page.locator("#winner").evaluate("w => Promise.all(w.getAnimations().map(a => a.finished))")
    save_screenshot(page, "presenter-closed")


def test_the_countdown_runs_on_the_servers_clock_when_the_screens_clock_is_off(
    demo: DemoTally, page: Page
) -> None:
    """A hall's laptop seven minutes fast still counts down the ten minutes left: the page
    takes the server's clock from the poll document's Date header."""
    closes_at = datetime.now(UTC) + timedelta(minutes=10)
    poll = open_poll(demo, "Clock drift", closes_at=closes_at.isoformat())
    page.add_init_script("{ const now = Date.now; Date.now = () => now() + 7 * 60 * 1000; }")
    page.goto(f"{demo.url}/present/{poll['id']}")
    assert page.evaluate("Date.now()") - time.time() * 1000 > 6 * 60 * 1000
    expect(page.locator("#countdown-time")).to_have_text(_clock_between(9 * 60 + 45, 10 * 60))


def test_a_tie_is_said_to_be_a_tie(demo: DemoTally, page: Page) -> None:
    poll = open_poll(demo, "Tie break")
    page.goto(f"{demo.url}/present/{poll['id']}")
    expect(page.locator("#countdown")).to_be_hidden()  # no deadline, no countdown
    for number, option in enumerate(["aurora", "comet", "comet", "aurora"]):
        vote(demo, poll, f"t{number}", option)
    expect(page.locator("#total")).to_have_text("4")
    demo.admin().post(f"/v1/polls/{poll['id']}/close")
    expect(page.locator("#reveal-word")).to_have_text("2-way tie")
    expect(page.locator("#winner")).to_have_text("Aurora and Comet")
    expect(page.locator("#winner-figures")).to_have_text("2 votes each · 50% each")
    expect(page.locator('#bars li[data-winner="true"]')).to_have_count(2)


def test_hidden_results_show_turnout_only_until_close(demo: DemoTally, page: Page) -> None:
    """A poll showing its counts after close only: the screen shows the turnout and says when
    the results come; at close they do."""
    poll = open_poll(demo, "Secret until the end", visibility="after-close")
    page.goto(f"{demo.url}/present/{poll['id']}")
    for number, option in enumerate(["borealis", "borealis", "comet"]):
        vote(demo, poll, f"h{number}", option)
    expect(page.locator("#total")).to_have_text("3")
    expect(page.locator("#hidden-note")).to_have_text("Results revealed at close")
    expect(page.locator("#bars")).to_have_attribute("data-hidden", "true")
    expect(bar(page, "borealis")).to_have_attribute("data-count", "0")  # nothing leaked
    demo.admin().post(f"/v1/polls/{poll['id']}/close")
    expect(page.locator("#winner")).to_have_text("Borealis")
    expect(page.locator("#hidden-note")).to_be_hidden()
    expect(bar(page, "borealis")).to_have_attribute("data-count", "2")


def test_an_organiser_signed_in_presents_a_draft_and_sees_it_open(
    demo: DemoTally, page: Page
) -> None:
    """Before the poll opens the screen already shows the QR code to an organiser (a draft is
    an admin's only: the page sends the signed-in credential, contract 1); opening it turns the
    banner to open, live."""
    admin = demo.admin()
    poll = admin.post("/v1/polls", {"title": "Warm-up", "options": list(OPTIONS), "lanes": 1})
    session = {
        "token": demo.issuer.mint("presenter-admin", roles=["admin"]),
        "subject": "presenter-admin",
        "name": "Olga",
        "roles": ["admin"],
        "expires_at": int(time.time()) + 3600,
    }
    page.add_init_script(
        f"localStorage.setItem('tally.session', {json.dumps(json.dumps(session))});"
    )
    page.goto(f"{demo.url}/present/{poll['id']}")
    expect(page.locator("#banner")).to_have_text("Voting opens soon")
    expect(page.locator("#join-code")).to_have_text(poll["join_code"])
    expect(page.locator("#qr svg")).to_be_visible()  # fetched apart from the join code
    assert decode_svg(page.locator("#qr").inner_html().encode()).endswith(f"/j/{poll['join_code']}")
    admin.post(f"/v1/polls/{poll['id']}/open")
    expect(page.locator("#banner")).to_have_text("Voting is open")
    vote(demo, poll, "w0", "comet")
    expect(bar(page, "comet")).to_have_attribute("data-count", "1")


def test_a_draft_is_no_such_poll_to_anyone_else(demo: DemoTally, page: Page) -> None:
    poll = demo.admin().post("/v1/polls", {"title": "Not yet", "options": list(OPTIONS)})
    page.goto(f"{demo.url}/present/{poll['id']}")
    expect(page.locator("#missing h1")).to_have_text("No such poll")


def test_the_join_link_reaches_the_voting_page(demo: DemoTally, page: Page) -> None:
    poll = open_poll(demo, "Join me")
    page.goto(f"{demo.url}/j/{poll['join_code'].lower()}")
    assert page.url == f"{demo.url}/?poll={poll['id']}"
    expect(page.locator("#poll-title")).to_have_text("Join me")


def test_it_fits_a_1280x720_projector(demo: DemoTally, browser: Browser) -> None:
    poll = open_poll(demo, "A smaller screen")
    with checked_page(browser, TIMEOUT_MS) as small:
        small.set_viewport_size({"width": 1280, "height": 720})
        small.goto(f"{demo.url}/present/{poll['id']}")
        expect(small.locator("#qr svg")).to_be_visible()
        overflow = small.evaluate(
            "() => [document.documentElement.scrollWidth - innerWidth,"
            " document.documentElement.scrollHeight - innerHeight]"
        )
        assert overflow == [0, 0]
        for selector in ("#qr", "#join-code", "#total", "#bars"):
            box = small.locator(selector).bounding_box()
            assert box is not None
            assert box["y"] + box["height"] <= 720, selector
            assert box["x"] + box["width"] <= 1280, selector


def test_an_unknown_poll_shows_only_no_such_poll(demo: DemoTally, page: Page) -> None:
    page.goto(f"{demo.url}/present/nosuchpoll")
    expect(page.locator("#missing h1")).to_have_text("No such poll")
    expect(page.locator("#join")).to_be_hidden()
    expect(page.locator("#bars")).to_be_hidden()


def _seconds(clock: str) -> int:
    parts = [int(p) for p in clock.split(":")]
    total = 0
    for part in parts:
        total = total * 60 + part
    return total


def _clock_between(low: int, high: int) -> re.Pattern[str]:
    return re.compile("|".join(f"^{s // 60}:{s % 60:02d}$" for s in range(low, high + 1)))


def _eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)

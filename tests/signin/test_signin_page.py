"""Sign-in in real Chromium: the voting page's "Sign in to vote" goes through the real OIDC
provider's login and consent pages (or the demo sign-in of `tally serve --demo`), lands back on
the poll signed in with a Tally session in localStorage `tally.session`, and votes with it over
HTTP (the page's own vote button) and over the WebSocket. No URL the browser visits ever carries
the session."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize, expect

from conftest import RunningTally
from oidc.provider import (
    ORGANISER,
    gateway_signing_in_here,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from demo_server import demo_tally
from headless_chromium import checked_page, chromium
from screenshots import save_screenshot

pytestmark = pytest.mark.timeout(180)
PHONE: ViewportSize = {"width": 390, "height": 844}
TIMEOUT_MS = 20_000

# Votes over the live WebSocket from the page, with the stored session (contract 1): the auth
# frame, then one vote; resolves to the two answers.
WEBSOCKET_VOTE = """async ([pollId, option]) => {
  const { currentSession } = await import("/static/session.js");
  const token = currentSession().token;
  const socket = new WebSocket(`ws://${location.host}/v1/polls/${pollId}/live`);
  const answers = [];
  return await new Promise((resolve, reject) => {
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "auth", token }));
      socket.send(JSON.stringify({ type: "vote", request_id: "ws-1", option }));
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "auth_result" || frame.type === "vote_result") answers.push(frame);
      if (answers.length === 2) { socket.close(); resolve(answers); }
    };
    socket.onerror = () => reject(new Error("websocket error"));
  });
}"""


@pytest.fixture(scope="module")
def oidc_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    with gateway_signing_in_here(tmp_path_factory.mktemp("signin-page")) as server:
        yield server


def open_poll(server: RunningTally, *options: str) -> dict[str, Any]:
    admin = server.issuer.mint("page-organiser", roles=["admin"])
    headers = {"Authorization": f"Bearer {admin}"}
    body = {"title": "Best colour", "options": list(options), "lanes": 2}
    created = httpx.post(f"{server.url}/v1/polls", json=body, headers=headers).json()
    opened = httpx.post(f"{server.url}/v1/polls/{created['id']}/open", headers=headers)
    document: dict[str, Any] = opened.json()
    return document


def stored_session(page: Page) -> dict[str, Any]:
    raw = page.evaluate("() => localStorage.getItem('tally.session')")
    assert raw is not None
    document: dict[str, Any] = json.loads(raw)
    return document


def watch_urls(page: Page) -> list[str]:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("framenavigated", lambda frame: urls.append(frame.url))
    return urls


def test_a_voter_signs_in_at_the_provider_and_votes(oidc_gateway: RunningTally) -> None:
    poll = open_poll(oidc_gateway, "Red", "Green", "Blue")
    with chromium() as browser, checked_page(browser, TIMEOUT_MS) as page:
        page.set_viewport_size(PHONE)
        urls = watch_urls(page)
        page.goto(f"{oidc_gateway.url}/?poll={poll['id']}")
        page.get_by_role("button", name="Sign in to vote").click()
        # The provider's own pages (oidc-provider's development login and consent).
        page.wait_for_url("http://127.0.0.1:*/interaction/**")
        page.locator("input[name=login]").fill("alice")
        page.locator("input[name=password]").fill("anything")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()  # consent
        page.wait_for_url(f"{oidc_gateway.url}/?poll={poll['id']}")
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        expect(page.locator("#voter-name")).to_have_text("Alice")
        session = stored_session(page)
        assert session["token"].startswith("tsv1.")
        assert session["subject"] == "alice"
        assert session["roles"] == ["voter"]
        page.get_by_role("button", name="Vote for Green").click()
        expect(page.locator(".chosen")).to_contain_text("Green")
        assert not any(session["token"] in url for url in urls)
        assert not any("tsv1." in url for url in urls)

    # A second voter in a fresh browser votes over the WebSocket with their session.
    with chromium() as browser, checked_page(browser, TIMEOUT_MS) as page:
        page.set_viewport_size(PHONE)
        page.goto(f"{oidc_gateway.url}/?poll={poll['id']}")
        page.get_by_role("button", name="Sign in to vote").click()
        page.wait_for_url("http://127.0.0.1:*/interaction/**")
        page.locator("input[name=login]").fill("bob")
        page.locator("input[name=password]").fill("anything")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{oidc_gateway.url}/?poll={poll['id']}")
        blue = next(o["id"] for o in poll["options"] if o["label"] == "Blue")
        auth_result, vote_result = page.evaluate(WEBSOCKET_VOTE, [poll["id"], blue])
        assert auth_result["status"] == 200
        assert vote_result["status"] == 201


def test_the_organiser_signs_in_with_the_admin_role(oidc_gateway: RunningTally) -> None:
    with chromium() as browser, checked_page(browser, TIMEOUT_MS) as page:
        page.goto(f"{oidc_gateway.url}/auth/login?next=/%3Fpoll%3Dnone")
        page.locator("input[name=login]").fill(ORGANISER)
        page.locator("input[name=password]").fill("anything")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{oidc_gateway.url}/?poll=none")
        assert stored_session(page)["roles"] == ["admin", "voter"]


def test_the_demo_sign_in_stands_in_for_a_provider(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with (
        demo_tally(tmp_path_factory.mktemp("signin-demo")) as server,
        chromium() as browser,
        checked_page(browser, TIMEOUT_MS) as page,
    ):
        page.set_viewport_size(PHONE)
        poll = server.demo_poll
        page.goto(f"{server.url}/?poll={poll['id']}")
        page.get_by_role("button", name="Sign in to vote").click()
        page.wait_for_url(f"{server.url}/auth/demo?**")
        expect(page.get_by_role("heading", name="Sign in to Tally")).to_be_visible()
        page.get_by_label("Your name").fill("Dana")
        save_screenshot(page, "signin-demo")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}/?poll={poll['id']}")
        expect(page.locator("#voter-name")).to_have_text("Dana")
        session = stored_session(page)
        assert session["token"].startswith("tsv1.")
        assert session["subject"].startswith("demo-")
        assert session["roles"] == ["voter"]
        label = poll["options"][0]["label"]
        page.get_by_role("button", name=f"Vote for {label}").click()
        expect(page.locator(".chosen")).to_contain_text(label)

        # The organiser's way in: role admin, back to the console's path.
        page.evaluate("() => localStorage.removeItem('tally.session')")
        page.goto(f"{server.url}/auth/login?next=/%3Fpoll%3D{poll['id']}&role=admin")
        expect(page.get_by_label("Organiser (admin)")).to_be_checked()
        page.get_by_label("Your name").fill("Olga")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}/?poll={poll['id']}")
        assert stored_session(page)["roles"] == ["admin", "voter"]


def test_the_console_signs_an_organiser_in_through_the_demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """/admin's Sign in (session.js signIn("/admin", "admin")) comes back to the console as an
    organiser: the gate is gone and the poll list shows."""
    with (
        demo_tally(tmp_path_factory.mktemp("signin-console")) as server,
        chromium() as browser,
        checked_page(browser, TIMEOUT_MS) as page,
    ):
        page.goto(f"{server.url}/admin")
        page.locator("#sign-in").click()
        page.wait_for_url(f"{server.url}/auth/demo?**")
        expect(page.get_by_label("Organiser (admin)")).to_be_checked()
        page.get_by_label("Your name").fill("Olga")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}/admin")
        expect(page.locator("#gate")).to_be_hidden()
        expect(page.get_by_role("heading", name="Polls")).to_be_visible()
        assert stored_session(page)["roles"] == ["admin", "voter"]

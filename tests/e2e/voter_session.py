"""A voter signed in on the page without going through a sign-in flow: the page's session is
contract 1's localStorage entry `tally.session`, and a dev-issuer JWT is as valid a bearer as a
Tally session credential, so a test that is about voting (not signing in) stores one there."""

from __future__ import annotations

import json
import time

from playwright.sync_api import Page

SESSION_KEY = "tally.session"
RECEIPTS_KEY = "tally.receipts"


def session_entry(token: str, subject: str, name: str | None = None) -> str:
    """The `tally.session` value for `token` (contract 1's shape, expiring in an hour)."""
    entry = {
        "token": token,
        "subject": subject,
        "name": name or subject,
        "roles": [],
        "expires_at": int(time.time()) + 3600,
    }
    return json.dumps(entry)


def sign_in_with_token(page: Page, url: str, token: str, subject: str) -> None:
    """Open `url` with the voter behind `token` signed in: the entry is written on the page's
    origin, then the page is loaded again so it starts signed in, as after a sign-in."""
    page.goto(url)
    page.evaluate(
        "([key, value]) => localStorage.setItem(key, value)",
        [SESSION_KEY, session_entry(token, subject)],
    )
    page.reload()


def stored_receipts(page: Page) -> dict[str, object]:
    """The page's `tally.receipts` (poll id -> receipt), {} when there is none."""
    raw = page.evaluate("(key) => localStorage.getItem(key)", RECEIPTS_KEY)
    return {} if raw is None else dict(json.loads(raw))

"""Debian's Chromium, driven by Playwright, for the page tests (Playwright's own browser download
needs the network, which test machines do not have)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the block; skips the test when /usr/bin/chromium is absent."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, yet this is CI, where the page tests must run")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def checked_page(browser: Browser, timeout_ms: int, **context: Any) -> Iterator[Page]:
    """A page in a fresh context (`context`: Playwright's new_context options); the block fails
    on any script error or Content-Security-Policy violation the page reported."""
    opened_context = browser.new_context(viewport={"width": 1100, "height": 760}, **context)
    opened_context.set_default_timeout(timeout_ms)
    opened = opened_context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")

    opened.on("console", on_console)
    try:
        yield opened
        assert problems == []
    finally:
        opened_context.close()

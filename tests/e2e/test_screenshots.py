"""save_screenshot, the one way page tests write screenshots: into build/screenshots/ always
(ignored by git, so a run leaves the tree clean), into docs/screenshots/ only under
TALLY_UPDATE_SCREENSHOTS=1 (`make screenshots`). With a real headless Chromium."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page
from screenshots import BUILD, ROOT, SCREENSHOTS, UPDATE, save_screenshot

NAME = "save-screenshot-probe"  # no test or README uses it: removed again below


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with checked_page(browser, 10_000) as opened:
        opened.set_content("<!doctype html><title>probe</title><h1>Screenshot probe</h1>")
        yield opened


@pytest.fixture
def clean_probe() -> Iterator[None]:
    paths = [BUILD / f"{NAME}.png", SCREENSHOTS / f"{NAME}.png"]
    for path in paths:
        path.unlink(missing_ok=True)
    yield
    for path in paths:
        path.unlink(missing_ok=True)


def png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    return data


def test_a_run_writes_under_build_only_and_git_ignores_it(
    page: Page, clean_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UPDATE, raising=False)
    path = save_screenshot(page, NAME)
    assert path == BUILD / f"{NAME}.png"
    png(path)
    assert not (SCREENSHOTS / f"{NAME}.png").exists()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False, timeout=30
    )
    assert ignored.returncode == 0, "build/screenshots/ must be ignored by git"


def test_update_screenshots_also_refreshes_the_docs_copy(
    page: Page, clean_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPDATE, "1")
    path = save_screenshot(page, NAME)
    assert png(SCREENSHOTS / f"{NAME}.png") == png(path)


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "shot.png", "a\\b"])
def test_a_name_is_a_bare_stem(page: Page, name: str) -> None:
    with pytest.raises(ValueError, match="bare stem"):
        save_screenshot(page, name)
